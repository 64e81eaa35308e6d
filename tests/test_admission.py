"""Every admission rule with a valid and an invalid example, asserting the exact wire path of
the cause (API.md "Errors"; SPEC.md §1, §3, §5.1, §6, §7)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.convert import Invalid, structure_document

from .helpers import with_changes

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: tlsgate
  listeners:
  - name: tls
    port: 443
    protocol: TLS
    hostname: "*.example.com"
    tls: {mode: Passthrough}
  - name: term
    port: 443
    protocol: TLS
    hostname: db.example.com
    tls: {mode: Terminate, certificateRefs: [{name: cert}]}
"""

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [db.example.com, "*.example.com"]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
"""

GRANT = """
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: g, namespace: data}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
"""

POLICY = """
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: p, namespace: apps}
spec:
  targetRefs: [{group: "", kind: Service, name: db}]
  validation:
    hostname: db.internal
    caCertificateRefs: [{group: "", kind: ConfigMap, name: ca}]
"""

CLASS = """
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: tlsgate}
spec: {controllerName: tlsgate.dev/gateway-controller}
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: apps}
spec: {ports: [{name: pg, port: 5432, targetPort: 15432}]}
"""

SLICE = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: apps, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints: [{addresses: [10.0.0.1]}]
ports: [{name: pg, port: 15432}]
"""

SECRET = """
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: apps}
type: kubernetes.io/tls
data: {tls.crt: aGVsbG8=, tls.key: aGVsbG8=}
"""

NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata: {name: apps}
"""

L0 = "spec.listeners[0]"
B0 = "spec.rules[0].backendRefs[0]"

# (base, changes, expected cause (field, reason) or None when the document is valid)
CASES: list[tuple[str, str, list[tuple[str, Any]], tuple[str, str] | None]] = [
    ("gateway valid", GATEWAY, [], None),
    (
        "listener name pattern",
        GATEWAY,
        [(f"{L0}.name", "Bad_Name")],
        (f"{L0}.name", "FieldValueInvalid"),
    ),
    (
        "listener name too long",
        GATEWAY,
        [(f"{L0}.name", "a" * 254)],
        (f"{L0}.name", "FieldValueTooLong"),
    ),
    (
        "listener names unique",
        GATEWAY,
        [("spec.listeners[1].name", "tls")],
        ("spec.listeners[1]", "FieldValueDuplicate"),
    ),
    (
        "port, protocol, hostname unique",
        GATEWAY,
        [("spec.listeners[1].hostname", "*.example.com")],
        ("spec.listeners[1]", "FieldValueDuplicate"),
    ),
    ("port range", GATEWAY, [(f"{L0}.port", 0)], (f"{L0}.port", "FieldValueInvalid")),
    ("port type", GATEWAY, [(f"{L0}.port", "443")], (f"{L0}.port", "FieldValueInvalid")),
    (
        "wildcard in the middle",
        GATEWAY,
        [(f"{L0}.hostname", "f*.example.com")],
        (f"{L0}.hostname", "FieldValueInvalid"),
    ),
    ("bare wildcard", GATEWAY, [(f"{L0}.hostname", "*")], (f"{L0}.hostname", "FieldValueInvalid")),
    (
        "upper-case hostname",
        GATEWAY,
        [(f"{L0}.hostname", "DB.example.com")],
        (f"{L0}.hostname", "FieldValueInvalid"),
    ),
    ("single-label hostname is valid", GATEWAY, [(f"{L0}.hostname", "localhost")], None),
    (
        "TLS listener without tls",
        GATEWAY,
        [(f"{L0}.tls", None)],
        (f"{L0}.tls", "FieldValueRequired"),
    ),
    (
        "tls without mode defaults to Terminate, which needs certificateRefs",
        GATEWAY,
        [(f"{L0}.tls", {})],
        (f"{L0}.tls.certificateRefs", "FieldValueRequired"),
    ),
    (
        "tls mode enum",
        GATEWAY,
        [(f"{L0}.tls.mode", "Reencrypt")],
        (f"{L0}.tls.mode", "FieldValueNotSupported"),
    ),
    (
        "terminate with options only is valid",
        GATEWAY,
        [("spec.listeners[1].tls", {"mode": "Terminate", "options": {"example.com/x": "y"}})],
        None,
    ),
    (
        "tls forbidden for HTTP",
        GATEWAY,
        [(f"{L0}.protocol", "HTTP")],
        (f"{L0}.tls", "FieldValueForbidden"),
    ),
    (
        "hostname forbidden for TCP",
        GATEWAY,
        [(f"{L0}.protocol", "TCP"), (f"{L0}.tls", None)],
        (f"{L0}.hostname", "FieldValueForbidden"),
    ),
    (
        "HTTPS must terminate",
        GATEWAY,
        [(f"{L0}.protocol", "HTTPS")],
        (f"{L0}.tls.mode", "FieldValueInvalid"),
    ),
    (
        "protocol pattern",
        GATEWAY,
        [(f"{L0}.protocol", "T L S")],
        (f"{L0}.protocol", "FieldValueInvalid"),
    ),
    (
        "domain-prefixed protocol is valid",
        GATEWAY,
        [(f"{L0}.protocol", "example.com/Proto"), (f"{L0}.tls", None)],
        None,
    ),
    (
        "listeners min items",
        GATEWAY,
        [("spec.listeners", [])],
        ("spec.listeners", "FieldValueInvalid"),
    ),
    (
        "listeners required",
        GATEWAY,
        [("spec.listeners", None)],
        ("spec.listeners", "FieldValueRequired"),
    ),
    (
        "gatewayClassName required",
        GATEWAY,
        [("spec.gatewayClassName", None)],
        ("spec.gatewayClassName", "FieldValueRequired"),
    ),
    (
        "unknown field",
        GATEWAY,
        [("spec.listener", [])],
        ("spec.listener", "FieldValueNotSupported"),
    ),
    (
        "allowedRoutes from enum",
        GATEWAY,
        [(f"{L0}.allowedRoutes", {"namespaces": {"from": "None"}})],
        (f"{L0}.allowedRoutes.namespaces.from", "FieldValueNotSupported"),
    ),
    (
        "selector operator enum",
        GATEWAY,
        [
            (
                f"{L0}.allowedRoutes",
                {
                    "namespaces": {
                        "from": "Selector",
                        "selector": {"matchExpressions": [{"key": "a", "operator": "Has"}]},
                    }
                },
            )
        ],
        (
            f"{L0}.allowedRoutes.namespaces.selector.matchExpressions[0].operator",
            "FieldValueNotSupported",
        ),
    ),
    (
        "selector In needs values",
        GATEWAY,
        [
            (
                f"{L0}.allowedRoutes",
                {
                    "namespaces": {
                        "from": "Selector",
                        "selector": {"matchExpressions": [{"key": "a", "operator": "In"}]},
                    }
                },
            )
        ],
        (
            f"{L0}.allowedRoutes.namespaces.selector.matchExpressions[0].values",
            "FieldValueRequired",
        ),
    ),
    (
        "allowedRoutes kinds max 8",
        GATEWAY,
        [(f"{L0}.allowedRoutes", {"kinds": [{"kind": "TLSRoute"}] * 9})],
        (f"{L0}.allowedRoutes.kinds", "FieldValueTooMany"),
    ),
    (
        "route kind pattern",
        GATEWAY,
        [(f"{L0}.allowedRoutes", {"kinds": [{"kind": "TLS Route"}]})],
        (f"{L0}.allowedRoutes.kinds[0].kind", "FieldValueInvalid"),
    ),
    (
        "certificateRef group pattern",
        GATEWAY,
        [("spec.listeners[1].tls.certificateRefs[0].group", "Not A Group")],
        ("spec.listeners[1].tls.certificateRefs[0].group", "FieldValueInvalid"),
    ),
    (
        "IPAddress address must be an IP",
        GATEWAY,
        [("spec.addresses", [{"value": "gw.example.com"}])],
        ("spec.addresses[0].value", "FieldValueInvalid"),
    ),
    (
        "Hostname address must be a hostname",
        GATEWAY,
        [("spec.addresses", [{"type": "Hostname", "value": "10.0.0.1!"}])],
        ("spec.addresses[0].value", "FieldValueInvalid"),
    ),
    (
        "addresses unique",
        GATEWAY,
        [("spec.addresses", [{"value": "10.0.0.1"}, {"value": "10.0.0.1"}])],
        ("spec.addresses[1]", "FieldValueDuplicate"),
    ),
    (
        "frontend CA refs min 1",
        GATEWAY,
        [("spec.tls", {"frontend": {"default": {"validation": {"caCertificateRefs": []}}}})],
        ("spec.tls.frontend.default.validation.caCertificateRefs", "FieldValueInvalid"),
    ),
    (
        "frontend perPort ports unique",
        GATEWAY,
        [
            (
                "spec.tls",
                {
                    "frontend": {
                        "default": {},
                        "perPort": [{"port": 443, "tls": {}}, {"port": 443, "tls": {}}],
                    }
                },
            )
        ],
        ("spec.tls.frontend.perPort[1]", "FieldValueDuplicate"),
    ),
    (
        "frontend mode enum",
        GATEWAY,
        [
            (
                "spec.tls",
                {
                    "frontend": {
                        "default": {
                            "validation": {
                                "mode": "Sometimes",
                                "caCertificateRefs": [
                                    {"group": "", "kind": "ConfigMap", "name": "ca"}
                                ],
                            }
                        }
                    }
                },
            )
        ],
        ("spec.tls.frontend.default.validation.mode", "FieldValueNotSupported"),
    ),
    (
        "infrastructure labels max 8",
        GATEWAY,
        [("spec.infrastructure", {"labels": {f"k{i}": "v" for i in range(9)}})],
        ("spec.infrastructure.labels", "FieldValueTooMany"),
    ),
    (
        "metadata name pattern",
        GATEWAY,
        [("metadata.name", "Gateway!")],
        ("metadata.name", "FieldValueInvalid"),
    ),
    (
        "metadata namespace pattern",
        GATEWAY,
        [("metadata.namespace", "a.b")],
        ("metadata.namespace", "FieldValueInvalid"),
    ),
    (
        "label value pattern",
        GATEWAY,
        [("metadata.labels", {"a": "-bad"})],
        ("metadata.labels[a]", "FieldValueInvalid"),
    ),
    (
        "label key pattern",
        GATEWAY,
        [("metadata.labels", {"a/b/c": "x"})],
        ("metadata.labels[a/b/c]", "FieldValueInvalid"),
    ),
    (
        "metadata name required",
        GATEWAY,
        [("metadata.name", None)],
        ("metadata.name", "FieldValueRequired"),
    ),
    ("route valid", ROUTE, [], None),
    (
        "hostnames required",
        ROUTE,
        [("spec.hostnames", None)],
        ("spec.hostnames", "FieldValueRequired"),
    ),
    ("hostnames min 1", ROUTE, [("spec.hostnames", [])], ("spec.hostnames", "FieldValueInvalid")),
    (
        "hostnames max 1024",
        ROUTE,
        [("spec.hostnames", [f"h{i}.example.com" for i in range(1025)])],
        ("spec.hostnames", "FieldValueTooMany"),
    ),
    (
        "no IP hostnames",
        ROUTE,
        [("spec.hostnames", ["10.1.2.3"])],
        ("spec.hostnames[0]", "FieldValueInvalid"),
    ),
    (
        "wildcard only leading",
        ROUTE,
        [("spec.hostnames", ["db.*.example.com"])],
        ("spec.hostnames[0]", "FieldValueInvalid"),
    ),
    (
        "exactly one rule",
        ROUTE,
        [("spec.rules", [{"backendRefs": [{"name": "a", "port": 1}]}] * 2)],
        ("spec.rules", "FieldValueTooMany"),
    ),
    ("rules min 1", ROUTE, [("spec.rules", [])], ("spec.rules", "FieldValueInvalid")),
    (
        "backendRefs min 1",
        ROUTE,
        [("spec.rules[0].backendRefs", [])],
        ("spec.rules[0].backendRefs", "FieldValueInvalid"),
    ),
    (
        "backendRefs max 16",
        ROUTE,
        [("spec.rules[0].backendRefs", [{"name": "a", "port": 1}] * 17)],
        ("spec.rules[0].backendRefs", "FieldValueTooMany"),
    ),
    (
        "Service backend needs a port",
        ROUTE,
        [(f"{B0}.port", None)],
        (f"{B0}.port", "FieldValueRequired"),
    ),
    (
        "other kinds need no port",
        ROUTE,
        [(f"{B0}.port", None), (f"{B0}.group", "example.com"), (f"{B0}.kind", "Thing")],
        None,
    ),
    ("weight range", ROUTE, [(f"{B0}.weight", 1_000_001)], (f"{B0}.weight", "FieldValueInvalid")),
    ("weight 0 is valid", ROUTE, [(f"{B0}.weight", 0)], None),
    ("backend port range", ROUTE, [(f"{B0}.port", 70000)], (f"{B0}.port", "FieldValueInvalid")),
    (
        "backend namespace pattern",
        ROUTE,
        [(f"{B0}.namespace", "Bad")],
        (f"{B0}.namespace", "FieldValueInvalid"),
    ),
    (
        "rule name pattern",
        ROUTE,
        [("spec.rules[0].name", "Rule!")],
        ("spec.rules[0].name", "FieldValueInvalid"),
    ),
    (
        "parentRefs max 32",
        ROUTE,
        [("spec.parentRefs", [{"name": f"g{i}"} for i in range(33)])],
        ("spec.parentRefs", "FieldValueTooMany"),
    ),
    (
        "repeated parent: all or none set sectionName",
        ROUTE,
        [("spec.parentRefs", [{"name": "gw", "sectionName": "a"}, {"name": "gw"}])],
        ("spec.parentRefs[1].sectionName", "FieldValueInvalid"),
    ),
    (
        "repeated parent: distinct sectionNames",
        ROUTE,
        [
            (
                "spec.parentRefs",
                [{"name": "gw", "sectionName": "a"}, {"name": "gw", "sectionName": "a"}],
            )
        ],
        ("spec.parentRefs[0].sectionName", "FieldValueDuplicate"),
    ),
    (
        "repeated parent with distinct sectionNames is valid",
        ROUTE,
        [
            (
                "spec.parentRefs",
                [{"name": "gw", "sectionName": "a"}, {"name": "gw", "sectionName": "b"}],
            )
        ],
        None,
    ),
    (
        "unset namespace equals the route's",
        ROUTE,
        [
            (
                "spec.parentRefs",
                [{"name": "gw", "namespace": "apps", "sectionName": "a"}, {"name": "gw"}],
            )
        ],
        ("spec.parentRefs[1].sectionName", "FieldValueInvalid"),
    ),
    (
        "parentRef port range",
        ROUTE,
        [("spec.parentRefs[0].port", 0)],
        ("spec.parentRefs[0].port", "FieldValueInvalid"),
    ),
    (
        "sectionName pattern",
        ROUTE,
        [("spec.parentRefs[0].sectionName", "Upper")],
        ("spec.parentRefs[0].sectionName", "FieldValueInvalid"),
    ),
    (
        "useDefaultGateways enum",
        ROUTE,
        [("spec.useDefaultGateways", "Some")],
        ("spec.useDefaultGateways", "FieldValueNotSupported"),
    ),
    (
        "hostnames of the wrong type",
        ROUTE,
        [("spec.hostnames", "db.example.com")],
        ("spec.hostnames", "FieldValueInvalid"),
    ),
    ("grant valid", GRANT, [], None),
    ("grant from min 1", GRANT, [("spec.from", [])], ("spec.from", "FieldValueInvalid")),
    (
        "grant to max 16",
        GRANT,
        [("spec.to", [{"group": "", "kind": "Service"}] * 17)],
        ("spec.to", "FieldValueTooMany"),
    ),
    (
        "grant from namespace required",
        GRANT,
        [("spec.from[0].namespace", None)],
        ("spec.from[0].namespace", "FieldValueRequired"),
    ),
    (
        "grant to kind pattern",
        GRANT,
        [("spec.to[0].kind", "")],
        ("spec.to[0].kind", "FieldValueInvalid"),
    ),
    ("policy valid", POLICY, [], None),
    (
        "policy: one of CA refs or well-known",
        POLICY,
        [("spec.validation.wellKnownCACertificates", "System")],
        ("spec.validation", "FieldValueInvalid"),
    ),
    (
        "policy: well-known enum",
        POLICY,
        [
            ("spec.validation.caCertificateRefs", None),
            ("spec.validation.wellKnownCACertificates", "Mine"),
        ],
        ("spec.validation.wellKnownCACertificates", "FieldValueNotSupported"),
    ),
    (
        "policy hostname is precise",
        POLICY,
        [("spec.validation.hostname", "*.internal")],
        ("spec.validation.hostname", "FieldValueInvalid"),
    ),
    (
        "policy SAN type Hostname needs hostname",
        POLICY,
        [("spec.validation.subjectAltNames", [{"type": "Hostname"}])],
        ("spec.validation.subjectAltNames[0].hostname", "FieldValueRequired"),
    ),
    (
        "policy targetRefs min 1",
        POLICY,
        [("spec.targetRefs", [])],
        ("spec.targetRefs", "FieldValueInvalid"),
    ),
    ("class valid", CLASS, [], None),
    (
        "controllerName pattern",
        CLASS,
        [("spec.controllerName", "no-slash")],
        ("spec.controllerName", "FieldValueInvalid"),
    ),
    (
        "description max 64",
        CLASS,
        [("spec.description", "x" * 65)],
        ("spec.description", "FieldValueTooLong"),
    ),
    ("service valid", SERVICE, [], None),
    (
        "service port range",
        SERVICE,
        [("spec.ports[0].port", 0)],
        ("spec.ports[0].port", "FieldValueInvalid"),
    ),
    (
        "service named targetPort pattern",
        SERVICE,
        [("spec.ports[0].targetPort", "Not_A_Name")],
        ("spec.ports[0].targetPort", "FieldValueInvalid"),
    ),
    ("service named targetPort is valid", SERVICE, [("spec.ports[0].targetPort", "pg")], None),
    (
        "service ports need names when several",
        SERVICE,
        [("spec.ports", [{"port": 1}, {"name": "b", "port": 2}])],
        ("spec.ports[0].name", "FieldValueRequired"),
    ),
    ("service unknown spec fields are ignored", SERVICE, [("spec.clusterIP", "10.0.0.1")], None),
    ("slice valid", SLICE, [], None),
    (
        "slice address type enum",
        SLICE,
        [("addressType", "IPX")],
        ("addressType", "FieldValueNotSupported"),
    ),
    (
        "slice address must match its type",
        SLICE,
        [("endpoints[0].addresses", ["fe80::1"])],
        ("endpoints[0].addresses[0]", "FieldValueInvalid"),
    ),
    (
        "slice FQDN labels are at most 63 characters (IDNA refuses longer ones)",
        SLICE,
        [("addressType", "FQDN"), ("endpoints[0].addresses", ["a" * 64 + ".db.svc"])],
        ("endpoints[0].addresses[0]", "FieldValueInvalid"),
    ),
    (
        "slice FQDN label of 63 characters",
        SLICE,
        [("addressType", "FQDN"), ("endpoints[0].addresses", ["a" * 63 + ".db.svc"])],
        None,
    ),
    (
        "slice endpoint needs an address",
        SLICE,
        [("endpoints[0].addresses", [])],
        ("endpoints[0].addresses", "FieldValueInvalid"),
    ),
    (
        "slice ready is a boolean",
        SLICE,
        [("endpoints[0].conditions", {"ready": "yes"})],
        ("endpoints[0].conditions.ready", "FieldValueInvalid"),
    ),
    ("secret valid", SECRET, [], None),
    (
        "secret data must be base64",
        SECRET,
        [("data", {"tls.crt": "not base64!"})],
        ("data[tls.crt]", "FieldValueInvalid"),
    ),
    (
        "secret data key pattern",
        SECRET,
        [("data", {"tls crt": "aGVsbG8="})],
        ("data[tls crt]", "FieldValueInvalid"),
    ),
    (
        "alpn option on a Terminate listener",
        GATEWAY,
        [("spec.listeners[1].tls.options", {"gateway.tlsgate.dev/alpn": "postgresql, h2"})],
        None,
    ),
    (
        "alpn option on a Passthrough listener negotiates nothing",
        GATEWAY,
        [("spec.listeners[0].tls.options", {"gateway.tlsgate.dev/alpn": "postgresql"})],
        ("spec.listeners[0].tls.options[gateway.tlsgate.dev/alpn]", "FieldValueInvalid"),
    ),
    (
        "alpn option with an empty protocol",
        GATEWAY,
        [("spec.listeners[1].tls.options", {"gateway.tlsgate.dev/alpn": "postgresql,,h2"})],
        ("spec.listeners[1].tls.options[gateway.tlsgate.dev/alpn]", "FieldValueInvalid"),
    ),
    (
        "alpn option with a space inside a protocol",
        GATEWAY,
        [("spec.listeners[1].tls.options", {"gateway.tlsgate.dev/alpn": "post gres"})],
        ("spec.listeners[1].tls.options[gateway.tlsgate.dev/alpn]", "FieldValueInvalid"),
    ),
    ("namespace valid", NAMESPACE, [], None),
    (
        "namespace name is a label",
        NAMESPACE,
        [("metadata.name", "a.b")],
        ("metadata.name", "FieldValueInvalid"),
    ),
]


@pytest.mark.parametrize(
    ("base", "changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_admission_rule(
    base: str, changes: list[tuple[str, Any]], expected: tuple[str, str] | None
) -> None:
    document = with_changes(base, changes)
    if expected is None:
        structure_document(document)
        return
    with pytest.raises(Invalid) as caught:
        structure_document(document)
    causes = [(c.field, c.reason) for c in caught.value.causes]
    assert expected in causes, caught.value.causes


def test_messages_name_the_bad_value() -> None:
    with pytest.raises(Invalid) as caught:
        structure_document(with_changes(ROUTE, [("spec.hostnames", ["db.*.example.com"])]))
    assert '"db.*.example.com"' in caught.value.causes[0].message
    # Type errors are found while structuring, before the value rules run (as in Kubernetes).
    with pytest.raises(Invalid) as caught:
        structure_document(with_changes(ROUTE, [(f"{B0}.port", "5432")]))
    assert '"5432"' in caught.value.causes[0].message


def test_all_causes_are_reported_at_once() -> None:
    with pytest.raises(Invalid) as caught:
        structure_document(
            with_changes(GATEWAY, [(f"{L0}.port", 0), ("spec.listeners[1].name", "X")])
        )
    fields = {c.field for c in caught.value.causes}
    assert {f"{L0}.port", "spec.listeners[1].name"} <= fields


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "kind"),
        (
            {
                "apiVersion": "gateway.networking.k8s.io/v2",
                "kind": "Gateway",
                "metadata": {"name": "g"},
            },
            "apiVersion",
        ),
        ({"kind": "Gateway", "metadata": {"name": "g"}}, "apiVersion"),
        (["not", "an", "object"], ""),
    ],
)
def test_unknown_kinds_and_versions(document: object, field: str) -> None:
    with pytest.raises(Invalid) as caught:
        structure_document(document)
    assert [c.field for c in caught.value.causes] == [field]
