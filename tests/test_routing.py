"""Snapshot.lookup (SPEC.md §10.1-§10.4): listener choice, isolation, route choice, weights."""

from __future__ import annotations

import collections

import pytest

from gateway.routing.snapshot import Backend, Rejected, RejectReason, Routed, RouteTarget, Snapshot

from .helpers import GATEWAY_CLASS, snapshot_of

MANIFESTS = (
    GATEWAY_CLASS
    + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: tlsgate
  listeners:
  - {name: exact, port: 443, hostname: db.example.com, protocol: TLS,
     tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
  - {name: deep, port: 443, hostname: "*.internal.example.com", protocol: TLS,
     tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
  - {name: wide, port: 443, hostname: "*.example.com", protocol: TLS,
     tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
  - {name: any, port: 443, protocol: TLS,
     tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
  - {name: broken, port: 443, hostname: "*.broken.example.com", protocol: TLS,
     tls: {mode: Terminate, certificateRefs: [{name: missing}]},
     allowedRoutes: {namespaces: {from: All}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: db, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: exact}]
  hostnames: [db.example.com]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: wide, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: wide}]
  hostnames: ["*.example.com", "special.example.com"]
  rules: [{backendRefs: [{name: web, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: other-tld, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: any}]
  hostnames: ["*.com"]
  rules: [{backendRefs: [{name: web, port: 443, weight: 0}]}]
"""
)


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return snapshot_of(MANIFESTS)


def _route(result: Routed | Rejected) -> tuple[str, str, str]:
    assert isinstance(result, Routed), result
    return result.listener.name, result.target.hostname, result.target.route


@pytest.mark.parametrize(
    ("sni", "listener", "hostname", "route"),
    [
        ("db.example.com", "exact", "db.example.com", "apps/db"),
        ("DB.EXAMPLE.COM.", "exact", "db.example.com", "apps/db"),  # normalized
        ("special.example.com", "wide", "special.example.com", "apps/wide"),  # exact beats *
        ("www.example.com", "wide", "*.example.com", "apps/wide"),
        ("a.b.example.com", "wide", "*.example.com", "apps/wide"),  # several labels
    ],
)
def test_routes_to_the_most_specific_listener_and_hostname(
    snapshot: Snapshot,
    sni: str,
    listener: str,
    hostname: str,
    route: str,
) -> None:
    assert _route(snapshot.lookup("0.0.0.0", 443, sni)) == (listener, hostname, route)


def test_no_fallback_to_a_broader_listener(snapshot: Snapshot) -> None:
    # *.internal.example.com wins the listener choice but has no route: rejected, although
    # the broader *.example.com listener has a route that would match (SPEC.md §10.1 step 4).
    result = snapshot.lookup("0.0.0.0", 443, "api.internal.example.com")
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.NO_ROUTE
    assert result.listener is not None
    assert result.listener.name == "deep"


def test_unprogrammed_listener_rejects_what_it_wins(snapshot: Snapshot) -> None:
    result = snapshot.lookup("0.0.0.0", 443, "x.broken.example.com")
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.LISTENER_NOT_PROGRAMMED


def test_hostname_less_listener_and_zero_weight(snapshot: Snapshot) -> None:
    result = snapshot.lookup("0.0.0.0", 443, "other.example.org")
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.NO_ROUTE
    result = snapshot.lookup("0.0.0.0", 443, "shop.com")  # the *.com route has weight 0 only
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.NO_BACKEND


@pytest.mark.parametrize(
    ("address", "port", "sni", "reason"),
    [
        ("0.0.0.0", 444, "db.example.com", RejectReason.NO_BIND),
        ("0.0.0.0", 443, None, RejectReason.NO_SNI),
        ("0.0.0.0", 443, "", RejectReason.NO_SNI),
    ],
)
def test_rejections(
    snapshot: Snapshot,
    address: str,
    port: int,
    sni: str | None,
    reason: RejectReason,
) -> None:
    result = snapshot.lookup(address, port, sni)
    assert isinstance(result, Rejected)
    assert result.reason is reason


def test_weighted_choice_is_exact_over_the_whole_range() -> None:
    target = RouteTarget(
        route="a/r",
        hostname="h",
        backends=(
            Backend(name="eighty", weight=80),
            Backend(name="none", weight=0),
            Backend(name="twenty", weight=20, reject="invalid"),
        ),
    )
    counts = collections.Counter(target.choose(point).name for point in range(target.total_weight))
    assert counts == {"eighty": 80, "twenty": 20}
