"""Admitting a bundle: many documents, every problem reported, none stopping the others.

Pure. The one recipe behind `POST /v1/apply`, `serve --bootstrap`, `tlsgate translate` and
the tests: each caller decides what a rejected document means (a 422 naming `items[i]`, a
refused start, a message per file), never how documents are admitted.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.api.convert import Invalid, structure_document
from gateway.api.kinds import Document


def admit_all(raws: Iterable[object]) -> tuple[list[Document], list[tuple[int, Invalid]]]:
    """The admitted documents in order, and the index and error of each rejected one."""
    documents: list[Document] = []
    rejected: list[tuple[int, Invalid]] = []
    for index, raw in enumerate(raws):
        try:
            documents.append(structure_document(raw))
        except Invalid as exc:
            rejected.append((index, exc))
    return documents, rejected
