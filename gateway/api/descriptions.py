"""What `kubectl explain` says of the fields that matter most: tlsgate's own words, keyed by
model class and wire field name (gateway/api/openapi.py adds them to the schemas).

Pure data. A field without an entry is shown with its type and whether it is required.
"""

from __future__ import annotations

from typing import Final

DESCRIPTIONS: Final[dict[tuple[str, str], str]] = {
    # TLSRoute
    ("TLSRoute", "spec"): "The route's attachment, hostnames and backends.",
    ("TLSRouteSpec", "parentRefs"): (
        "The Gateways (or their listeners, by sectionName) the route attaches to."
    ),
    ("TLSRouteSpec", "hostnames"): (
        "SNI names the route serves: exact names or one leading wildcard label "
        "(*.example.com). Required: a ClientHello without a matching SNI reaches no route."
    ),
    ("TLSRouteSpec", "rules"): "Exactly one rule: the backends connections are sent to.",
    ("TLSRouteRule", "name"): "An optional name for the rule, for status and logs.",
    ("TLSRouteRule", "backendRefs"): (
        "Services to send connections to, each with a weight: a connection goes to one of "
        "them with probability weight/sum."
    ),
    ("BackendRef", "name"): "The Service's name.",
    ("BackendRef", "namespace"): (
        "The Service's namespace; another namespace needs a ReferenceGrant there."
    ),
    ("BackendRef", "port"): "The Service port (not the endpoints' target port).",
    ("BackendRef", "weight"): "The share of connections; 0 sends none.",
    ("ParentReference", "name"): "The Gateway's name.",
    ("ParentReference", "namespace"): "The Gateway's namespace (default: the route's).",
    ("ParentReference", "sectionName"): "One listener of the Gateway, by name.",
    ("ParentReference", "port"): "Only the Gateway's listeners on this port.",
    # Gateway
    ("GatewaySpec", "gatewayClassName"): "The GatewayClass whose controller serves the Gateway.",
    ("GatewaySpec", "listeners"): "The ports, protocols, hostnames and TLS modes served.",
    ("GatewaySpec", "addresses"): "The addresses to bind (default: --bind-address).",
    ("Listener", "name"): "Unique within the Gateway; routes name it as sectionName.",
    ("Listener", "hostname"): "SNI names this listener takes (exact or *.wildcard).",
    ("Listener", "port"): "The TCP port to listen on.",
    ("Listener", "protocol"): "TLS for TLSRoutes.",
    ("Listener", "tls"): "Passthrough (route by SNI, never decrypt) or Terminate.",
    ("Listener", "allowedRoutes"): "Which routes, from which namespaces, may attach.",
    ("ListenerTLSConfig", "mode"): "Passthrough or Terminate.",
    ("ListenerTLSConfig", "certificateRefs"): "Terminate: the Secrets of the certificates served.",
    ("ListenerTLSConfig", "options"): (
        "Implementation options; gateway.tlsgate.dev/alpn lists the ALPN protocols a "
        "Terminate listener negotiates."
    ),
    ("GatewayClassSpec", "controllerName"): (
        "tlsgate.dev/gateway-controller for the Gateways tlsgate serves."
    ),
    # Policies
    ("ClientTrafficPolicySpec", "targetRefs"): "Gateways, or one listener by sectionName.",
    ("ClientTrafficPolicySpec", "proxyProtocol"): (
        "PROXY protocol v1/v2 headers expected from these peers (trustedCIDRs)."
    ),
    ("ClientTrafficPolicySpec", "timeout"): "Idle, ClientHello and handshake timeouts.",
    ("ClientTrafficPolicySpec", "connection"): (
        "Connection limits for the whole process tree: in all and per client address."
    ),
    ("ClientTrafficPolicySpec", "clientIPs"): "Client address allow and deny lists.",
    ("BackendTrafficPolicySpec", "targetRefs"): "Services, whole.",
    ("BackendTrafficPolicySpec", "proxyProtocol"): "Send a PROXY header (V1 or V2) to backends.",
    ("BackendTrafficPolicySpec", "healthCheck"): (
        "Passive ejection after connect failures, active TCP or TLS probes."
    ),
    ("BackendTrafficPolicySpec", "timeout"): "The connect timeout per endpoint.",
    ("BackendTrafficPolicySpec", "retry"): "Connect attempts over distinct endpoints.",
    ("BackendTrafficPolicySpec", "loadBalancer"): "RoundRobin, Random or ConsistentHash.",
    ("BackendTLSPolicySpec", "targetRefs"): "The Services (and ports) to re-encrypt to.",
    ("BackendTLSPolicySpec", "validation"): (
        "How the backend's certificate is checked: CA bundles or system roots, hostname."
    ),
}
