"""Connection counters shared by every process of the tree, for ClientTrafficPolicy's
`connection` limits (API.md "Traffic policies": limits hold for every worker together).

I/O (a shared memory block). The main process makes one block (a memfd, passed to each
worker it starts) with one region per worker slot; in the single-process mode the block is
private and has one region. A process writes only its own region and reads all of them, so
no lock crosses processes and a worker that dies (or is frozen) can never hold one: the main
process zeroes a dead worker's region before its successor starts, since its connections
died with it.

A region is two set-associative tables of WAYS-entry buckets, each entry five int64 cells
(key, connections open, the second of the rate window, connections admitted in that second
and in the one before): SCOPE_BUCKETS for the keys of connectionLimit rules (one per target:
as many as the configuration has), then BUCKETS for per-client keys (a rule and a client
address, hashed with the secret at the end of the block), so that a flood of client
addresses can never push a target's own count out. An entry that counts nothing (no
connection open, no admission in the last two seconds) may be taken by another key.

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

import hashlib
import mmap
import os
import threading
from collections.abc import Sequence

from gateway.routing.snapshot import LimitKind, LimitRule

WAYS = 8
#: Buckets for targets' connectionLimit keys: 4,096 targets per worker.
SCOPE_BUCKETS = 512
#: Buckets for per-client keys: 32,768 (rule, client address) keys per worker at a time.
BUCKETS = 4096
_FIELDS = 5
_KEY, _OPEN, _SECOND, _CURRENT, _PREVIOUS = range(_FIELDS)
_BUCKET_CELLS = WAYS * _FIELDS
_CLIENTS = SCOPE_BUCKETS * _BUCKET_CELLS  # where the per-client table starts in a region
REGION_CELLS = (SCOPE_BUCKETS + BUCKETS) * _BUCKET_CELLS
REGION_BYTES = REGION_CELLS * 8


#: The block ends with a secret that keys the hash of client addresses: nobody outside the
#: process tree can compute which addresses share a bucket (and fill it on purpose).
SECRET_BYTES = 32


def _block_size(regions: int) -> int:
    return max(1, regions) * REGION_BYTES + SECRET_BYTES


def _new_block(block: mmap.mmap) -> mmap.mmap:
    block[len(block) - SECRET_BYTES :] = os.urandom(SECRET_BYTES)
    return block


def shared_block(regions: int) -> tuple[int, mmap.mmap]:
    """A block of `regions` regions that child processes can map: (its memfd, a map)."""
    # Close-on-exec like every descriptor: `pass_fds` hands it to the workers regardless.
    fd = os.memfd_create("tlsgate-limits", os.MFD_CLOEXEC)
    os.ftruncate(fd, _block_size(regions))  # sparse: pages appear when written
    return fd, _new_block(mmap.mmap(fd, _block_size(regions)))


def map_block(fd: int) -> mmap.mmap:
    """A worker's map of the block the main process made."""
    return mmap.mmap(fd, os.fstat(fd).st_size)


def clear_region(block: mmap.mmap, region: int) -> None:  # the secret stays
    """Forget a region's counts (its worker is dead: so are its connections)."""
    block[region * REGION_BYTES : (region + 1) * REGION_BYTES] = bytes(REGION_BYTES)


class Held:
    """What a connection counts in its own region: the entries of its open connection
    (given back when it closes) and of its rate admissions, with their second (taken back
    if a policy refuses it later, once the ClientHello names its listener)."""

    __slots__ = ("entries", "rated")

    def __init__(self, entries: list[int], rated: list[tuple[int, int]]) -> None:
        self.entries = entries
        self.rated = rated


class SharedCounts:
    """The counters of one process (`own` region) over the whole block."""

    def __init__(self, block: mmap.mmap, own: int = 0) -> None:
        self._block = block
        self._cells = memoryview(block)[: len(block) - SECRET_BYTES].cast("q")
        self._secret = bytes(block[len(block) - SECRET_BYTES :])
        self.regions = len(self._cells) // REGION_CELLS
        if not 0 <= own < self.regions:
            raise ValueError(f"region {own} of a block of {self.regions}")
        self._own = own * REGION_CELLS
        self._fence = threading.Lock()
        #: Admissions not counted because their bucket was full (WAYS keys in use in it).
        self.untracked = 0

    @classmethod
    def private(cls) -> SharedCounts:
        """Counters for a process that is the whole tree (`--workers 0`)."""
        return cls(_new_block(mmap.mmap(-1, _block_size(1))))

    def key_of(self, rule: LimitRule, client: str) -> int:
        """The key `rule` counts a connection from `client` under."""
        return rule.mixed(self._client_key(client)) if rule.per_client else rule.key

    def _client_key(self, client: str) -> int:
        digest = hashlib.blake2b(client.encode(), digest_size=8, key=self._secret).digest()
        return int.from_bytes(digest, "little")

    @staticmethod
    def _bucket(key: int, scoped: bool) -> int:
        """The first cell of `key`'s bucket within a region."""
        if scoped:
            return (key % SCOPE_BUCKETS) * _BUCKET_CELLS
        return _CLIENTS + (key % BUCKETS) * _BUCKET_CELLS

    def _find(self, region: int, key: int, scoped: bool) -> int | None:
        """The cell index of `key`'s entry in the region starting at cell `region`."""
        start = region + self._bucket(key, scoped)
        keys = self._cells[start : start + _BUCKET_CELLS : _FIELDS].tolist()
        try:
            return start + keys.index(key) * _FIELDS
        except ValueError:
            return None

    def _claim(self, key: int, second: int, scoped: bool) -> int | None:
        """The own entry of `key`: found, or a free one taken (None: the bucket is full)."""
        cells = self._cells
        found = self._find(self._own, key, scoped)
        if found is not None:
            return found
        start = self._own + self._bucket(key, scoped)
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
        scoped = kind is LimitKind.CONNECTIONS
        for region in range(0, self.regions * REGION_CELLS, REGION_CELLS):
            if region == self._own and own is not None:
                entry: int | None = own
            else:
                entry = self._find(region, key, scoped)
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
        client_key = self._client_key(client) if any(r.per_client for r in rules) else 0
        for rule in rules:
            key = rule.mixed(client_key) if rule.per_client else rule.key
            entry = self._claim(key, second, not rule.per_client)
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
        held = Held([], [])
        for rule, _, entry in counted:
            if rule.kind is LimitKind.CLIENT_RATE:
                held.rated.append((entry, second))
            else:
                held.entries.append(entry)
        return held, None

    def release(self, held: Held) -> None:
        """The connection has closed."""
        cells = self._cells
        for entry in held.entries:
            cells[entry + _OPEN] -= 1
        held.entries = []

    def refund(self, held: Held) -> None:
        """A policy refused the connection after it was counted: its rate admissions are
        taken back (in the window they fell in, if it is still in the table)."""
        cells = self._cells
        for entry, second in held.rated:
            now = cells[entry + _SECOND]
            if now == second and cells[entry + _CURRENT] > 0:
                cells[entry + _CURRENT] -= 1
            elif now == second + 1 and cells[entry + _PREVIOUS] > 0:
                cells[entry + _PREVIOUS] -= 1
        held.rated = []

    def open_count(self, rule: LimitRule, client: str = "") -> int:
        """Connections open under a rule now, over every process (for tests and explain)."""
        key = self.key_of(rule, client)
        kind = LimitKind.CONNECTIONS if not rule.per_client else LimitKind.CLIENT_CONNECTIONS
        return int(self._total(kind, key, 0.0))
