"""The write path, end to end: admit, plan, commit durably, rebuild and swap, in that order.

I/O owner. One write at a time (a Trio lock): the plan is made against the documents in force,
the store commits and syncs on a worker thread (the event loop keeps relaying meanwhile), then
the snapshot is rebuilt and swapped synchronously. So when a write returns, it is on disk and
new connections already follow it (issue "Admin API": every acknowledged change in force at
once). A failed commit changes nothing in memory.

With etcd (several replicas, API.md "Store and replicas") the plan is made against this
replica's view, and the commit compares every key the write names with that view inside the
transaction: a view that is behind gets `Stale`, the lock is let go while the follower
catches up (`gateway/store/follow.py`), and the write is planned again. An answer that
commits nothing (404, a failed precondition, AlreadyExists) rests on the view of one object:
etcd is asked for that object's revision, and the answer stands only if etcd agrees; else
this replica catches up and plans again. So what a write depends on (existence,
resourceVersion) is etcd's, never a cached guess; a write is numbered by etcd, and its
documents' resourceVersion is the transaction's revision.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from gateway.api import apply as ssa
from gateway.api.convert import (
    Invalid,
    encode_json,
    structure_document,
    unstructure_document,
)
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.routing.snapshot import Snapshot
from gateway.store.etcd import Stale, key_in
from gateway.store.plan import Action, Change, Conflict, merge_patch, plan
from gateway.store.sqlite import StoreUnavailable
from gateway.store.state import State, utc_now

log = logging.getLogger("tlsgate.store")


class DocumentStore(Protocol):
    """What the write path needs of a store (`sqlite.Store`, `etcd.EtcdStore`)."""

    revision: int

    @property
    def unreadable(self) -> Mapping[ObjectKey, int]: ...

    def load(self) -> list[dict[str, Any]]: ...

    def revision_of(self, key: ObjectKey) -> int | None: ...

    def commit(
        self,
        puts: Sequence[tuple[ObjectKey, str]],
        deletes: Sequence[ObjectKey] = (),
        expect: Mapping[ObjectKey, str | None] | None = None,
        view: int | None = None,
    ) -> int: ...

    def close(self) -> None: ...


#: Plans of one write against a view that turned out to be behind, before giving up (409).
STALE_ATTEMPTS = 5
#: Seconds a write waits for this replica to catch up with etcd before each new plan.
CATCH_UP_TIMEOUT = 5.0


class NotFound(Exception):
    def __init__(self, key: ObjectKey) -> None:
        super().__init__(f"{key} not found")
        self.key = key


class BadRequest(Exception):
    """A request that names one object and carries another (400)."""


def _admitted_as(key: ObjectKey, wire: dict[str, Any], other: str) -> Document:
    """A document made from the one in force (patched, applied), admitted; it must still be
    `key` (BadRequest with `other` if not). Invalid as made from this replica's view of the
    object, which etcd's may not share (`_OnView`)."""
    try:
        doc = structure_document(wire)
    except Invalid as invalid:
        raise _OnView(key, invalid) from None
    if key_of(doc) != key:
        raise BadRequest(other)
    return doc


def _normalized(wire: dict[str, Any]) -> dict[str, Any]:
    """A document as admission makes it (defaults filled in), for server-side apply's
    comparisons; as it is if it is not one yet (admission will say why)."""
    try:
        return unstructure_document(structure_document(wire), redact=False)
    except Invalid:
        return wire


class ApplyConflict(Exception):
    """A server-side apply that would change fields other appliers own (409)."""

    def __init__(self, conflicts: Sequence[ssa.Conflict]) -> None:
        self.conflicts = list(conflicts)
        fields = ", ".join(f'{c.field} (owned by "{c.manager}")' for c in self.conflicts)
        count = len(self.conflicts)
        super().__init__(f"Apply failed with {count} conflict{'s' if count != 1 else ''}: {fields}")


def _answer(answer: NotFound | Conflict | _OnView) -> Exception:
    return answer.answer if isinstance(answer, _OnView) else answer


class _OnView(Exception):
    """An answer made from this replica's view of one object (a patch that makes it
    invalid): with a shared store, it stands once etcd confirms that view."""

    def __init__(self, key: ObjectKey, answer: Exception) -> None:
        super().__init__(str(answer))
        self.key = key
        self.answer = answer


