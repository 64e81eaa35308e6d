"""Status rules of SPEC.md §2-§12 asserted directly, including sequences of changes that a
golden file cannot show (revocation, listeners removed, generations, transition times)."""

from __future__ import annotations

from pathlib import Path

from gateway.api.kinds import ObjectKey
from gateway.api.status import GatewayClassStatus, GatewayStatus, RouteStatus
from gateway.routing.snapshot import Routed

from .helpers import GATEWAY_CLASS, World, conditions, reasons, snapshot_of

CERTS = Path(__file__).parent / "data" / "certs"

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: tlsgate
  listeners:
  - {name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough},
     allowedRoutes: {namespaces: {from: All}}}
"""

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: db, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  hostnames: [db.example.com]
  rules: [{backendRefs: [{name: pg, namespace: data, port: 5432}]}]
"""

SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: pg, namespace: data}
spec: {ports: [{name: pg, port: 5432}]}
"""

GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: routes-to-pg, namespace: data}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: apps}]
  to: [{group: "", kind: Service, name: pg}]
"""


def _all(*parts: str) -> str:
    return "\n---\n".join(parts)


def test_gateway_class_status_and_features() -> None:
    snap = snapshot_of(GATEWAY_CLASS)
    status = snap.statuses[ObjectKey("GatewayClass", "", "tlsgate")]
    assert isinstance(status, GatewayClassStatus)
    assert [f.name for f in status.supported_features] == [
        "Gateway",
        "ReferenceGrant",
        "TLSRoute",
        "TLSRouteModeMixed",
        "TLSRouteModeTerminate",
    ]
    assert reasons(conditions(snap, "GatewayClass", "", "tlsgate")) == {
        "Accepted": ("True", "Accepted")
    }


def test_gateway_class_with_parameters_ref_is_not_accepted_and_its_gateways_ignored() -> None:
    text = GATEWAY_CLASS.replace(
        "spec: {", "spec: {parametersRef: {group: example.com, kind: Config, name: x}, "
    )
    snap = snapshot_of(_all(text, GATEWAY))
    assert reasons(conditions(snap, "GatewayClass", "", "tlsgate")) == {
        "Accepted": ("False", "InvalidParameters")
    }
    assert ObjectKey("Gateway", "infra", "gw") not in snap.statuses
    assert snap.binds == {}


def test_grant_deleted_revokes_access_immediately() -> None:
    world = World()
    snap = world.apply(_all(GATEWAY_CLASS, GATEWAY, ROUTE, SERVICE, GRANT))
    assert reasons(conditions(snap, "TLSRoute", "apps", "db"))["ResolvedRefs"] == (
        "True",
        "ResolvedRefs",
    )
    before = conditions(snap, "TLSRoute", "apps", "db")["ResolvedRefs"]
    snap = world.delete("ReferenceGrant", "data", "routes-to-pg")
    after = conditions(snap, "TLSRoute", "apps", "db")
    assert reasons(after)["ResolvedRefs"] == ("False", "RefNotPermitted")
    # The condition flipped, so its lastTransitionTime moved; Accepted did not flip.
    assert after["ResolvedRefs"].last_transition_time != before.last_transition_time
    target = snap.binds[("0.0.0.0", 443)].listeners[0].ordered_routes()[0]
    assert target.backends[0].reject is not None
    assert "ReferenceGrant" in target.backends[0].reject


def test_transition_time_is_kept_while_status_is_unchanged() -> None:
    world = World()
    first = conditions(
        world.apply(_all(GATEWAY_CLASS, GATEWAY, ROUTE, SERVICE, GRANT)), "TLSRoute", "apps", "db"
    )["Accepted"]
    second = conditions(
        world.apply(SERVICE.replace("5432}", "5432, targetPort: 15432}")), "TLSRoute", "apps", "db"
    )["Accepted"]
    assert first.last_transition_time == second.last_transition_time


