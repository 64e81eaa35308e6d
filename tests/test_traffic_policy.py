"""ClientTrafficPolicy (API.md "Traffic policies"): admission, status.ancestors for each
reason, and what each listener enforces once policies on a Gateway and a listener merge."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from gateway.api.convert import Invalid, structure_document
from gateway.api.kinds import ObjectKey
from gateway.api.status import PolicyStatus
from gateway.routing.snapshot import LimitKind

from .harness import client_traffic_policy_yaml
from .helpers import GATEWAY_CLASS, World, with_changes

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: tlsgate
  listeners:
  - {name: pg, port: 5432, protocol: TLS, hostname: "*.db.example.com",
     tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
  - {name: web, port: 5432, protocol: TLS, hostname: "*.web.example.com",
     tls: {mode: Passthrough}, allowedRoutes: {namespaces: {from: All}}}
"""


policy = client_traffic_policy_yaml


ON_GATEWAY = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  proxyProtocol: {trustedCIDRs: [10.0.0.0/8]}
  clientIPs: {deny: [192.0.2.0/24]}
"""


def _ancestors(world: World, name: str, namespace: str = "infra") -> list[tuple[Any, ...]]:
    assert world.snapshot is not None
    status = world.snapshot.statuses[ObjectKey("ClientTrafficPolicy", namespace, name)]
    assert isinstance(status, PolicyStatus)
    return [
        (
            a.ancestor_ref.name,
            a.ancestor_ref.section_name,
            a.controller_name,
            [(c.type, c.status, c.reason) for c in a.conditions],
        )
        for a in status.ancestors
    ]


def _listener(world: World, name: str) -> Any:
    assert world.snapshot is not None
    bind = world.snapshot.binds[("0.0.0.0", 5432)]
    return next(lst for lst in bind.listeners if lst.name == name)


def test_a_policy_on_a_gateway_is_accepted_and_reaches_every_listener() -> None:
    world = World()
    world.apply(GATEWAY_CLASS + "\n---\n" + GATEWAY + policy("edge", ON_GATEWAY))
    assert _ancestors(world, "edge") == [
        ("edge", None, "tlsgate.dev/gateway-controller", [("Accepted", "True", "Accepted")])
    ]
    for name in ("pg", "web"):
        client = _listener(world, name).client
        assert client.policies == ("infra/edge",)
        assert client.trusts("10.1.2.3")
        assert not client.trusts("11.0.0.1")
        assert client.refuses("192.0.2.9") == "192.0.2.9 is in clientIPs.deny"
        assert client.refuses("198.51.100.1") is None


def test_a_listeners_own_policy_wins_over_its_gateways_and_conflicts_with_none() -> None:
    world = World()
    own = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: pg}]
  clientIPs: {allow: [198.51.100.0/24], deny: []}
"""
    world.apply(
        GATEWAY_CLASS + "\n---\n" + GATEWAY + policy("edge", ON_GATEWAY) + policy("pg", own)
    )
    assert _ancestors(world, "pg") == [
        ("edge", "pg", "tlsgate.dev/gateway-controller", [("Accepted", "True", "Accepted")])
    ]
    pg, web = _listener(world, "pg").client, _listener(world, "web").client
    assert pg.policies == ("infra/edge", "infra/pg")
    assert pg.refuses("192.0.2.9") == "192.0.2.9 is not in clientIPs.allow"
    assert pg.refuses("198.51.100.7") is None  # its own deny list is empty: the Gateway's is not
    assert pg.refuses("203.0.113.1") == "203.0.113.1 is not in clientIPs.allow"
    assert pg.trusts("10.0.0.1")  # proxyProtocol from the Gateway's policy
    assert web.refuses("192.0.2.9") == "192.0.2.9 is in clientIPs.deny"


def test_the_younger_of_two_policies_setting_one_field_is_conflicted_and_applies_nothing() -> None:
    world = World()
    world.apply(GATEWAY_CLASS + "\n---\n" + GATEWAY + policy("first", ON_GATEWAY))
    second = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  clientIPs: {deny: [203.0.113.0/24]}
  proxyProtocol: {trustedCIDRs: [172.16.0.0/12]}
