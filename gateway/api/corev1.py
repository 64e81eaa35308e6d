"""The core Kubernetes kinds tlsgate consumes (API.md "Documents", SPEC.md §7).

Pure. Only the fields tlsgate reads are modelled; `convert` ignores the rest of a core object's
spec (as a consumer, not the owner, of these kinds), while the Gateway API kinds are strict.
"""

from __future__ import annotations

import base64
import binascii

from attrs import frozen

from gateway.api.model import ObjectMeta


@frozen(kw_only=True)
class ServicePort:
    name: str | None = None
    protocol: str | None = None
    app_protocol: str | None = None
    port: int
    # IntOrString: a number, or the name of an EndpointSlice port (API.md).
    target_port: int | str | None = None


@frozen(kw_only=True)
class ServiceSpec:
    type: str | None = None
    ports: tuple[ServicePort, ...] | None = None
    selector: dict[str, str] | None = None
    external_name: str | None = None


@frozen(kw_only=True)
class Service:
    api_version: str
    kind: str = "Service"
    metadata: ObjectMeta
    spec: ServiceSpec


@frozen(kw_only=True)
class EndpointConditions:
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


@frozen(kw_only=True)
class Endpoint:
    addresses: tuple[str, ...]
    conditions: EndpointConditions | None = None
    hostname: str | None = None


@frozen(kw_only=True)
class EndpointPort:
    name: str | None = None
    protocol: str | None = None
    port: int | None = None
    app_protocol: str | None = None


@frozen(kw_only=True)
class EndpointSlice:
    api_version: str
    kind: str = "EndpointSlice"
    metadata: ObjectMeta
    address_type: str
    endpoints: tuple[Endpoint, ...] | None = None
    ports: tuple[EndpointPort, ...] | None = None


@frozen(kw_only=True)
class Secret:
    """`stringData` is folded into `data` (base64) on admission, as Kubernetes does."""

    api_version: str
    kind: str = "Secret"
    metadata: ObjectMeta
    type: str | None = None
    data: dict[str, str] | None = None
    string_data: dict[str, str] | None = None


@frozen(kw_only=True)
class ConfigMap:
    api_version: str
    kind: str = "ConfigMap"
    metadata: ObjectMeta
    data: dict[str, str] | None = None


@frozen(kw_only=True)
class Namespace:
    api_version: str
    kind: str = "Namespace"
    metadata: ObjectMeta


def secret_bytes(secret: Secret, key: str) -> bytes | None:
    """The decoded value of `data[key]`, or None when absent or not base64."""
    value = (secret.data or {}).get(key)
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