def test_observed_generation_follows_each_objects_own_generation() -> None:
    world = World()
    world.apply(_all(GATEWAY_CLASS, GATEWAY, ROUTE, SERVICE, GRANT))
    # A spec change bumps the route's generation; a label change does not.
    snap = world.apply(ROUTE.replace("[db.example.com]", "[db.example.com, db2.example.com]"))
    snap = world.apply(
        ROUTE.replace("[db.example.com]", "[db.example.com, db2.example.com]").replace(
            "namespace: apps}", "namespace: apps, labels: {a: b}}"
        )
    )
    route = world.docs[ObjectKey("TLSRoute", "apps", "db")]
    assert route.metadata.generation == 2
    route_status = snap.statuses[ObjectKey("TLSRoute", "apps", "db")]
    assert isinstance(route_status, RouteStatus)
    assert {c.observed_generation for p in route_status.parents for c in p.conditions} == {2}
    # The Gateway's conditions, listener ones included, carry the Gateway's generation (1).
    gateway_status = snap.statuses[ObjectKey("Gateway", "infra", "gw")]
    assert isinstance(gateway_status, GatewayStatus)
    assert {c.observed_generation for c in gateway_status.conditions} == {1}
    assert {c.observed_generation for lst in gateway_status.listeners for c in lst.conditions} == {
        1
    }


def test_listeners_added_and_removed_leave_no_stale_status() -> None:
    world = World()
    world.apply(_all(GATEWAY_CLASS, GATEWAY))
    two = (
        GATEWAY.rstrip()
        + """
  - {name: extra, port: 8443, protocol: TLS, tls: {mode: Passthrough}}
"""
    )
    snap = world.apply(two)
    status = snap.statuses[ObjectKey("Gateway", "infra", "gw")]
    assert isinstance(status, GatewayStatus)
    assert [lst.name for lst in status.listeners] == ["tls", "extra"]
    assert set(snap.binds) == {("0.0.0.0", 443), ("0.0.0.0", 8443)}
    assert {c.observed_generation for c in status.conditions} == {2}
    snap = world.apply(GATEWAY)
    status = snap.statuses[ObjectKey("Gateway", "infra", "gw")]
    assert isinstance(status, GatewayStatus)
    assert [lst.name for lst in status.listeners] == ["tls"]
    assert set(snap.binds) == {("0.0.0.0", 443)}
    assert {c.observed_generation for c in status.conditions} == {3}


def test_bind_failure_reported_as_port_unavailable() -> None:
    world = World()
    world.apply(_all(GATEWAY_CLASS, GATEWAY))
    snap = world.build(bind_failures={("0.0.0.0", 443): "[Errno 98] Address already in use"})
    found = conditions(snap, "Gateway", "infra", "gw", listener="tls")
    assert reasons(found)["Accepted"] == ("False", "PortUnavailable")
    assert "Address already in use" in found["Accepted"].message
    assert reasons(conditions(snap, "Gateway", "infra", "gw"))["Accepted"] == (
        "False",
        "ListenersNotValid",
    )


def test_static_addresses_are_bound_and_reported() -> None:
    text = GATEWAY.replace("spec:\n", "spec:\n  addresses: [{value: 127.0.0.9}]\n")
    snap = snapshot_of(_all(GATEWAY_CLASS, text))
    status = snap.statuses[ObjectKey("Gateway", "infra", "gw")]
    assert isinstance(status, GatewayStatus)
    assert [(a.type, a.value) for a in status.addresses] == [("IPAddress", "127.0.0.9")]
    assert set(snap.binds) == {("127.0.0.9", 443)}


def test_hostname_addresses_are_unsupported() -> None:
    text = GATEWAY.replace("spec:\n", "spec:\n  addresses: [{type: Hostname, value: gw.example}]\n")
    snap = snapshot_of(_all(GATEWAY_CLASS, text))
    assert reasons(conditions(snap, "Gateway", "infra", "gw"))["Accepted"] == (
        "False",
        "UnsupportedAddress",
    )
    assert snap.binds == {}


def test_infrastructure_parameters_ref_is_invalid_parameters() -> None:
    text = GATEWAY.replace(
        "spec:\n",
        "spec:\n  infrastructure: {parametersRef: {group: example.com, kind: Params, name: p}}\n",
    )
    snap = snapshot_of(_all(GATEWAY_CLASS, text))
    assert reasons(conditions(snap, "Gateway", "infra", "gw"))["Accepted"] == (
        "False",
        "InvalidParameters",
    )


def _tls_secret(name: str, namespace: str = "infra") -> str:
    crt = (CERTS / "example.crt").read_text().replace("\n", "\n      ")
    key = (CERTS / "example.key").read_text().replace("\n", "\n      ")
    return f"""
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
      {crt}
  tls.key: |
      {key}
"""


