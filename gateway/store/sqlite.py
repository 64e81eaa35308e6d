"""The durable document store: embedded SQLite under the state directory.

I/O. Every acknowledged write is committed and synced before it returns (WAL with
`synchronous=FULL`), so a crash right after a response loses nothing. Documents are stored as
the full wire JSON, private keys included: the state directory is created mode 0700 and the
database 0600. One writer at a time (the caller serializes); reads happen only at start.
`resourceVersion`s are the store's revision counter at each write.

One process owns the database: it is opened in exclusive locking mode, which also keeps the
WAL index in private memory instead of a shared `-shm` mapping (an unwritable or truncated
mapping is a SIGBUS that kills the whole gateway, data plane included), and a second tlsgate
on the same directory is refused at start. A write the disk cannot take (full, read-only, I/O
error) raises StoreUnavailable; SQLite has rolled it back, the database stays usable, and the
next write succeeds once space returns.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway.api.kinds import ObjectKey

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


#: The WAL is truncated back to this size after each checkpoint (bytes).
JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024


class StoreError(Exception):
    """The store cannot be opened (in use by another process, unreadable): a start error."""


class StoreUnavailable(Exception):
    """The store cannot take a write now (disk full, read-only, I/O error); nothing changed."""


class Store:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(state_dir)
        self.path = self.directory / "tlsgate.db"
        #: Keys whose stored value cannot be read as a document: none here, where tlsgate is
        #: the only writer (etcd's, `etcd.EtcdStore.unreadable`, is shared).
        self.unreadable: dict[ObjectKey, int] = {}
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)  # it holds private keys
            if not self.path.exists():
                self.path.touch(mode=0o600)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            raise StoreError(f"state directory {self.directory}: {exc.strerror or exc}") from None
        # Commits run on a worker thread (never on the event loop); the caller's lock makes
        # them one at a time, so sharing the connection across threads is safe.
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=0.5
        )
        try:
            # Exclusive before WAL: then SQLite never creates the shared-memory WAL index
            # (sqlite.org/wal.html, "Use of WAL Without Shared-Memory").
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            self._db.executescript(SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        except sqlite3.Error as exc:
            self._db.close()
            if getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
                raise StoreError(
                    f"the store {self.path} is in use by another tlsgate process"
                ) from None
            raise StoreError(f"the store {self.path} cannot be opened: {exc}") from None
        self.revision = int(row[0]) if row else 0

    def load(self) -> list[dict[str, Any]]:
        """Every stored document, as wire JSON (in a stable order)."""
        rows = self._db.execute(
            "SELECT body FROM documents ORDER BY kind, namespace, name"
        ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def commit(
        self,
        puts: Iterable[tuple[ObjectKey, str]],
        deletes: Iterable[ObjectKey] = (),
        expect: Mapping[ObjectKey, str | None] | None = None,
        view: int | None = None,
    ) -> int:
        """Write everything in one transaction, synced before returning; the new revision.
        A body is the document's JSON text (`convert.encode_json` of its wire form).
        `expect` and `view` are for stores shared by several writers: this one has one
        writer, whose view is the store's, so it has nothing to compare."""
        revision = self.revision + 1
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO documents (kind, namespace, name, body) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, namespace, name) DO UPDATE SET body = excluded.body",
                (
                    (
                        key.kind,
                        key.namespace,
                        key.name,
                        body,
                    )
                    for key, body in puts
                ),
            )
            for key in deletes:
                db.execute(
                    "DELETE FROM documents WHERE kind = ? AND namespace = ? AND name = ?",
                    (key.kind, key.namespace, key.name),
                )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('revision', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(revision),),
            )
            db.execute("COMMIT")
        except BaseException as exc:
            # SQLite may have rolled back already (SQLITE_FULL does): ROLLBACK only what is
            # still open, or the real error is lost behind "no transaction is active".
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(
                    f"the store cannot take the write ({_reason(exc)}, {self.path}); "
                    "nothing was changed"
                ) from exc
            raise
        self.revision = revision
        return revision

    def revision_of(self, key: ObjectKey) -> int | None:
        """Unused: this store has one writer, whose view is the store's."""
        return None

    def close(self) -> None:
        self._db.close()


def _reason(exc: sqlite3.Error) -> str:
    name: str = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL":
        return "the disk is full"
    if name.startswith("SQLITE_READONLY"):
        return "the database is read-only"
    if name.startswith("SQLITE_IOERR"):
        return f"an I/O error: {exc}"
    return str(exc)
