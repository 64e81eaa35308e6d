"""admin/render.py: the cached and spliced JSON text is exactly what with_status renders, and
never shows a Secret's private key."""

from __future__ import annotations

import json

from admin.render import CHUNK_ITEMS, Renderer, list_text
from gateway.api.convert import encode_json, unstructure_document, with_status
from gateway.api.kinds import key_of

from .helpers import GATEWAY_CLASS, World
from .test_translate import GATEWAY

ROUTES = (
    GATEWAY
    + """---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: db, namespace: infra}
spec:
  parentRefs: [{name: gw}]
  hostnames: [db.example.com]
  rules: [{backendRefs: [{name: db, port: 443}]}]
---
apiVersion: v1
kind: Secret
metadata: {name: cert, namespace: infra}
type: kubernetes.io/tls
stringData: {tls.crt: not-a-certificate, tls.key: very-secret}
"""
)


def test_spliced_and_cached_texts_are_what_with_status_renders() -> None:
    world = World()
    snapshot = world.apply(GATEWAY_CLASS + "---" + ROUTES)
    docs = list(world.docs.values())
    stored = {key_of(d): encode_json(unstructure_document(d, redact=False)) for d in docs}
    renderer = Renderer()
    for texts in (stored, None, stored):  # spliced, then from the cache, then again
        for doc in docs:
            expected = json.dumps(with_status(doc, snapshot.statuses), separators=(",", ":"))
            assert renderer.item(doc, snapshot.statuses, texts) == expected
    listed = json.loads(
        b"".join(list_text(renderer.items(docs, snapshot.statuses, ['"a":1'] * len(docs)), "7"))
    )
    assert listed["metadata"] == {"resourceVersion": "7"}
    assert [i["a"] for i in listed["items"]] == [1] * len(docs)
    assert "very-secret" not in json.dumps(listed)
    assert "tls.key" not in next(i for i in listed["items"] if i["kind"] == "Secret")["data"]


def test_a_new_status_is_rendered_anew() -> None:
    world = World()
    world.apply(GATEWAY_CLASS + "---" + ROUTES)
    route = next(d for d in world.docs.values() if d.kind == "TLSRoute")
    renderer = Renderer()
    before = renderer.item(route, world.snapshot.statuses)  # type: ignore[union-attr]
    world.delete("Gateway", "infra", "gw")  # the route's parent is gone: a new status
    after = renderer.item(route, world.snapshot.statuses)  # type: ignore[union-attr]
    assert before != after
    assert "NoMatchingParent" in after


def test_a_long_list_is_made_in_chunks_that_join_into_one_list() -> None:
    world = World()
    statuses = world.apply(GATEWAY_CLASS + "---" + ROUTES).statuses
    doc = next(d for d in world.docs.values() if d.kind == "TLSRoute")
    count = 2 * CHUNK_ITEMS + 3
    chunks = list_text(Renderer().items([doc] * count, statuses), "9")
    assert len(chunks) == 3 + 2  # three chunks of items between the head and the tail
    listed = json.loads(b"".join(chunks))
    assert len(listed["items"]) == count
    assert all(item["metadata"]["name"] == "db" for item in listed["items"])
    empty = json.loads(b"".join(list_text(Renderer().items([], statuses), "9")))
    assert empty["items"] == []
