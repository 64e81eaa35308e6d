"""Admission: the schema and CEL rules Kubernetes would enforce before storing a document.

Pure. `admit(doc)` runs after defaulting and returns one `Cause` per violation, each naming the
field by its wire path and the bad value in its message (API.md "Errors"). The rules are those of
SPEC.md §1 (scalar types), §3.1-§3.3 (Gateway), §5.1 (TLSRoute), §6 (ReferenceGrant) and §7
(BackendTLSPolicy), plus the core-kind checks the Kubernetes API server makes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final

from attrs import frozen

from gateway.api import corev1, model


@frozen
class Cause:
    """One reason a document was refused, as a Kubernetes StatusCause."""

    field: str
    reason: str
    message: str


_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN: Final = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_DNS1123_LABEL: Final = re.compile(rf"^{_LABEL}$")
_HOSTNAME: Final = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")
_GROUP: Final = re.compile(rf"^$|^{_LABEL}(\.{_LABEL})*$")
_KIND: Final = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
_CONTROLLER: Final = re.compile(rf"^{_LABEL}(\.{_LABEL})*/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")
_PROTOCOL: Final = re.compile(
    rf"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|^{_LABEL}(\.{_LABEL})*/[a-zA-Z0-9]+$"
)
_QUALIFIED_NAME: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE: Final = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ADDRESS_TYPE: Final = re.compile(
    rf"^Hostname|IPAddress|NamedAddress$|^{_LABEL}(\.{_LABEL})*/[a-zA-Z0-9]+$"
)
_IANA_SVC_NAME: Final = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def show_value(value: object, limit: int = 120) -> str:
    """`value` as JSON for an error message, at most about `limit` characters. Rendering stops
    once the limit is reached: a value can be huge (a big body, YAML aliases), and a message
    must never cost more than its own length to build."""
    parts: list[str] = []
    budget = limit

    def emit(text: str) -> bool:
        nonlocal budget
        parts.append(text)
        budget -= len(text)
        return budget > 0

    def walk(item: object) -> bool:
        if isinstance(item, dict):
            if not emit("{"):
                return False
            for index, (key, child) in enumerate(item.items()):
                text = ("," if index else "") + json.dumps(str(key)) + ":"
                if not emit(text) or not walk(child):
                    return False
            return emit("}")
        if isinstance(item, list | tuple):
            if not emit("["):
                return False
            for index, child in enumerate(item):
                if (index and not emit(",")) or not walk(child):
                    return False
            return emit("]")
        if isinstance(item, str) and len(item) > limit:
            item = item[:limit]
        return emit(json.dumps(item, default=str))

    if walk(value):
        return "".join(parts)
    return "".join(parts)[: max(limit - 3, 0)] + "..."


class _Checker:
    """Collects causes; each helper checks one rule at one wire path."""

    def __init__(self) -> None:
        self.causes: list[Cause] = []

    def add(self, field: str, reason: str, message: str) -> None:
        self.causes.append(Cause(field, reason, message))

    def invalid(self, field: str, value: object, detail: str) -> None:
        self.add(field, "FieldValueInvalid", f"Invalid value: {show_value(value)}: {detail}")

    def required(self, field: str, detail: str = "Required value") -> None:
        self.add(field, "FieldValueRequired", detail)

    def enum(self, field: str, value: str | None, allowed: Sequence[str]) -> None:
        if value is not None and value not in allowed:
            self.add(
                field,
                "FieldValueNotSupported",
                f"Unsupported value: {show_value(value)}: supported values: "
                + ", ".join(show_value(a) for a in allowed),
            )

    def length(self, field: str, value: str, low: int, high: int) -> bool:
        if len(value) > high:
            self.add(
                field,
                "FieldValueTooLong",
                f"Too long: {show_value(value)} has {len(value)} characters, "
                f"may not be more than {high}",
            )
            return False
        if len(value) < low:
            self.invalid(field, value, f"must be at least {low} characters long")
            return False
        return True

    def pattern(
        self, field: str, value: str | None, low: int, high: int, regex: re.Pattern[str], what: str
    ) -> None:
        if value is None or not self.length(field, value, low, high):
            return
        if not regex.match(value):
            self.invalid(field, value, f"must be {what}")

    def items(self, field: str, values: Sequence[object] | None, low: int, high: int) -> None:
        count = len(values or ())
        if values is None and low > 0:
            self.required(field)
        elif count > high:
            self.add(
                field, "FieldValueTooMany", f"Too many: {count}: must have at most {high} items"
            )
        elif count < low:
            self.invalid(
                field,
                list(values or ()),
                f"must have at least {low} item" + ("s" if low > 1 else ""),
            )

    def port(self, field: str, value: int | None) -> None:
        if value is not None and not 1 <= value <= 65535:
            self.invalid(field, value, "must be between 1 and 65535, inclusive")

    def unique(self, field: str, values: Iterable[object], shown: str) -> None:
        seen: set[object] = set()
        for index, value in enumerate(values):
            if value in seen:
                self.add(
                    f"{field}[{index}]",
                    "FieldValueDuplicate",
                    f"Duplicate value: {shown} {show_value(value)} must be unique",
                )
            seen.add(value)

    # --- Gateway API scalar types (SPEC.md §1) -------------------------------------------

    def hostname(self, field: str, value: str | None, *, wildcard: bool = True) -> None:
        if value is None or not self.length(field, value, 1, 253):
            return
        if not _HOSTNAME.match(value):
            detail = (
                "must be a lower-case DNS name, where a wildcard may only be a leading '*.' label"
                if wildcard
                else "must be a lower-case DNS name"
            )
            self.invalid(field, value, detail)
        elif value.startswith("*.") and not wildcard:
            self.invalid(field, value, "must be a precise hostname: no wildcard is allowed")

    def group(self, field: str, value: str | None) -> None:
        self.pattern(field, value, 0, 253, _GROUP, "an API group: a lower-case DNS name or ''")

    def kind(self, field: str, value: str | None) -> None:
        self.pattern(field, value, 1, 63, _KIND, "a kind: letters, digits and '-'")

    def object_name(self, field: str, value: str | None) -> None:
        if value is not None:
            self.length(field, value, 1, 253)

    def namespace(self, field: str, value: str | None) -> None:
        self.pattern(field, value, 1, 63, _DNS1123_LABEL, "an RFC 1123 label")

    def section_name(self, field: str, value: str | None) -> None:
        self.pattern(field, value, 1, 253, _DNS1123_SUBDOMAIN, "a lower-case DNS name")

    def string_map(
        self,
        field: str,
        values: dict[str, str] | None,
        high: int,
        value_max: int,
        value_regex: re.Pattern[str] | None = None,
    ) -> None:
        if values is None:
            return
        if len(values) > high:
            self.add(
                field,
                "FieldValueTooMany",
                f"Too many: {len(values)}: must have at most {high} items",
            )
        for key, value in values.items():
            self.qualified_name(f"{field}[{key}]", key)
            if len(value) > value_max:
                self.add(
                    f"{field}[{key}]",
                    "FieldValueTooLong",
                    f"Too long: may not be more than {value_max} characters",
                )
            elif value_regex is not None and not value_regex.match(value):
                self.invalid(
                    f"{field}[{key}]",
                    value,
                    "must be empty or start and end with a letter or digit",
                )

    def qualified_name(self, field: str, key: str) -> None:
        prefix, _, name = key.rpartition("/")
        if "/" in key and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
            self.invalid(field, key, "the prefix must be a lower-case DNS name")
        elif not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
            self.invalid(
                field,
                key,
                "must be a qualified name of at most 63 characters "
                "(letters, digits, '-', '_', '.'), with an optional "
                "DNS prefix and '/'",
            )


# --- metadata ---------------------------------------------------------------------------


def _metadata(c: _Checker, meta: model.ObjectMeta, *, label_name: bool) -> None:
    if label_name:
        c.pattern("metadata.name", meta.name, 1, 63, _DNS1123_LABEL, "an RFC 1123 label")
    else:
        c.pattern(
            "metadata.name",
            meta.name,
            1,
            253,
            _DNS1123_SUBDOMAIN,
            "a lower-case RFC 1123 subdomain",
        )
    c.namespace("metadata.namespace", meta.namespace)
    c.string_map("metadata.labels", meta.labels, 10_000, 63, _LABEL_VALUE)
    c.string_map("metadata.annotations", meta.annotations, 10_000, 262_144)


def _selector(c: _Checker, field: str, selector: model.LabelSelector | None) -> None:
    if selector is None:
        return
    c.string_map(f"{field}.matchLabels", selector.match_labels, 10_000, 63, _LABEL_VALUE)
    for i, req in enumerate(selector.match_expressions or ()):
        path = f"{field}.matchExpressions[{i}]"
        c.qualified_name(f"{path}.key", req.key)
        c.enum(f"{path}.operator", req.operator, ("In", "NotIn", "Exists", "DoesNotExist"))
        if req.operator in ("In", "NotIn") and not req.values:
            c.required(f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'")
        if req.operator in ("Exists", "DoesNotExist") and req.values:
            c.invalid(
                f"{path}.values",
                list(req.values),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )


def _secret_ref(c: _Checker, field: str, ref: model.SecretObjectReference) -> None:
    c.group(f"{field}.group", ref.group)
    c.kind(f"{field}.kind", ref.kind)
    c.object_name(f"{field}.name", ref.name)
    c.namespace(f"{field}.namespace", ref.namespace)


# --- GatewayClass (SPEC.md §2) ----------------------------------------------------------


def _gateway_class(c: _Checker, doc: model.GatewayClass) -> None:
    spec = doc.spec
    c.pattern(
        "spec.controllerName",
        spec.controller_name,
        1,
        253,
        _CONTROLLER,
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

_NO_TLS_PROTOCOLS: Final = ("HTTP", "TCP", "UDP")


def _listener(c: _Checker, field: str, listener: model.Listener) -> None:
    c.section_name(f"{field}.name", listener.name)
    c.hostname(f"{field}.hostname", listener.hostname)
    c.port(f"{field}.port", listener.port)
    c.pattern(
        f"{field}.protocol",
        listener.protocol,
        1,
        255,
        _PROTOCOL,
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
    if protocol in ("TCP", "UDP") and listener.hostname:
        c.add(
            f"{field}.hostname",
            "FieldValueForbidden",
            f"Forbidden: hostname must not be specified for protocol {protocol}",
        )
    if protocol == "TLS" and tls is None:
        c.required(
            f"{field}.tls", "Required value: tls (with a mode) must be specified for protocol TLS"
        )
    if tls is not None:
        c.enum(f"{field}.tls.mode", tls.mode, ("Terminate", "Passthrough"))
        if protocol == "HTTPS" and tls.mode != "Terminate":
            c.invalid(f"{field}.tls.mode", tls.mode, "must be Terminate for protocol HTTPS")
        if tls.mode == "Terminate" and not tls.certificate_refs and not tls.options:
            c.required(
                f"{field}.tls.certificateRefs",
                "Required value: certificateRefs or options must be specified "
                "when mode is Terminate",
            )
        c.items(f"{field}.tls.certificateRefs", tls.certificate_refs, 0, 64)
        for i, ref in enumerate(tls.certificate_refs or ()):
            _secret_ref(c, f"{field}.tls.certificateRefs[{i}]", ref)
        c.string_map(f"{field}.tls.options", tls.options, 16, 4096)
    allowed = listener.allowed_routes
    c.enum(
        f"{field}.allowedRoutes.namespaces.from",
        allowed.namespaces.from_,
        ("All", "Selector", "Same"),
    )
    _selector(c, f"{field}.allowedRoutes.namespaces.selector", allowed.namespaces.selector)
    c.items(f"{field}.allowedRoutes.kinds", allowed.kinds, 0, 8)
    for i, rgk in enumerate(allowed.kinds or ()):
        c.group(f"{field}.allowedRoutes.kinds[{i}].group", rgk.group)
        c.kind(f"{field}.allowedRoutes.kinds[{i}].kind", rgk.kind)


def _gateway(c: _Checker, doc: model.Gateway) -> None:
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
            _ADDRESS_TYPE,
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
        c.string_map("spec.infrastructure.labels", infra.labels, 8, 63, _LABEL_VALUE)
        c.string_map("spec.infrastructure.annotations", infra.annotations, 16, 4096)
        if (ref := infra.parameters_ref) is not None:
            c.group("spec.infrastructure.parametersRef.group", ref.group)
            c.kind("spec.infrastructure.parametersRef.kind", ref.kind)
            c.object_name("spec.infrastructure.parametersRef.name", ref.name)
    if spec.allowed_listeners is not None:
        c.enum(
            "spec.allowedListeners.namespaces.from",
            spec.allowed_listeners.namespaces.from_,
            ("All", "Selector", "Same", "None"),
        )
    c.enum("spec.defaultScope", spec.default_scope, ("All", "None"))
    if spec.tls is not None:
        if spec.tls.backend is not None and spec.tls.backend.client_certificate_ref:
            _secret_ref(
                c, "spec.tls.backend.clientCertificateRef", spec.tls.backend.client_certificate_ref
            )
        if (frontend := spec.tls.frontend) is not None:
            _frontend_tls(c, "spec.tls.frontend.default", frontend.default)
            c.items("spec.tls.frontend.perPort", frontend.per_port, 0, 64)
            for i, per_port in enumerate(frontend.per_port or ()):
                c.port(f"spec.tls.frontend.perPort[{i}].port", per_port.port)
                _frontend_tls(c, f"spec.tls.frontend.perPort[{i}].tls", per_port.tls)
            c.unique("spec.tls.frontend.perPort", (p.port for p in frontend.per_port or ()), "port")


def _frontend_tls(c: _Checker, field: str, config: model.TLSConfig) -> None:
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
    c.enum(f"{field}.validation.mode", validation.mode, ("AllowValidOnly", "AllowInsecureFallback"))


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


# --- TLSRoute (SPEC.md §5.1) ------------------------------------------------------------


def _tls_route(c: _Checker, doc: model.TLSRoute) -> None:
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


def _parent_ref_sections(c: _Checker, doc: model.TLSRoute) -> None:
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


def _reference_grant(c: _Checker, doc: model.ReferenceGrant) -> None:
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


def _backend_tls_policy(c: _Checker, doc: model.BackendTLSPolicy) -> None:
    spec = doc.spec
    c.items("spec.targetRefs", spec.target_refs, 1, 16)
    for i, ref in enumerate(spec.target_refs):
        c.group(f"spec.targetRefs[{i}].group", ref.group)
        c.kind(f"spec.targetRefs[{i}].kind", ref.kind)
        c.object_name(f"spec.targetRefs[{i}].name", ref.name)
        c.section_name(f"spec.targetRefs[{i}].sectionName", ref.section_name)
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


def _service(c: _Checker, doc: corev1.Service) -> None:
    ports = doc.spec.ports or ()
    for i, port in enumerate(ports):
        c.port(f"spec.ports[{i}].port", port.port)
        if port.name is not None:
            c.pattern(
                f"spec.ports[{i}].name", port.name, 1, 63, _DNS1123_LABEL, "an RFC 1123 label"
            )
        target = port.target_port
        if isinstance(target, int):
            c.port(f"spec.ports[{i}].targetPort", target)
        elif target is not None:
            c.pattern(
                f"spec.ports[{i}].targetPort",
                target,
                1,
                15,
                _IANA_SVC_NAME,
                "a port number or an IANA service name (lower case, with a letter)",
            )
    if len(ports) > 1:
        for i, port in enumerate(ports):
            if not port.name:
                c.required(
                    f"spec.ports[{i}].name",
                    "Required value: ports must be named when there are several",
                )
    c.unique("spec.ports", (p.name for p in ports if p.name), "port name")


_ADDRESS_TYPES: Final = ("IPv4", "IPv6", "FQDN")


def _endpoint_slice(c: _Checker, doc: corev1.EndpointSlice) -> None:
    c.enum("addressType", doc.address_type, _ADDRESS_TYPES)
    for i, endpoint in enumerate(doc.endpoints or ()):
        c.items(f"endpoints[{i}].addresses", endpoint.addresses, 1, 100)
        for j, address in enumerate(endpoint.addresses):
            field = f"endpoints[{i}].addresses[{j}]"
            if doc.address_type == "FQDN":
                c.pattern(field, address, 1, 253, _DNS1123_SUBDOMAIN, "a lower-case DNS name")
            elif doc.address_type in ("IPv4", "IPv6"):
                version = 4 if doc.address_type == "IPv4" else 6
                try:
                    ok = ipaddress.ip_address(address).version == version
                except ValueError:
                    ok = False
                if not ok:
                    c.invalid(field, address, f"must be an {doc.address_type} address")
    for i, port in enumerate(doc.ports or ()):
        if port.port is not None and not 0 <= port.port <= 65535:
            c.invalid(f"ports[{i}].port", port.port, "must be between 0 and 65535, inclusive")


def _data_keys(c: _Checker, field: str, data: dict[str, str] | None) -> None:
    for key in data or {}:
        if not key or len(key) > 253 or not re.match(r"^[-._a-zA-Z0-9]+$", key):
            c.invalid(
                f"{field}[{key}]",
                key,
                "a valid key must consist of alphanumeric characters, '-', '_' or '.'",
            )


def _secret(c: _Checker, doc: corev1.Secret) -> None:
    _data_keys(c, "data", doc.data)
    for key, value in (doc.data or {}).items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            c.invalid(
                f"data[{key}]", "<value>", "must be base64-encoded (use stringData for plain text)"
            )


def admit(doc: object) -> list[Cause]:
    """Every admission rule violated by a structured, defaulted document."""
    c = _Checker()
    meta = getattr(doc, "metadata", None)
    if isinstance(meta, model.ObjectMeta):
        _metadata(c, meta, label_name=isinstance(doc, corev1.Namespace))
    match doc:
        case model.GatewayClass():
            _gateway_class(c, doc)
        case model.Gateway():
            _gateway(c, doc)
        case model.TLSRoute():
            _tls_route(c, doc)
        case model.ReferenceGrant():
            _reference_grant(c, doc)
        case model.BackendTLSPolicy():
            _backend_tls_policy(c, doc)
        case corev1.Service():
            _service(c, doc)
        case corev1.EndpointSlice():
            _endpoint_slice(c, doc)
        case corev1.Secret():
            _secret(c, doc)
        case corev1.ConfigMap():
            _data_keys(c, "data", doc.data)
    return c.causes