"""
    world.apply(policy("second", second))
    [(_, _, _, conditions)] = _ancestors(world, "second")
    assert conditions == [("Accepted", "False", "Conflicted")]
    client = _listener(world, "pg").client
    assert client.policies == ("infra/first",)
    assert client.refuses("203.0.113.1") is None
    assert not client.trusts("172.16.0.1")
    # Fields apart: both apply.
    other = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  clientIPs: {allow: [0.0.0.0/0]}
"""
    world.apply(policy("third", other))
    assert _ancestors(world, "third")[0][3] == [("Accepted", "True", "Accepted")]
    assert _listener(world, "pg").client.policies == ("infra/first", "infra/third")


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("{group: gateway.networking.k8s.io, kind: Gateway, name: nowhere}", "TargetNotFound"),
        (
            "{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: nope}",
            "TargetNotFound",
        ),
        ("{group: '', kind: Service, name: edge}", "Invalid"),
    ],
)
def test_a_policy_whose_target_is_missing_or_not_a_gateway_is_not_accepted(
    target: str, reason: str
) -> None:
    world = World()
    world.apply(
        GATEWAY_CLASS
        + "\n---\n"
        + GATEWAY
        + policy("p", f"  targetRefs: [{target}]\n  clientIPs: {{deny: [192.0.2.0/24]}}")
    )
    status = world.snapshot.statuses[ObjectKey("ClientTrafficPolicy", "infra", "p")]  # type: ignore[union-attr]
    assert isinstance(status, PolicyStatus)
    assert [(c.type, c.status, c.reason) for a in status.ancestors for c in a.conditions] == [
        ("Accepted", "False", reason)
    ]
    assert _listener(world, "pg").client is None


def test_a_policy_on_a_gateway_of_another_controller_gets_no_status() -> None:
    world = World()
    other = GATEWAY.replace("gatewayClassName: tlsgate", "gatewayClassName: someone-else")
    world.apply(GATEWAY_CLASS + "\n---\n" + other + policy("p", ON_GATEWAY))
    assert world.snapshot is not None
    assert ObjectKey("ClientTrafficPolicy", "infra", "p") not in world.snapshot.statuses


BASE: dict[str, Any] = {
    "apiVersion": "gateway.tlsgate.dev/v1alpha1",
    "kind": "ClientTrafficPolicy",
    "metadata": {"name": "p", "namespace": "infra"},
    "spec": {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}],
        "proxyProtocol": {"trustedCIDRs": ["10.0.0.0/8", "2001:db8::/32"], "optional": True},
        "clientIPs": {"allow": ["0.0.0.0/0"], "deny": ["192.0.2.0/24"]},
    },
}


def test_limits_count_over_their_policys_target_and_whole_gateway_ones_at_accept() -> None:
    """A Gateway's connectionLimit counts all its listeners together (at accept: every
    listener of the socket has it); a listener's own perClient limit counts that listener
    once the hello names it; a younger policy setting the same limit is Conflicted."""
    whole = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  connection: {connectionLimit: {value: 100}}
