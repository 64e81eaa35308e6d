"""Runtime facts: what the I/O edges learned that status must report (ARCHITECTURE.md).

Pure data. The data plane reports bind failures; loading each Secret and CA bundle says
whether it is usable (`gateway.store.facts`); `translate` turns them into `PortUnavailable`,
`InvalidCertificateRef`, ... The clock comes in here too, read once per build.
"""

from __future__ import annotations

from collections.abc import Mapping

from attrs import Factory, frozen

from gateway.api.kinds import ObjectKey
from gateway.api.names import NamespacedName
from gateway.api.status import Status


@frozen
class LoadResult:
    """Whether a Secret (certificate and key) or a CA bundle could be loaded, and if not, why
    (worded without key material)."""

    ok: bool
    message: str = ""


@frozen(kw_only=True)
class Facts:
    #: RFC 3339 time stamped on conditions whose status changes in this build.
    now: str
    #: Where listeners bind when a Gateway has no `spec.addresses` (API.md `--bind-address`).
    bind_address: str = "0.0.0.0"
    #: (address, port) -> the error the last bind attempt gave.
    bind_failures: Mapping[tuple[str, int], str] = Factory(dict)
    #: Secret -> did its tls.crt/tls.key load.
    secrets: Mapping[NamespacedName, LoadResult] = Factory(dict)
    #: ConfigMap -> did its ca.crt load.
    ca_bundles: Mapping[NamespacedName, LoadResult] = Factory(dict)
    #: The statuses of the previous build, to keep lastTransitionTime (SPEC.md §12).
    previous: Mapping[ObjectKey, Status] = Factory(dict)
