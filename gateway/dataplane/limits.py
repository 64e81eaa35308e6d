"""Connection counters shared by every process of the tree, for ClientTrafficPolicy's
`connection` limits (API.md "Traffic policies": limits hold for every worker together).

I/O (a shared memory block). The main process makes one block (a memfd, passed to each
worker it starts) with one region per worker slot; in the single-process mode the block is
private and has one region. A process writes only its own region and reads all of them, so
no lock crosses processes and a worker that dies (or is frozen) can never hold one: the main
process zeroes a dead worker's region before its successor starts, since its connections
died with it.

A region is a set-associative table: BUCKETS buckets of WAYS entries, each entry five
int64 cells (key, connections open, the second of the rate window, connections admitted in
that second and in the one before). A key is a rule's scope, or a (scope, client address)
pair (`routing.snapshot.LimitRule.key_for`). An entry that counts nothing (no connection
open, no admission in the last two seconds) may be taken by another key.

Admission is "count, then look": the connection is counted in the own region first, then
the totals over every region are read, and if one is over its limit the count is taken back
and the connection refused. Two workers admitting the last place at once both see the other
and both refuse: a limit is never exceeded, at worst a connection that raced another for the
last place is refused although one of the two could have had it. A lock's acquire between
the writes and the reads is the store-load fence that this needs (x86 may otherwise let a
read pass a write still in the store buffer).

The rate of `connectionsPerSecond` is a sliding window: admissions in this second plus
those of the last, weighted by how much of the last second is still within one second.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Sequence

from gateway.routing.snapshot import LimitKind, LimitRule, limit_key

WAYS = 8
#: Buckets per region: 32,768 keys (scopes and clients) tracked per worker at a time.
BUCKETS = 4096
_FIELDS = 5
_KEY, _OPEN, _SECOND, _CURRENT, _PREVIOUS = range(_FIELDS)
_BUCKET_CELLS = WAYS * _FIELDS
REGION_CELLS = BUCKETS * _BUCKET_CELLS
REGION_BYTES = REGION_CELLS * 8


def shared_block(regions: int) -> tuple[int, mmap.mmap]:
    """A block of `regions` regions that child processes can map: (its memfd, a map)."""
    fd = os.memfd_create("tlsgate-limits", 0)
    os.ftruncate(fd, max(1, regions) * REGION_BYTES)  # sparse: pages appear when written
    return fd, mmap.mmap(fd, max(1, regions) * REGION_BYTES)


def map_block(fd: int) -> mmap.mmap:
    """A worker's map of the block the main process made."""
    return mmap.mmap(fd, os.fstat(fd).st_size)


def clear_region(block: mmap.mmap, region: int) -> None:
    """Forget a region's counts (its worker is dead: so are its connections)."""
    block[region * REGION_BYTES : (region + 1) * REGION_BYTES] = bytes(REGION_BYTES)


