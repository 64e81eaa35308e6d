"""Documents sent again exactly as before: known without admitting them again.

Pure. `kubectl apply -f dir/` and `tlsgate apply` re-send every document, most of them
unchanged; admitting 30,000 documents costs most of a second. A document whose JSON text is the
one that produced what is in force now (the same digest, and the stored object is still the
one it produced: any write in between replaces that object) is that stored object: the write
path finds it unchanged by identity. Everything else is admitted as usual. Only digests and
references to documents in force are kept, never request bodies.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.api.kinds import Document, ObjectKey, key_of


def raw_key(raw: Any) -> ObjectKey | None:
    """The key the raw document names (as it says it: a namespace left out is "")."""
    if not isinstance(raw, dict):
        return None
    meta = raw.get("metadata")
    kind = raw.get("kind")
    if not isinstance(meta, dict) or not isinstance(kind, str):
        return None
    name, namespace = meta.get("name"), meta.get("namespace", "")
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    return ObjectKey(kind, namespace, name)


def digest(raw: Any) -> bytes:
    """A digest of the parsed document. Its pickle, not its JSON text: 3x cheaper, and just
    as exact (equal bytes are equal values; a document whose keys come in another order
    merely misses and is admitted)."""
    return hashlib.blake2b(pickle.dumps(raw, protocol=5), digest_size=16).digest()


class KnownDocuments:
    def __init__(self) -> None:
        self._known: dict[ObjectKey, tuple[bytes, Document]] = {}

    def match(
        self, raws: Sequence[Any], current: Mapping[ObjectKey, Document]
    ) -> list[tuple[ObjectKey | None, bytes, Document | None]]:
        """Per raw document: its key, its digest, and the stored document it is (or None)."""
        out: list[tuple[ObjectKey | None, bytes, Document | None]] = []
        for raw in raws:
            key = raw_key(raw)
            if key is None:
                out.append((None, b"", None))
                continue
            mark = digest(raw)
            entry = self._known.get(key)
            found = None
            if entry is not None and entry[0] == mark:
                stored = current.get(key_of(entry[1]))
                found = stored if stored is entry[1] else None
            out.append((key, mark, found))
        return out

    def remember(
        self,
        matched: Sequence[tuple[ObjectKey | None, bytes, Document | None]],
        documents: Sequence[Document],
        current: Mapping[ObjectKey, Document],
    ) -> None:
        """After a write: each raw document (in order, as `match` gave them, beside the
        documents they were admitted as) produced what is now stored under its key."""
        for (key, mark, _), doc in zip(matched, documents, strict=True):
            stored = current.get(key_of(doc))
            if key is not None and stored is not None:
                self._known[key] = (mark, stored)
        if len(self._known) > 2 * len(current) + 1024:  # deleted objects' entries
            entries = list(self._known.items())  # another request may be matching meanwhile
            self._known = {k: v for k, v in entries if current.get(key_of(v[1])) is v[1]}