TERMINATE = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: tlsgate
  listeners:
  - {name: term, port: 443, protocol: TLS,
     tls: {mode: Terminate, certificateRefs: [{name: cert}]}}
  - {name: term-8443, port: 8443, protocol: TLS,
     tls: {mode: Terminate, certificateRefs: [{name: cert}]}}
  - {name: pass, port: 9443, protocol: TLS, tls: {mode: Passthrough}}
"""

CA_MAP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: client-ca, namespace: infra}
data:
  ca.crt: |
    CA_PEM
"""


def _frontend(spec: str) -> str:
    return TERMINATE.replace("  listeners:\n", f"  tls:\n    frontend:\n{spec}  listeners:\n")


def test_frontend_validation_applies_to_terminate_listeners_with_per_port_override() -> None:
    ca = (CERTS / "ca.crt").read_text().replace("\n", "\n    ")
    text = _frontend("""      default:
        validation:
          caCertificateRefs: [{group: "", kind: ConfigMap, name: client-ca}]
      perPort:
      - port: 8443
        tls:
          validation:
            mode: AllowInsecureFallback
            caCertificateRefs: [{group: "", kind: ConfigMap, name: missing}]
""")
    snap = snapshot_of(_all(GATEWAY_CLASS, text, _tls_secret("cert"), CA_MAP.replace("CA_PEM", ca)))
    listeners = {lst.name: lst for bind in snap.binds.values() for lst in bind.listeners}
    assert listeners["term"].frontend is not None
    assert listeners["term"].frontend.mode == "AllowValidOnly"
    assert listeners["term"].frontend.ca_config_maps == (("infra", "client-ca"),)
    assert listeners["pass"].frontend is None  # never for Passthrough (SPEC.md §10.8)
    # The per-port entry's only CA is missing: never fall back to no validation (§9.3).
    assert "term-8443" not in listeners or listeners["term-8443"].reject is not None
    found = reasons(conditions(snap, "Gateway", "infra", "gw", listener="term-8443"))
    assert found["Accepted"] == ("False", "NoValidCACertificate")
    assert found["ResolvedRefs"] == ("False", "InvalidCACertificateRef")
    assert found["Programmed"] == ("False", "Invalid")
    gateway = reasons(conditions(snap, "Gateway", "infra", "gw"))
    assert gateway["InsecureFrontendValidationMode"] == ("True", "ConfigurationChanged")
    assert gateway["Accepted"] == ("True", "ListenersNotValid")


def test_frontend_ca_of_wrong_kind() -> None:
    text = _frontend("""      default:
        validation:
          caCertificateRefs: [{group: "", kind: Service, name: client-ca}]
""")
    snap = snapshot_of(_all(GATEWAY_CLASS, text, _tls_secret("cert")))
    found = reasons(conditions(snap, "Gateway", "infra", "gw", listener="term"))
    assert found["ResolvedRefs"] == ("False", "InvalidCACertificateKind")
    assert "InsecureFrontendValidationMode" not in conditions(snap, "Gateway", "infra", "gw")


def test_backend_client_certificate_ref() -> None:
    good = TERMINATE.replace(
        "spec:\n", "spec:\n  tls: {backend: {clientCertificateRef: {name: cert}}}\n"
    )
    snap = snapshot_of(_all(GATEWAY_CLASS, good, _tls_secret("cert")))
    assert reasons(conditions(snap, "Gateway", "infra", "gw"))["ResolvedRefs"] == (
        "True",
        "ResolvedRefs",
    )
    foreign = good.replace("{name: cert}}}", "{name: cert, namespace: elsewhere}}}")
    snap = snapshot_of(
        _all(GATEWAY_CLASS, foreign, _tls_secret("cert"), _tls_secret("cert", "elsewhere"))
    )
    gateway = reasons(conditions(snap, "Gateway", "infra", "gw"))
    assert gateway["ResolvedRefs"] == ("False", "RefNotPermitted")
    assert gateway["Accepted"] == ("True", "Accepted")  # does not affect Accepted (§4.1)
    missing = good.replace("{name: cert}}}", "{name: nope}}}")
    snap = snapshot_of(_all(GATEWAY_CLASS, missing, _tls_secret("cert")))
    assert reasons(conditions(snap, "Gateway", "infra", "gw"))["ResolvedRefs"] == (
        "False",
        "InvalidClientCertificateRef",
    )