class Held:
    """The entries a connection counts in (its own region's), given back when it closes."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[int]) -> None:
        self.entries = entries


class SharedCounts:
    """The counters of one process (`own` region) over the whole block."""

    def __init__(self, block: mmap.mmap, own: int = 0) -> None:
        self._block = block
        self._cells = memoryview(block).cast("q")
        self.regions = len(self._cells) // REGION_CELLS
        if not 0 <= own < self.regions:
            raise ValueError(f"region {own} of a block of {self.regions}")
        self._own = own * REGION_CELLS
        self._fence = threading.Lock()
        #: Admissions not counted because their bucket was full (32 keys in one bucket).
        self.untracked = 0

    @classmethod
    def private(cls) -> SharedCounts:
        """Counters for a process that is the whole tree (`--workers 0`)."""
        return cls(mmap.mmap(-1, REGION_BYTES))

    @staticmethod
    def _bucket(key: int) -> int:
        return (key % BUCKETS) * _BUCKET_CELLS

    def _find(self, region: int, key: int) -> int | None:
        """The cell index of `key`'s entry in the region starting at cell `region`."""
        start = region + self._bucket(key)
        keys = self._cells[start : start + _BUCKET_CELLS : _FIELDS].tolist()
        try:
            return start + keys.index(key) * _FIELDS
        except ValueError:
            return None

    def _claim(self, key: int, second: int) -> int | None:
        """The own entry of `key`: found, or a free one taken (None: the bucket is full)."""
        cells = self._cells
        found = self._find(self._own, key)
        if found is not None:
            return found
        start = self._own + self._bucket(key)
        for entry in range(start, start + _BUCKET_CELLS, _FIELDS):
            last = cells[entry + _SECOND]  # 0: never counted a rate
            if cells[entry + _OPEN] == 0 and (last == 0 or last < second - 1):
                cells[entry + _SECOND] = cells[entry + _CURRENT] = cells[entry + _PREVIOUS] = 0
                cells[entry + _KEY] = key  # last: a reader that finds it finds zeros
                return entry
        return None

    def _roll(self, entry: int, second: int) -> None:
        """Move the entry's rate window to `second`."""
        cells = self._cells
        was = cells[entry + _SECOND]
        if was == second:
            return
        cells[entry + _PREVIOUS] = cells[entry + _CURRENT] if was == second - 1 else 0
        cells[entry + _CURRENT] = 0
        cells[entry + _SECOND] = second

    def _total(self, kind: LimitKind, key: int, now: float, own: int | None = None) -> float:
        """The key's count over every region: connections open, or the sliding-window
        rate of admissions. `own`: the key's entry in the own region, if known."""
        cells = self._cells
        second = int(now)
        current = previous = 0
        for region in range(0, self.regions * REGION_CELLS, REGION_CELLS):
            entry = own if region == self._own and own is not None else self._find(region, key)
            if entry is None:
                continue
            if kind is not LimitKind.CLIENT_RATE:
                current += cells[entry + _OPEN]
                continue
            was = cells[entry + _SECOND]
            if was == second:
                current += cells[entry + _CURRENT]
                previous += cells[entry + _PREVIOUS]
            elif was == second - 1:
                previous += cells[entry + _CURRENT]
        if kind is not LimitKind.CLIENT_RATE:
            return current
        return current + previous * (1.0 - (now - second))

    def admit(
        self, rules: Sequence[LimitRule], client: str, now: float
    ) -> tuple[Held | None, LimitRule | None]:
        """Count a new connection from `client` under `rules` at time `now` (seconds, the
        same clock in every process): what it holds, or the first rule it would exceed
        (then nothing is counted)."""
        cells = self._cells
        second = int(now)
        counted: list[tuple[LimitRule, int, int]] = []
        client_key = limit_key(client) if any(rule.per_client for rule in rules) else 0
        for rule in rules:
            key = rule.mixed(client_key) if rule.per_client else rule.key
            entry = self._claim(key, second)
            if entry is None:
                self.untracked += 1
                continue
            if rule.kind is LimitKind.CLIENT_RATE:
                self._roll(entry, second)
                cells[entry + _CURRENT] += 1
            else:
                cells[entry + _OPEN] += 1
            counted.append((rule, key, entry))
        with self._fence:  # the store-load fence: our counts are visible before we read
            pass
        for rule, key, entry in counted:
            if self._total(rule.kind, key, now, entry) > rule.value:
                for other, _, taken in counted:  # taken back: a refusal counts nothing
                    field = _CURRENT if other.kind is LimitKind.CLIENT_RATE else _OPEN
                    cells[taken + field] -= 1
                return None, rule
        held = [entry for rule, _, entry in counted if rule.kind is not LimitKind.CLIENT_RATE]
        return Held(held), None

    def release(self, held: Held) -> None:
        """The connection has closed."""
        cells = self._cells
        for entry in held.entries:
            cells[entry + _OPEN] -= 1
        held.entries = []

    def open_count(self, rule: LimitRule, client: str = "") -> int:
        """Connections open under a rule now, over every process (for tests and explain)."""
        return int(self._total(LimitKind.CONNECTIONS, rule.key_for(client), 0.0))
