"""Gateway and listener validation, before routes are attached (SPEC.md §3, §4, §9).

Pure. `evaluate_gateway` applies the per-listener checks of SPEC.md §9.1 in order (protocol,
mode, route kinds, certificates, frontend CA), and the gateway-level ones (addresses,
infrastructure parameters, backend client certificate). What depends on other Gateways (ports
held by an older Gateway) and on routes (attachedRoutes) is added by `translate`.
"""

from __future__ import annotations

import ipaddress

from attrs import define, field

from gateway import GATEWAY_GROUP
from gateway.api import model
from gateway.api.status import ConditionType, Draft, Reason, resolved_refs
from gateway.routing.snapshot import FrontendValidation
from gateway.translate.facts import Runtime
from gateway.translate.references import Fault, check_reference
from gateway.translate.resources import NamespacedName, Resources

TLS_ROUTE_KIND = model.RouteGroupKind(group=GATEWAY_GROUP, kind="TLSRoute")


@define
class ListenerState:
    """One listener during a build; `translate` fills in ports and attached routes."""

    spec: model.Listener
    supported_kinds: tuple[model.RouteGroupKind, ...]
    accepted: Draft
    resolved_refs: Draft
    #: Why the listener cannot serve traffic, if it cannot (Programmed=False).
    problem: str | None = None
    certificates: tuple[NamespacedName, ...] = ()
    frontend: FrontendValidation | None = None
    attached: set[NamespacedName] = field(factory=set)

    @property
    def is_tls(self) -> bool:
        return self.spec.protocol == "TLS"

    def refuse(self, reason: Reason, message: str) -> None:
        self.accepted = Draft(ConditionType.ACCEPTED, False, reason, message)
        self.problem = self.problem or message


@define
class GatewayState:
    key: NamespacedName
    doc: model.Gateway
    listeners: list[ListenerState]
    #: Addresses its listeners bind; the runtime default when spec.addresses is unset.
    addresses: tuple[str, ...]
    #: A gateway-level reason not to accept it (UnsupportedAddress, InvalidParameters).
    refusal: Draft | None = None
    #: Gateway ResolvedRefs, published when spec.tls.backend.clientCertificateRef is set.
    client_certificate: Draft | None = None
    #: The Secret of that reference once it resolves, presented to re-encrypted backends.
    client_certificate_ref: NamespacedName | None = None
    insecure_frontend: bool = False

    @property
    def name(self) -> str:
        return f"{self.key[0]}/{self.key[1]}"


def evaluate_gateway(
    key: NamespacedName, doc: model.Gateway, resources: Resources, runtime: Runtime
) -> GatewayState:
    addresses, refusal = _addresses(doc, runtime)
    infra = doc.spec.infrastructure
    if refusal is None and infra is not None and infra.parameters_ref is not None:
        ref = infra.parameters_ref
        refusal = Draft(
            ConditionType.ACCEPTED,
            False,
            Reason.INVALID_PARAMETERS,
            f"infrastructure.parametersRef {ref.group}/{ref.kind} {ref.name!r} is "
            "not supported by tlsgate",
        )
    state = GatewayState(
        key=key,
        doc=doc,
        addresses=addresses,
        refusal=refusal,
        listeners=[_listener(key, doc, lst, resources, runtime) for lst in doc.spec.listeners],
    )
    tls = doc.spec.tls
    if tls is not None and tls.backend is not None and tls.backend.client_certificate_ref:
        client_ref = tls.backend.client_certificate_ref
        state.client_certificate = _client_certificate(key, client_ref, resources, runtime)
        if state.client_certificate.status:
            state.client_certificate_ref = (client_ref.namespace or key[0], client_ref.name)
    if tls is not None and tls.frontend is not None:
        configs = [tls.frontend.default, *(p.tls for p in tls.frontend.per_port or ())]
        state.insecure_frontend = any(
            c.validation is not None and c.validation.mode == "AllowInsecureFallback"
            for c in configs
        )
    return state


def _addresses(doc: model.Gateway, runtime: Runtime) -> tuple[tuple[str, ...], Draft | None]:
    """Static IPAddress values are bound as given (SPEC.md §3.1 addresses, Extended)."""
    out: list[str] = []
    for address in doc.spec.addresses or ():
        if address.type != "IPAddress":
            return (), Draft(
                ConditionType.ACCEPTED,
                False,
                Reason.UNSUPPORTED_ADDRESS,
                f"address type {address.type!r} is not supported; only IPAddress is",
            )
        if not address.value:
            continue  # an empty value asks us to assign one: the default bind address
        out.append(str(ipaddress.ip_address(address.value)))
    return tuple(dict.fromkeys(out or [runtime.bind_address])), None


def _listener(
    gateway: NamespacedName,
    doc: model.Gateway,
    spec: model.Listener,
    resources: Resources,
    runtime: Runtime,
) -> ListenerState:
    ok_refs = Draft(
        ConditionType.RESOLVED_REFS, True, Reason.RESOLVED_REFS, "All references are resolved"
    )
    # §9.1 step 1: tlsgate has a TLS data plane only (SPEC.md §9.1 caveat).
    if spec.protocol != "TLS":
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
    if tls is not None and tls.mode == "Terminate":
        problems += _certificates(gateway, state, tls, resources, runtime)
        problems += _frontend(gateway, doc, state, resources, runtime)
    state.resolved_refs = resolved_refs(problems)
    return state


def _certificates(
    gateway: NamespacedName,
    state: ListenerState,
    tls: model.ListenerTLSConfig,
    resources: Resources,
    runtime: Runtime,
) -> list[tuple[Reason, str]]:
    problems: list[tuple[Reason, str]] = []
    usable: list[NamespacedName] = []
    for i, ref in enumerate(tls.certificate_refs or ()):
        checked = check_reference(
            resources,
            runtime,
            from_kind="Gateway",
            from_namespace=gateway[0],
            group=ref.group,
            kind=ref.kind,
            namespace=ref.namespace,
            name=ref.name,
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
    runtime: Runtime,
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
            runtime,
            from_kind="Gateway",
            from_namespace=gateway[0],
            group=ref.group,
            kind=ref.kind,
            namespace=ref.namespace,
            name=ref.name,
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
        state.frontend = FrontendValidation(mode=validation.mode, ca_config_maps=tuple(usable))
    return problems


def _client_certificate(
    gateway: NamespacedName,
    ref: model.SecretObjectReference,
    resources: Resources,
    runtime: Runtime,
) -> Draft:
    checked = check_reference(
        resources,
        runtime,
        from_kind="Gateway",
        from_namespace=gateway[0],
        group=ref.group,
        kind=ref.kind,
        namespace=ref.namespace,
        name=ref.name,
        target="Secret",
    )
    if checked.fault is None:
        return resolved_refs([])
    reason = (
        Reason.REF_NOT_PERMITTED
        if checked.fault is Fault.NOT_PERMITTED
        else Reason.INVALID_CLIENT_CERTIFICATE_REF
    )
    return resolved_refs([(reason, f"tls.backend.clientCertificateRef: {checked.message}")])
