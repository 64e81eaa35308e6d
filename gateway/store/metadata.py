"""Server-set metadata, assigned as the Kubernetes API server would (API.md, SPEC.md §0).

Pure. `uid` and `creationTimestamp` are kept across updates; `generation` starts at 1 and goes
up by one only when the document's content outside `metadata` changes; `resourceVersion` is
whatever the caller's store uses, compared for equality only.
"""

from __future__ import annotations

from typing import Any

import attrs

from gateway.api.convert import unstructure_document
from gateway.api.kinds import Document


def content(doc: Document) -> dict[str, Any]:
    """What a generation counts: everything but metadata (and apiVersion, since one object
    may be written through several versions)."""
    # Unredacted: a Secret whose only change is a new private key has changed.
    wire = unstructure_document(doc, redact=False)
    return {k: v for k, v in wire.items() if k not in ("metadata", "apiVersion")}


def assign(
    doc: Document, *, previous: Document | None, uid: str, now: str, resource_version: str
) -> Document:
    """Overwrite the client's server-set fields (API.md: client-sent values are ignored)."""
    if previous is None:
        meta = attrs.evolve(
            doc.metadata,
            uid=uid,
            creation_timestamp=now,
            generation=1,
            resource_version=resource_version,
        )
    else:
        old = previous.metadata
        generation = (old.generation or 1) + (content(doc) != content(previous))
        meta = attrs.evolve(
            doc.metadata,
            uid=old.uid,
            creation_timestamp=old.creation_timestamp,
            generation=generation,
            resource_version=resource_version,
        )
    return attrs.evolve(doc, metadata=meta)
