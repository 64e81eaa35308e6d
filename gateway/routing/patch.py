"""What changed from one routing snapshot to the next, as a value a worker can apply.

Pure. A write at 10,000 routes changes one route target; sending the whole table to every
worker would cost ~70 ms to pickle and as much to unpickle per write. `diff` says what changed
in terms of the table's parts (a bind replaced or removed; within a bind, the route targets of
its listeners), found by identity: an incremental build keeps every unchanged part as the
very same object (`translate/build.py`). `apply` turns the older snapshot and the patch into
a snapshot equal to the newer one (tests/test_patch.py), sharing whatever did not change.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from attrs import frozen

from gateway.routing.snapshot import Bind, ListenerTable, RouteTarget, Snapshot

BindKey = tuple[str, int]
#: Above this many changed route targets, a whole snapshot is the simpler message.
MAX_PATCHED_TARGETS = 2000


@frozen
class Patch:
    """From generation `base` to `generation`: `binds` replaced whole (None: removed), and
    per (bind, listener position) the route targets put (None: removed)."""

    base: int
    generation: int
    binds: Mapping[BindKey, Bind | None]
    routes: Mapping[tuple[BindKey, int], Mapping[str, RouteTarget | None]]


def diff(old: Snapshot, new: Snapshot) -> Patch | None:
    """The patch from `old` to `new`, or None when a whole snapshot is the better message."""
    binds: dict[BindKey, Bind | None] = {}
    routes: dict[tuple[BindKey, int], dict[str, RouteTarget | None]] = {}
    counted = 0
    for key in old.binds.keys() | new.binds.keys():
        before, after = old.binds.get(key), new.binds.get(key)
        if before is after:
            continue
        if before is None or after is None or not _same_frame(before, after):
            binds[key] = after
            # A bind sent whole counts by its targets: a large one goes as a whole snapshot,
            # which is encoded on a thread (a patch is encoded on the supervisor's loop).
            if after is not None:
                counted += sum(len(listener.routes) for listener in after.listeners)
                if counted > MAX_PATCHED_TARGETS:
                    return None
            continue
        for index, (was, now) in enumerate(zip(before.listeners, after.listeners, strict=True)):
            if was is now:
                continue
            changes = _route_changes(was.routes, now.routes)
            if changes:
                routes[(key, index)] = changes
                counted += len(changes)
        if counted > MAX_PATCHED_TARGETS:
            return None
    return Patch(base=old.generation, generation=new.generation, binds=binds, routes=routes)


def _same_frame(before: Bind, after: Bind) -> bool:
    """Same bind apart from its listeners' route targets."""
    if (before.gateways, before.error, len(before.listeners)) != (
        after.gateways,
        after.error,
        len(after.listeners),
    ):
        return False
    return all(
        was is now or _header(was) == _header(now)
        for was, now in zip(before.listeners, after.listeners, strict=True)
    )


def _header(table: ListenerTable) -> ListenerTable:
    return attrs.evolve(table, routes={})


def _route_changes(
    before: Mapping[str, RouteTarget], after: Mapping[str, RouteTarget]
) -> dict[str, RouteTarget | None]:
    if before is after:
        return {}
    changes: dict[str, RouteTarget | None] = {
        hostname: target for hostname, target in after.items() if before.get(hostname) is not target
    }
    changes.update((hostname, None) for hostname in before.keys() - after.keys())
    return changes


class PatchMismatch(ValueError):
    """A patch for a snapshot other than the one in force (the channel lost a message)."""


def apply(snapshot: Snapshot, patch: Patch) -> Snapshot:
    if patch.base != snapshot.generation:
        raise PatchMismatch(
            f"a patch from generation {patch.base} for generation {snapshot.generation}"
        )
    binds = dict(snapshot.binds)
    for key, bind in patch.binds.items():
        if bind is None:
            binds.pop(key, None)
        else:
            binds[key] = bind
    by_bind: dict[BindKey, dict[int, Mapping[str, RouteTarget | None]]] = {}
    for (key, index), changes in patch.routes.items():
        by_bind.setdefault(key, {})[index] = changes
    for key, changed in by_bind.items():
        bind = binds[key]
        listeners = list(bind.listeners)
        for index, changes in changed.items():
            table = listeners[index]
            targets = dict(table.routes)
            for hostname, target in changes.items():
                if target is None:
                    targets.pop(hostname, None)
                else:
                    targets[hostname] = target
            listeners[index] = attrs.evolve(table, routes=targets)
        binds[key] = attrs.evolve(bind, listeners=tuple(listeners))
    return attrs.evolve(snapshot, generation=patch.generation, binds=binds)
