"""Admission of the core kinds tlsgate consumes: the checks the Kubernetes API server makes
on Services, EndpointSlices, Secrets and ConfigMaps (API.md "Documents").

Pure.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from gateway.api import corev1
from gateway.api.admission_checks import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    IANA_SVC_NAME,
    Checker,
)
from gateway.api.names import ip_version


def admit_service(c: Checker, doc: corev1.Service) -> None:
    ports = doc.spec.ports or ()
    for i, port in enumerate(ports):
        c.port(f"spec.ports[{i}].port", port.port)
        if port.name is not None:
            c.pattern(f"spec.ports[{i}].name", port.name, 1, 63, DNS1123_LABEL, "an RFC 1123 label")
        target = port.target_port
        if isinstance(target, int):
            c.port(f"spec.ports[{i}].targetPort", target)
        elif target is not None:
            c.pattern(
                f"spec.ports[{i}].targetPort",
                target,
                1,
                15,
                IANA_SVC_NAME,
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


def admit_endpoint_slice(c: Checker, doc: corev1.EndpointSlice) -> None:
    c.enum("addressType", doc.address_type, _ADDRESS_TYPES)
    for i, endpoint in enumerate(doc.endpoints or ()):
        c.items(f"endpoints[{i}].addresses", endpoint.addresses, 1, 100)
        for j, address in enumerate(endpoint.addresses):
            field = f"endpoints[{i}].addresses[{j}]"
            if doc.address_type == "FQDN":
                c.pattern(field, address, 1, 253, DNS1123_SUBDOMAIN, "a lower-case DNS name")
            elif doc.address_type in ("IPv4", "IPv6"):
                version = 4 if doc.address_type == "IPv4" else 6
                if ip_version(address) != version:
                    c.invalid(field, address, f"must be an {doc.address_type} address")
    for i, port in enumerate(doc.ports or ()):
        if port.port is not None and not 0 <= port.port <= 65535:
            c.invalid(f"ports[{i}].port", port.port, "must be between 0 and 65535, inclusive")


def data_keys(c: Checker, field: str, data: dict[str, str] | None) -> None:
    for key in data or {}:
        if not key or len(key) > 253 or not re.match(r"^[-._a-zA-Z0-9]+$", key):
            c.invalid(
                f"{field}[{key}]",
                key,
                "a valid key must consist of alphanumeric characters, '-', '_' or '.'",
            )


def admit_secret(c: Checker, doc: corev1.Secret) -> None:
    data_keys(c, "data", doc.data)
    for key, value in (doc.data or {}).items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            c.invalid(
                f"data[{key}]", "<value>", "must be base64-encoded (use stringData for plain text)"
            )
