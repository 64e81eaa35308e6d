"""TLSRoute attachment (SPEC.md §8): per route and parentRef, which listeners it attaches
to and with which effective hostnames, or why it is not accepted; and its ResolvedRefs and
backend pool (`backends.py`).

Pure. The checks of §8 in order: parent kind (not ours: no status), the Gateway exists, is
ours, has a listener matching sectionName/port (NoMatchingParent), that listener allows the
route's kind and namespace (NotAllowedByListeners), and some route hostname intersects the
listener's (NoMatchingListenerHostname, §8.1).

A route's result depends on the route, the Services, EndpointSlices, grants and policies its
backendRefs reach, the labels of its namespace, and what `context.attachment_view` shows of
the Gateways it names; `routes.py` recomputes it when one of those changes.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway import GATEWAY_GROUP
from gateway.api import model
from gateway.api.names import FromNamespaces, NamespacedName, SelectorOperator, new_tuple
from gateway.api.status import ConditionType, Draft, Reason
from gateway.routing import hostnames
from gateway.translate.backends import resolve_backends
from gateway.translate.context import Attachment, Build, GatewayState, Parent, RouteResult
from gateway.translate.listeners import TLS_ROUTE_KIND, ListenerState


def route_result(build: Build, key: NamespacedName, route: model.TLSRoute) -> RouteResult:
    """Everything one route contributes, from the route and the Gateway side of the build."""
    resolved, backends, services = resolve_backends(
        key, route, build.resources, build.policies, build.backend_traffic
    )
    parents = []
    gateways = []
    for ref in route.spec.parent_refs or ():
        gateway_key = new_tuple(NamespacedName, (ref.namespace or key.namespace, ref.name))
        gateways.append(gateway_key)
        parent = _attach(build, key, route, ref, gateway_key)
        if parent is not None:
            parents.append(parent)
    return RouteResult(
        parents=tuple(parents),
        resolved=resolved,
        backends=backends,
        services=frozenset(services),
        gateways=frozenset(gateways),
        cross_namespace=any(s.namespace != key.namespace for s in services),
    )


def _refused(ref: model.ParentReference, reason: Reason, message: str) -> Parent:
    return Parent(ref, Draft(ConditionType.ACCEPTED, False, reason, message))


#: The Accepted draft of an attached parent; its message is written with the status, once
#: the table knows where the route won (statuses.py).
_ATTACHED = Draft(ConditionType.ACCEPTED, True, Reason.ACCEPTED, "")


def _attach(
    build: Build,
    key: NamespacedName,
    route: model.TLSRoute,
    ref: model.ParentReference,
    gateway_key: NamespacedName,
) -> Parent | None:
    if ref.group != GATEWAY_GROUP or ref.kind != "Gateway":
        return None  # a parent kind tlsgate does not implement: not ours (§5.2)
    state = build.gateways.get(gateway_key)
    if state is None:
        if gateway_key not in build.resources.gateways:
            return _refused(ref, Reason.NO_MATCHING_PARENT, f"Gateway {gateway_key} does not exist")
        return None  # another controller's Gateway: its status is not ours to write
    if ref.section_name is None and ref.port is None:
        relevant = state.listeners
    else:
        relevant = [
            lst
            for lst in state.listeners
            if (ref.section_name is None or lst.spec.name == ref.section_name)
            and (ref.port is None or lst.spec.port == ref.port)
        ]
    if not relevant:
        wanted = " and ".join(
            part
            for part in (
                f"sectionName {ref.section_name!r}" if ref.section_name else "",
                f"port {ref.port}" if ref.port else "",
            )
            if part
        )
        return _refused(
            ref, Reason.NO_MATCHING_PARENT, f"Gateway {state.name} has no listener with {wanted}"
        )
    allowed = [lst for lst in relevant if _allows(build, state, lst, key.namespace)]
    if not allowed:
        return _refused(
            ref,
            Reason.NOT_ALLOWED_BY_LISTENERS,
            f"no listener of Gateway {state.name} among "
            f"{', '.join(lst.spec.name for lst in relevant)} allows a TLSRoute "
            f"from namespace {key.namespace!r}",
        )
    attached = []
    route_hostnames = route.spec.hostnames or ()
    for listener in allowed:
        effective = [
            h
            for host in route_hostnames
            if (h := hostnames.intersect(listener.spec.hostname, host)) is not None
        ]
        if effective:
            unique = tuple(effective) if len(effective) == 1 else tuple(dict.fromkeys(effective))
            attached.append(Attachment(gateway_key, listener.spec.name, unique))
    if not attached:
        return _refused(
            ref,
            Reason.NO_MATCHING_LISTENER_HOSTNAME,
            "no route hostname matches the hostname of any allowed listener "
            f"({', '.join(lst.spec.hostname or '*' for lst in allowed)})",
        )
    return Parent(ref, _ATTACHED, tuple(attached))


def _allows(build: Build, state: GatewayState, listener: ListenerState, namespace: str) -> bool:
    """Route kind and namespace checks of SPEC.md §8 step 3 (allowedRoutes, §3.2)."""
    if TLS_ROUTE_KIND not in listener.supported_kinds:
        return False
    namespaces = listener.spec.allowed_routes.namespaces
    if namespaces.from_ == FromNamespaces.ALL:
        return True
    if namespaces.from_ == FromNamespaces.SELECTOR:
        # A Selector without a selector matches nothing (SPEC.md §3.2).
        return namespaces.selector is not None and selector_matches(
            namespaces.selector, build.resources.namespace_labels(namespace)
        )
    return namespace == state.key.namespace


def selector_matches(selector: model.LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes LabelSelector semantics: every matchLabels pair and every expression
    must hold; an empty selector matches everything."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.match_expressions or ():
        values = req.values or ()
        present = req.key in labels
        if req.operator == SelectorOperator.IN and not (present and labels[req.key] in values):
            return False
        if req.operator == SelectorOperator.NOT_IN and present and labels[req.key] in values:
            return False
        if req.operator == SelectorOperator.EXISTS and not present:
            return False
        if req.operator == SelectorOperator.DOES_NOT_EXIST and present:
            return False
    return True
