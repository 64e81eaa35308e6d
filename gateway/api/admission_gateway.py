"""Admission of the Gateway API kinds: the CRD schema and CEL rules of SPEC.md §1 (scalar
types), §2, §3.1-§3.3 (Gateway), §5.1 (TLSRoute), §6 (ReferenceGrant) and §7
(BackendTLSPolicy).

Pure.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from gateway.api import model
from gateway.api.admission_checks import (
    ADDRESS_TYPE,
    CONTROLLER,
    LABEL_VALUE,
    PROTOCOL,
    Checker,
    secret_ref,
    selector,
    show_value,
    target_refs,
)
from gateway.api.names import (
    ALPN_OPTION,
    FromNamespaces,
    FrontendValidationMode,
    ProtocolType,
    TLSMode,
    alpn_problem,
    ip_version,
)


def admit_gateway_class(c: Checker, doc: model.GatewayClass) -> None:
    spec = doc.spec
    c.pattern(
        "spec.controllerName",
        spec.controller_name,
        1,
        253,
        CONTROLLER,
        "a domain-prefixed path such as example.net/gateway-controller",
    )
    if spec.description is not None:
        c.length("spec.description", spec.description, 0, 64)
    if (ref := spec.parameters_ref) is not None:
        c.group("spec.parametersRef.group", ref.group)
        c.kind("spec.parametersRef.kind", ref.kind)
        c.object_name("spec.parametersRef.name", ref.name)
        c.namespace("spec.parametersRef.namespace", ref.namespace)


# --- Gateway (SPEC.md §3) ---------------------------------------------------------------

_NO_TLS_PROTOCOLS: Final = (ProtocolType.HTTP, ProtocolType.TCP, ProtocolType.UDP)


def _listener(c: Checker, field: str, listener: model.Listener) -> None:
    c.section_name(f"{field}.name", listener.name)
    c.hostname(f"{field}.hostname", listener.hostname)
    c.port(f"{field}.port", listener.port)
    c.pattern(
        f"{field}.protocol",
        listener.protocol,
        1,
        255,
        PROTOCOL,
        "a protocol name such as TLS, or a domain-prefixed name",
    )
    protocol, tls = listener.protocol, listener.tls
    # CEL rules of the Listener type (SPEC.md §3.1 rules 1-4).
    if protocol in _NO_TLS_PROTOCOLS and tls is not None:
        c.add(
            f"{field}.tls",
            "FieldValueForbidden",
            f"Forbidden: tls must not be specified for protocol {protocol}",
        )
    if protocol in (ProtocolType.TCP, ProtocolType.UDP) and listener.hostname:
        c.add(
            f"{field}.hostname",
            "FieldValueForbidden",
            f"Forbidden: hostname must not be specified for protocol {protocol}",
        )
    if protocol == ProtocolType.TLS and tls is None:
        c.required(
            f"{field}.tls", "Required value: tls (with a mode) must be specified for protocol TLS"
        )
    if tls is not None:
        c.enum(f"{field}.tls.mode", tls.mode, tuple(TLSMode))
        if protocol == ProtocolType.HTTPS and tls.mode != TLSMode.TERMINATE:
            c.invalid(f"{field}.tls.mode", tls.mode, "must be Terminate for protocol HTTPS")
        if tls.mode == TLSMode.TERMINATE and not tls.certificate_refs and not tls.options:
            c.required(
                f"{field}.tls.certificateRefs",
                "Required value: certificateRefs or options must be specified "
                "when mode is Terminate",
            )
        c.items(f"{field}.tls.certificateRefs", tls.certificate_refs, 0, 64)
        for i, ref in enumerate(tls.certificate_refs or ()):
            secret_ref(c, f"{field}.tls.certificateRefs[{i}]", ref)
        c.string_map(f"{field}.tls.options", tls.options, 16, 4096)
        alpn = (tls.options or {}).get(ALPN_OPTION)
        if alpn is not None:
            option = f"{field}.tls.options[{ALPN_OPTION}]"
            if tls.mode != TLSMode.TERMINATE:
                c.invalid(option, alpn, "ALPN is negotiated by Terminate listeners only")
            elif (problem := alpn_problem(alpn)) is not None:
                c.invalid(option, alpn, problem)
    allowed = listener.allowed_routes
    c.enum(
        f"{field}.allowedRoutes.namespaces.from",
        allowed.namespaces.from_,
        (FromNamespaces.ALL, FromNamespaces.SELECTOR, FromNamespaces.SAME),
    )
    selector(c, f"{field}.allowedRoutes.namespaces.selector", allowed.namespaces.selector)
    c.items(f"{field}.allowedRoutes.kinds", allowed.kinds, 0, 8)
    for i, rgk in enumerate(allowed.kinds or ()):
        c.group(f"{field}.allowedRoutes.kinds[{i}].group", rgk.group)
        c.kind(f"{field}.allowedRoutes.kinds[{i}].kind", rgk.kind)


def admit_gateway(c: Checker, doc: model.Gateway) -> None:
    spec = doc.spec
    c.object_name("spec.gatewayClassName", spec.gateway_class_name)
    c.items("spec.listeners", spec.listeners, 1, 64)
    for i, listener in enumerate(spec.listeners):
        _listener(c, f"spec.listeners[{i}]", listener)
    c.unique("spec.listeners", (lst.name for lst in spec.listeners), "listener name")
    # (port, protocol, hostname) must be unique; an unset hostname equals an empty one.
    c.unique(
        "spec.listeners",
        ((lst.port, lst.protocol, lst.hostname or "") for lst in spec.listeners),
        "(port, protocol, hostname)",
    )
    c.items("spec.addresses", spec.addresses, 0, 16)
    for i, address in enumerate(spec.addresses or ()):
        field = f"spec.addresses[{i}]"
        c.pattern(
            f"{field}.type",
            address.type,
            1,
            253,
            ADDRESS_TYPE,
            "IPAddress, Hostname, NamedAddress or a domain-prefixed type",
        )
        if address.value is None:
            continue
        c.length(f"{field}.value", address.value, 0, 253)
        if address.type == "IPAddress" and address.value and not _is_ip(address.value):
            c.invalid(f"{field}.value", address.value, "must be an IP address")
        if address.type == "Hostname" and address.value:
            c.hostname(f"{field}.value", address.value)
    c.unique(
        "spec.addresses",
        (
            (a.type, a.value)
            for a in spec.addresses or ()
            if a.type in ("IPAddress", "Hostname") and a.value
        ),
        "address",
    )
    if (infra := spec.infrastructure) is not None:
        c.string_map("spec.infrastructure.labels", infra.labels, 8, 63, LABEL_VALUE)
        c.string_map("spec.infrastructure.annotations", infra.annotations, 16, 4096)
        if (ref := infra.parameters_ref) is not None:
            c.group("spec.infrastructure.parametersRef.group", ref.group)
            c.kind("spec.infrastructure.parametersRef.kind", ref.kind)
            c.object_name("spec.infrastructure.parametersRef.name", ref.name)
    if spec.allowed_listeners is not None:
        c.enum(
            "spec.allowedListeners.namespaces.from",
            spec.allowed_listeners.namespaces.from_,
            tuple(FromNamespaces),
        )
    c.enum("spec.defaultScope", spec.default_scope, ("All", "None"))
    if spec.tls is not None:
        if spec.tls.backend is not None and spec.tls.backend.client_certificate_ref:
            secret_ref(
                c, "spec.tls.backend.clientCertificateRef", spec.tls.backend.client_certificate_ref
            )
        if (frontend := spec.tls.frontend) is not None:
            _frontend_tls(c, "spec.tls.frontend.default", frontend.default)
            c.items("spec.tls.frontend.perPort", frontend.per_port, 0, 64)
            for i, per_port in enumerate(frontend.per_port or ()):
                c.port(f"spec.tls.frontend.perPort[{i}].port", per_port.port)
                _frontend_tls(c, f"spec.tls.frontend.perPort[{i}].tls", per_port.tls)
            c.unique("spec.tls.frontend.perPort", (p.port for p in frontend.per_port or ()), "port")


def _frontend_tls(c: Checker, field: str, config: model.TLSConfig) -> None:
    validation = config.validation
    if validation is None:
        return
    c.items(f"{field}.validation.caCertificateRefs", validation.ca_certificate_refs, 1, 16)
    for i, ref in enumerate(validation.ca_certificate_refs):
        path = f"{field}.validation.caCertificateRefs[{i}]"
        c.group(f"{path}.group", ref.group)
        c.kind(f"{path}.kind", ref.kind)
        c.object_name(f"{path}.name", ref.name)
        c.namespace(f"{path}.namespace", ref.namespace)
    c.enum(f"{field}.validation.mode", validation.mode, tuple(FrontendValidationMode))


def _is_ip(value: str) -> bool:
    return ip_version(value) is not None


# --- TLSRoute (SPEC.md §5.1) ------------------------------------------------------------


def admit_tls_route(c: Checker, doc: model.TLSRoute) -> None:
    spec = doc.spec
    c.items("spec.parentRefs", spec.parent_refs, 0, 32)
    for i, ref in enumerate(spec.parent_refs or ()):
        field = f"spec.parentRefs[{i}]"
        c.group(f"{field}.group", ref.group)
        c.kind(f"{field}.kind", ref.kind)
        c.namespace(f"{field}.namespace", ref.namespace)
        c.object_name(f"{field}.name", ref.name)
        c.section_name(f"{field}.sectionName", ref.section_name)
        c.port(f"{field}.port", ref.port)
    _parent_ref_sections(c, doc)
    c.items("spec.hostnames", spec.hostnames, 1, 1024)
    for i, hostname in enumerate(spec.hostnames or ()):
        c.hostname(f"spec.hostnames[{i}]", hostname)
        if _is_ip(hostname):
            c.invalid(f"spec.hostnames[{i}]", hostname, "must not be an IP address")
    # v1 has exactly one rule (v1alpha2 allowed 16; such routes cannot be converted).
    c.items("spec.rules", spec.rules, 1, 1)
    for i, rule in enumerate(spec.rules):
        c.section_name(f"spec.rules[{i}].name", rule.name)
        c.items(f"spec.rules[{i}].backendRefs", rule.backend_refs, 1, 16)
        for j, backend in enumerate(rule.backend_refs):
            field = f"spec.rules[{i}].backendRefs[{j}]"
            c.group(f"{field}.group", backend.group)
            c.kind(f"{field}.kind", backend.kind)
            c.object_name(f"{field}.name", backend.name)
            c.namespace(f"{field}.namespace", backend.namespace)
            c.port(f"{field}.port", backend.port)
            if backend.group == "" and backend.kind == "Service" and backend.port is None:
                c.required(
                    f"{field}.port",
                    "Required value: port is required when the backend is a Service",
                )
            if not 0 <= backend.weight <= 1_000_000:
                c.invalid(
                    f"{field}.weight", backend.weight, "must be between 0 and 1000000, inclusive"
                )
    c.enum("spec.useDefaultGateways", spec.use_default_gateways, ("All", "None"))


def _parent_ref_sections(c: Checker, doc: model.TLSRoute) -> None:
    """CEL on CommonRouteSpec.parentRefs: refs to one parent either all set sectionName or
    none do, and the sectionNames are distinct (an unset namespace equals the route's)."""
    refs = doc.spec.parent_refs or ()
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for i, ref in enumerate(refs):
        parent = (ref.group, ref.kind, ref.namespace or doc.metadata.namespace or "", ref.name)
        groups.setdefault(parent, []).append(i)
    for indices in groups.values():
        if len(indices) < 2:
            continue
        with_section = [i for i in indices if refs[i].section_name]
        if with_section and len(with_section) != len(indices):
            first = next(i for i in indices if not refs[i].section_name)
            c.invalid(
                f"spec.parentRefs[{first}].sectionName",
                None,
                "sectionName must be specified when parentRefs includes 2 or more "
                "references to the same parent",
            )
        counts = Counter((refs[i].section_name, refs[i].port) for i in with_section)
        for i in with_section:
            key = (refs[i].section_name, refs[i].port)
            if counts[key] > 1:
                c.add(
                    f"spec.parentRefs[{i}].sectionName",
                    "FieldValueDuplicate",
                    f"Duplicate value: {show_value(refs[i].section_name)}: sectionName must be "
                    "unique when parentRefs includes 2 or more references to the same "
                    "parent",
                )
                counts[key] = 0  # report each duplicate once


# --- ReferenceGrant (SPEC.md §6) and BackendTLSPolicy (§7) -------------------------------


def admit_reference_grant(c: Checker, doc: model.ReferenceGrant) -> None:
    c.items("spec.from", doc.spec.from_, 1, 16)
    for i, source in enumerate(doc.spec.from_):
        c.group(f"spec.from[{i}].group", source.group)
        c.kind(f"spec.from[{i}].kind", source.kind)
        c.namespace(f"spec.from[{i}].namespace", source.namespace)
    c.items("spec.to", doc.spec.to, 1, 16)
    for i, target in enumerate(doc.spec.to):
        c.group(f"spec.to[{i}].group", target.group)
        c.kind(f"spec.to[{i}].kind", target.kind)
        if target.name:
            c.object_name(f"spec.to[{i}].name", target.name)


def admit_backend_tls_policy(c: Checker, doc: model.BackendTLSPolicy) -> None:
    spec = doc.spec
    target_refs(c, spec.target_refs)
    validation = spec.validation
    c.hostname("spec.validation.hostname", validation.hostname, wildcard=False)
    has_refs = bool(validation.ca_certificate_refs)
    if has_refs == (validation.well_known_ca_certificates is not None):
        c.invalid(
            "spec.validation",
            None,
            "exactly one of caCertificateRefs or wellKnownCACertificates must be specified",
        )
    c.items("spec.validation.caCertificateRefs", validation.ca_certificate_refs, 0, 8)
    for i, lref in enumerate(validation.ca_certificate_refs or ()):
        c.group(f"spec.validation.caCertificateRefs[{i}].group", lref.group)
        c.kind(f"spec.validation.caCertificateRefs[{i}].kind", lref.kind)
        c.object_name(f"spec.validation.caCertificateRefs[{i}].name", lref.name)
    c.enum(
        "spec.validation.wellKnownCACertificates",
        validation.well_known_ca_certificates,
        ("System",),
    )
    c.items("spec.validation.subjectAltNames", validation.subject_alt_names, 0, 5)
    for i, san in enumerate(validation.subject_alt_names or ()):
        field = f"spec.validation.subjectAltNames[{i}]"
        c.enum(f"{field}.type", san.type, ("Hostname", "URI"))
        if san.type == "Hostname":
            if not san.hostname:
                c.required(
                    f"{field}.hostname",
                    "Required value: hostname must be specified when type is Hostname",
                )
            c.hostname(f"{field}.hostname", san.hostname)
        if san.type == "URI" and not san.uri:
            c.required(f"{field}.uri", "Required value: uri must be specified when type is URI")
    c.string_map("spec.options", spec.options, 16, 4096)


# --- core kinds -------------------------------------------------------------------------
