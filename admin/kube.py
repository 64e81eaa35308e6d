"""The Kubernetes REST API on the admin listener, for kubectl and client libraries (API.md
"Kubernetes API compatibility"): discovery, the resource paths of every served kind, typed
lists with selectors and paging, Tables for `kubectl get`, implicit Namespaces and an empty
events list.

HTTP edge. Every write goes through the same views, admission and write path as `/v1`: a
Kubernetes path is only another name for a document.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import trio
from quart import Response, current_app, request
from quart_trio import QuartTrio

from admin.errors import ApiError
from admin.render import list_text
from admin.requests import body_documents, is_read, json_response, off_loop, text_response
from admin.watch import Expired, Watch, WatchHub, events
from gateway.api import discovery, openapi
from gateway.api.columns import table
from gateway.api.convert import with_status
from gateway.api.discovery import PathError, Target
from gateway.api.kinds import Document, KindInfo, ObjectKey
from gateway.api.selectors import field_selector, label_selector
from gateway.store.writes import list_of

#: The media type of /openapi/v2 as protobuf, as the API server answers it (kubectl asks
#: for `...spec.v2@v1.0+protobuf`, a type Go's mime parser would refuse in an answer).
PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
#: The longest a watch stays open (a client watches again after it ends, as after an API
#: server's own timeout).
WATCH_SECONDS = 1800
#: Documents above which a list is rendered off the event loop.
_MANY = 2000
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _wants_table() -> bool:
    """kubectl get asks for `application/json;as=Table;v=v1;g=meta.k8s.io` first."""
    accept = request.headers.get("Accept", "")
    return "as=Table" in accept and "g=meta.k8s.io" in accept


def _include() -> str:
    """`includeObject` of a Table request: None, Metadata (the default) or Object."""
    include = request.args.get("includeObject") or "Metadata"
    if include not in ("None", "Metadata", "Object"):
        raise ApiError(400, "includeObject takes None, Metadata or Object")
    return include


def _wants_aggregated() -> bool:
    return "as=APIGroupDiscoveryList" in request.headers.get("Accept", "")


def _namespace_wire(name: str, created: str | None = None) -> dict[str, Any]:
    """A Namespace that exists because something uses it (API.md: namespaces need not be
    created before use), as old as the oldest object in it."""
    metadata: dict[str, Any] = {"name": name, "labels": {"kubernetes.io/metadata.name": name}}
    if created:
        metadata["creationTimestamp"] = created
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": metadata,
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _continue_after(token: str | None) -> tuple[str, str] | None:
    """The (namespace, name) a `continue` token resumes after."""
    if not token:
        return None
    if len(token) > 2048:
        raise ApiError(400, "the continue token is not one this server made")
    try:
        after = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, RecursionError):
        raise ApiError(400, "the continue token is not one this server made") from None
    if not (isinstance(after, list) and len(after) == 2 and all(isinstance(v, str) for v in after)):
        raise ApiError(400, "the continue token is not one this server made")
    return after[0], after[1]


def _continue_token(namespace: str, name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([namespace, name]).encode()).decode()


_NUMBER = re.compile(r"[0-9]{1,18}")
#: Watches streaming at once: each holds an admin connection for up to WATCH_SECONDS, so
#: they may take at most half of them (probes and writes keep the rest).
MAX_WATCHES = 32
#: The longest selector taken (the API server's are short; a long one is only work).
MAX_SELECTOR = 4096


def _number(name: str, default: int | None = None) -> int | None:
    """A query parameter that must be a plain decimal number (a digit of another script
    or a thousand digits is a 400, not a 500)."""
    text = request.args.get(name)
    if text in (None, ""):
        return default
    if not _NUMBER.fullmatch(text):
        raise ApiError(400, f"{name} must be a number, not {text[:40]!r}")
    return int(text)


def _limit() -> int | None:
    return _number("limit") or None


class KubeViews:
    """The Kubernetes paths, over the admin API's views (`admin.app.Views`)."""

    def __init__(self, views: Any, version: str) -> None:
        self.views = views
        self.version = version
        self.hub = WatchHub(views.writes)

    def register(self, app: QuartTrio) -> None:
        app.add_url_rule("/version", view_func=self.version_view, methods=["GET"])
        app.add_url_rule("/api", view_func=self.core_discovery, methods=["GET"])
        app.add_url_rule("/apis", view_func=self.groups_discovery, methods=["GET"])
        app.add_url_rule("/openapi/v2", view_func=self.openapi_v2, methods=["GET"])
        app.add_url_rule("/openapi/v3", view_func=self.openapi_v3_root, methods=["GET"])
        app.add_url_rule("/openapi/v3/<path:rest>", view_func=self.openapi_v3, methods=["GET"])
        app.add_url_rule("/api/<path:rest>", view_func=self.core_path, methods=_METHODS)
        app.add_url_rule("/apis/<path:rest>", view_func=self.group_path, methods=_METHODS)

    # --- discovery ---------------------------------------------------------------------------

    async def version_view(self) -> Response:
        return json_response(discovery.version_info(self.version), 200)

    async def core_discovery(self) -> Response:
        if _wants_aggregated():
            return _aggregated(discovery.aggregated(core=True))
        return json_response(discovery.api_versions(), 200)

    async def groups_discovery(self) -> Response:
        if _wants_aggregated():
            return _aggregated(discovery.aggregated(core=False))
        return json_response(discovery.group_list(), 200)

    async def openapi_v2(self) -> Response:
        if "protobuf" in request.headers.get("Accept", ""):  # ...spec.v2@v1.0+protobuf
            # kubectl asks for v2 as protobuf only, and reads v3 for everything it needs;
            # an empty protobuf document (no schemas) lets it leave validation to the
            # server (fieldValidation), as v3 says it may, also for `kind: List` files.
            response = Response(b"", 200)
            response.content_type = PROTOBUF_V2
            return response
        return await self.openapi_v3("v2")

    async def openapi_v3_root(self) -> Response:
        return await self.openapi_v3("v3")

    async def openapi_v3(self, rest: str) -> Response:
        text = _openapi_text(rest.strip("/"))
        if text is None:
            raise ApiError(404, f"no OpenAPI document for {rest}")
        return text_response(text, 200)

    async def core_path(self, rest: str) -> Response:
        segments = ["api", *rest.strip("/").split("/")]
        if segments == ["api", "v1"]:
            return _discovered(discovery.resource_list("v1"), "v1")
        return await self._resource(segments)

    async def group_path(self, rest: str) -> Response:
        segments = ["apis", *rest.strip("/").split("/")]
        if len(segments) == 2:
            return _discovered(discovery.group(segments[1]), segments[1])
        if len(segments) == 3:
            group_version = f"{segments[1]}/{segments[2]}"
            return _discovered(discovery.resource_list(group_version), group_version)
        return await self._resource(segments)

    # --- resources ---------------------------------------------------------------------------

    async def _resource(self, segments: list[str]) -> Response:
        try:
            target = discovery.parse_path(segments)
        except PathError as exc:
            raise ApiError(404, str(exc)) from None
        resource, info = target.resource, target.resource.info
        if info is None:  # events: served, always empty
            if not is_read() or target.name is not None:
                raise ApiError(405, f"{resource.plural} can only be listed or watched here")
            if request.args.get("watch") in ("true", "1"):
                # `kubectl get events -w`: a watch that never has an event (bookmarks only).
                # Its selectors and resourceVersion are taken as the list takes them: as
                # nothing to check (`kubectl events --for` selects on involvedObject).
                if not self._start_hub():
                    raise ApiError(503, "watches need the admin API as tlsgate serves it")
                return self._watch(target, None, lambda _: True, lambda _ns, _name: True)
            return self._empty_list(target)
        if target.name is None:
            if is_read():
                return await self._list(target, info)
            if request.method != "POST":
                raise ApiError(405, f"{request.method} of a collection is not served")
            (raw,) = await body_documents(allow_many=False)
            created: Response = await self.views.create(info, raw, target.namespace)
            return await _in_version(created, target)
        key = ObjectKey(info.kind, target.namespace or "", target.name)
        if request.method == "POST":
            raise ApiError(405, "POST creates in a collection: drop the name from the path")
        if is_read():
            return await self._get(target, info, key)
        if info.kind == "Namespace" and request.method == "DELETE" and not self._stored(key):
            raise ApiError(
                405,
                f"namespace {key.name} exists because objects use it: delete them instead",
            )
        absent = None
        if info.kind == "Namespace" and request.method == "PATCH" and not self._stored(key):
            # `kubectl label|annotate namespace apps`: the implicit one, patched, is stored.
            in_use = self._namespaces_in_use()
            if key.name in in_use:
                absent = _namespace_wire(key.name)
        response: Response = await self.views.item(info, key, absent)
        return await _in_version(response, target)

    def _watch(
        self,
        target: Target,
        info: KindInfo | None,
        labels: Callable[[Mapping[str, str]], bool],
        fields: Callable[[str, str], bool],
    ) -> Response:
        # "0" (or none): the objects in force first, as ADDED; otherwise the changes since.
        # Events have none to miss: any revision will do.
        start = (_number("resourceVersion", 0) or None) if info is not None else None
        # 0 (or none) means the server's choice, as in Kubernetes.
        seconds = _number("timeoutSeconds", 0) or WATCH_SECONDS
        if self.hub.watching >= MAX_WATCHES:
            raise ApiError(429, f"{MAX_WATCHES} watches are open already; retry later")
        watch = Watch(
            kind=target.resource.kind,
            api_version=target.group_version,
            namespace=target.namespace,
            selects=lambda ns, name, meta: fields(ns, name) and labels(meta),
            bookmarks=request.args.get("allowWatchBookmarks") in ("true", "1"),
        )
        if start is not None:
            try:  # a revision too old is an answer (410), not a stream
                self.hub.position(start)
            except Expired as exc:
                raise ApiError(410, str(exc), reason="Expired") from None
        deadline = trio.current_time() + min(seconds, WATCH_SECONDS)
        hub, tables, include = self.hub, _wants_table(), _include()

        async def body() -> AsyncIterator[bytes]:
            try:
                async for event in events(hub, watch, start, deadline):
                    if tables and info is not None and event["type"] != "BOOKMARK":
                        # kubectl get -w asked for Tables: each object as a one-row Table.
                        wire = event["object"]
                        version = wire["metadata"].get("resourceVersion", "")
                        event["object"] = table(
                            info, [wire], datetime.now(UTC), version, include=include
                        )
                    yield json.dumps(event).encode() + b"\n"
            except Expired as exc:
                # Fallen behind what the hub keeps: an ERROR event, as the API server ends
                # a watch it cannot continue; the client lists again.
                status = ApiError(410, str(exc), reason="Expired").body()
                yield json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"

        response = Response(body(), 200, content_type="application/json")
        response.timeout = None  # the watch's own deadline ends it
        return response

    def _stored(self, key: ObjectKey) -> bool:
        return key in self.views.writes.documents

    def _empty_list(self, target: Target) -> Response:
        kind = f"{target.resource.kind}List"
        revision = self.views.writes.revision
        return json_response(
            {
                "apiVersion": target.group_version,
                "kind": kind,
                "metadata": {"resourceVersion": revision},
                "items": [],
            },
            200,
        )

    async def _get(self, target: Target, info: KindInfo, key: ObjectKey) -> Response:
        writes = self.views.writes
        statuses = writes.snapshot.statuses
        found = writes.documents.get(key)
        if found is not None:
            wire = _versioned(with_status(found, statuses), target.group_version)
        elif info.kind == "Namespace" and key.name in (in_use := self._namespaces_in_use()):
            wire = _namespace_wire(key.name, in_use[key.name])
        else:
            raise ApiError(
                404,
                f'{target.resource.plural} "{key.name}" not found',
                kind=target.resource.plural,
                name=key.name,
            )
        if _wants_table():
            body = table(info, [wire], datetime.now(UTC), writes.revision, include=_include())
            return json_response(body, 200)
        return json_response(wire, 200)

    def _namespaces_in_use(self) -> dict[str, str | None]:
        """Namespace -> the creationTimestamp of its oldest object (None: none yet)."""
        in_use: dict[str, str | None] = {"default": None}
        for key, doc in self.views.writes.documents.items():
            if key.namespace:
                created = doc.metadata.creation_timestamp
                before = in_use.get(key.namespace)
                if key.namespace not in in_use or (created and (not before or created < before)):
                    in_use[key.namespace] = created
        return in_use

    def _start_hub(self) -> bool:
        """Start following changes (the first Kubernetes list or watch does), and bring the
        hub up to date: a watch from the revision of any list answered since finds every
        change after it (admin/watch.py). The caller reads the revision it answers before
        its next checkpoint."""
        nursery = getattr(current_app, "nursery", None)
        if nursery is None:
            return False  # an app not served (a test client without lifespan)
        self.hub.start(nursery)
        self.hub.sync()
        return True

    async def _list(self, target: Target, info: KindInfo) -> Response:
        labels, fields = _selectors()
        started = self._start_hub()
        if request.args.get("watch") in ("true", "1"):
            if not started:
                raise ApiError(503, "watches need the admin API as tlsgate serves it")
            return self._watch(target, info, labels, fields)
        limit, after = _limit(), _continue_after(request.args.get("continue"))
        writes = self.views.writes
        # One consistent read (documents, statuses, revision); the rest off the loop.
        documents, statuses, revision = writes.documents, writes.snapshot.statuses, writes.revision
        namespaces = self._namespaces_in_use() if info.kind == "Namespace" else {}
        include = _include()
        resource = target.resource

        def selected() -> tuple[list[Document | dict[str, Any]], str | None]:
            found: list[Document | dict[str, Any]] = []
            docs = list_of(documents, info.kind, target.namespace)
            entries: list[tuple[tuple[str, str], Document | dict[str, Any]]] = [
                ((doc.metadata.namespace or "", doc.metadata.name), doc) for doc in docs
            ]
            if info.kind == "Namespace":
                stored = {doc.metadata.name for doc in docs}
                entries += [
                    (("", n), _namespace_wire(n, created))
                    for n, created in namespaces.items()
                    if n not in stored
                ]
                entries.sort(key=lambda entry: entry[0])
            for position, doc in entries:
                if after is not None and position <= after:
                    continue
                meta_labels = (
                    doc["metadata"]["labels"] if isinstance(doc, dict) else doc.metadata.labels
                )
                if not fields(*position) or not labels(meta_labels or {}):
                    continue
                if limit is not None and len(found) == limit:
                    return found, _continue_token(*_position(found[-1]))
                found.append(doc)
            return found, None

        group_version = target.group_version

        def wire(doc: Document | dict[str, Any]) -> dict[str, Any]:
            if isinstance(doc, dict):
                return doc
            return _versioned(with_status(doc, statuses), group_version)

        def answer() -> tuple[bytes | list[bytes], bool]:
            found, token = selected()
            if _wants_table():
                body = table(
                    info, [wire(d) for d in found], datetime.now(UTC), revision, token, include
                )
                return json.dumps(body).encode(), True
            if any(isinstance(d, dict) or d.api_version != group_version for d in found):
                # Not as stored (an implicit Namespace, an older version): made here.
                wires = [wire(d) for d in found]
                texts = [",".join(json.dumps(w) for w in wires)] if wires else []
            else:
                texts = self.views.renderer.items(found, statuses)
            kind = f"{resource.kind}List"
            return list_text(
                texts,
                revision,
                api_version=target.group_version,
                kind=kind,
                continue_token=token,
            ), False

        body, _ = await off_loop(len(documents) > _MANY, answer)
        return text_response(body, 200)


