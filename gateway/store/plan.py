"""What a write does to the stored documents, decided before anything is stored.

Pure. `plan` takes the documents in force and the admitted documents of one request, and says
for each whether it is `created`, `configured` or `unchanged`, with its server metadata
(API.md "Server-set metadata"). `merge_patch` is RFC 7386. A private key a client omits is
carried over from the stored Secret: keys are write-only (no response ever shows one), so a
document read back and written again must not lose its key.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from attrs import frozen

from gateway.api import corev1
from gateway.api.convert import PRIVATE_KEYS
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.api.model import ObjectMeta
from gateway.store import metadata


class Action(enum.StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


@frozen
class Change:
    key: ObjectKey
    action: Action
    document: Document


class Conflict(Exception):
    """A stale resourceVersion or an existing object on create (409). `key` is the object
    whose state decided it, if one did (a shared store confirms that state before the
    answer stands, `writes.py`)."""

    def __init__(self, reason: str, message: str, key: ObjectKey | None = None) -> None:
        self.reason = reason
        self.key = key
        super().__init__(message)


def carry_private_keys(doc: Document, previous: Document | None) -> Document:
    if not isinstance(doc, corev1.Secret) or not isinstance(previous, corev1.Secret):
        return doc
    kept = {
        k: v
        for k, v in (previous.data or {}).items()
        if k in PRIVATE_KEYS and k not in (doc.data or {})
    }
    if not kept:
        return doc
    return attrs.evolve(doc, data={**(doc.data or {}), **kept})


#: The ObjectMeta fields a client sets; the others are the server's (API.md).
_SERVER_METADATA = frozenset({"uid", "creation_timestamp", "generation", "resource_version"})
_CLIENT_METADATA = tuple(f.name for f in attrs.fields(ObjectMeta) if f.name not in _SERVER_METADATA)


def _same_content(doc: Document, previous: Document) -> bool:
    """Does `doc` say what `previous` says, in everything a client controls? Server-set
    metadata (uid, creationTimestamp, generation, resourceVersion) is not a difference.
    Compared as frozen values, field by field (private keys included), which costs a
    fraction of comparing wire forms; a field left unset is None either way."""
    if type(doc) is not type(previous):
        return False
    for field in attrs.fields(type(doc)):
        if field.name != "metadata" and getattr(doc, field.name) != getattr(previous, field.name):
            return False
    mine, theirs = doc.metadata, previous.metadata
    return all(getattr(mine, name) == getattr(theirs, name) for name in _CLIENT_METADATA)


def _kept_managed(doc: Document, previous: Document | None) -> Document:
    """managedFields are server-side apply's record: another write (whatever a client sends
    back from a read) keeps what is stored."""
    kept = previous.metadata.managed_fields if previous is not None else None
    if doc.metadata.managed_fields == kept:
        return doc
    return attrs.evolve(doc, metadata=attrs.evolve(doc.metadata, managed_fields=kept))


def plan(
    current: Mapping[ObjectKey, Document],
    incoming: Sequence[Document],
    *,
    now: str,
    resource_version: str,
    new_uid: Callable[[], str],
    expected_versions: Mapping[ObjectKey, str] | None = None,
    keep_managed: bool = True,
) -> list[Change]:
    """One Change per incoming document (a later duplicate replaces an earlier one).

    Every document is compared with what is stored, never with an earlier copy in the same
    request: a request is one write, so an object it creates is at generation 1 however many
    times it names it, and a stored one goes up by one at most."""
    changes: dict[ObjectKey, Change] = {}
    for doc in incoming:
        key = key_of(doc)
        previous = current.get(key)
        expected = (expected_versions or {}).get(key)
        if expected is not None and (
            previous is None or previous.metadata.resource_version != expected
        ):
            raise Conflict(
                "Conflict",
                f"the object has been modified: {key} is at "
                f"resourceVersion "
                f"{previous.metadata.resource_version if previous else 'none'}, "
                f"not {expected}; read it again and retry",
                key,
            )
        if doc is previous:  # sent again exactly as before (admin/known.py)
            changes[key] = Change(key, Action.UNCHANGED, previous)
            continue
        written = carry_private_keys(
            _kept_managed(doc, previous) if keep_managed else doc, previous
        )
        if previous is not None and _same_content(written, previous):
            changes[key] = Change(key, Action.UNCHANGED, previous)
            continue
        assigned = metadata.assign(
            written, previous=previous, uid=new_uid(), now=now, resource_version=resource_version
        )
        changes[key] = Change(
            key, Action.CREATED if previous is None else Action.CONFIGURED, assigned
        )
    return list(changes.values())


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON Merge Patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
