"""A TLSRoute's backendRefs: ResolvedRefs (SPEC.md §8 step 5, §9.4) and the weighted pool with
endpoints the data plane draws from (§10.4).

Pure. An invalid backend keeps its weight and marks its share as rejected; a Service with no
ready endpoint is a valid reference (ResolvedRefs stays True) whose share is rejected too.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping

from gateway import GATEWAY_GROUP
from gateway.api import corev1, model
from gateway.api.names import NamespacedName, new_tuple
from gateway.api.status import Draft, Reason, resolved_refs
from gateway.routing.snapshot import Backend, BackendTLS, BackendTraffic, Endpoint
from gateway.translate.policies import Target, policy_for
from gateway.translate.references import grant_allows
from gateway.translate.resources import Resources

#: ResolvedRefs of a route whose every backendRef resolves.
_RESOLVED = resolved_refs([])


def resolve_backends(
    key: NamespacedName,
    route: model.TLSRoute,
    resources: Resources,
    policies: Mapping[Target, BackendTLS] | None = None,
    traffic: Mapping[tuple[str, str], BackendTraffic] | None = None,
) -> tuple[Draft, tuple[Backend, ...], list[NamespacedName]]:
    """ResolvedRefs for the route (one reason: the first failure; every bad ref in the
    message), the backend pool of its single rule, and the Services its refs name."""
    failures: list[tuple[Reason, str]] = []
    pool: list[Backend] = []
    services: list[NamespacedName] = []
    route_namespace = key.namespace
    known = resources.services
    for rule_index, rule in enumerate(route.spec.rules):
        for i, ref in enumerate(rule.backend_refs):
            namespace = ref.namespace or route_namespace
            service_key = new_tuple(NamespacedName, (namespace, ref.name))
            port = ref.port
            name = f"{namespace}/{ref.name}:{port}" if port else f"{namespace}/{ref.name}"
            # The common case first, without making a message: a Service of the route's
            # namespace that exists and has the port. Anything else takes `_check`, which
            # finds the first failure in the order of SPEC.md §9.4.
            service = None
            service_port = None
            if ref.group == "" and ref.kind == "Service":
                services.append(service_key)
                if namespace == route_namespace:
                    service = known.get(service_key)
            if service is not None and service.spec.type != "ExternalName":
                for candidate in service.spec.ports or ():
                    if candidate.port == port:
                        service_port = candidate
                        break
            if service_port is None:
                problem = _check(key, ref, service_key, resources)
                if problem is not None:
                    reason, message = problem
                    failures.append((reason, f"rules[{rule_index}].backendRefs[{i}]: {message}"))
                    pool.append(Backend(name=name, weight=ref.weight, reject=message))
                    continue
                service = known[service_key]
                service_port = next(p for p in service.spec.ports or () if p.port == port)
            endpoints = _endpoints(service_key, service_port, resources)
            tls = policy_for(policies, namespace, ref.name, service_port.name) if policies else None
            reject = None if endpoints else f"Service {service_key} has no ready endpoints"
            if tls is not None and tls.error is not None:
                reject = f"BackendTLSPolicy {tls.policy} is not accepted: {tls.error}"
            pool.append(
                Backend(
                    name=name,
                    weight=ref.weight,
                    endpoints=endpoints,
                    reject=reject,
                    tls=tls,
                    traffic=traffic.get((namespace, ref.name)) if traffic else None,
                )
            )
    return (resolved_refs(failures) if failures else _RESOLVED), tuple(pool), services


def _check(
    key: NamespacedName, ref: model.BackendRef, service_key: NamespacedName, resources: Resources
) -> tuple[Reason, str] | None:
    """The order of SPEC.md §9.4: kind, grant, existence, port."""
    if (ref.group, ref.kind) != ("", "Service"):
        return Reason.INVALID_KIND, (
            f"{ref.group or 'core'}/{ref.kind} is not a supported "
            "backend kind; only core Services are"
        )
    namespace = service_key.namespace
    if namespace != key.namespace and not grant_allows(
        resources,
        from_group=GATEWAY_GROUP,
        from_kind="TLSRoute",
        from_namespace=key.namespace,
        to_group="",
        to_kind="Service",
        to_namespace=namespace,
        to_name=ref.name,
    ):
        return Reason.REF_NOT_PERMITTED, (
            f"Service {service_key} is in another namespace and no ReferenceGrant allows the "
            "reference"
        )
    service = resources.services.get(service_key)
    if service is None:
        return Reason.BACKEND_NOT_FOUND, f"Service {service_key} does not exist"
    if service.spec.type == "ExternalName":
        # SPEC.md §5.1: ExternalName SHOULD NOT be supported (it can reach any host).
        return Reason.INVALID_KIND, (
            f"Service {service_key} is of type ExternalName, which is not supported"
        )
    if not any(p.port == ref.port for p in service.spec.ports or ()):
        return Reason.BACKEND_NOT_FOUND, f"Service {service_key} has no port {ref.port}"
    return None


def _endpoints(
    service: NamespacedName, service_port: corev1.ServicePort, resources: Resources
) -> tuple[Endpoint, ...]:
    """Ready endpoints of the Service port, through targetPort (API.md "Documents")."""
    port = service_port.port
    target = service_port.target_port if service_port.target_port is not None else port
    found: dict[tuple[str, int], Endpoint] = {}
    for eps in resources.slices_of(service):
        number = _slice_port(eps, target, service_port.name)
        if number is None:
            continue
        for endpoint in eps.endpoints or ():
            conditions = endpoint.conditions
            if conditions is not None and conditions.ready is False:
                continue  # absent means ready (API.md)
            # Addresses of one endpoint are fungible; Kubernetes consumers use the first.
            address = endpoint.addresses[0]
            if eps.address_type != "FQDN":
                address = canonical_address(address)
            found[(address, number)] = _endpoint(address, number)
    if len(found) == 1:
        return tuple(found.values())
    return tuple(found[k] for k in sorted(found))


@functools.lru_cache(maxsize=65536)
def _endpoint(address: str, port: int) -> Endpoint:
    # One value per endpoint: rebuilds (and routes sharing a backend) share it.
    return Endpoint(address, port)


@functools.lru_cache(maxsize=65536)
def canonical_address(address: str) -> str:
    """An endpoint IP in its one spelling (admission checked that it parses). Cached: every
    rebuild reads every endpoint, and parsing is most of the cost of resolving backends."""
    return str(ipaddress.ip_address(address))


def _slice_port(
    eps: corev1.EndpointSlice, target: int | str | None, service_port_name: str | None
) -> int | None:
    """A numeric targetPort is the endpoint port. A named one is the EndpointSlice port of that
    name; Kubernetes itself names slice ports after the Service port, so that name matches too."""
    if isinstance(target, int):
        return target
    for candidate in (target, service_port_name):
        for slice_port in eps.ports or ():
            if candidate is not None and slice_port.name == candidate and slice_port.port:
                return slice_port.port
    return None
