"""The patches workers are sent: small for a one-route write, exact, and refused when they do
not apply to the snapshot in force."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.bundle import admit_all
from gateway.api.kinds import Document, ObjectKey
from gateway.routing.patch import MAX_PATCHED_TARGETS, PatchMismatch, apply, diff
from gateway.store import metadata
from gateway.store.state import State

GW = "gateway.networking.k8s.io/v1"


def _route(i: int, host: str) -> dict[str, Any]:
    return {
        "apiVersion": GW,
        "kind": "TLSRoute",
        "metadata": {"name": f"r{i}", "namespace": "apps"},
        "spec": {
            "parentRefs": [{"name": "gw", "namespace": "infra"}],
            "hostnames": [host],
            "rules": [{"backendRefs": [{"name": f"s{i}", "port": 443}]}],
        },
    }


def _world(count: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": GW,
            "kind": "GatewayClass",
            "metadata": {"name": "tlsgate"},
            "spec": {"controllerName": "tlsgate.dev/gateway-controller"},
        },
        {
            "apiVersion": GW,
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "infra"},
            "spec": {
                "gatewayClassName": "tlsgate",
                "listeners": [
                    {
                        "name": "tls",
                        "port": 443,
                        "protocol": "TLS",
                        "tls": {"mode": "Passthrough"},
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        },
    ]
    for i in range(count):
        docs.append(_route(i, f"b{i}.example.com"))
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"s{i}", "namespace": "apps"},
                "spec": {"ports": [{"port": 443}]},
            }
        )
    return docs


def _stored(raws: list[dict[str, Any]], state: State | None = None) -> list[Document]:
    docs, rejected = admit_all(raws)
    assert not rejected
    out = []
    for doc in docs:
        key = ObjectKey(doc.kind, doc.metadata.namespace or "", doc.metadata.name)
        previous = state.documents.get(key) if state is not None else None
        out.append(
            metadata.assign(
                doc, previous=previous, uid="u", now="2026-01-01T00:00:00Z", resource_version="2"
            )
        )
    return out


def test_a_one_route_write_is_a_one_target_patch() -> None:
    state = State()
    state.replace_documents(_stored(_world(200)))
    before = state.snapshot
    state.put(_stored([_route(7, "moved.example.com")], state))
    patch = diff(before, state.snapshot)
    assert patch is not None
    # One hostname gone, one added, on the one listener; no bind replaced.
    assert patch.binds == {}
    ((_, changes),) = patch.routes.items()
    assert set(changes) == {"b7.example.com", "moved.example.com"}
    assert changes["b7.example.com"] is None
    assert apply(before, patch).binds == state.snapshot.binds
    assert apply(before, patch).generation == state.snapshot.generation


def test_a_patch_for_another_snapshot_is_refused() -> None:
    state = State()
    state.replace_documents(_stored(_world(3)))
    first = state.snapshot
    state.put(_stored([_route(1, "x.example.com")], state))
    second = state.snapshot
    state.put(_stored([_route(2, "y.example.com")], state))
    patch = diff(second, state.snapshot)
    assert patch is not None
    with pytest.raises(PatchMismatch):
        apply(first, patch)


def test_a_listener_change_replaces_the_bind() -> None:
    state = State()
    raws = _world(3)
    state.replace_documents(_stored(raws))
    before = state.snapshot
    gateway = raws[1]
    gateway["spec"]["listeners"][0]["hostname"] = "*.example.com"
    state.put(_stored([gateway], state))
    patch = diff(before, state.snapshot)
    assert patch is not None
    assert set(patch.binds) == {("0.0.0.0", 443)}
    assert apply(before, patch).binds == state.snapshot.binds


def test_a_listener_without_routes_keeps_its_bind_across_unrelated_writes() -> None:
    state = State()
    raws = _world(3)
    raws[1]["spec"]["listeners"].append(
        {"name": "idle", "port": 8443, "protocol": "TLS", "tls": {"mode": "Passthrough"}}
    )
    state.replace_documents(_stored(raws))
    before = state.snapshot
    state.put(_stored([_route(1, "x.example.com")], state))
    assert state.snapshot.binds[("0.0.0.0", 8443)] is before.binds[("0.0.0.0", 8443)]
    patch = diff(before, state.snapshot)
    assert patch is not None
    assert patch.binds == {}  # only the route target that moved


def test_a_large_bind_replaced_whole_goes_as_a_whole_snapshot() -> None:
    # A patch is encoded on the supervisor's loop; a whole snapshot on a thread.
    state = State()
    raws = _world(MAX_PATCHED_TARGETS + 10)
    state.replace_documents(_stored(raws))
    before = state.snapshot
    gateway = raws[1]
    gateway["spec"]["listeners"][0]["hostname"] = "*.example.com"
    state.put(_stored([gateway], state))
    assert diff(before, state.snapshot) is None
