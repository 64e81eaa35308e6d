"""One listener's own checks, before routes are attached (SPEC.md §9.1, §3.3, §9.3).

Pure. `evaluate_listener` applies the per-listener checks of SPEC.md §9.1 in order: protocol,
mode, route kinds, certificates, frontend CA. What depends on other listeners and Gateways
(ports, `conflicts.py`) and on routes (attachedRoutes, `routes.py`) is added by later steps.
"""

from __future__ import annotations

from attrs import define

from gateway import GATEWAY_GROUP
from gateway.api import model
from gateway.api.names import NamespacedName, ProtocolType, TLSMode
from gateway.api.status import ConditionType, Draft, Reason, resolved_refs
from gateway.routing.snapshot import FrontendValidation
from gateway.translate.facts import Facts
from gateway.translate.references import Fault, ca_bundle_of, check_reference
from gateway.translate.resources import Resources

TLS_ROUTE_KIND = model.RouteGroupKind(group=GATEWAY_GROUP, kind="TLSRoute")


@define
class ListenerState:
    """One listener during a build; `conflicts` may still refuse it for its port."""

    spec: model.Listener
    supported_kinds: tuple[model.RouteGroupKind, ...]
    accepted: Draft
    resolved_refs: Draft
    #: Why the listener cannot serve traffic, if it cannot (Programmed=False).
    problem: str | None = None
    certificates: tuple[NamespacedName, ...] = ()
    frontend: FrontendValidation | None = None

    @property
    def is_tls(self) -> bool:
        return self.spec.protocol == ProtocolType.TLS

    def refuse(self, reason: Reason, message: str) -> None:
        self.accepted = Draft(ConditionType.ACCEPTED, False, reason, message)
        self.problem = self.problem or message


def evaluate_listener(
    gateway: NamespacedName,
    doc: model.Gateway,
    spec: model.Listener,
    resources: Resources,
    facts: Facts,
) -> ListenerState:
    ok_refs = Draft(
        ConditionType.RESOLVED_REFS, True, Reason.RESOLVED_REFS, "All references are resolved"
    )
    # §9.1 step 1: tlsgate has a TLS data plane only (SPEC.md §9.1 caveat).
    if spec.protocol != ProtocolType.TLS:
        state = ListenerState(
            spec=spec, supported_kinds=(), resolved_refs=ok_refs, accepted=ok_refs
        )
        state.refuse(
            Reason.UNSUPPORTED_PROTOCOL,
            f"protocol {spec.protocol!r} is not supported; tlsgate serves TLS listeners",
        )
        return state
    state = ListenerState(
        spec=spec,
        supported_kinds=(),
        resolved_refs=ok_refs,
        accepted=Draft(ConditionType.ACCEPTED, True, Reason.ACCEPTED, "Listener is accepted"),
    )
    # §9.1 step 2: both modes are supported (TLSRouteModeTerminate, TLSRouteModeMixed).
    # §9.1 step 3: route kinds. A TLS listener supports TLSRoute only (SPEC.md §14.8).
    problems: list[tuple[Reason, str]] = []
    requested = spec.allowed_routes.kinds
    if not requested:
        state.supported_kinds = (TLS_ROUTE_KIND,)
    else:
        valid = [k for k in requested if (k.group, k.kind) == (GATEWAY_GROUP, "TLSRoute")]
        state.supported_kinds = tuple(dict.fromkeys(valid))
        invalid = [
            f"{k.group}/{k.kind}" if k.group else k.kind for k in requested if k not in valid
        ]
        if invalid:
            problems.append(
                (
                    Reason.INVALID_ROUTE_KINDS,
                    f"route kinds {', '.join(invalid)} are not supported on a TLS "
                    f"listener; supported: {GATEWAY_GROUP}/TLSRoute",
                )
            )
    if not state.supported_kinds:
        state.problem = "allowedRoutes.kinds names no route kind a TLS listener serves"
    tls = spec.tls
    if tls is not None and tls.mode == TLSMode.TERMINATE:
        problems += _certificates(gateway, state, tls, resources, facts)
        problems += _frontend(gateway, doc, state, resources, facts)
    state.resolved_refs = resolved_refs(problems)
    return state


def _certificates(
    gateway: NamespacedName,
    state: ListenerState,
    tls: model.ListenerTLSConfig,
    resources: Resources,
    facts: Facts,
) -> list[tuple[Reason, str]]:
    problems: list[tuple[Reason, str]] = []
    usable: list[NamespacedName] = []
    for i, ref in enumerate(tls.certificate_refs or ()):
        checked = check_reference(
            resources,
            facts,
            ref,
            from_kind="Gateway",
            from_namespace=gateway.namespace,
            target="Secret",
        )
        if checked.fault is None:
            usable.append(checked.key)
            continue
        reason = (
            Reason.REF_NOT_PERMITTED
            if checked.fault is Fault.NOT_PERMITTED
            else Reason.INVALID_CERTIFICATE_REF
        )
        problems.append((reason, f"certificateRefs[{i}]: {checked.message}"))
    state.certificates = tuple(dict.fromkeys(usable))
    if not usable:
        state.problem = state.problem or (
            "no usable certificate: " + "; ".join(m for _, m in problems)
            if problems
            else "no certificateRefs"
        )
    return problems


_CA_REASONS = {
    Fault.NOT_PERMITTED: Reason.REF_NOT_PERMITTED,
    Fault.WRONG_KIND: Reason.INVALID_CA_CERTIFICATE_KIND,
    Fault.MISSING: Reason.INVALID_CA_CERTIFICATE_REF,
    Fault.UNLOADABLE: Reason.INVALID_CA_CERTIFICATE_REF,
}


def _frontend(
    gateway: NamespacedName,
    doc: model.Gateway,
    state: ListenerState,
    resources: Resources,
    facts: Facts,
) -> list[tuple[Reason, str]]:
    """Client-certificate validation, applied by tlsgate to Terminate TLS listeners (the
    documented choice of SPEC.md §14.7), per port or by default (§3.3, §9.3)."""
    tls = doc.spec.tls
    if tls is None or tls.frontend is None:
        return []
    per_port = {p.port: p.tls for p in tls.frontend.per_port or ()}
    validation = per_port.get(state.spec.port, tls.frontend.default).validation
    if validation is None:
        return []
    problems: list[tuple[Reason, str]] = []
    usable: list[NamespacedName] = []
    for i, ref in enumerate(validation.ca_certificate_refs):
        checked = check_reference(
            resources,
            facts,
            ref,
            from_kind="Gateway",
            from_namespace=gateway.namespace,
            target="ConfigMap",
        )
        if checked.fault is None:
            usable.append(checked.key)
        else:
            problems.append(
                (_CA_REASONS[checked.fault], f"caCertificateRefs[{i}]: {checked.message}")
            )
    if not usable:
        # Never fall back to skipping validation (SPEC.md §9.3).
        state.refuse(
            Reason.NO_VALID_CA_CERTIFICATE,
            "no valid CA certificate for client-certificate validation",
        )
    else:
        state.frontend = FrontendValidation(
            mode=validation.mode,
            ca_config_maps=tuple(usable),
            ca_bundle=ca_bundle_of(resources, tuple(usable)),
        )
    return problems
