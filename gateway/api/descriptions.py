"""What `kubectl explain` says of each field of the served kinds: tlsgate's own words, keyed
by model class and wire field name (gateway/api/openapi.py adds them to the schemas; a test
holds every field of the model to having one). `apiVersion`, `kind` and `metadata` of each
kind are described by openapi.py itself.

Pure data.
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
    # --- the rest, kind by kind ------------------------------------------------------------
    # Metadata
    ("ObjectMeta", "name"): "The object's name, unique per kind and namespace.",
    ("ObjectMeta", "namespace"): (
        "The namespace; it need not be created first (one in use exists implicitly)."
    ),
    ("ObjectMeta", "labels"): "Labels, for selectors (-l) and allowedRoutes namespace selectors.",
    ("ObjectMeta", "annotations"): "Free-form annotations, kept as written.",
    ("ObjectMeta", "uid"): "Set by tlsgate on create; a re-created object gets a new one.",
    ("ObjectMeta", "creationTimestamp"): "When the object was created (RFC 3339, UTC).",
    ("ObjectMeta", "generation"): (
        "1 on create, +1 on each change of spec; status observedGeneration tells whether it "
        "reflects the latest."
    ),
    ("ObjectMeta", "resourceVersion"): (
        "The store revision of the object's last write; send it back on PUT or PATCH to "
        "write only if nothing changed since."
    ),
    (
        "ObjectMeta",
        "managedFields",
    ): "Which applier (kubectl apply --server-side) owns which fields.",
    ("ManagedFieldsEntry", "manager"): "The applier's fieldManager.",
    ("ManagedFieldsEntry", "operation"): "Apply.",
    ("ManagedFieldsEntry", "apiVersion"): "The version the applier's configuration was written in.",
    ("ManagedFieldsEntry", "time"): "When the applier last changed a field it owns.",
    ("ManagedFieldsEntry", "fieldsType"): "FieldsV1.",
    ("ManagedFieldsEntry", "fieldsV1"): "The fields owned, as a FieldsV1 set.",
    # GatewayClass
    ("GatewayClass", "spec"): "Which controller serves the Gateways of this class.",
    ("GatewayClassSpec", "parametersRef"): (
        "Implementation parameters: tlsgate takes none, and a reference makes the class "
        "not Accepted (InvalidParameters)."
    ),
    ("GatewayClassSpec", "description"): "Free text describing the class.",
    ("ParametersReference", "group"): "The group of the parameters object.",
    ("ParametersReference", "kind"): "The kind of the parameters object.",
    ("ParametersReference", "name"): "The name of the parameters object.",
    ("ParametersReference", "namespace"): "The namespace of a namespaced parameters object.",
    # Gateway
    ("Gateway", "spec"): "The class, addresses and listeners of the Gateway.",
    ("GatewaySpec", "infrastructure"): (
        "Labels, annotations and parameters for what the Gateway runs on; tlsgate takes no "
        "parameters (InvalidParameters)."
    ),
    ("GatewaySpec", "allowedListeners"): (
        "Which namespaces may add listeners (ListenerSets): not served by tlsgate."
    ),
    ("GatewaySpec", "tls"): (
        "Gateway-wide TLS: the client certificate presented to backends, and client "
        "certificate validation on Terminate listeners."
    ),
    ("GatewaySpec", "defaultScope"): "Experimental default-Gateway scope: accepted and ignored.",
    ("GatewayInfrastructure", "labels"): "Labels for the Gateway's infrastructure (at most 8).",
    ("GatewayInfrastructure", "annotations"): (
        "Annotations for the Gateway's infrastructure (at most 16)."
    ),
    ("GatewayInfrastructure", "parametersRef"): (
        "Implementation parameters: tlsgate takes none (InvalidParameters)."
    ),
    ("LocalObjectReference", "group"): 'The referent\'s group ("" for the core group).',
    ("LocalObjectReference", "kind"): "The referent's kind.",
    ("LocalObjectReference", "name"): "The referent's name, in the referrer's namespace.",
    ("AllowedListeners", "namespaces"): "The namespaces ListenerSets may come from.",
    ("ListenerNamespaces", "from"): "All, Selector, Same or None (the default).",
    ("ListenerNamespaces", "selector"): "With from: Selector, the namespaces' labels.",
    ("GatewayTLSConfig", "backend"): "TLS towards backends (re-encryption).",
    ("GatewayTLSConfig", "frontend"): (
        "Client certificate validation on the Gateway's Terminate listeners."
    ),
    ("GatewayBackendTLS", "clientCertificateRef"): (
        "A kubernetes.io/tls Secret whose certificate the Gateway presents to backends that "
        "ask for one."
    ),
    ("FrontendTLSConfig", "default"): "Validation for every port without a perPort entry.",
    ("FrontendTLSConfig", "perPort"): "Validation for one port, instead of the default.",
    ("TLSPortConfig", "port"): "The listener port this validation applies to.",
    ("TLSPortConfig", "tls"): "The validation for that port.",
    ("TLSConfig", "validation"): "How client certificates are checked.",
    ("FrontendTLSValidation", "caCertificateRefs"): (
        "ConfigMaps (key ca.crt) with the CA certificates client certificates must chain to."
    ),
    ("FrontendTLSValidation", "mode"): (
        "AllowValidOnly (the default: no valid certificate, no connection) or "
        "AllowInsecureFallback (accept any, and say so in the Gateway's conditions)."
    ),
    ("ObjectReference", "group"): 'The referent\'s group ("" for the core group).',
    ("ObjectReference", "kind"): "The referent's kind (ConfigMap).",
    ("ObjectReference", "name"): "The referent's name.",
    ("ObjectReference", "namespace"): (
        "The referent's namespace (default: the referrer's); another needs a ReferenceGrant."
    ),
    ("GatewaySpecAddress", "type"): "IPAddress (the default) or Hostname.",
    ("GatewaySpecAddress", "value"): "The address to bind the listeners to.",
    ("SecretObjectReference", "group"): '"" (core).',
    ("SecretObjectReference", "kind"): "Secret.",
    ("SecretObjectReference", "name"): "The Secret's name.",
    ("SecretObjectReference", "namespace"): (
        "The Secret's namespace (default: the Gateway's); another needs a ReferenceGrant."
    ),
    ("AllowedRoutes", "namespaces"): "The namespaces routes may attach from.",
    ("AllowedRoutes", "kinds"): "The route kinds that may attach (TLSRoute).",
    ("RouteNamespaces", "from"): ("Same (the default: the Gateway's namespace), All, or Selector."),
    ("RouteNamespaces", "selector"): "With from: Selector, the labels of the namespaces allowed.",
    ("LabelSelector", "matchLabels"): "Labels that must all be present with these values.",
    ("LabelSelector", "matchExpressions"): "Requirements that must all hold.",
    ("LabelSelectorRequirement", "key"): "The label's key.",
    ("LabelSelectorRequirement", "operator"): "In, NotIn, Exists or DoesNotExist.",
    ("LabelSelectorRequirement", "values"): (
        "The values for In and NotIn; empty for Exists and DoesNotExist."
    ),
    ("RouteGroupKind", "group"): "The route's group (default gateway.networking.k8s.io).",
    ("RouteGroupKind", "kind"): "The route's kind (TLSRoute).",
    # TLSRoute
    ("TLSRouteSpec", "useDefaultGateways"): (
        "Experimental attachment to default Gateways: accepted and ignored."
    ),
    ("ParentReference", "group"): "The parent's group (default gateway.networking.k8s.io).",
    ("ParentReference", "kind"): "The parent's kind (default Gateway).",
    ("BackendRef", "group"): '"" (core) for a Service, the default.',
    ("BackendRef", "kind"): "Service, the default.",
    # ReferenceGrant
    ("ReferenceGrant", "spec"): (
        "Which objects in other namespaces may refer to which objects in this one."
    ),
    ("ReferenceGrantSpec", "from"): "The referrers allowed: group, kind and namespace.",
    ("ReferenceGrantSpec", "to"): "The objects here they may refer to: group, kind, name.",
    ("ReferenceGrantFrom", "group"): "The referrer's group.",
    ("ReferenceGrantFrom", "kind"): "The referrer's kind (TLSRoute, Gateway).",
    ("ReferenceGrantFrom", "namespace"): "The referrer's namespace.",
    ("ReferenceGrantTo", "group"): 'The referent\'s group ("" for Service, Secret, ConfigMap).',
    ("ReferenceGrantTo", "kind"): "The referent's kind.",
    ("ReferenceGrantTo", "name"): "One referent by name; without it, all of that kind.",
    # BackendTLSPolicy
    ("BackendTLSPolicy", "spec"): "The Services to re-encrypt to, and how to check them.",
    ("BackendTLSPolicySpec", "options"): "Implementation options: tlsgate takes none.",
    ("LocalPolicyTargetReferenceWithSectionName", "group"): "The target's group.",
    ("LocalPolicyTargetReferenceWithSectionName", "kind"): "The target's kind.",
    ("LocalPolicyTargetReferenceWithSectionName", "name"): (
        "The target's name, in the policy's namespace."
    ),
    ("LocalPolicyTargetReferenceWithSectionName", "sectionName"): (
        "One part of the target: a Service port's name, a Gateway listener's name."
    ),
    ("BackendTLSPolicyValidation", "caCertificateRefs"): (
        "ConfigMaps (key ca.crt) with the CA certificates the backend's must chain to."
    ),
    ("BackendTLSPolicyValidation", "wellKnownCACertificates"): (
        "System: the machine's trusted roots instead of caCertificateRefs."
    ),
    ("BackendTLSPolicyValidation", "hostname"): (
        "The SNI sent to the backend, and the name its certificate must carry (unless "
        "subjectAltNames say otherwise)."
    ),
    ("BackendTLSPolicyValidation", "subjectAltNames"): (
        "Names the backend's certificate must carry one of, instead of hostname."
    ),
    ("SubjectAltName", "type"): "Hostname or URI.",
    ("SubjectAltName", "hostname"): "With type Hostname: a DNS name.",
    ("SubjectAltName", "uri"): "With type URI: a URI (as SPIFFE IDs).",
    # ClientTrafficPolicy
    ("ClientTrafficPolicy", "spec"): (
        "What a Gateway (or one listener) does with its clients' connections."
    ),
    ("ProxyProtocol", "trustedCIDRs"): (
        "Peers whose PROXY header is read; from any other address a header is refused."
    ),
    ("ProxyProtocol", "optional"): ("Accept connections from trusted peers without a header too."),
    ("ClientTimeout", "tcp"): "Timeouts of the connection as a whole.",
    ("ClientTimeout", "tls"): "Timeouts of the TLS start.",
    ("TCPTimeout", "idleTimeout"): (
        "Close a connection after this long without a byte either way (a duration: 300s)."
    ),
    ("TLSTimeout", "helloTimeout"): "How long a client has to send its whole ClientHello.",
    ("TLSTimeout", "handshakeTimeout"): "Terminate: how long the TLS handshake may take.",
    ("ClientConnection", "connectionLimit"): (
        "The most connections at once, over every worker process."
    ),
    ("ClientConnection", "perClient"): "Limits per client address.",
    ("ConnectionLimit", "value"): "The number of connections; one more is closed at once.",
    ("PerClientLimit", "maxConnections"): "The most connections at once from one address.",
    ("PerClientLimit", "connectionsPerSecond"): (
        "The most new connections from one address in any one second."
    ),
    ("ClientIPs", "allow"): "CIDRs allowed to connect (when set, all others are refused).",
    ("ClientIPs", "deny"): "CIDRs refused, even when allow covers them.",
    # BackendTrafficPolicy
    ("BackendTrafficPolicy", "spec"): "How tlsgate connects to the Services it targets.",
    ("BackendProxyProtocol", "version"): "V1 (text) or V2 (binary).",
    ("HealthCheck", "passive"): "Eject endpoints after connect failures.",
    ("HealthCheck", "active"): "Probe endpoints now and then.",
    ("PassiveHealthCheck", "consecutiveConnectFailures"): (
        "Connect failures in a row, over every worker, that eject an endpoint."
    ),
    ("PassiveHealthCheck", "baseEjectionTime"): (
        "The first ejection's length; each next one in a row doubles, up to ten times."
    ),
    ("PassiveHealthCheck", "maxEjectionPercent"): (
        "The most endpoints of a backend ejected at once, in percent (at least one)."
    ),
    ("ActiveHealthCheck", "type"): "TCP (connect) or TLS (a handshake).",
    ("ActiveHealthCheck", "interval"): "Time between two probes of an endpoint.",
    ("ActiveHealthCheck", "timeout"): "How long a probe may take.",
    ("ActiveHealthCheck", "healthyThreshold"): "Probes in a row that bring an endpoint back.",
    ("ActiveHealthCheck", "unhealthyThreshold"): "Probes in a row that take it out.",
    ("BackendTimeout", "tcp"): "TCP timeouts towards the backend.",
    ("BackendTCPTimeout", "connectTimeout"): "How long one connect to an endpoint may take.",
    ("Retry", "numAttempts"): "Connect attempts in all, each to another endpoint.",
    ("LoadBalancer", "type"): "RoundRobin, Random (the default) or ConsistentHash.",
    ("LoadBalancer", "consistentHash"): "With ConsistentHash: what is hashed.",
    ("ConsistentHash", "type"): (
        "SourceIP (one client, one endpoint) or SNI (one name, one endpoint)."
    ),
    # Service, EndpointSlice
    ("Service", "spec"): "The Service's ports (and, for ExternalName, its DNS name).",
    ("ServiceSpec", "type"): (
        "ClusterIP (endpoints from EndpointSlices) or ExternalName (a DNS name)."
    ),
    ("ServiceSpec", "ports"): "The ports routes name as backendRef port.",
    ("ServiceSpec", "selector"): "Kept as written: tlsgate runs no pods to select.",
    ("ServiceSpec", "externalName"): "With type ExternalName: the name connected to.",
    ("ServicePort", "name"): "The port's name; EndpointSlice ports match it.",
    ("ServicePort", "protocol"): "TCP.",
    ("ServicePort", "appProtocol"): "The application protocol, as a hint (kept as written).",
    ("ServicePort", "port"): "The port routes name.",
    ("ServicePort", "targetPort"): (
        "The endpoints' port: a number, or the name of an EndpointSlice port."
    ),
    ("EndpointSlice", "addressType"): "IPv4, IPv6 or FQDN.",
    ("EndpointSlice", "endpoints"): (
        "The endpoints; the label kubernetes.io/service-name names their Service."
    ),
    ("EndpointSlice", "ports"): "The ports the endpoints listen on, by Service port name.",
    ("Endpoint", "addresses"): "The endpoint's address (the first is used).",
    ("Endpoint", "conditions"): "Whether the endpoint takes connections.",
    ("Endpoint", "hostname"): "The endpoint's host name, kept as written.",
    ("EndpointConditions", "ready"): "false keeps connections away (unset means ready).",
    ("EndpointConditions", "serving"): "Kept as written; ready decides.",
    ("EndpointConditions", "terminating"): "A terminating endpoint takes no new connections.",
    ("EndpointPort", "name"): "The Service port's name it serves.",
    ("EndpointPort", "protocol"): "TCP.",
    ("EndpointPort", "port"): "The port connections go to.",
    ("EndpointPort", "appProtocol"): "The application protocol, kept as written.",
    # Secret, ConfigMap
    ("Secret", "type"): "kubernetes.io/tls for certificates.",
    ("Secret", "data"): ("tls.crt and tls.key, base64; tls.key is never answered (write-only)."),
    ("Secret", "stringData"): "Like data, as plain text; merged into data on write.",
    ("ConfigMap", "data"): "ca.crt: PEM CA certificates, for validation.",
    # Status
    ("GatewayClassStatus", "conditions"): "Accepted, and SupportedVersion.",
    ("GatewayClassStatus", "supportedFeatures"): "The Gateway API features tlsgate serves.",
    ("SupportedFeature", "name"): "The feature's name.",
    ("GatewayStatus", "addresses"): "The addresses the listeners are bound to.",
    ("GatewayStatus", "conditions"): "Accepted and Programmed (and why not).",
    ("GatewayStatus", "listeners"): "Each listener's own conditions and attached routes.",
    ("GatewayStatusAddress", "type"): "IPAddress or Hostname.",
    ("GatewayStatusAddress", "value"): "The address.",
    ("ListenerStatus", "name"): "The listener's name.",
    ("ListenerStatus", "supportedKinds"): "The route kinds that can attach.",
    ("ListenerStatus", "attachedRoutes"): "How many routes are attached to it.",
    ("ListenerStatus", "conditions"): (
        "Accepted, Programmed (its port bound), ResolvedRefs (its certificates), Conflicted."
    ),
    ("RouteStatus", "parents"): "One entry per parent the route names, with its conditions.",
    ("RouteParentStatus", "parentRef"): "The parent, as the route names it.",
    ("RouteParentStatus", "controllerName"): "tlsgate.dev/gateway-controller.",
    ("RouteParentStatus", "conditions"): "Accepted (attached) and ResolvedRefs (backends).",
    ("PolicyStatus", "ancestors"): "One entry per Gateway the policy takes effect through.",
    ("PolicyAncestorStatus", "ancestorRef"): "The Gateway.",
    ("PolicyAncestorStatus", "controllerName"): "tlsgate.dev/gateway-controller.",
    ("PolicyAncestorStatus", "conditions"): "Accepted, and why not (Conflicted, TargetNotFound).",
    ("Condition", "type"): "The condition's name.",
    ("Condition", "status"): "True, False or Unknown.",
    ("Condition", "observedGeneration"): "The object's generation the condition is about.",
    ("Condition", "lastTransitionTime"): "When status last changed (RFC 3339).",
    ("Condition", "reason"): "Why, in one CamelCase word.",
    ("Condition", "message"): "Why, for people.",
}