@attrs.frozen
class Outcome:
    changes: list[Change]
    snapshot: Snapshot
    #: The JSON text the write stored, by key (private keys included: for the store only; an
    #: answer may reuse the text of kinds without any, `admin/render.py`).
    texts: Mapping[ObjectKey, str] = attrs.Factory(dict)
    #: The store's revision that holds the write (what `?wait=replicas` waits for); None
    #: for a dry run.
    revision: int | None = None


def list_of(
    documents: Mapping[ObjectKey, Document], kind: str, namespace: str | None = None
) -> list[Document]:
    """The documents of a kind, in key order, optionally of one namespace."""
    found = [
        (key, doc)
        for key, doc in documents.items()
        if key.kind == kind and (namespace is None or key.namespace == namespace)
    ]
    found.sort()
    return [doc for _, doc in found]


#: A write of more documents than this is planned on a worker thread (30,000 take ~0.2 s).
PLAN_ON_THREAD = 64


class WritePath:
    """The API server's write path: every write to the configuration goes through here, one
    at a time, and reads of what is in force go through `state`."""

    def __init__(
        self,
        state: State,
        store: DocumentStore | None,
        in_force: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.state = state
        self.store = store
        #: Awaited with a write's generation before it is answered: with worker processes,
        #: until every live worker runs it ("acknowledged means in force", API.md).
        self.in_force = in_force
        #: One writer at a time; the follower applies other replicas' writes under it too.
        self.lock = trio.Lock()
        self._commits = trio.CapacityLimiter(1)
        self._previews = trio.CapacityLimiter(1)
        #: The store revision this replica's documents are at (lists' resourceVersion).
        self.applied = 0
        #: Why the store cannot take writes now (etcd unreachable), or None: a write is
        #: answered 503 at once rather than waiting for a timeout.
        self.unavailable: Callable[[], str | None] = lambda: None
        #: With a store shared by replicas (etcd), set by the follower: wait until this
        #: replica's documents are at least at the revisions given (None: gone) and it has
        #: applied the revision given, True if so. Then this replica's own commits leave
        #: `applied` to the follower.
        self.catch_up: Callable[[Mapping[ObjectKey, int | None], int], Awaitable[bool]] | None = (
            None
        )
        #: Called with each committed write once it is in this replica's table, inside the
        #: commit's shield (the admin API's audit line: a client that hangs up skips none).
        self.on_commit: Callable[[Outcome], None] | None = None
        #: Keys the store holds a value at that is not in force here (not a document, or not
        #: a valid one: written by something else), with that value's revision. A write of
        #: the object replaces it; the follower keeps this current.
        self.unreadable: dict[ObjectKey, int] = {}

    def load(self) -> int:
        """Bring the stored documents into force (at start)."""
        if self.store is None:
            return 0
        raws = self.store.load()
        unreadable = dict(self.store.unreadable)
        documents = structured(raws, unreadable)
        self.unreadable = unreadable
        self.applied = self.store.revision
        # Stored documents keep the metadata they were written with.
        self.state.replace_documents(documents)
        return len(documents)

    # --- reads: what the API server's views show --------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """The snapshot in force (statuses and the routing table)."""
        return self.state.snapshot

    @property
    def revision(self) -> str:
        """The revision this replica applied (the generation without a store): lists'
        resourceVersion."""
        return str(self.applied if self.store else self.state.generation)

    def held_revision(self, key: ObjectKey) -> int | None:
        """The store revision of what this replica holds at `key`: its document's, or that
        of a value it could not read (newer, or alone); None for nothing."""
        doc = self.state.documents.get(key)
        held = [
            revision
            for revision in (_number(_version(doc)), self.unreadable.get(key))
            if revision is not None
        ]
        return max(held, default=None)

    def get(self, key: ObjectKey) -> Document:
        doc = self.state.documents.get(key)
        if doc is None:
            raise NotFound(key)
        return doc

    @property
    def documents(self) -> Mapping[ObjectKey, Document]:
        """Every document in force (a map that is replaced on a write, never changed)."""
        return self.state.documents

    # --- writes --------------------------------------------------------------------------------

    async def apply(
        self,
        documents: Sequence[Document],
        *,
        dry_run: bool = False,
        expected_versions: dict[ObjectKey, str] | None = None,
        must_not_exist: bool = False,
    ) -> Outcome:
        async def attempt() -> Outcome:
            current = self.state.documents
            if must_not_exist:
                for doc in documents:
                    if key_of(doc) in current:
                        raise Conflict(
                            "AlreadyExists", f"{key_of(doc)} already exists", key_of(doc)
                        )
            return await self._write(
                documents, dry_run=dry_run, expected_versions=expected_versions
            )

        return await self._attempts(attempt)

    async def _attempts(self, attempt: Callable[[], Awaitable[Outcome]]) -> Outcome:
        """Run a write under the lock; while etcd says this replica's view was behind,
        catch up (lock released) and plan it again."""
        for _ in range(STALE_ATTEMPTS):
            doubted: NotFound | Conflict | _OnView | None = None
            seen: int | None = None
            current: Mapping[ObjectKey, int | None] = {}
            revision = 0
            async with self.lock:
                try:
                    return await attempt()
                except Stale as stale:
                    current, revision = stale.current, stale.revision
                except (NotFound, Conflict, _OnView) as answer:
                    if self.catch_up is None or answer.key is None:
                        raise _answer(answer) from None
                    doubted, seen = answer, self.held_revision(answer.key)
            if doubted is not None:
                assert doubted.key is not None
                current = {doubted.key: await self._revision_in_store(doubted.key)}
                if current[doubted.key] == seen:
                    raise _answer(doubted)  # etcd holds what it was made from: it stands
            assert self.catch_up is not None  # only a shared store says Stale
            if not await self.catch_up(current, revision):
                raise StoreUnavailable(
                    "this replica cannot catch up with etcd (its watch is behind); "
                    "nothing was changed"
                )
        raise Conflict(
            "Conflict",
            f"the objects kept changing under this write ({STALE_ATTEMPTS} attempts); retry",
        )

    async def _revision_in_store(self, key: ObjectKey) -> int | None:
        """The key's revision in the shared store now; asked with the lock let go, like the
        catching up (another replica may have written it a moment ago)."""
        if (problem := self.unavailable()) is not None:
            raise StoreUnavailable(f"{problem}; nothing was changed")
        assert self.store is not None
        return await trio.to_thread.run_sync(self.store.revision_of, key)

    async def patch(
        self,
        key: ObjectKey,
        patch: Any,
        *,
        dry_run: bool = False,
        combine: Callable[[Any, Any], Any] | None = None,
        absent: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Apply a patch to the document in force: a JSON merge patch, or what `combine`
        makes of (the document's wire form, the patch): a JSON patch, a strategic merge
        patch. ValueError from `combine` is a patch that does not apply (BadRequest).
        `absent`: the wire form to patch when nothing is stored at `key` (a Namespace that
        exists because objects use it); the patched one is then created."""

        async def attempt() -> Outcome:
            current = self.state.documents.get(key)
            if current is not None:
                # Other patches work on what a read shows: a JSON patch can read (`test`,
                # `copy`, `move`, its error messages), so it never sees a private key. An
                # omitted key is carried over on write (store/plan.py); a merge patch only
                # sets, and works on the whole document, as before.
                wire = unstructure_document(current, redact=combine is not None)
            elif absent is not None:
                wire = copy.deepcopy(dict(absent))
            else:
                raise NotFound(key)
            if combine is None:
                merged = merge_patch(wire, patch)
            else:
                try:
                    merged = combine(wire, patch)
                except ValueError as exc:
                    raise BadRequest(f"the patch does not apply to {key}: {exc}") from None
            expected = None
            meta = patch.get("metadata") if isinstance(patch, dict) else None
            version = meta.get("resourceVersion") if isinstance(meta, dict) else None
            # A resourceVersion in the patch makes it conditional; null (RFC 7386: remove the
            # member) or "" makes it unconditional, as in Kubernetes.
            if version not in (None, ""):
                expected = {key: str(version)}
            doc = _admitted_as(key, merged, f"a patch cannot change the name or namespace of {key}")
            return await self._write([doc], expected_versions=expected, dry_run=dry_run)

        return await self._attempts(attempt)

    async def server_side_apply(
        self,
        key: ObjectKey,
        config: dict[str, Any],
        *,
        manager: str,
        force: bool = False,
        dry_run: bool = False,
    ) -> Outcome:
        """Server-side apply of `config` by `manager` (gateway/api/apply.py): created if
        missing; Conflict naming each field another applier owns, unless `force`."""

        async def attempt() -> Outcome:
            current = self.state.documents.get(key)
            live = unstructure_document(current, redact=False) if current else None
            managed = live.get("metadata", {}).get("managedFields") if live else None
            result = ssa.server_side_apply(
                live,
                config,
                manager,
                ssa.owners_of(managed),
                force=force,
                normalize=_normalized,
            )
            if isinstance(result, list):
                raise ApplyConflict(result)
            merged = result.merged
            meta = merged.setdefault("metadata", {})
            api_version = str(config.get("apiVersion", ""))
            meta["managedFields"] = ssa.managed_fields(
                result.owners, api_version, utc_now(), managed
            )
            doc = _admitted_as(key, merged, f"the configuration names another object than {key}")
            expected = {key: current.metadata.resource_version or ""} if current else None
            return await self._write(
                [doc], expected_versions=expected, dry_run=dry_run, keep_managed=False
            )

        return await self._attempts(attempt)

    async def _write(
        self,
        documents: Sequence[Document],
        *,
        dry_run: bool = False,
        expected_versions: dict[ObjectKey, str] | None = None,
        keep_managed: bool = True,
    ) -> Outcome:
        """Plan, commit, swap; the caller holds the lock. Nothing unchanged is written, and a
        write that changes nothing neither commits nor swaps."""
        revision = (self.store.revision if self.store else self.state.generation) + 1
        now = utc_now()  # one clock read per write: metadata and conditions agree
        current = self.state.documents
        planned = functools.partial(
            plan,
            current,
            documents,
            now=now,
            resource_version=str(revision),
            new_uid=uid_source(),
            expected_versions=expected_versions,
            keep_managed=keep_managed,
        )
        if len(documents) > PLAN_ON_THREAD:
            # Pure, over maps nobody changes in place; the lock keeps writers out meanwhile.
            changes = await trio.to_thread.run_sync(planned, limiter=self._previews)
        else:
            changes = planned()
        written = [c for c in changes if c.action is not Action.UNCHANGED]
        if dry_run:
            return Outcome(changes, await self.preview(written, [], now=now))
        # Every key named is compared, the unchanged too: "unchanged" must be etcd's answer.
        expect = self._expected([c.key for c in changes])
        if not written and not expect:
            return Outcome(changes, self.state.snapshot, revision=self.applied)
        with trio.CancelScope(shield=True):  # see `_committed`
            texts, committed = await self._commit(written, [], expect)
            if not written:
                return Outcome(changes, self.state.snapshot, revision=committed)
            if committed != revision:
                # etcd numbered the write (other replicas write too): the documents carry
                # its number; the texts stored carry the guess, so none is reused for answers.
                changes = [_numbered(c, committed) for c in changes]
                written = [c for c in changes if c.action is not Action.UNCHANGED]
                texts = {}
            snapshot = await self._swap_in([c.document for c in written], [], committed, now=now)
            outcome = Outcome(changes, snapshot, texts, revision=committed)
            self._committed(outcome)
        await self._wait_in_force(snapshot)
        return outcome

    async def delete(
        self,
        key: ObjectKey,
        *,
        dry_run: bool = False,
        expected_version: str | None = None,
        expected_uid: str | None = None,
    ) -> Outcome:
        """Delete one document; with preconditions (DeleteOptions), only the version named."""

        async def attempt() -> Outcome:
            doc = self.get(key)
            for what, expected, actual in (
                ("resourceVersion", expected_version, doc.metadata.resource_version),
                ("uid", expected_uid, doc.metadata.uid),
            ):
                if expected is not None and expected != actual:
                    raise Conflict(
                        "Conflict",
                        f"precondition failed: {key} has {what} {actual}, not {expected}",
                        key,
                    )
            changes = [Change(key, Action.DELETED, doc)]
            now = utc_now()
            if dry_run:
                return Outcome(changes, await self.preview([], [key], now=now))
            with trio.CancelScope(shield=True):  # see `_committed`
                _, committed = await self._commit([], [key], self._expected([key]))
                snapshot = await self._swap_in([], [key], committed, now=now)
                outcome = Outcome(changes, snapshot, revision=committed)
                self._committed(outcome)
            await self._wait_in_force(snapshot)
            return outcome

        return await self._attempts(attempt)

    # `_committed`: from a commit to its swap nothing may cancel the write (a client that
    # hangs up cancels its request's task): a write stored and not swapped in would be in the
    # store and not in force until a restart, and `applied` would lag the store for good.

    def _committed(self, outcome: Outcome) -> None:
        if self.on_commit is not None:
            try:
                self.on_commit(outcome)
            except Exception:  # an audit hook's bug must not fail a committed write
                log.exception("the commit hook failed")

    async def _swap_in(
        self,
        documents: Sequence[Document],
        deleted: Sequence[ObjectKey],
        revision: int,
        *,
        now: str,
    ) -> Snapshot:
        """Swap committed changes in, then publish their revision: nothing checkpoints
        between the two, so no list reports a revision ahead of its items (a watch from it
        would miss them). With a shared store the follower publishes it, also after the swap."""
        snapshot = await self.state.put_off_loop(documents, deleted, now=now)
        if self.store is not None and self.catch_up is None:
            self.applied = max(self.applied, revision)
        return snapshot

    def _expected(self, keys: Sequence[ObjectKey]) -> dict[ObjectKey, str | None] | None:
        """What a shared store must hold at each key for a write planned on this view (a
        value this replica could not read included: the write replaces it)."""
        if self.catch_up is None:
            return None
        held = {key: self.held_revision(key) for key in keys}
        return {key: None if revision is None else str(revision) for key, revision in held.items()}

    async def _wait_in_force(self, snapshot: Snapshot) -> None:
        if self.in_force is not None:
            await self.in_force(snapshot.generation)

    async def preview(
        self, written: Sequence[Change], deleted: Sequence[ObjectKey], *, now: str
    ) -> Snapshot:
        """The snapshot these changes would give, without storing or swapping (dry run);
        built on a thread, like a write's."""
        build = functools.partial(
            self.state.build,
            [change.document for change in written],
            list(deleted),
            self.state.generation + 1,
            now=now,
        )
        translation = await trio.to_thread.run_sync(build, limiter=self._previews)
        return translation.snapshot

    async def _commit(
        self,
        written: Sequence[Change],
        deleted: Sequence[ObjectKey],
        expect: Mapping[ObjectKey, str | None] | None = None,
    ) -> tuple[dict[ObjectKey, str], int]:
        """Store the changes; the JSON text of each document written, and the revision."""
        if self.store is None:
            return {}, self.state.generation + 1
        if (problem := self.unavailable()) is not None:
            raise StoreUnavailable(f"{problem}; nothing was changed")
        store, view = self.store, self.applied

        def commit() -> tuple[dict[ObjectKey, str], int]:
            # Made here, on the thread: 30,000 documents take ~0.4 s.
            texts = {
                c.key: encode_json(unstructure_document(c.document, redact=False)) for c in written
            }
            return texts, store.commit(list(texts.items()), list(deleted), expect, view)

        # A limiter of its own: commits never queue behind other threads (DNS lookups of FQDN
        # endpoints share trio's default one, and a slow resolver must not stall writes).
        texts, revision = await trio.to_thread.run_sync(commit, limiter=self._commits)
        for change in written:
            # This replica's own write replaced what it could not read; the watch skips it.
            self.unreadable.pop(change.key, None)
        for key in deleted:
            self.unreadable.pop(key, None)
        return texts, revision


def structured(raws: Sequence[dict[str, Any]], unreadable: dict[ObjectKey, int]) -> list[Document]:
    """The documents stored values are. One that is not valid (written by something else,
    etcd being shared, or by an older tlsgate whose rules were looser) is kept in the store,
    not in force, logged, and recorded in `unreadable` at its revision: a write of its
    object replaces it."""
    documents = []
    for raw in raws:
        try:
            documents.append(structure_document(raw))
        except Invalid as exc:
            log.error("ignoring a stored document that is not valid: %s", exc.message)
            if (key := key_in(raw)) is not None:
                unreadable[key] = _number(raw["metadata"].get("resourceVersion")) or 0
    return documents


def _version(doc: Document | None) -> str | None:
    return doc.metadata.resource_version if doc is not None else None


def _number(version: object) -> int | None:
    return int(version) if isinstance(version, str) and version.isdigit() else None


def _numbered(change: Change, revision: int) -> Change:
    if change.action is Action.UNCHANGED:
        return change
    doc = change.document
    metadata = attrs.evolve(doc.metadata, resource_version=str(revision))
    return attrs.evolve(change, document=attrs.evolve(doc, metadata=metadata))


def uid_source() -> Callable[[], str]:
    """A source of random UUIDs (version 4, RFC 9562 §5.4) for one write. It reads the
    system's randomness 256 uids at a time rather than once per uid, as `uuid.uuid4` does: a
    bundle of 30,000 documents spent a quarter of a second in that system call."""
    random = memoryview(b"")

    def next_uid() -> str:
        nonlocal random
        if not random:
            random = memoryview(os.urandom(16 * 256))
        chunk, random = random[:16], random[16:]
        return str(uuid.UUID(bytes=bytes(chunk), version=4))  # sets version and variant

    return next_uid
