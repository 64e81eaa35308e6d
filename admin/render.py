"""The JSON text of documents with their live status, made once per (document, status).

Rendering 30,000 documents for the answer of a bundle apply or a list cost over a second
(unstructuring, then encoding). A document in force and its status are frozen values that a
write replaces rather than changes, and an incremental build keeps the status object of every
route it did not touch (`translate/routes.py`); so the text of an item is kept with the two
objects it was made from and reused while both are the same objects. The cache holds one
string per document in force (a few hundred bytes each).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.api.convert import CONVERTER, encode_json, with_status
from gateway.api.corev1 import Secret
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.api.status import Status

dumps = encode_json


class Renderer:
    def __init__(self) -> None:
        self._texts: dict[ObjectKey, tuple[Document, Status | None, str]] = {}

    def item(
        self,
        doc: Document,
        statuses: Mapping[ObjectKey, Status],
        stored: Mapping[ObjectKey, str] | None = None,
        status_texts: dict[int, str] | None = None,
        *,
        keep: bool = True,
    ) -> str:
        """`with_status(doc, statuses)` as JSON text. `stored`: the JSON text a write just
        stored (`Outcome.texts`), reused for kinds without private keys. `status_texts`: the
        JSON text of each status already rendered by this call, by identity (routes attached
        alike share one status value: translate/statuses.py)."""
        key = key_of(doc)
        status = statuses.get(key)
        cached = self._texts.get(key)
        if cached is not None and cached[0] is doc and cached[1] is status:
            return cached[2]
        text = stored.get(key) if stored is not None and not isinstance(doc, Secret) else None
        if text is None:
            text = dumps(with_status(doc, statuses))
        elif status is not None:
            # with_status adds "status" last: the same text, without unstructuring again.
            status_text = status_texts.get(id(status)) if status_texts is not None else None
            if status_text is None:
                status_text = dumps(CONVERTER.unstructure(status))
                if status_texts is not None:  # `statuses` keeps it alive: the id stays its own
                    status_texts[id(status)] = status_text
            text = f'{text[:-1]},"status":{status_text}}}'
        if keep:
            self._texts[key] = (doc, status, text)
        return text

    def items(
        self,
        docs: Iterable[Document],
        statuses: Mapping[ObjectKey, Status],
        extra: Iterable[str] | None = None,
        stored: Mapping[ObjectKey, str] | None = None,
        *,
        keep: bool = True,
    ) -> list[str]:
        """The members of a JSON array of the documents, comma-separated, in chunks of
        `CHUNK_ITEMS` (`list_text` puts them together); `extra`: per document, members (JSON
        text) to add, as `"action":"created"`."""
        status_texts: dict[int, str] = {}
        texts = [self.item(doc, statuses, stored, status_texts, keep=keep) for doc in docs]
        if extra is not None:
            texts = [f"{text[:-1]},{more}}}" for text, more in zip(texts, extra, strict=True)]
        return [",".join(texts[i : i + CHUNK_ITEMS]) for i in range(0, len(texts), CHUNK_ITEMS)]

    def prune(self, current: Mapping[ObjectKey, Document]) -> None:
        """Forget the documents no longer in force (called now and then)."""
        if len(self._texts) > 2 * len(current) + 1024:
            # A copy first: another request may be rendering on another thread meanwhile.
            entries = list(self._texts.items())
            self._texts = {k: v for k, v in entries if current.get(k) is v[0]}


#: Documents per chunk of a rendered list. The text of 10,000 routes with their Services and
#: EndpointSlices is ~20 MB: joined into one string (and that encoded) it holds the GIL for
#: ~50 ms, which in a single-process gateway stalls every connection. Chunks of ~100 KB are
#: made (and sent) a piece at a time.
CHUNK_ITEMS = 256


def list_text(
    items: list[str],
    revision: str,
    more: str = "",
    *,
    api_version: str = "v1",
    kind: str = "List",
    continue_token: str | None = None,
) -> list[bytes]:
    """A Kubernetes List around the chunks made by `Renderer.items`, as the chunks of the
    response body (UTF-8), never joined. `more`: members (JSON text) to add after
    `metadata`, as a dry run's `"dryRun":true`. The Kubernetes paths answer typed lists
    (`TLSRouteList` of `gateway.networking.k8s.io/v1`), with a `continue` token when paged."""
    meta: dict[str, str] = {"resourceVersion": revision}
    if continue_token:
        meta["continue"] = continue_token
    metadata = dumps(meta)
    head = dumps({"apiVersion": api_version, "kind": kind})
    body = [f'{head[:-1]},"items":['.encode()]
    for index, chunk in enumerate(items):
        body.append(("," + chunk if index else chunk).encode())
    body.append(f'],"metadata":{metadata}{"," + more if more else ""}}}\n'.encode())
    return body
