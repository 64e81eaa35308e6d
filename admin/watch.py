"""Kubernetes watches (`?watch=true`): every change of the documents in force and of their
status, as WatchEvents (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`), from a resourceVersion
(API.md "Kubernetes API compatibility": a status change is a `MODIFIED` event, so `kubectl
get -w` and `kubectl wait` work).

I/O. One hub follows the state: it compares the documents and statuses in force with those it
saw last, and keeps the changes (the last HISTORY of them). A watch replays the changes after
its resourceVersion, then waits for more; one from a revision older than what the hub keeps is
answered 410 Expired, and the client lists again (as against an API server whose etcd
compacted). The hub starts with the first Kubernetes list or watch, so a gateway that nobody
watches compares nothing.

A resourceVersion is a store revision (API.md: a List's is the revision applied), and a status
change that comes without a write (a port bound, a certificate loaded) does not move it: a
list before such a change and one after it say the same revision. So each change is labelled
with the revision a list would have said just after it, and marked `replay` when a list could
already have said that revision before it; a watch from revision R starts after the last change
labelled below R or labelled R and not marked, and so gets every change its list lacked (and
sometimes, again, a status change its list already had: at least once, never lost). For the
marks to hold, every Kubernetes list and every bookmark first brings the hub up to date
(`sync`): a list never says a revision the hub has not seen.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import attrs
import trio

from gateway.api.convert import with_status
from gateway.api.kinds import Document, ObjectKey
from gateway.api.status import Status
from gateway.store.writes import WritePath

#: Changes kept for watches that resume from an older resourceVersion.
HISTORY = 4096
#: Seconds without any watch after which the hub stops comparing tables.
IDLE_SECONDS = 600.0


@attrs.frozen
class Change:
    type: str
    key: ObjectKey
    #: The revision a list said just after the change (`WritePath.revision` then).
    revision: int
    doc: Document
    status: Status | None
    #: Its place among every change the hub saw: a status change comes with the revision
    #: of the write before it, so the revision alone does not order changes.
    seq: int = 0
    #: The document before the change (None for ADDED): what a watch from before it saw.
    previous: Document | None = None
    #: A list may have said `revision` before this change: a watch from it gets it.
    replay: bool = False
    #: The status before the change, with `previous`.
    previous_status: Status | None = None


class Expired(Exception):
    """A watch from a revision older than the hub keeps."""


class WatchHub:
    def __init__(self, writes: WritePath) -> None:
        self.writes = writes
        self.changes: collections.deque[Change] = collections.deque(maxlen=HISTORY)
        #: The revision the hub started at: it knows every change after it.
        self.since: int | None = None
        #: The documents and statuses of the last table compared (the state's own maps:
        #: a swap replaces them, nothing changes them in place).
        self._documents: Mapping[ObjectKey, Document] = {}
        self._statuses: Mapping[ObjectKey, Status] = {}
        self._changed = trio.Event()
        #: Watches streaming now, and when the last one ended: an idle hub stops.
        self.watching = 0
        self.idle_since = 0.0
        self._generation = -1
        self._seq = 0
        #: The revision the hub was last brought up to date at (what a list said since).
        self._synced = 0
        #: The newest change no longer kept, if any: watches from before it are Expired.
        self._dropped: Change | None = None
        #: The hub followed the state once and stopped (idle): it starts again from what it
        #: saw last.
        self._stopped = False

    @property
    def revision(self) -> int:
        return int(self.writes.revision)

    def start(self, nursery: trio.Nursery) -> None:
        """Begin following the state, if not already: from now on every change is kept. A
        list counts as activity: a watch from its revision follows soon."""
        self.idle_since = trio.current_time()
        if self.since is not None:
            return
        self._baseline()
        self.idle_since = trio.current_time()
        nursery.start_soon(self._run)

    def _baseline(self) -> None:
        state = self.writes.state
        self.since = self._synced = revision = self.revision
        self.changes.clear()
        self._dropped = None
        self._generation = state.generation
        if self._stopped:
            # What changed while nobody watched (status only, if the revision is the same):
            # kept as changes a list before the stop may lack (`replay`), so that a watch
            # from that list's revision still gets them.
            self._compare(state.documents, state.snapshot.statuses, revision)
        else:
            self._documents, self._statuses = state.documents, state.snapshot.statuses

    async def _run(self) -> None:
        """Compare each new table with the last, until no watch has run for IDLE_SECONDS:
        the comparison costs every write a pass over the documents (~11 ms at 30,000), which
        only watches need."""
        state = self.writes.state
        while True:
            with trio.move_on_after(IDLE_SECONDS):
                await state.wait_changed(self._generation)
            if not self.watching and trio.current_time() - self.idle_since >= IDLE_SECONDS:
                # The next list or watch starts again, from the documents and statuses seen
                # last (kept: the maps of a table in force once, shared with later ones).
                self.since = None
                self._stopped = True
                self.changes.clear()
                return
            self.sync()

    def sync(self) -> None:
        """Bring the hub up to date with the state in force, if it follows it: called before
        a list or a bookmark says a revision (see the module's doc)."""
        if self.since is None:
            return
        state = self.writes.state
        revision = self.revision
        if state.generation != self._generation:
            self._generation = state.generation
            self._compare(state.documents, state.snapshot.statuses, revision)
        self._synced = revision

    def _compare(
        self,
        documents: Mapping[ObjectKey, Document],
        statuses: Mapping[ObjectKey, Status],
        revision: int,
    ) -> None:
        before_docs, before_statuses = self._documents, self._statuses
        found: list[
            tuple[str, ObjectKey, Document, Status | None, Document | None, Status | None]
        ] = []
        # Identity first: a write replaces the documents it changes, and an incremental build
        # keeps the status objects of what it did not touch; only those are compared.
        changed = {key for key, doc in documents.items() if before_docs.get(key) is not doc}
        changed.update(
            key for key, status in statuses.items() if before_statuses.get(key) is not status
        )
        for key in sorted(changed):
            doc = documents.get(key)
            if doc is None:
                continue  # the status of a document gone (reported as DELETED below)
            status = statuses.get(key)
            old = before_docs.get(key)
            if old is None:
                found.append(("ADDED", key, doc, status, None, None))
            elif old != doc or before_statuses.get(key) != status:
                found.append(("MODIFIED", key, doc, status, old, before_statuses.get(key)))
        if len(documents) - len(before_docs) != sum(1 for f in found if f[0] == "ADDED"):
            # Some went: the only case that needs a look at every document before.
            for key, doc in before_docs.items():
                if key not in documents:
                    status = before_statuses.get(key)
                    found.append(("DELETED", key, doc, status, doc, status))
        self._documents, self._statuses = documents, statuses
        replay = revision <= self._synced
        for kind, key, doc, status, previous, previous_status in found:
            self._seq += 1
            if len(self.changes) == HISTORY:
                self._dropped = self.changes[0]
            self.changes.append(
                Change(
                    kind, key, revision, doc, status, self._seq, previous, replay, previous_status
                )
            )
        changed_event, self._changed = self._changed, trio.Event()
        changed_event.set()  # also without changes: watches may send a bookmark

    def current(self) -> list[tuple[Document, Status | None]]:
        """What is in force now, as the hub last saw it."""
        statuses = self._statuses
        return [(doc, statuses.get(key)) for key, doc in self._documents.items()]

    @property
    def seq(self) -> int:
        """The place of the last change seen."""
        return self._seq

    def position(self, revision: int) -> int:
        """The place a watch from `revision` starts after; Expired if changes after that
        revision may be gone (or came before the hub started)."""
        dropped = self._dropped
        if (
            self.since is None
            or revision < self.since
            or (dropped is not None and not _seen(dropped, revision))
        ):
            raise Expired(f"too old resource version: {revision} ({self.revision})")
        kept = [c.seq for c in self.changes if _seen(c, revision)]
        if kept:
            return kept[-1]
        return self.changes[0].seq - 1 if self.changes else self._seq

    def after(self, seq: int) -> list[Change]:
        """The kept changes after place `seq`; Expired if some of them are gone."""
        if self.changes and seq < self.changes[0].seq - 1:
            raise Expired(f"too old resource version ({self.revision})")
        return [change for change in self.changes if change.seq > seq]

    async def wait(self) -> None:
        await self._changed.wait()


def _seen(change: Change, revision: int) -> bool:
    """Whether every list that said `revision` came after `change`."""
    return change.revision < revision or (change.revision == revision and not change.replay)


@attrs.frozen
class Watch:
    """What one watch selects, and how it talks."""

    kind: str
    api_version: str
    namespace: str | None
    #: (namespace, name, labels) -> whether the object is selected.
    selects: Callable[[str, str, Mapping[str, str]], bool]
    bookmarks: bool = False


def _selected(watch: Watch, doc: Document) -> bool:
    meta = doc.metadata
    namespace = meta.namespace or ""
    if watch.namespace is not None and namespace != watch.namespace:
        return False
    return watch.selects(namespace, meta.name, meta.labels or {})


def _event(
    watch: Watch, kind: str, doc: Document, status: Status | None, key: ObjectKey
) -> dict[str, Any]:
    wire = with_status(doc, {key: status} if status else {})
    # At the version the watch's path names (its versions share one schema: SPEC.md §1).
    wire["apiVersion"] = watch.api_version
    return {"type": kind, "object": wire}


def _starting(
    hub: WatchHub, watch: Watch, start: int | None
) -> tuple[int, set[ObjectKey], list[dict[str, Any]]]:
    """Where a watch from revision `start` begins: its place among the changes, the objects
    it selected then, and the events to send first (None: every selected object in force,
    as ADDED). Expired for a revision older than the hub keeps."""
    matched: set[ObjectKey] = set()
    first: list[dict[str, Any]] = []
    current = [(doc, status) for doc, status in hub.current() if doc.kind == watch.kind]
    if start is None:
        for doc, status in current:
            if _selected(watch, doc):
                key = ObjectKey(doc.kind, doc.metadata.namespace or "", doc.metadata.name)
                matched.add(key)
                first.append(_event(watch, "ADDED", doc, status, key))
        return hub.seq, matched, first
    position = hub.position(start)
    # Selected at `start`: each object as it was then: as the first change since found it
    # (nothing, for one created since), or as it is now if it has not changed.
    then: dict[ObjectKey, Document | None] = {}
    for change in hub.after(position):
        if change.key.kind == watch.kind:
            then.setdefault(change.key, change.previous)
    for doc, _ in current:
        key = ObjectKey(doc.kind, doc.metadata.namespace or "", doc.metadata.name)
        then.setdefault(key, doc)
    matched = {key for key, doc in then.items() if doc is not None and _selected(watch, doc)}
    return position, matched, first


async def events(
    hub: WatchHub, watch: Watch, start: int | None, deadline: float
) -> AsyncIterator[dict[str, Any]]:
    """The watch's events, from revision `start` (see `_starting`), until the Trio clock
    reaches `deadline`. Expired before the first event for a revision too old."""
    hub.sync()
    position, matched, first = _starting(hub, watch, start)
    hub.watching += 1
    try:
        async for event in _follow(hub, watch, start, deadline, position, matched, first):
            yield event
    finally:
        hub.watching -= 1
        hub.idle_since = trio.current_time()


async def _follow(
    hub: WatchHub,
    watch: Watch,
    start: int | None,
    deadline: float,
    position: int,
    matched: set[ObjectKey],
    first: list[dict[str, Any]],
) -> AsyncIterator[dict[str, Any]]:
    for event in first:
        yield event
    # What the client knows: changes of other objects since then earn it a bookmark.
    bookmarked = hub.revision if start is None else start
    while trio.current_time() < deadline:
        sent = False
        hub.sync()
        for change in hub.after(position):
            position = change.seq
            if change.key.kind != watch.kind:
                continue
            selected = change.type != "DELETED" and _selected(watch, change.doc)
            was = change.key in matched
            if selected:
                matched.add(change.key)
                yield _event(
                    watch, "MODIFIED" if was else "ADDED", change.doc, change.status, change.key
                )
                sent = True
            elif was:
                # Deleted, or no longer selected (a label changed): DELETED, with the object
                # as the watch last selected it, as the API server says of one that leaves a
                # selector (at the change's resourceVersion).
                matched.discard(change.key)
                gone = _event(
                    watch,
                    "DELETED",
                    change.previous or change.doc,
                    change.previous_status,
                    change.key,
                )
                # A deletion's is the revision it came with; a label change's, the new one.
                version = (
                    str(change.revision)
                    if change.type == "DELETED"
                    else change.doc.metadata.resource_version
                )
                if version is not None:
                    gone["object"]["metadata"]["resourceVersion"] = version
                yield gone
                sent = True
        if not sent:
            # Nothing yielded since the sync: every change up to this revision was looked
            # at, so a client may resume from it (a bookmark says a revision, as a list does).
            revision = hub.revision
            if watch.bookmarks and revision > bookmarked:
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        "apiVersion": watch.api_version,
                        "kind": watch.kind,
                        "metadata": {"resourceVersion": str(revision)},
                    },
                }
            bookmarked = max(bookmarked, revision)
        with trio.move_on_at(deadline):  # no yield inside a cancel scope
            await hub.wait()