def test_invalid_backend_keeps_its_weight_and_empty_service_rejects() -> None:
    route = ROUTE.replace(
        "[{name: pg, namespace: data, port: 5432}]",
        "[{name: pg, port: 5432, weight: 80}, {name: gone, port: 1, weight: 20}]",
    )
    service = SERVICE.replace("namespace: data", "namespace: apps")
    snap = snapshot_of(_all(GATEWAY_CLASS, GATEWAY, route, service))
    target = snap.binds[("0.0.0.0", 443)].listeners[0].ordered_routes()[0]
    assert [(b.weight, b.reject is None) for b in target.backends] == [(80, False), (20, False)]
    # pg exists but has no endpoints: ResolvedRefs is about references only (SPEC.md §7).
    assert target.backends[0].reject == "Service apps/pg has no ready endpoints"
    assert reasons(conditions(snap, "TLSRoute", "apps", "db"))["ResolvedRefs"] == (
        "False",
        "BackendNotFound",
    )
    assert target.total_weight == 100


ENDPOINTS = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: pg-abc
  namespace: data
  labels: {kubernetes.io/service-name: pg}
addressType: IPv4
endpoints:
- addresses: [10.0.0.2]
- addresses: [10.0.0.1]
  conditions: {ready: true}
- addresses: [10.0.0.3]
  conditions: {ready: false}
ports: [{name: pg, port: 15432}]
"""


def test_endpoints_ready_only_with_named_and_numbered_target_ports() -> None:
    named = SERVICE.replace("5432}", "5432, targetPort: pg}")
    snap = snapshot_of(_all(GATEWAY_CLASS, GATEWAY, ROUTE, named, GRANT, ENDPOINTS))
    backend = snap.binds[("0.0.0.0", 443)].listeners[0].ordered_routes()[0].backends[0]
    assert [str(e) for e in backend.endpoints] == ["10.0.0.1:15432", "10.0.0.2:15432"]
    numbered = SERVICE.replace("5432}", "5432, targetPort: 6000}")
    snap = snapshot_of(_all(GATEWAY_CLASS, GATEWAY, ROUTE, numbered, GRANT, ENDPOINTS))
    backend = snap.binds[("0.0.0.0", 443)].listeners[0].ordered_routes()[0].backends[0]
    assert [str(e) for e in backend.endpoints] == ["10.0.0.1:6000", "10.0.0.2:6000"]
    # A slice of another Service does not count.
    other = ENDPOINTS.replace("service-name: pg", "service-name: other")
    snap = snapshot_of(_all(GATEWAY_CLASS, GATEWAY, ROUTE, named, GRANT, other))
    backend = snap.binds[("0.0.0.0", 443)].listeners[0].ordered_routes()[0].backends[0]
    assert backend.endpoints == ()
    assert backend.reject is not None


def test_route_with_only_foreign_parents_gets_no_status() -> None:
    route = ROUTE.replace(
        "[{name: gw, namespace: infra}]",
        "[{name: gw, namespace: infra, group: example.com, kind: Mesh}]",
    )
    snap = snapshot_of(_all(GATEWAY_CLASS, GATEWAY, route))
    assert ObjectKey("TLSRoute", "apps", "db") not in snap.statuses


def test_translate_is_deterministic() -> None:
    text = _all(GATEWAY_CLASS, GATEWAY, ROUTE, SERVICE, GRANT, ENDPOINTS)
    assert snapshot_of(text) == snapshot_of(text)


POLICY = """
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: data}}
spec:
  targetRefs: [{{group: "", kind: Service, name: pg}}]
  validation:
    hostname: pg.internal
    caCertificateRefs: [{{group: "", kind: {kind}, name: {ca}}}]
