"""tlsgate's own policy kinds, `gateway.tlsgate.dev/v1alpha1` (API.md "Traffic policies"):
ClientTrafficPolicy, attached to Gateways and listeners, and BackendTrafficPolicy, attached
to Services, by policy attachment (GEP-713).

Pure: the model only. Field names follow Envoy Gateway's policies of the same name where
they overlap; durations are Gateway API durations (GEP-2257: `1h`, `10s`, `500ms`).
"""

from __future__ import annotations

from attrs import frozen

from gateway.api.model import LocalPolicyTargetReferenceWithSectionName, ObjectMeta


@frozen(kw_only=True)
class ProxyProtocol:
    """Expect a PROXY protocol v1 or v2 header from peers in `trusted_cidrs`."""

    trusted_cidrs: tuple[str, ...]
    #: A trusted peer may also connect without a header (its own address stands).
    optional: bool | None = None


@frozen(kw_only=True)
class ClientIPs:
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] | None = None


@frozen(kw_only=True)
class TCPTimeout:
    idle_timeout: str | None = None


@frozen(kw_only=True)
class TLSTimeout:
    hello_timeout: str | None = None
    handshake_timeout: str | None = None


@frozen(kw_only=True)
class ClientTimeout:
    tcp: TCPTimeout | None = None
    tls: TLSTimeout | None = None


@frozen(kw_only=True)
class ConnectionLimit:
    value: int


@frozen(kw_only=True)
class PerClientLimit:
    max_connections: int | None = None
    connections_per_second: int | None = None


@frozen(kw_only=True)
class ClientConnection:
    connection_limit: ConnectionLimit | None = None
    per_client: PerClientLimit | None = None


@frozen(kw_only=True)
class ClientTrafficPolicySpec:
    target_refs: tuple[LocalPolicyTargetReferenceWithSectionName, ...]
    proxy_protocol: ProxyProtocol | None = None
    timeout: ClientTimeout | None = None
    connection: ClientConnection | None = None
    client_ips: ClientIPs | None = None


@frozen(kw_only=True)
class ClientTrafficPolicy:
    api_version: str
    kind: str = "ClientTrafficPolicy"
    metadata: ObjectMeta
    spec: ClientTrafficPolicySpec


# --- BackendTrafficPolicy: how tlsgate reaches a Service's endpoints ------------------------


@frozen(kw_only=True)
class BackendProxyProtocol:
    #: `V1` (text) or `V2` (binary, with the SNI and ALPN as TLVs).
    version: str


@frozen(kw_only=True)
class PassiveHealthCheck:
    consecutive_connect_failures: int | None = None
    base_ejection_time: str | None = None
    max_ejection_percent: int | None = None


@frozen(kw_only=True)
class ActiveHealthCheck:
    type: str
    interval: str | None = None
    timeout: str | None = None
    healthy_threshold: int | None = None
    unhealthy_threshold: int | None = None


@frozen(kw_only=True)
class HealthCheck:
    passive: PassiveHealthCheck | None = None
    active: ActiveHealthCheck | None = None


@frozen(kw_only=True)
class BackendTCPTimeout:
    connect_timeout: str | None = None


@frozen(kw_only=True)
class BackendTimeout:
    tcp: BackendTCPTimeout | None = None


@frozen(kw_only=True)
class Retry:
    num_attempts: int | None = None


@frozen(kw_only=True)
class ConsistentHash:
    type: str


@frozen(kw_only=True)
class LoadBalancer:
    type: str
    consistent_hash: ConsistentHash | None = None


@frozen(kw_only=True)
class BackendTrafficPolicySpec:
    target_refs: tuple[LocalPolicyTargetReferenceWithSectionName, ...]
    proxy_protocol: BackendProxyProtocol | None = None
    health_check: HealthCheck | None = None
    timeout: BackendTimeout | None = None
    retry: Retry | None = None
    load_balancer: LoadBalancer | None = None


@frozen(kw_only=True)
class BackendTrafficPolicy:
    api_version: str
    kind: str = "BackendTrafficPolicy"
    metadata: ObjectMeta
    spec: BackendTrafficPolicySpec
