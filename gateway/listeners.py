"""Gateway and listener validation, before routes are attached (SPEC.md §3, §4, §9).

Pure. `evaluate_gateway` applies the per-listener checks of SPEC.md §9.1 in order (protocol,
mode, route kinds, certificates, frontend CA), and the gateway-level ones (addresses,
infrastructure parameters, backend client certificate). What depends on other Gateways (ports
held by an older Gateway) and on routes (attachedRoutes) is added by `translate`.
"""

from __future__ import annotations

import ipaddress

from attrs import define, field

from gateway import GATEWAY_GROUP, model
from gateway.resources import NamespacedName, Resources
from gateway.routing import FrontendValidation
from gateway.runtime import Runtime
from gateway.status import ConditionType, Draft, Reason

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
    if problems:
        reason = problems[0][0]
        state.resolved_refs = Draft(
            ConditionType.RESOLVED_REFS,
            False,
            reason,
            "; ".join(message for _, message in problems),
        )
    return state


def _ref_problem(
    gateway: NamespacedName,
    *,
    group: str,
    kind: str,
    namespace: str,
    name: str,
    want_kind: str,
    resources: Resources,
) -> str | None:
    """Cross-namespace grant first, so a refused reference never reveals whether its target
    exists (SPEC.md §6 privacy rule, §9.1 step 4 order)."""
    if not resources.grant_allows(
        from_group=GATEWAY_GROUP,
        from_kind="Gateway",
        from_namespace=gateway[0],
        to_group=group,
        to_kind=kind,
        to_namespace=namespace,
        to_name=name,
    ):
        return "grant"
    if (group, kind) != ("", want_kind):
        return "kind"
    return None


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
        namespace = ref.namespace or gateway[0]
        where = f"certificateRefs[{i}]"
        found = _ref_problem(
            gateway,
            group=ref.group,
            kind=ref.kind,
            namespace=namespace,
            name=ref.name,
            want_kind="Secret",
            resources=resources,
        )
        if found == "grant":
            problems.append(
                (
                    Reason.REF_NOT_PERMITTED,
                    f"{where}: Secret {namespace}/{ref.name} is in another namespace "
                    "and no ReferenceGrant allows the reference",
                )
            )
        elif found == "kind":
            problems.append(
                (
                    Reason.INVALID_CERTIFICATE_REF,
                    f"{where}: {ref.group or 'core'}/{ref.kind} is not supported; "
                    "only core Secrets are",
                )
            )
        elif (namespace, ref.name) not in resources.secrets:
            problems.append(
                (
                    Reason.INVALID_CERTIFICATE_REF,
                    f"{where}: Secret {namespace}/{ref.name} does not exist",
                )
            )
        else:
            loaded = runtime.secrets.get((namespace, ref.name))
            if loaded is None or not loaded.ok:
                why = loaded.message if loaded is not None else "it has not been loaded"
                problems.append(
                    (
                        Reason.INVALID_CERTIFICATE_REF,
                        f"{where}: Secret {namespace}/{ref.name} is not a valid TLS "
                        f"certificate: {why}",
                    )
                )
            else:
                usable.append((namespace, ref.name))
    state.certificates = tuple(dict.fromkeys(usable))
    if not usable:
        state.problem = state.problem or (
            "no usable certificate: " + "; ".join(m for _, m in problems)
            if problems
            else "no certificateRefs"
        )
    return problems


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
        namespace = ref.namespace or gateway[0]
        where = f"caCertificateRefs[{i}]"
        found = _ref_problem(
            gateway,
            group=ref.group,
            kind=ref.kind,
            namespace=namespace,
            name=ref.name,
            want_kind="ConfigMap",
            resources=resources,
        )
        config_map = resources.config_maps.get((namespace, ref.name))
        loaded = runtime.ca_bundles.get((namespace, ref.name))
        if found == "grant":
            problems.append(
                (
                    Reason.REF_NOT_PERMITTED,
                    f"{where}: ConfigMap {namespace}/{ref.name} is in another "
                    "namespace and no ReferenceGrant allows the reference",
                )
            )
        elif found == "kind":
            problems.append(
                (
                    Reason.INVALID_CA_CERTIFICATE_KIND,
                    f"{where}: {ref.group or 'core'}/{ref.kind} is not supported; "
                    "only core ConfigMaps are",
                )
            )
        elif config_map is None or "ca.crt" not in (config_map.data or {}):
            problems.append(
                (
                    Reason.INVALID_CA_CERTIFICATE_REF,
                    f"{where}: ConfigMap {namespace}/{ref.name} does not exist or has no ca.crt",
                )
            )
        elif loaded is None or not loaded.ok:
            why = loaded.message if loaded is not None else "it has not been loaded"
            problems.append(
                (
                    Reason.INVALID_CA_CERTIFICATE_REF,
                    f"{where}: ConfigMap {namespace}/{ref.name} ca.crt is not a valid "
                    f"CA bundle: {why}",
                )
            )
        else:
            usable.append((namespace, ref.name))
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
    namespace = ref.namespace or gateway[0]
    found = _ref_problem(
        gateway,
        group=ref.group,
        kind=ref.kind,
        namespace=namespace,
        name=ref.name,
        want_kind="Secret",
        resources=resources,
    )
    what = f"tls.backend.clientCertificateRef Secret {namespace}/{ref.name}"
    if found == "grant":
        return Draft(
            ConditionType.RESOLVED_REFS,
            False,
            Reason.REF_NOT_PERMITTED,
            f"{what} is in another namespace and no ReferenceGrant allows it",
        )
    if found == "kind":
        return Draft(
            ConditionType.RESOLVED_REFS,
            False,
            Reason.INVALID_CLIENT_CERTIFICATE_REF,
            f"tls.backend.clientCertificateRef {ref.group or 'core'}/{ref.kind} is "
            "not supported; only core Secrets are",
        )
    loaded = runtime.secrets.get((namespace, ref.name))
    if (namespace, ref.name) not in resources.secrets:
        return Draft(
            ConditionType.RESOLVED_REFS,
            False,
            Reason.INVALID_CLIENT_CERTIFICATE_REF,
            f"{what} does not exist",
        )
    if loaded is None or not loaded.ok:
        why = loaded.message if loaded is not None else "it has not been loaded"
        return Draft(
            ConditionType.RESOLVED_REFS,
            False,
            Reason.INVALID_CLIENT_CERTIFICATE_REF,
            f"{what} is not a valid TLS certificate: {why}",
        )
    return Draft(
        ConditionType.RESOLVED_REFS, True, Reason.RESOLVED_REFS, "All references are resolved"
    )
