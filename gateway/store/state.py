"""The one owner of mutable state: the documents in force, the runtime facts, and the snapshot.

Every change goes through `State`, which builds from the build in force (`translate` is pure
and incremental: `Resources.updated` shares what a change leaves alone) and swaps one
reference: nothing awaits between compute and swap, so under Trio a connection sees the old
table or the new one, never a mix (ARCHITECTURE.md "Compute then swap").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import attrs
import trio

from gateway import collector
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.api.names import RFC3339
from gateway.routing.snapshot import Snapshot
from gateway.store.facts import compile_translation
from gateway.translate.build import Translation
from gateway.translate.resources import Resources

# Every logger is under `tlsgate.` (docs/configuration.md lists them).
log = logging.getLogger("tlsgate.state")


def utc_now() -> str:
    """The clock, read once per write (or rebuild) and passed on as a value."""
    return datetime.now(UTC).strftime(RFC3339)


class State:
    def __init__(self, *, bind_address: str = "0.0.0.0") -> None:
        self.bind_address = bind_address
        self.documents: dict[ObjectKey, Document] = {}
        self.bind_failures: dict[tuple[str, int], str] = {}
        self._generation = 1
        self._changed = trio.Event()
        #: Builds on a thread, one at a time, never queued behind DNS lookups.
        self._builds = trio.CapacityLimiter(1)
        #: The build in force: its snapshot, and what the next build starts from.
        self.translation: Translation | None = None
        self.translation = self._translate(Resources.of(()), utc_now(), self._generation)
        self.snapshot: Snapshot = self.translation.snapshot
        self.swapped_at = time.time()

    @property
    def generation(self) -> int:
        return self.snapshot.generation

    def replace_documents(self, documents: Iterable[Document]) -> Snapshot:
        """Swap in a whole new document set (bootstrap, a store reload)."""
        self.documents = {key_of(doc): doc for doc in documents}
        self._generation += 1
        translation = self._translate(
            Resources.of(self.documents.values()), utc_now(), self._generation
        )
        return self._swap(translation)

    def put(
        self,
        documents: Iterable[Document],
        deleted: Iterable[ObjectKey] = (),
        *,
        now: str | None = None,
    ) -> Snapshot:
        """Apply committed writes and deletions, then rebuild once (at the write's `now`)."""
        documents, deleted = list(documents), list(deleted)
        self._generation += 1
        translation = self.build(documents, deleted, self._generation, now=now or utc_now())
        self.documents = self._updated(documents, deleted)
        return self._swap(translation)

    def _updated(
        self, documents: Iterable[Document], deleted: Iterable[ObjectKey]
    ) -> dict[ObjectKey, Document]:
        # A new dict, never an update in place: a reader keeps the one it read.
        updated = dict(self.documents)
        for doc in documents:
            updated[key_of(doc)] = doc
        for key in deleted:
            updated.pop(key, None)
        return updated

    def set_bind_failures(self, failures: Mapping[tuple[str, int], str]) -> None:
        """Runtime facts from the listeners; a rebuild only when they changed."""
        if dict(failures) != self.bind_failures:
            self.bind_failures = dict(failures)
            self.rebuild()

    def rebuild(self, *, now: str | None = None) -> Snapshot:
        self._generation += 1
        return self._swap(self.build((), (), self._generation, now=now or utc_now()))

    async def put_off_loop(
        self,
        documents: Iterable[Document],
        deleted: Iterable[ObjectKey] = (),
        *,
        now: str | None = None,
    ) -> Snapshot:
        """`put`, with the build on a worker thread: a build that reaches many routes (a
        Gateway's change at 10,000 routes) takes a good part of a second, and on the event
        loop it would stall every connection of a single-process gateway meanwhile. The
        documents and the snapshot still change together, in one step on the event loop,
        and generations still only go up."""
        documents, deleted = list(documents), list(deleted)
        failures, base = self.bind_failures, self.documents
        stamp = now or utc_now()

        def build() -> tuple[Translation, dict[ObjectKey, Document]]:
            # The new document map too: copying 30,000 entries is ~40 ms of the event loop.
            return self.build(documents, deleted, 0, now=stamp), self._updated(documents, deleted)

        translation, updated = await trio.to_thread.run_sync(build, limiter=self._builds)
        # No checkpoint from here to the swap: the thread is not abandoned on cancellation,
        # so a committed write is always swapped in.
        self._generation += 1
        if self.documents is not base:
            # Replaced meanwhile (`replace_documents`; never a write: writes queue): the build
            # and the map both again from what is in force now, so that they agree (rare, and
            # on the loop).
            translation = self.build(documents, deleted, 0, now=stamp)
            updated = self._updated(documents, deleted)
        self.documents = updated
        self._swap(_numbered(translation, self._generation))
        if self.bind_failures is not failures:
            self.rebuild()  # the listeners reported meanwhile: build with what they said
        return self.snapshot

    def _swap(self, translation: Translation) -> Snapshot:
        self.translation = translation
        self.snapshot = translation.snapshot  # the swap: one assignment
        self.swapped_at = time.time()
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        accepted, rejected = translation.counts
        log.info(
            "configuration swapped",
            extra={
                "fields": {
                    "generation": self.snapshot.generation,
                    "documents": len(self.documents),
                    "accepted": accepted,
                    "rejected": rejected,
                    "binds": len(self.snapshot.binds),
                }
            },
        )
        return self.snapshot

    def build(
        self,
        documents: Iterable[Document],
        deleted: Iterable[ObjectKey],
        generation: int,
        *,
        now: str,
    ) -> Translation:
        """The build these changes to the documents in force give, with this process's
        runtime facts, from the build in force; swaps nothing (the dry run of a write uses
        it as is)."""
        assert self.translation is not None
        with collector.bulk():
            resources = self.translation.build.resources.updated(documents, deleted)
            return self._translate(resources, now, generation)

    def _translate(self, resources: Resources, now: str, generation: int = 0) -> Translation:
        return compile_translation(
            resources,
            now=now,
            generation=generation,
            bind_address=self.bind_address,
            bind_failures=self.bind_failures,
            previous=self.translation,
        )

    async def wait_changed(self, generation: int) -> Snapshot:
        """Block until the snapshot is newer than `generation`."""
        while self.snapshot.generation == generation:
            await self._changed.wait()
        return self.snapshot


def _numbered(translation: Translation, generation: int) -> Translation:
    snapshot = attrs.evolve(translation.snapshot, generation=generation)
    return attrs.evolve(translation, snapshot=snapshot)