@functools.cache
def _openapi_documents() -> dict[str, bytes]:
    """The OpenAPI documents, made once (they follow from the model alone): `v2`, `v3` (the
    root) and each v3 path (`apis/{group}/{version}`, `api/v1`)."""
    documents = {
        "v2": json.dumps(openapi.v2_document()).encode(),
        "v3": json.dumps(openapi.v3_root()).encode(),
    }
    for group_version in discovery.SERVED:
        document = openapi.v3_document(group_version)
        documents[openapi.v3_path(group_version)] = json.dumps(document).encode()
    return documents


def _openapi_text(which: str) -> bytes | None:
    return _openapi_documents().get(which)


def _selectors() -> tuple[Callable[[Mapping[str, str]], bool], Callable[[str, str], bool]]:
    """The query's label and field selectors, as predicates; 400 for one malformed."""
    texts = (request.args.get("labelSelector", ""), request.args.get("fieldSelector", ""))
    if any(len(text) > MAX_SELECTOR for text in texts):
        raise ApiError(400, f"a selector is longer than {MAX_SELECTOR} characters")
    try:
        return label_selector(texts[0]), field_selector(texts[1])
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


def _versioned(wire: dict[str, Any], group_version: str) -> dict[str, Any]:
    """An object as the version its path names says it: the versions of a kind share one
    schema (SPEC.md §1), so the API server's conversion is the apiVersion alone."""
    wire["apiVersion"] = group_version
    if wire.get("kind") == "Namespace":
        # A stored Namespace is as live as an implicit one (kubectl wait on status.phase).
        wire.setdefault("status", {"phase": "Active"})
    return wire


async def _in_version(response: Response, target: Target) -> Response:
    """The answer of a write (or read) of one object through the admin API's views, at the
    version its Kubernetes path names."""
    if response.status_code >= 300 or response.mimetype != "application/json":
        return response
    body = json.loads(await response.get_data())
    if (
        isinstance(body, dict)
        and body.get("kind") == target.resource.kind
        and body.get("apiVersion") != target.group_version
    ):
        response.set_data(json.dumps(_versioned(body, target.group_version)))
    return response


def _position(doc: Document | dict[str, Any]) -> tuple[str, str]:
    if isinstance(doc, dict):
        return doc["metadata"].get("namespace", ""), doc["metadata"]["name"]
    return doc.metadata.namespace or "", doc.metadata.name


def _aggregated(body: dict[str, Any]) -> Response:
    response = json_response(body, 200)
    response.content_type = discovery.AGGREGATED
    return response


def _discovered(body: dict[str, Any] | None, what: str) -> Response:
    if body is None:
        raise ApiError(404, f"the server does not serve {what}")
    return json_response(body, 200)
