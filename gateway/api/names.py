"""The shared vocabulary: how objects are named, the time format, and the spec's enumerated
values (SPEC.md §3, §5; k8s.io/apimachinery LabelSelector).

Pure. Model fields stay `str`, since a document may carry any string and admission says which
values are allowed; code compares them against these enums, so a typo is a NameError.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from enum import StrEnum
from typing import Final, NamedTuple

#: RFC 3339 in UTC, to the second: creationTimestamp, lastTransitionTime, `--now`.
RFC3339: Final = "%Y-%m-%dT%H:%M:%SZ"


class NamespacedName(NamedTuple):
    """A namespaced object's namespace and name ('' namespace: cluster-scoped). A tuple, so
    it sorts and hashes as one; written `namespace/name` as Kubernetes writes it."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


#: `new_tuple(NamespacedName, (namespace, name))` is `NamespacedName(namespace, name)` without
#: the frame of the generated `__new__`: for the loops of a build that make one per document.
new_tuple = tuple.__new__


class TLSMode(StrEnum):
    """Listener `tls.mode` (SPEC.md §3.1)."""

    TERMINATE = "Terminate"
    PASSTHROUGH = "Passthrough"


class ProtocolType(StrEnum):
    """The listener protocols admission knows; tlsgate serves TLS only (SPEC.md §9.1)."""

    TLS = "TLS"
    TCP = "TCP"
    UDP = "UDP"
    HTTP = "HTTP"
    HTTPS = "HTTPS"


class FromNamespaces(StrEnum):
    """`allowedRoutes.namespaces.from` (SPEC.md §3.2) and `allowedListeners.namespaces.from`."""

    ALL = "All"
    SELECTOR = "Selector"
    SAME = "Same"
    NONE = "None"


class SelectorOperator(StrEnum):
    """LabelSelectorRequirement operators (k8s.io/apimachinery metav1)."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class FrontendValidationMode(StrEnum):
    """`frontendValidation.mode` (SPEC.md §3.3)."""

    ALLOW_VALID_ONLY = "AllowValidOnly"
    ALLOW_INSECURE_FALLBACK = "AllowInsecureFallback"


@functools.lru_cache(maxsize=65536)
def ip_version(address: str) -> int | None:
    """4 or 6 for an IP address, None for anything else. Cached: a bundle of 10,000
    EndpointSlices names a handful of distinct addresses, and a failed parse raises. Used by
    admission and by the routing table's endpoints."""
    if ":" not in address and not address.replace(".", "").isdigit():
        # Neither IPv6 (which always has a colon) nor dotted decimal IPv4 (the only form
        # `ipaddress` takes): a hostname, answered without a failed parse (route hostnames
        # are all distinct, so the cache does not help them).
        return None
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None


#: The Terminate listener option that lists the ALPN protocols tlsgate negotiates, comma
#: separated, in its order of preference (API.md "PostgreSQL": `postgresql` for PostgreSQL
#: 17's direct TLS). None by default: no protocol is selected.
ALPN_OPTION: Final = "gateway.tlsgate.dev/alpn"


def alpn_protocols(options: dict[str, str] | None) -> tuple[str, ...]:
    """The ALPN protocols a listener's `tls.options` name (admission checked them)."""
    text = (options or {}).get(ALPN_OPTION, "")
    return tuple(part.strip() for part in text.split(",") if part.strip())


def alpn_problem(text: str) -> str | None:
    """Why `text` is not a list of ALPN protocol names (RFC 7301 §3.1: 1 to 255 bytes), or
    None. Printable ASCII only: every registered protocol name is."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        return "must name at least one protocol"
    for part in parts:
        if not part:
            return "an empty protocol name"
        if len(part) > 255 or not all("!" <= ch <= "~" for ch in part):
            return f"{part!r} is not a protocol name (1 to 255 printable ASCII characters)"
    return None


#: GEP-2257 Duration: 1 to 4 pairs of a number (1 to 5 digits) and a unit (`1h`, `10s`,
#: `1m30s`, `500ms`).
_DURATION = re.compile(r"^(?:[0-9]{1,5}(?:h|m|s|ms)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_SECONDS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """A Gateway API duration in seconds, or None if `text` is not one (GEP-2257)."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
