"""Following the etcd store: this replica applies every write, its own and other replicas',
in revision order (issue 13; API.md "Store and replicas").

I/O (Trio). The replica read the documents at revision R (`WritePath.load`); the follower
watches from R + 1 and applies each batch of changes under the write lock, with one rebuild
and swap per batch. Nothing is skipped: a broken watch resumes from the revision after the
last one applied (never from "now", apache/apisix#12514); a compacted history, or an etcd
whose revision is behind the one applied (restored from a backup, another cluster), is read
again in full and swapped only if a document differs (apache/apisix#12167 reloaded on every
compaction). A change this replica already holds (its own write, swapped when committed) is
recognized by its mod_revision and not applied twice.

While the watch cannot be opened, the store is down (`Health`): writes are answered 503 at
once, reads and traffic go on from the documents in force, and the follower retries with a
backoff up to `MAX_BACKOFF` seconds, so it recovers by itself when etcd returns.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import trio

from gateway.api.convert import structure_document
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.store.etcd import EtcdStore, stamped
from gateway.store.etcd_watch import Batch, Compacted, watch
from gateway.store.sqlite import StoreUnavailable
from gateway.store.writes import WritePath, structured

log = logging.getLogger("tlsgate.store")

MIN_BACKOFF = 0.1
MAX_BACKOFF = 2.0
#: Seconds a watch must have stayed open for its break to be resumed at once: one that
#: keeps breaking sooner (a member that cancels it, a stream that ends) backs off instead.
STEADY = 1.0
#: How often the watchdog compares the newest document revision in etcd with the one
#: applied (seconds). A watch still behind at the next look is opened again: a member that
#: froze with the stream open sends nothing and closes nothing (Traefik went silently stale
#: that way, traefik/traefik#566).
WATCHDOG_EVERY = 2.0


class Health:
    """Is the store reachable? Each part that talks to it (the watch, the lease) reports;
    the store is up while none reports a problem."""

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}
        #: Called with True / False when the store comes up or goes down.
        self.changed: Callable[[bool], None] = lambda up: None

    @property
    def up(self) -> bool:
        return not self.problems

    def report(self, part: str, problem: str | None) -> None:
        was = self.up
        if problem is None:
            self.problems.pop(part, None)
        else:
            self.problems[part] = problem.removesuffix("; nothing was changed")
        if self.up != was:
            if self.up:
                log.info("store reachable again: %s", part)
            else:
                log.warning("store unreachable: %s", problem)
            self.changed(self.up)

    def problem(self) -> str | None:
        """Why writes cannot be taken now, or None."""
        if self.up:
            return None
        return "the store is unreachable: " + "; ".join(sorted(set(self.problems.values())))


def _revision(doc: Document | None) -> int:
    version = doc.metadata.resource_version if doc is not None else None
    return int(version) if version and version.isdigit() else -1


class Follower:
    def __init__(
        self,
        store: EtcdStore,
        writes: WritePath,
        health: Health,
        *,
        on_applied: Callable[[], None] = lambda: None,
    ) -> None:
        self.store, self.writes, self.health = store, writes, health
        self.on_applied = on_applied
        self._tls = store.tls.context() if store.tls is not None else None
        self._progress = trio.Event()
        self._watch_scope = trio.CancelScope()
        #: Not yet while the replica starts: its bootstrap write may meet another's.
        self.running = False
        writes.catch_up = self.catch_up
        writes.unavailable = health.problem

    @property
    def applied(self) -> int:
        return self.writes.applied

    async def catch_up(self, current: Mapping[ObjectKey, int | None], revision: int = 0) -> bool:
        """Until this replica holds each key at the revision etcd reported (None: the key is
        gone), or later, and has applied `revision`; False if that takes longer than the
        write path waits."""
        from gateway.store.writes import CATCH_UP_TIMEOUT

        # What the write was planned on: a key whose held revision moved since then has
        # been through the watch, whatever came after what etcd reported (a delete after
        # the put reported, a create after the delete): planning again compares anew.
        planned = {key: self.writes.held_revision(key) for key in current}

        def caught_up() -> bool:
            if self.applied < revision:
                return False
            for key, reported in current.items():
                held = self.writes.held_revision(key)
                if held != planned[key]:
                    continue
                if reported is None and held is not None:
                    return False
                if reported is not None and self.applied < reported and (held or 0) < reported:
                    return False
            return True

        if not self.running:
            # At start (the bootstrap, before the watch runs): read everything again; the
            # watch then starts from that read's revision.
            try:
                await self.reload()
            except StoreUnavailable:
                return False
            return caught_up()
        with trio.move_on_after(CATCH_UP_TIMEOUT):
            while not caught_up():
                await self._progress.wait()
            return True
        return False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watchdog)
            await self._follow()

    async def _watchdog(self) -> None:
        suspect: int | None = None
        while True:
            await trio.sleep(WATCHDOG_EVERY)
            try:
                latest = await trio.to_thread.run_sync(self.store.latest_revision)
            except StoreUnavailable:
                suspect = None  # the watch finds out by itself
                continue
            if latest <= self.applied:
                suspect = None
            elif suspect is not None and self.applied < suspect:
                log.warning(
                    "the etcd watch delivered nothing up to revision %d (applied: %d); "
                    "opening it again",
                    suspect,
                    self.applied,
                )
                self._watch_scope.cancel()
                suspect = None
            else:
                suspect = latest

    async def _follow(self) -> None:
        backoff = MIN_BACKOFF
        opened_at = 0.0
        while True:
            opened = False
            self._watch_scope = trio.CancelScope()
            try:
                with self._watch_scope:
                    opening = watch(
                        self.store.endpoints,
                        self.store.documents_prefix,
                        self.applied + 1,
                        tls=self._tls,
                    )
                    async with contextlib.aclosing(opening) as batches:
                        async for batch in batches:
                            if batch.created:
                                opened, opened_at = True, trio.current_time()
                                self.health.report("watch", None)
                                if batch.revision < self.applied and await self._restored():
                                    log.warning(
                                        "etcd is at revision %d, behind the %d applied here "
                                        "(restored from a backup?): reading everything again",
                                        batch.revision,
                                        self.applied,
                                    )
                                    await self.reload()
                                    break
                                # Else a member that lags the others: its watch delivers
                                # from the revision asked as it catches up.
                                continue
                            # The watchdog's cancel restarts the watch, never a batch half
                            # applied (bounded: one build, then the workers' acknowledgement).
                            with trio.CancelScope(shield=True):
                                await self._apply(batch)
            except Compacted as exc:
                log.info(
                    "etcd compacted revisions up to %d, past the %d applied here: reading "
                    "everything again",
                    exc.revision,
                    self.applied,
                )
                with contextlib.suppress(StoreUnavailable):
                    await self.reload()
            except StoreUnavailable as exc:
                if opened:
                    # It was open and broke (a member stopped): watch again on whichever
                    # member answers; the store is down only if none does. At once if it
                    # had been open a while; else (it breaks as soon as it opens) after a
                    # growing pause: never a busy loop.
                    log.info(
                        "etcd watch broke, resuming from revision %d: %s", self.applied + 1, exc
                    )
                    if trio.current_time() - opened_at >= STEADY:
                        backoff = MIN_BACKOFF
                        await trio.sleep(MIN_BACKOFF / 10)
                    else:
                        await trio.sleep(backoff)
                        backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                self.health.report("watch", str(exc))
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _restored(self) -> bool:
        """Is etcd's revision (a linearizable read, answered by the leader) behind the one
        applied here? Only then was it restored; a watch's own member may merely lag."""
        try:
            now = await trio.to_thread.run_sync(self.store.current_revision)
        except StoreUnavailable:
            return False  # the watch finds out by itself
        return now < self.applied

    async def _apply(self, batch: Batch) -> None:
        async with self.writes.lock:
            documents, unreadable = self.writes.state.documents, self.writes.unreadable
            pending: dict[ObjectKey, Document | None] = {}
            for change in batch.changes:
                key = self.store.object_key(change.key)
                if key is None:
                    continue
                held = pending[key] if key in pending else documents.get(key)
                if change.value is None:
                    unreadable.pop(key, None)
                    if held is not None and _revision(held) < change.revision:
                        pending[key] = None
                    continue
                if _revision(held) >= change.revision:
                    continue  # this replica's own write, swapped when it was committed
                doc = self._decode(key, change.value, change.revision)
                if doc is None:
                    # Not in force, but there: a write of this object replaces it. What it
                    # replaced leaves force too, as a replica starting now would not have it.
                    unreadable[key] = change.revision
                    if held is not None:
                        pending[key] = None
                else:
                    unreadable.pop(key, None)
                    pending[key] = doc
            # A batch without changes is progress: nothing at or below its revision is to come.
            latest = max((change.revision for change in batch.changes), default=batch.revision)
            if pending:
                puts = [doc for doc in pending.values() if doc is not None]
                deleted = [key for key, doc in pending.items() if doc is None]
                snapshot = await self.writes.state.put_off_loop(puts, deleted)
                if self.writes.in_force is not None:
                    await self.writes.in_force(snapshot.generation)
            self._advance(latest)

    def _decode(self, key: ObjectKey, value: bytes, revision: int) -> Document | None:
        try:
            raw = stamped(value, revision)
        except (ValueError, AttributeError) as exc:
            log.error("ignoring %s: not a document tlsgate can read (%s)", key, exc)
            return None
        return self._document(key, raw)

    def _document(self, key: ObjectKey, raw: dict[str, Any]) -> Document | None:
        """The document `raw` is, if it is valid and the object its key names; else None,
        logged (written into etcd by something other than tlsgate)."""
        try:
            doc = structure_document(raw)
        except Exception as exc:
            log.error("ignoring %s: not a document tlsgate can read (%s)", key, exc)
            return None
        if key_of(doc) != key:
            log.error(
                "ignoring %s: it holds %s, another object than its key names", key, key_of(doc)
            )
            return None
        return doc

    def _advance(self, revision: int) -> None:
        self.writes.applied = max(self.writes.applied, revision)
        progress, self._progress = self._progress, trio.Event()
        progress.set()
        self.on_applied()

    async def reload(self) -> None:
        """Read every document again and bring in what differs (nothing swapped if none)."""

        def load() -> tuple[list[tuple[ObjectKey, dict[str, Any]]], int, dict[ObjectKey, int]]:
            found = self.store.load_keyed()
            return found, self.store.revision, dict(self.store.unreadable)

        # The read under the lock too: a write committed after it must not be undone by it.
        async with self.writes.lock:
            found, revision, unreadable = await trio.to_thread.run_sync(load)
            documents = self.writes.state.documents
            # The store checked that each value is its key's object (`etcd.holds`).
            fresh = {key_of(doc): doc for doc in structured([raw for _, raw in found], unreadable)}
            self.writes.unreadable = unreadable
            puts = [doc for key, doc in fresh.items() if documents.get(key) != doc]
            deleted = [key for key in documents if key not in fresh]
            if puts or deleted:
                log.info(
                    "reloaded from etcd at revision %d: %d documents changed, %d gone",
                    revision,
                    len(puts),
                    len(deleted),
                )
                snapshot = await self.writes.state.put_off_loop(puts, deleted)
                if self.writes.in_force is not None:
                    await self.writes.in_force(snapshot.generation)
            # After a restore the revision may be lower: it is what etcd holds now.
            self.writes.applied = revision
            self._advance(revision)
