"""`State` (gateway/store/state.py): every change rebuilds and swaps one snapshot reference,
the documents dict is replaced rather than mutated, waiters wake on a swap, and condition
times survive rebuilds that do not change a condition's status."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from gateway.api.convert import structure_document
from gateway.api.kinds import Document, ObjectKey
from gateway.routing.snapshot import Snapshot
from gateway.store import metadata
from gateway.store.state import State

from .helpers import conditions

#: Fixed times, far from any real clock reading, so a condition stamped by a real rebuild
#: (`set_bind_failures` reads the clock) is told apart.
T0 = "2000-01-01T00:00:00Z"
T1 = "2000-01-01T00:00:01Z"
T2 = "2000-01-01T00:00:02Z"
ADDRESS = "127.0.0.1"
#: How long a test may wait for what should happen at once: a hang fails, it does not stall
#: the suite (a safety net, not a measurement).
SAFETY = 10.0
GATEWAY = ObjectKey("Gateway", "infra", "gw")
CLASS = ObjectKey("GatewayClass", "", "tlsgate")


def admitted(raw: dict[str, Any], *, previous: Document | None = None, now: str = T0) -> Document:
    """A document as a write stores it: admitted, with server metadata."""
    return metadata.assign(
        structure_document(raw),
        previous=previous,
        uid=f"uid-{raw['metadata']['name']}",
        now=now,
        resource_version="1",
    )


def gateway_class() -> Document:
    return admitted(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "tlsgate"},
            "spec": {"controllerName": "tlsgate.dev/gateway-controller"},
        }
    )


def gateway_raw(*ports: int) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "infra"},
        "spec": {
            "gatewayClassName": "tlsgate",
            "listeners": [
                {
                    "name": f"tls-{port}",
                    "port": port,
                    "protocol": "TLS",
                    "tls": {"mode": "Passthrough"},
                }
                for port in ports
            ],
        },
    }


def gateway(*ports: int) -> Document:
    return admitted(gateway_raw(*ports))


def times(snapshot: Snapshot, listener: str | None = None) -> dict[str, tuple[str, str]]:
    """The Gateway's (or a listener's) conditions: type -> (status, lastTransitionTime)."""
    found = conditions(snapshot, "Gateway", "infra", "gw", listener=listener)
    return {t: (c.status, c.last_transition_time) for t, c in found.items()}


# --- swaps --------------------------------------------------------------------------------


def test_a_new_state_has_an_empty_first_snapshot() -> None:
    state = State(bind_address=ADDRESS)
    assert state.generation == state.snapshot.generation == 1
    assert state.documents == {}
    assert state.snapshot.binds == {}
    assert state.bind_failures == {}


def test_put_swaps_in_a_new_snapshot_and_leaves_the_old_one_alone() -> None:
    state = State(bind_address=ADDRESS)
    old = state.snapshot
    new = state.put([gateway_class(), gateway(8443)], now=T0)
    assert new is state.snapshot
    assert new is not old
    assert new.generation == old.generation + 1 == state.generation
    assert list(new.binds) == [(ADDRESS, 8443)]
    # A snapshot already read never changes.
    assert old.binds == {}
    assert old.generation == 1
    again = state.put([gateway(8443, 9443)], now=T1)
    assert again.generation == new.generation + 1
    assert sorted(again.binds) == [(ADDRESS, 8443), (ADDRESS, 9443)]
    assert list(new.binds) == [(ADDRESS, 8443)]


def test_put_replaces_the_documents_dict_instead_of_mutating_it() -> None:
    state = State(bind_address=ADDRESS)
    empty = state.documents
    state.put([gateway_class(), gateway(8443)], now=T0)
    assert empty == {}, "a dict read before the write is unchanged"
    assert state.documents is not empty
    assert set(state.documents) == {CLASS, GATEWAY}
    both = state.documents
    state.put([], deleted=[GATEWAY], now=T1)
    assert set(both) == {CLASS, GATEWAY}
    assert set(state.documents) == {CLASS}
    assert state.snapshot.binds == {}


def test_put_replaces_a_document_under_its_key() -> None:
    state = State(bind_address=ADDRESS)
    state.put([gateway_class(), gateway(8443)], now=T0)
    replacement = gateway(9443)
    state.put([replacement], now=T1)
    assert state.documents[GATEWAY] is replacement
    assert list(state.snapshot.binds) == [(ADDRESS, 9443)]


def test_deleting_an_absent_key_is_harmless_and_still_swaps() -> None:
    state = State(bind_address=ADDRESS)
    state.put([gateway_class()], now=T0)
    generation = state.generation
    state.put([], deleted=[GATEWAY], now=T1)
    assert set(state.documents) == {CLASS}
    assert state.generation == generation + 1


def test_replace_documents_swaps_in_a_whole_new_set() -> None:
    state = State(bind_address=ADDRESS)
    state.put([gateway_class(), gateway(8443)], now=T0)
    before = state.documents
    generation = state.generation
    snapshot = state.replace_documents([gateway_class()])
    assert snapshot is state.snapshot
    assert snapshot.generation == generation + 1
    assert set(state.documents) == {CLASS}, "what the new set lacks is gone"
    assert set(before) == {CLASS, GATEWAY}
    assert snapshot.binds == {}


def test_rebuild_swaps_even_without_a_change() -> None:
    state = State(bind_address=ADDRESS)
    state.put([gateway_class(), gateway(8443)], now=T0)
    old = state.snapshot
    new = state.rebuild(now=T1)
    assert new is state.snapshot
    assert new is not old
    assert new.generation == old.generation + 1
    assert new.binds.keys() == old.binds.keys()


def test_set_bind_failures_rebuilds_only_on_a_change() -> None:
    state = State(bind_address=ADDRESS)
    state.put([gateway_class(), gateway(8443)], now=T0)
    generation, snapshot = state.generation, state.snapshot
    state.set_bind_failures({})
    assert (state.generation, state.snapshot) == (generation, snapshot), "no change, no swap"

    failures = {(ADDRESS, 8443): "address in use"}
    state.set_bind_failures(failures)
    assert state.generation == generation + 1
    assert state.snapshot.binds[(ADDRESS, 8443)].error == "address in use"
    listener = conditions(state.snapshot, "Gateway", "infra", "gw", listener="tls-8443")
    assert (listener["Accepted"].status, listener["Accepted"].reason) == (
        "False",
        "PortUnavailable",
    )

    failures[(ADDRESS, 9443)] = "changed after the call"
    assert state.bind_failures == {(ADDRESS, 8443): "address in use"}, "kept as a copy"
    swapped = state.snapshot
    state.set_bind_failures({(ADDRESS, 8443): "address in use"})
    assert state.snapshot is swapped, "equal failures are no change"
    state.set_bind_failures({(ADDRESS, 8443): "permission denied"})
    assert state.generation == generation + 2
    assert state.snapshot.binds[(ADDRESS, 8443)].error == "permission denied"
    state.set_bind_failures({})
    assert state.generation == generation + 3
    assert state.snapshot.binds[(ADDRESS, 8443)].error is None


# --- waiting for a swap ------------------------------------------------------------------


async def test_wait_changed_wakes_on_a_swap() -> None:
    state = State(bind_address=ADDRESS)
    seen: list[Snapshot] = []
    generation = state.generation

    async def waiter() -> None:
        seen.append(await state.wait_changed(generation))

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert seen == [], "nothing swapped yet"
            snapshot = state.put([gateway_class()], now=T0)
    assert seen == [snapshot, snapshot], "every waiter wakes, with the new snapshot"


async def test_wait_changed_does_not_wake_without_a_swap() -> None:
    state = State(bind_address=ADDRESS)
    seen: list[Snapshot] = []
    generation = state.generation

    async def waiter() -> None:
        seen.append(await state.wait_changed(generation))

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            state.set_bind_failures({})  # no change: no swap
            await trio.testing.wait_all_tasks_blocked()
            assert seen == []
            state.set_bind_failures({(ADDRESS, 8443): "address in use"})
    assert [s.generation for s in seen] == [generation + 1]


async def test_wait_changed_returns_at_once_for_an_older_generation() -> None:
    state = State(bind_address=ADDRESS)
    old = state.generation
    state.rebuild(now=T0)
    state.rebuild(now=T1)
    with trio.fail_after(SAFETY), trio.testing.assert_no_checkpoints():
        snapshot = await state.wait_changed(old)
    assert snapshot is state.snapshot
    assert snapshot.generation == old + 2


async def test_wait_changed_after_several_swaps_returns_the_latest() -> None:
    state = State(bind_address=ADDRESS)
    generation = state.generation
    seen: list[Snapshot] = []

    async def waiter() -> None:
        seen.append(await state.wait_changed(generation))

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            state.rebuild(now=T0)
            state.rebuild(now=T1)  # before the waiter runs again
    assert seen == [state.snapshot]
    assert seen[0].generation == generation + 2


# --- condition times -------------------------------------------------------------------


def test_last_transition_time_is_kept_while_a_status_holds() -> None:
    state = State(bind_address=ADDRESS)
    state.put([gateway_class(), gateway(8443)], now=T0)
    first = times(state.snapshot)
    assert first == {"Accepted": ("True", T0), "Programmed": ("True", T0)}

    state.rebuild(now=T1)
    assert times(state.snapshot) == first
    gwc = conditions(state.snapshot, "GatewayClass", "", "tlsgate")
    assert gwc["Accepted"].last_transition_time == T0

    # A spec change is a new generation, but no condition changes status.
    previous = state.documents[GATEWAY]
    updated = admitted(gateway_raw(8443, 9443), previous=previous, now=T2)
    assert updated.metadata.generation == 2
    state.put([updated], now=T2)
    assert times(state.snapshot) == first
    found = conditions(state.snapshot, "Gateway", "infra", "gw")
    assert {c.observed_generation for c in found.values()} == {2}
    # The new listener's conditions start at this build.
    assert {t for _, t in times(state.snapshot, "tls-9443").values()} == {T2}
    assert {t for _, t in times(state.snapshot, "tls-8443").values()} == {T0}


def test_last_transition_time_moves_only_for_conditions_that_flip() -> None:
    state = State(bind_address=ADDRESS)
    state.put([gateway_class(), gateway(8443)], now=T0)
    before = times(state.snapshot, "tls-8443")
    assert before["Accepted"] == ("True", T0)

    state.set_bind_failures({(ADDRESS, 8443): "address in use"})  # a rebuild at the real now
    after = times(state.snapshot, "tls-8443")
    assert after["Accepted"][0] == "False"
    assert after["Accepted"][1] != T0
    assert after["Programmed"][0] == "False"
    assert after["Programmed"][1] != T0
    # Statuses that held keep their time through the same rebuild.
    assert after["ResolvedRefs"] == before["ResolvedRefs"] == ("True", T0)
    assert after["Conflicted"] == before["Conflicted"] == ("False", T0)

    flipped = after["Accepted"][1]
    state.rebuild(now=T2)
    assert times(state.snapshot, "tls-8443")["Accepted"] == ("False", flipped)


async def test_documents_replaced_during_a_threaded_build_are_built_again() -> None:
    """`put_off_loop` builds on a thread; if the documents are replaced meanwhile, the map and
    the table it swaps in must both come from what is in force then, never one of each."""
    state = State(bind_address=ADDRESS)
    state.put([gateway_class(), gateway(8443)], now=T0)
    original_build = state.build
    replaced = False

    def build_then_replace(*args: Any, **kwargs: Any) -> Any:
        nonlocal replaced
        built = original_build(*args, **kwargs)  # from the documents before the replace
        if not replaced:
            replaced = True
            trio.from_thread.run_sync(state.replace_documents, [gateway_class()])
        return built

    state.build = build_then_replace  # type: ignore[method-assign]
    with trio.fail_after(SAFETY):
        other = gateway_raw(9443) | {"metadata": {"name": "other", "namespace": "infra"}}
        snapshot = await state.put_off_loop([admitted(other)], now=T1)
    assert replaced
    assert set(state.documents) == {CLASS, ObjectKey("Gateway", "infra", "other")}
    assert {port for _, port in snapshot.binds} == {9443}  # not the replaced 8443
    assert ObjectKey("Gateway", "infra", "gw") not in snapshot.statuses