"""
    own = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: pg}]
  connection: {perClient: {maxConnections: 5, connectionsPerSecond: 20}}
"""
    world = World()
    world.apply(
        GATEWAY_CLASS
        + "\n---\n"
        + GATEWAY
        + policy("whole", whole)
        + policy("pg", own)
        + policy("again", whole)
    )
    pg, web = _listener(world, "pg").client, _listener(world, "web").client
    assert [(r.kind, r.scope, r.value) for r in pg.limits] == [
        (LimitKind.CONNECTIONS, "infra/edge", 100),
        (LimitKind.CLIENT_CONNECTIONS, "infra/edge/pg", 5),
        (LimitKind.CLIENT_RATE, "infra/edge/pg", 20),
    ]
    assert web.limits == pg.limits[:1]
    assert world.snapshot is not None
    bind = world.snapshot.binds[("0.0.0.0", 5432)]
    assert bind.limits_at_accept("127.0.0.1") == pg.limits[:1]
    [(_, _, _, conditions)] = _ancestors(world, "again")
    assert conditions == [("Accepted", "False", "Conflicted")]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (
            [("spec.proxyProtocol.trustedCIDRs", ["10.0.0.1/8"])],
            "spec.proxyProtocol.trustedCIDRs[0]",
        ),
        ([("spec.proxyProtocol.trustedCIDRs", ["10.0.0.0"])], "spec.proxyProtocol.trustedCIDRs[0]"),
        ([("spec.proxyProtocol.trustedCIDRs", [])], "spec.proxyProtocol.trustedCIDRs"),
        ([("spec.clientIPs.deny", ["not-an-ip/8"])], "spec.clientIPs.deny[0]"),
        ([("spec.clientIPs.allow", ["10.0.0.0/33"])], "spec.clientIPs.allow[0]"),
        ([("spec.targetRefs", [])], "spec.targetRefs"),
        ([("spec.clientIPs.deny", ["::ffff:10.0.0.0/104"])], "spec.clientIPs.deny[0]"),
        ([("spec.timeout", {"tls": {"helloTimeout": "10s\n"}})], "spec.timeout.tls.helloTimeout"),
        ([("spec.timeout", {"tls": {"helloTimeout": "6m"}})], "spec.timeout.tls.helloTimeout"),
        ([("spec.timeout", {"tls": {"helloTimeout": "5 s"}})], "spec.timeout.tls.helloTimeout"),
        ([("spec.timeout", {"tcp": {"idleTimeout": "0s"}})], "spec.timeout.tcp.idleTimeout"),
        ([("spec.timeout", {"tls": {"handshakeTimeout": "1d"}})], "spec.timeout.tls"),
        ([("spec.timeout", {"tls": {"hello": "1s"}})], "spec.timeout.tls"),
        (
            [("spec.connection", {"connectionLimit": {"value": 0}})],
            "spec.connection.connectionLimit.value",
        ),
        (
            [("spec.connection", {"perClient": {"connectionsPerSecond": 10**7}})],
            "spec.connection.perClient.connectionsPerSecond",
        ),
        ([("spec.connection", {"connectionLimit": {}})], "spec.connection.connectionLimit"),
        ([("spec.proxyProtocol.trustedCidrs", ["10.0.0.0/8"])], "spec.proxyProtocol"),
    ],
)
def test_admission_names_the_bad_field(changes: list[tuple[str, Any]], field: str) -> None:
    structure_document(BASE)  # the base is valid
    with pytest.raises(Invalid) as caught:
        structure_document(with_changes_dict(BASE, changes))
    fields = [c.field for c in caught.value.causes]
    assert any(f == field or f.startswith(field) for f in fields), caught.value.causes


def with_changes_dict(base: dict[str, Any], changes: list[tuple[str, Any]]) -> dict[str, Any]:
    import json

    import yaml

    return with_changes(yaml.safe_dump(json.loads(json.dumps(base))), changes)


def test_networks_match_ipv4_mapped_clients() -> None:
    from gateway.routing.snapshot import in_networks

    networks = (ipaddress.ip_network("10.0.0.0/8"),)
    assert in_networks("::ffff:10.1.2.3", networks)
    assert not in_networks("not an address", networks)


def test_the_routing_table_shows_each_listeners_policy() -> None:
    from gateway.routing.explain import table_to_wire

    world = World()
    world.apply(GATEWAY_CLASS + "\n---\n" + GATEWAY + policy("edge", ON_GATEWAY))
    assert world.snapshot is not None
    [bind] = table_to_wire(world.snapshot)["binds"]
    assert bind["listeners"][0]["clientTrafficPolicy"] == {
        "policies": ["infra/edge"],
        "proxyProtocol": {"trustedCIDRs": ["10.0.0.0/8"], "optional": False},
        "clientIPs": {"deny": ["192.0.2.0/24"]},
    }


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("2h1m1s5ms", 7261.005)],
)
def test_gateway_api_durations(text: str, seconds: float) -> None:
    from gateway.api.names import parse_duration

    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "1.5s", "-1s", "1d", "123456s", "1h1m1s1ms1s", "s"])
def test_not_gateway_api_durations(text: str) -> None:
    from gateway.api.names import parse_duration

    assert parse_duration(text) is None


def test_timeouts_merge_per_field_and_the_socket_waits_for_the_longest_hello() -> None:
    world = World()
    on_gateway = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  timeout: {tls: {helloTimeout: 2s}, tcp: {idleTimeout: 10m}}