"""


def _policy(name: str, ca: str = "pg-ca", kind: str = "ConfigMap") -> str:
    return POLICY.format(name=name, ca=ca, kind=kind)


def _pg_ca() -> str:
    ca = (CERTS / "ca.crt").read_text().replace("\n", "\n    ")
    return CA_MAP.replace("client-ca", "pg-ca").replace("infra", "data").replace("CA_PEM", ca)


def _policy_conditions(snap: object, name: str) -> dict[str, tuple[str, str]]:
    status = snap.statuses[ObjectKey("BackendTLSPolicy", "data", name)]  # type: ignore[attr-defined]
    return {c.type: (c.status, c.reason) for c in status.ancestors[0].conditions}


def test_backend_tls_policy_status_and_table() -> None:
    snap = snapshot_of(
        _all(GATEWAY_CLASS, GATEWAY, ROUTE, SERVICE, GRANT, ENDPOINTS, _pg_ca(), _policy("pg"))
    )
    assert _policy_conditions(snap, "pg") == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    status = snap.statuses[ObjectKey("BackendTLSPolicy", "data", "pg")]
    assert [a.ancestor_ref.name for a in status.ancestors] == ["gw"]  # type: ignore[union-attr]
    backend = snap.binds[("0.0.0.0", 443)].listeners[0].ordered_routes()[0].backends[0]
    assert backend.tls is not None
    assert backend.tls.hostname == "pg.internal"
    assert backend.tls.ca_config_maps == (("data", "pg-ca"),)


def test_backend_tls_policy_with_bad_ca_refs_is_not_accepted() -> None:
    base = (GATEWAY_CLASS, GATEWAY, ROUTE, SERVICE, GRANT, ENDPOINTS)
    snap = snapshot_of(_all(*base, _policy("pg", ca="missing")))
    assert _policy_conditions(snap, "pg") == {
        "Accepted": ("False", "NoValidCACertificate"),
        "ResolvedRefs": ("False", "InvalidCACertificateRef"),
    }
    backend = snap.binds[("0.0.0.0", 443)].listeners[0].ordered_routes()[0].backends[0]
    assert backend.reject is not None
    assert "data/pg is not accepted" in backend.reject
    snap = snapshot_of(_all(*base, _policy("pg", kind="Secret")))
    assert _policy_conditions(snap, "pg")["ResolvedRefs"] == ("False", "InvalidKind")


def test_conflicting_backend_tls_policies_the_older_wins() -> None:
    snap = snapshot_of(
        _all(
            GATEWAY_CLASS,
            GATEWAY,
            ROUTE,
            SERVICE,
            GRANT,
            ENDPOINTS,
            _pg_ca(),
            _policy("older"),  # applied first, so older
            _policy("newer"),
        )
    )
    assert _policy_conditions(snap, "older")["Accepted"] == ("True", "Accepted")
    assert _policy_conditions(snap, "newer")["Accepted"] == ("False", "Conflicted")
    backend = snap.binds[("0.0.0.0", 443)].listeners[0].ordered_routes()[0].backends[0]
    assert backend.tls is not None
    assert backend.tls.policy == "data/older"


def test_backend_tls_policy_no_route_uses_gets_no_status() -> None:
    snap = snapshot_of(_all(GATEWAY_CLASS, GATEWAY, SERVICE, _pg_ca(), _policy("pg")))
    assert ObjectKey("BackendTLSPolicy", "data", "pg") not in snap.statuses


def test_compatible_gateways_share_a_port_and_the_most_specific_listener_wins() -> None:
    text = Path(__file__).parent / "data" / "translate" / "gateways-sharing-a-port.in.yaml"
    snap = snapshot_of(text.read_text())
    bind = snap.binds[("0.0.0.0", 443)]
    assert bind.gateways == ("infra/exact", "infra/wildcard", "infra/empty")

    def outcome(sni: str) -> tuple[str, str] | str:
        result = snap.lookup("0.0.0.0", 443, sni)
        if isinstance(result, Routed):
            return result.listener.gateway, result.target.route
        assert result.listener is not None
        return f"rejected by {result.listener.gateway}"

    assert outcome("abc.example.com") == (
        "infra/exact",
        "infra/tlsroute-more-specific-wildcard-hostname",
    )
    # *.example.com is the wildcard Gateway's, whose only route is abc.example.com: no
    # fallback to the hostname-less Gateway's *.com route (listener isolation, §10.1).
    assert outcome("other.example.com") == "rejected by infra/wildcard"
    assert outcome("shop.com") == ("infra/empty", "infra/tlsroute-less-specific-wildcard-hostname")
