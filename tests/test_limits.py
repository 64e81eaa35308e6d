"""The shared counters behind ClientTrafficPolicy's `connection` limits (dataplane/limits.py):
two processes' views of one real shared block (a memfd, mapped twice, as the main process
and its workers map it), each writing its own region."""

from __future__ import annotations

import os

import pytest

from gateway.dataplane.limits import (
    BUCKETS,
    WAYS,
    SharedCounts,
    clear_region,
    map_block,
    shared_block,
)
from gateway.routing.snapshot import LimitKind, LimitRule

TOTAL = LimitRule(LimitKind.CONNECTIONS, "infra/gw", 3)
PER_CLIENT = LimitRule(LimitKind.CLIENT_CONNECTIONS, "infra/gw", 2)
RATE = LimitRule(LimitKind.CLIENT_RATE, "infra/gw", 2)


@pytest.fixture
def workers() -> tuple[SharedCounts, SharedCounts]:
    fd, main = shared_block(2)
    try:
        # Each "worker" maps the block from the fd, as `python -m gateway.dataplane.worker`.
        return SharedCounts(map_block(fd), 0), SharedCounts(map_block(fd), 1)
    finally:
        os.close(fd)
        main.close()


def test_a_limit_counts_the_connections_of_every_worker(
    workers: tuple[SharedCounts, SharedCounts],
) -> None:
    one, two = workers
    held = [one.admit([TOTAL], "127.0.0.2", 100.0)[0], two.admit([TOTAL], "127.0.0.3", 100.0)[0]]
    held.append(one.admit([TOTAL], "127.0.0.4", 100.0)[0])
    assert all(h is not None for h in held)
    # The fourth is refused in either worker, and counts nothing.
    for counts in workers:
        assert counts.admit([TOTAL], "127.0.0.5", 100.0) == (None, TOTAL)
    assert one.open_count(TOTAL) == two.open_count(TOTAL) == 3
    first = held[1]
    assert first is not None
    two.release(first)
    assert one.open_count(TOTAL) == 2
    assert one.admit([TOTAL], "127.0.0.5", 100.0)[1] is None


def test_per_client_limits_count_each_address_apart(
    workers: tuple[SharedCounts, SharedCounts],
) -> None:
    one, two = workers
    rules = [TOTAL, PER_CLIENT]
    assert one.admit(rules, "127.0.0.2", 5.0)[1] is None
    assert two.admit(rules, "127.0.0.2", 5.0)[1] is None
    refused, rule = one.admit(rules, "127.0.0.2", 5.0)
    assert refused is None
    assert rule == PER_CLIENT
    # Its refusal took back its count under the total limit too: a third place is free.
    assert one.open_count(TOTAL) == 2
    assert two.admit(rules, "127.0.0.3", 5.0)[1] is None
    assert one.admit(rules, "127.0.0.4", 5.0)[1] == TOTAL  # the total is reached


def test_the_rate_is_a_sliding_window_over_every_worker(
    workers: tuple[SharedCounts, SharedCounts],
) -> None:
    one, two = workers
    assert one.admit([RATE], "127.0.0.2", 10.1)[1] is None
    assert two.admit([RATE], "127.0.0.2", 10.2)[1] is None
    assert one.admit([RATE], "127.0.0.2", 10.3)[1] == RATE
    assert two.admit([RATE], "127.0.0.3", 10.3)[1] is None  # another address: its own rate
    # At 11.5 half of second 10 still counts: 2 * 0.5 + this one = 2, admitted; then over.
    assert one.admit([RATE], "127.0.0.2", 11.5)[1] is None
    assert two.admit([RATE], "127.0.0.2", 11.6)[1] == RATE
    # Two seconds on, nothing of it is left.
    assert one.admit([RATE], "127.0.0.2", 13.0)[1] is None
    assert two.admit([RATE], "127.0.0.2", 13.0)[1] is None


def test_rate_admissions_hold_no_place() -> None:
    counts = SharedCounts.private()
    held, _ = counts.admit([RATE, PER_CLIENT], "127.0.0.2", 1.0)
    assert held is not None
    assert len(held.entries) == 1  # only the open-connection count


def test_a_dead_workers_region_is_forgotten() -> None:
    fd, main = shared_block(2)
    one, two = SharedCounts(map_block(fd), 0), SharedCounts(map_block(fd), 1)
    os.close(fd)
    for _ in range(3):
        assert two.admit([TOTAL], "127.0.0.2", 1.0)[1] is None
    assert one.admit([TOTAL], "127.0.0.2", 1.0)[1] == TOTAL
    clear_region(main, 1)  # as the supervisor does before the slot's next worker starts
    assert one.open_count(TOTAL) == 0
    assert one.admit([TOTAL], "127.0.0.2", 1.0)[1] is None


def test_a_full_bucket_admits_untracked_and_idle_entries_are_reused() -> None:
    counts = SharedCounts.private()
    rule = LimitRule(LimitKind.CLIENT_CONNECTIONS, "infra/gw", 1)
    # Clients whose keys share one bucket, found by trying addresses.
    clients: list[str] = []
    target = counts.key_of(rule, "10.0.0.0") % BUCKETS
    i = 0
    while len(clients) < WAYS + 1:
        address = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
        if counts.key_of(rule, address) % BUCKETS == target:
            clients.append(address)
        i += 1
    held = [counts.admit([rule], c, 1.0)[0] for c in clients[:WAYS]]
    assert counts.untracked == 0
    extra, refused = counts.admit([rule], clients[WAYS], 1.0)
    assert refused is None
    assert extra is not None
    assert counts.untracked == 1
    first = held[0]
    assert first is not None
    counts.release(first)  # an entry with nothing open is taken by the next new key
    assert counts.admit([rule], clients[WAYS], 1.0)[0] is not None
    assert counts.untracked == 1
    assert counts.admit([rule], clients[WAYS], 1.0)[1] == rule  # now counted: at its limit


def test_client_addresses_are_hashed_with_the_trees_secret() -> None:
    """Which addresses share a bucket differs from one process tree to the next: nobody
    outside can pick addresses that fill one (and get admitted uncounted)."""
    rule = PER_CLIENT
    one, two = SharedCounts.private(), SharedCounts.private()
    clients = [f"2001:db8::{i:x}" for i in range(64)]
    assert [one.key_of(rule, c) for c in clients] != [two.key_of(rule, c) for c in clients]
    fd, main = shared_block(2)
    worker = SharedCounts(map_block(fd), 1)
    os.close(fd)
    assert SharedCounts(main, 0).key_of(rule, "2001:db8::1") == worker.key_of(rule, "2001:db8::1")


def test_a_targets_limit_keeps_its_place_whatever_the_clients() -> None:
    """connectionLimit keys have a table of their own: per-client keys filling every bucket
    of theirs cannot make a target's limit uncounted."""
    counts = SharedCounts.private()
    total = LimitRule(LimitKind.CONNECTIONS, "infra/gw", 1)
    flood = LimitRule(LimitKind.CLIENT_RATE, "infra/other", 10**6)
    for i in range(BUCKETS * WAYS + 100):
        counts.admit([flood], f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", 5.0)
    assert counts.untracked > 0  # the client table is full
    untracked = counts.untracked
    assert counts.admit([total], "192.0.2.1", 5.0)[1] is None
    assert counts.admit([total], "192.0.2.2", 5.0)[1] == total
    assert counts.untracked == untracked