"""
    on_pg = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: pg}]
  timeout: {tls: {helloTimeout: 30s, handshakeTimeout: 500ms}}
"""
    world.apply(
        GATEWAY_CLASS + "\n---\n" + GATEWAY + policy("edge", on_gateway) + policy("pg", on_pg)
    )
    pg, web = _listener(world, "pg").client, _listener(world, "web").client
    assert (pg.hello_timeout, pg.handshake_timeout, pg.idle_timeout) == (30.0, 0.5, 600.0)
    assert (web.hello_timeout, web.handshake_timeout, web.idle_timeout) == (2.0, None, 600.0)
    assert world.snapshot is not None
    assert world.snapshot.binds[("0.0.0.0", 5432)].hello_timeout(10.0) == 30.0
    # Two helloTimeouts on one target conflict; a helloTimeout and an idleTimeout do not.
    world.apply(policy("hello-again", on_gateway.replace("tcp: {idleTimeout: 10m}", "")))
    assert _ancestors(world, "hello-again")[0][3] == [("Accepted", "False", "Conflicted")]
    idle = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: pg}]
  timeout: {tcp: {idleTimeout: 1h}}
"""
    world.apply(policy("pg-idle", idle))
    assert _ancestors(world, "pg-idle")[0][3] == [("Accepted", "True", "Accepted")]
    assert _listener(world, "pg").client.idle_timeout == 3600.0


def test_a_socket_waits_for_the_flag_when_a_listener_has_no_hello_timeout() -> None:
    world = World()
    short = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: pg}]
  timeout: {tls: {helloTimeout: 300ms}}
"""
    world.apply(GATEWAY_CLASS + "\n---\n" + GATEWAY + policy("pg", short))
    assert world.snapshot is not None
    bind = world.snapshot.binds[("0.0.0.0", 5432)]
    assert bind.hello_timeout(10.0) == 10.0  # `web` has none: the flag's 10 s
    assert bind.hello_timeout(0.1) == 0.3  # the longest of theirs


def test_refusal_at_accept_only_when_no_listener_would_serve() -> None:
    world = World()
    deny_pg = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge, sectionName: pg}]
  clientIPs: {deny: [192.0.2.0/24]}
"""
    world.apply(GATEWAY_CLASS + "\n---\n" + GATEWAY + policy("pg", deny_pg))
    assert world.snapshot is not None
    assert world.snapshot.binds[("0.0.0.0", 5432)].refusal_at_accept("192.0.2.1") is None
    world.apply(policy("edge", ON_GATEWAY))  # now every listener denies it
    bind = world.snapshot.binds[("0.0.0.0", 5432)]
    assert bind.refusal_at_accept("192.0.2.1") == "192.0.2.1 is in clientIPs.deny"
    assert bind.refusal_at_accept("198.51.100.1") is None
    # A trusted PROXY sender is judged by the address its header carries, later.
    trusted_too = ON_GATEWAY.replace("10.0.0.0/8", "192.0.2.0/24")
    world.apply(policy("edge", trusted_too))
    assert world.snapshot.binds[("0.0.0.0", 5432)].refusal_at_accept("192.0.2.1") is None


def test_one_missing_target_keeps_the_whole_policy_out_of_force() -> None:
    world = World()
    two = """
  targetRefs:
  - {group: gateway.networking.k8s.io, kind: Gateway, name: edge}
  - {group: gateway.networking.k8s.io, kind: Gateway, name: nowhere}
  clientIPs: {deny: [192.0.2.0/24]}
"""
    world.apply(GATEWAY_CLASS + "\n---\n" + GATEWAY + policy("p", two))
    assert [(a[0], a[3]) for a in _ancestors(world, "p")] == [
        ("edge", [("Accepted", "False", "TargetNotFound")]),
        ("nowhere", [("Accepted", "False", "TargetNotFound")]),
    ]
    assert _listener(world, "pg").client is None


def test_the_postgres_example_is_accepted_whole() -> None:
    """examples/postgres.yaml, as docs/postgresql.md points users to it: every object of it
    accepted, both policies in force."""
    from pathlib import Path

    from gateway.api.status import RouteStatus

    text = (Path(__file__).resolve().parent.parent / "examples" / "postgres.yaml").read_text()
    world = World()
    world.apply(text)
    assert world.snapshot is not None
    statuses = world.snapshot.statuses
    for kind, namespace, name in [
        ("ClientTrafficPolicy", "infra", "behind-the-balancer"),
        ("BackendTrafficPolicy", "data", "orders-db"),
    ]:
        status = statuses[ObjectKey(kind, namespace, name)]
        assert isinstance(status, PolicyStatus)
        assert [c.reason for a in status.ancestors for c in a.conditions] == ["Accepted"]
    route = statuses[ObjectKey("TLSRoute", "data", "orders")]
    assert isinstance(route, RouteStatus)
    assert {c.reason for p in route.parents for c in p.conditions} == {"Accepted", "ResolvedRefs"}
