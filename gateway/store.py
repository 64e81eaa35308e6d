"""The durable document store: embedded SQLite under the state directory.

I/O. Every acknowledged write is committed and synced before it returns (WAL with
`synchronous=FULL`), so a crash right after a response loses nothing. Documents are stored as
the full wire JSON, private keys included: the state directory is created mode 0700 and the
database 0600. One writer at a time (the caller serializes); reads happen only at start.
`resourceVersion`s are the store's revision counter at each write.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.kinds import ObjectKey

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


class Store:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(state_dir)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)  # it holds private keys
        self.path = self.directory / "tlsgate.db"
        if not self.path.exists():
            self.path.touch(mode=0o600)
        os.chmod(self.path, 0o600)
        # Commits run on a worker thread (never on the event loop); the caller's lock makes
        # them one at a time, so sharing the connection across threads is safe.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        self.revision = int(row[0]) if row else 0

    def load(self) -> list[dict[str, Any]]:
        """Every stored document, as wire JSON (in a stable order)."""
        rows = self._db.execute(
            "SELECT body FROM documents ORDER BY kind, namespace, name"
        ).fetchall()
        return [json.loads(body) for (body,) in rows]

    def commit(
        self, puts: Iterable[tuple[ObjectKey, dict[str, Any]]], deletes: Iterable[ObjectKey] = ()
    ) -> int:
        """Write everything in one transaction, synced before returning; the new revision."""
        revision = self.revision + 1
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, body in puts:
                db.execute(
                    "INSERT INTO documents (kind, namespace, name, body) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (kind, namespace, name) DO UPDATE SET body = excluded.body",
                    (key.kind, key.namespace, key.name, json.dumps(body, separators=(",", ":"))),
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
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self.revision = revision
        return revision

    def close(self) -> None:
        self._db.close()
