"""The admin HTTP API (API.md): a Quart-Trio app with thin views over `WritePath`.

HTTP edge. Every view is `async def`: Quart-Trio runs plain `def` views on a worker thread,
which would break the atomic swap (ARCHITECTURE.md). Errors are Kubernetes `Status` bodies.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import jsonpatch
import jsonpointer
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from admin.dashboard import Dashboard, Sources
from admin.errors import ApiError
from admin.known import KnownDocuments
from admin.kube import KubeViews
from admin.render import Renderer, list_text
from admin.requests import (
    APPLY_PATCH,
    BULK_BODY,
    JSON_PATCH,
    MANY_DOCUMENTS,
    MERGE_PATCH,
    STRATEGIC_PATCH,
    admit_bundle,
    admit_one,
    audit,
    body_documents,
    body_of,
    content_type,
    delete_options,
    dry_run_requested,
    is_read,
    json_body,
    json_response,
    kind_info,
    namespace_from_query,
    off_loop,
    parse_body,
    read_body,
    replica_wait,
    run_write,
    text_response,
    yaml_body,
)
from gateway import collector, tlsgate_version
from gateway.api import strategic
from gateway.api.admission import Cause
from gateway.api.convert import encode_json, with_status
from gateway.api.kinds import Document, KindInfo, ObjectKey, key_of
from gateway.metrics import Metrics
from gateway.routing.explain import HealthOf, explain, table_to_wire
from gateway.store.plan import Action
from gateway.store.sqlite import StoreUnavailable
from gateway.store.writes import NotFound, Outcome, WritePath, list_of

log = logging.getLogger("tlsgate.admin")

OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}


class Replicas(Protocol):
    """The replicas sharing this configuration (`gateway/store/replicas.py`)."""

    def replicas(self) -> Awaitable[list[dict[str, Any]]]: ...

    def wait(self, revision: int, seconds: float) -> Awaitable[list[dict[str, Any]]]: ...


def create_app(
    writes: WritePath,
    *,
    body_limit: int = 4 * 1024 * 1024,
    ready: Callable[[], str | None] = lambda: None,
    metrics: Metrics | None = None,
    workers: Callable[[], list[dict[str, object]]] | None = None,
    replicas: Replicas | None = None,
    store: Callable[[], dict[str, object]] | None = None,
    health: HealthOf | None = None,
    credentials: Sequence[str] = (),
    dashboard: Sources | None = None,
) -> QuartTrio:
    """`credentials`: what every admin request must have shown to reach the app (`token`,
    `client-certificate`), as the audit lines say it. `dashboard`: what `/ui` reads besides
    (none: no dashboard)."""
    # Assets are the dashboard's, from memory: Quart's own static route would serve the
    # package's folder at /static.
    app = QuartTrio(__name__, static_folder=None)
    # Inside the write's commit, so a client that hangs up cannot skip its audit line.
    writes.on_commit = functools.partial(audit, credential="+".join(credentials) or "none")
    app.config["MAX_CONTENT_LENGTH"] = body_limit
    app.json.sort_keys = False  # type: ignore[attr-defined]
    views = Views(
        writes,
        body_limit=body_limit,
        ready=ready,
        metrics=metrics,
        workers=workers,
        replicas=replicas,
        store=store,
        health=health,
    )
    app.register_error_handler(ApiError, views.api_error)
    app.register_error_handler(HTTPException, views.http_error)
    app.register_error_handler(Exception, views.internal_error)
    app.add_url_rule("/healthz", view_func=views.healthz, methods=["GET"])
    app.add_url_rule("/readyz", view_func=views.readyz, methods=["GET"])
    app.add_url_rule("/metrics", view_func=views.metrics_view, methods=["GET"])
    app.add_url_rule("/v1/routingtable", view_func=views.routing_table, methods=["GET"])
    app.add_url_rule("/v1/explain", view_func=views.explain_view, methods=["GET"])
    app.add_url_rule("/v1/replicas", view_func=views.replicas_view, methods=["GET"])
    app.add_url_rule("/v1/apply", view_func=views.apply_view, methods=["POST"])
    app.add_url_rule("/v1/<plural>", view_func=views.collection, methods=["GET", "POST"])
    item_methods = ["GET", "PUT", "PATCH", "DELETE"]
    app.add_url_rule("/v1/<plural>/<first>", view_func=views.cluster_item, methods=item_methods)
    app.add_url_rule(
        "/v1/<plural>/<namespace>/<name>", view_func=views.namespaced_item, methods=item_methods
    )
    KubeViews(views, tlsgate_version()).register(app)
    if dashboard is not None:
        Dashboard(views, dashboard).register(app)
    return app


class Views:
    """The admin API's views: thin, every one `async def`, reading and writing through the
    write path only."""

    def __init__(
        self,
        writes: WritePath,
        *,
        body_limit: int,
        ready: Callable[[], str | None],
        metrics: Metrics | None,
        workers: Callable[[], list[dict[str, object]]] | None = None,
        replicas: Replicas | None = None,
        store: Callable[[], dict[str, object]] | None = None,
        health: HealthOf | None = None,
    ) -> None:
        self.writes = writes
        #: Endpoint health from the monitor, shown in the routing table and explain.
        self.health = health
        self.replicas = replicas
        self.store = store
        #: Digests of the documents applied, to skip admitting them again (`known.py`).
        self.known = KnownDocuments()
        #: The JSON text of documents with their status, reused while both are unchanged.
        self.renderer = Renderer()
        #: The worker processes and what each runs, in the process model (API.md).
        self.workers = workers
        self.body_limit = body_limit
        self.ready = ready
        self.metrics = metrics

    # --- errors ----------------------------------------------------------------------------

    async def api_error(self, error: ApiError) -> Response:
        return json_response(error.body(), error.code)

    async def http_error(self, error: HTTPException) -> Response:
        code = error.code or 500
        if isinstance(error, RequestEntityTooLarge):
            message = f"the request body is larger than the {self.body_limit}-byte limit"
        else:
            message = error.description or error.name
        return json_response(ApiError(code, message).body(), code)

    async def internal_error(self, error: Exception) -> Response:
        # Nothing was swapped: a write that fails (a full disk, say) changes nothing in force.
        log.error("admin request failed: %s %s", request.method, request.path, exc_info=error)
        body = ApiError(500, f"internal error: {type(error).__name__}: {error}").body()
        return json_response(body, 500)

    # --- probes and the table -----------------------------------------------------------------

    async def healthz(self) -> Response:
        return json_response({"status": "ok"}, 200)

    async def readyz(self) -> Response:
        reason = self.ready()
        if reason is None:
            generation = self.writes.snapshot.generation
            body: dict[str, Any] = {"status": "ready", "generation": generation}
            if self.store is not None:
                # Traffic is served from the table in force while the store is down: still
                # ready, and the body says so (API.md "Store and replicas").
                body["store"] = self.store()
            return json_response(body, 200)
        return json_response(ApiError(503, reason).body(), 503)

    async def replicas_view(self) -> Response:
        try:
            items = await self.replicas.replicas() if self.replicas is not None else []
        except StoreUnavailable as exc:
            raise ApiError(503, str(exc)) from None
        body = {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": self.writes.revision},
            "items": items,
        }
        return json_response(body, 200)

    async def _wait_replicas(self, outcome: Outcome, seconds: float | None) -> None:
        """`?wait=replicas`: answer once every live replica applied the write, else 504
        naming the ones that lag (the write itself stays committed)."""
        if seconds is None or outcome.revision is None or self.replicas is None:
            return
        behind = await self.replicas.wait(outcome.revision, seconds)
        if behind:
            names = ", ".join(str(r.get("name")) for r in behind)
            raise ApiError(
                504,
                f"the write is committed at revision {outcome.revision}, but not every "
                f"replica applied it within {seconds:g}s: {names}",
                causes=[
                    Cause(
                        str(r.get("name")),
                        "ReplicaLagging",
                        r.get("problem")
                        or f"at revision {r.get('revision')}, not {outcome.revision}",
                    )
                    for r in behind
                ],
            )

    async def metrics_view(self) -> Response:
        body = self.metrics.render() if self.metrics is not None else b""
        return Response(body, 200, content_type=CONTENT_TYPE_LATEST)

    async def routing_table(self) -> Response:
        body = table_to_wire(self.writes.snapshot, self.health)
        if self.workers is not None:
            body["workers"] = self.workers()
        return json_response(body, 200)

    async def explain_view(self) -> Response:
        sni = request.args.get("sni")
        port_text = request.args.get("port", "")
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ApiError(400, "query parameter 'port' must be a port number, 1 to 65535")
        address = request.args.get("address") or None
        if address is not None:
            try:
                address = str(ipaddress.ip_address(address))
            except ValueError:
                raise ApiError(
                    400, f"query parameter 'address' must be an IP address, not {address!r}"
                ) from None
        try:
            result = explain(self.writes.snapshot, address, int(port_text), sni, self.health)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return json_response(result, 200)

    # --- documents ---------------------------------------------------------------------------

    async def apply_view(self) -> Response:
        dry_run = dry_run_requested()
        wait = replica_wait()
        data = await read_body()
        # One bulk section from the parse on: a body this large is many documents.
        with collector.bulk(len(data) > BULK_BODY):
            raws = await body_of(data, allow_many=True)
            del data
            many = len(raws) > MANY_DOCUMENTS
            try:
                return await self._apply(raws, many=many, dry_run=dry_run, wait=wait)
            finally:
                if many:
                    collector.discard(raws)  # a million objects: not freed on the loop

    async def _apply(
        self, raws: list[Any], *, many: bool, dry_run: bool, wait: float | None
    ) -> Response:
        documents = self.writes.documents
        matched = await off_loop(many, lambda: self.known.match(raws, documents))
        bundle = await off_loop(many, lambda: _admitted(raws, matched))
        outcome = await run_write(self.writes.apply(bundle, dry_run=dry_run))
        await self._wait_replicas(outcome, wait)
        if not dry_run:
            stored = self.writes.documents
            await off_loop(many, lambda: self.known.remember(matched, bundle, stored))
        if many:
            # The admitted documents (the store keeps copies with server metadata) and the
            # matches are most of a million objects: freed off the loop (collector.py).
            collector.discard(matched)
            collector.discard(bundle)
        revision = self.writes.revision
        if outcome.revision is not None and not dry_run:
            # The write's own revision, which this replica may not have followed up to yet.
            revision = str(max(int(revision), outcome.revision))

        def text() -> list[bytes]:
            if not dry_run:
                self.renderer.prune(self.writes.documents)
            items = self.renderer.items(
                (c.document for c in outcome.changes),
                outcome.snapshot.statuses,
                (f'"action":"{c.action.value}"' for c in outcome.changes),
                outcome.texts,
                keep=not dry_run,  # a preview's texts are not what is in force
            )
            if not dry_run:
                return list_text(items, revision)
            table = encode_json(table_to_wire(outcome.snapshot))
            return list_text(items, revision, f'"dryRun":true,"routingTable":{table}')

        return text_response(await off_loop(many, text), 200)

    async def collection(self, plural: str) -> Response:
        info = kind_info(plural)
        if is_read():
            namespace = request.args.get("namespace")
            # One consistent read (documents, statuses, revision); the rest off the loop.
            statuses, documents = self.writes.snapshot.statuses, self.writes.documents
            revision = self.writes.revision

            def text() -> list[bytes]:
                found = list_of(documents, info.kind, namespace)
                return list_text(self.renderer.items(found, statuses), revision)

            many = len(documents) > MANY_DOCUMENTS
            return text_response(await off_loop(many, text), 200)
        (raw,) = await body_documents(allow_many=False)
        return await self.create(info, raw)

    async def create(self, info: KindInfo, raw: Any, namespace: str | None = None) -> Response:
        """Create one document (409 if it exists), in `namespace` or the query's."""
        wait = replica_wait()
        namespace_from_query(raw, info, namespace)
        doc = admit_one(raw, info)
        outcome = await run_write(
            self.writes.apply([doc], must_not_exist=True, dry_run=dry_run_requested())
        )
        await self._wait_replicas(outcome, wait)
        return _first_change(outcome, 201)

    async def cluster_item(self, plural: str, first: str) -> Response:
        info = kind_info(plural)
        if info.namespaced:
            raise ApiError(
                404, f"{info.kind} is namespaced: use /v1/{plural}/{{namespace}}/{{name}}"
            )
        return await self._item(info, ObjectKey(info.kind, "", first))

    async def namespaced_item(self, plural: str, namespace: str, name: str) -> Response:
        info = kind_info(plural)
        if not info.namespaced:
            raise ApiError(404, f"{info.kind} is cluster-scoped: use /v1/{plural}/{{name}}")
        return await self._item(info, ObjectKey(info.kind, namespace, name))

    async def item(
        self, info: KindInfo, key: ObjectKey, absent: Mapping[str, Any] | None = None
    ) -> Response:
        """GET, PUT, PATCH or DELETE of one document (the Kubernetes paths' too). `absent`:
        what a PATCH patches when nothing is stored (an implicit Namespace)."""
        return await self._item(info, key, absent)

    async def _item(
        self, info: KindInfo, key: ObjectKey, absent: Mapping[str, Any] | None = None
    ) -> Response:
        if is_read():
            return json_response(with_status(self._get(key), self.writes.snapshot.statuses), 200)
        if request.method == "DELETE":
            return await self._delete(key)
        if request.method == "PATCH":
            return await self._patch(key, absent)
        return await self._put(info, key)

    async def _delete(self, key: ObjectKey) -> Response:
        wait = replica_wait()
        options = delete_options(await read_body())
        outcome = await run_write(
            self.writes.delete(
                key,
                dry_run=dry_run_requested() or options.dry_run,
                expected_version=options.resource_version,
                expected_uid=options.uid,
            )
        )
        await self._wait_replicas(outcome, wait)
        return _first_change(outcome, 200)

    async def _patch(self, key: ObjectKey, absent: Mapping[str, Any] | None = None) -> Response:
        """PATCH with a JSON merge patch, a JSON patch (RFC 6902), or, for the core kinds,
        a strategic merge patch (API.md "Kubernetes API compatibility")."""
        kind = content_type()
        if kind == APPLY_PATCH:
            return await self._server_side_apply(key)
        combine: Callable[[Any, Any], Any] | None = None
        if kind == JSON_PATCH:
            combine = _json_patch
        elif kind == STRATEGIC_PATCH:
            if key.kind not in strategic.KINDS:
                raise ApiError(
                    415,
                    f"{key.kind} takes no strategic merge patch (as a custom resource in "
                    f"Kubernetes): send {MERGE_PATCH} or {JSON_PATCH}",
                )
            combine = functools.partial(strategic.strategic_merge, key.kind)
        elif kind != MERGE_PATCH:
            raise ApiError(
                415,
                f"PATCH takes {MERGE_PATCH}, {JSON_PATCH} or (core kinds) {STRATEGIC_PATCH}, "
                f"not {kind or 'no Content-Type'}",
            )
        dry_run = dry_run_requested()
        wait = replica_wait()
        patch = await parse_body(json_body, await read_body())
        if kind == JSON_PATCH:
            if not isinstance(patch, list):
                raise ApiError(400, "a JSON patch must be a JSON array of operations")
        elif not isinstance(patch, dict):
            raise ApiError(400, "a merge patch must be a JSON object")
        outcome = await run_write(
            self.writes.patch(key, patch, dry_run=dry_run, combine=combine, absent=absent)
        )
        await self._wait_replicas(outcome, wait)
        return _first_change(outcome, 200)

    async def _server_side_apply(self, key: ObjectKey) -> Response:
        """`kubectl apply --server-side`: the body is the manager's whole configuration, in
        YAML or JSON; `fieldManager` is required, `force=true` takes fields over."""
        manager = request.args.get("fieldManager", "")
        if not manager:
            raise ApiError(400, "server-side apply needs a fieldManager")
        force = request.args.get("force") in ("true", "1")
        dry_run = dry_run_requested()
        wait = replica_wait()
        configurations = await parse_body(yaml_body, await read_body())
        if len(configurations) != 1:
            raise ApiError(400, "server-side apply takes one object")
        (raw,) = configurations
        if not isinstance(raw, dict):
            raise ApiError(400, "an applied configuration must be an object")
        meta = raw.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object")
        if key.namespace:
            meta.setdefault("namespace", key.namespace)
        if len(manager) > 128:
            raise ApiError(400, "fieldManager is longer than 128 characters")
        existed = key in self.writes.documents
        outcome = await run_write(
            self.writes.server_side_apply(key, raw, manager=manager, force=force, dry_run=dry_run)
        )
        await self._wait_replicas(outcome, wait)
        return _first_change(outcome, 200 if existed else 201)

    async def _put(self, info: KindInfo, key: ObjectKey) -> Response:
        wait = replica_wait()
        (raw,) = await body_documents(allow_many=False)
        if key.namespace:
            namespace_from_query(raw, info, key.namespace)  # a body may leave it to the path
        doc = admit_one(raw, info)
        if key_of(doc) != key:
            raise ApiError(400, f"the body is {key_of(doc)} but the path names {key}")
        meta = raw.get("metadata") if isinstance(raw, dict) else None
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        expected = {key: str(version)} if version not in (None, "") else None
        outcome = await run_write(
            self.writes.apply([doc], expected_versions=expected, dry_run=dry_run_requested())
        )
        await self._wait_replicas(outcome, wait)
        # Decided under the write lock: of two concurrent PUTs of a new object, one creates.
        created = outcome.changes[0].action is Action.CREATED
        return _first_change(outcome, 201 if created else 200)

    def _get(self, key: ObjectKey) -> Document:
        try:
            return self.writes.get(key)
        except NotFound:
            raise ApiError(404, f"{key} not found", kind=key.kind, name=key.name) from None


#: A JSON patch's operations, at most (each may copy a subtree: bounded in number, and the
#: result bounded in size below).
MAX_PATCH_OPERATIONS = 1000


#: The largest a document may grow to while a JSON patch is applied (the body limit's
#: default): `copy` can double a document with each operation.
MAX_PATCHED_BYTES = 4 * 1024 * 1024


def _json_patch(wire: Any, operations: Any) -> Any:
    """RFC 6902, by the `jsonpatch` library; a failed `test` or a bad path is a ValueError
    that names the operation, never the values (which the library's messages repeat)."""
    if len(operations) > MAX_PATCH_OPERATIONS:
        raise ValueError(f"more than {MAX_PATCH_OPERATIONS} operations")
    document = copy.deepcopy(wire)  # then patched in place: one copy, not one per operation
    for index, operation in enumerate(operations):
        op = operation.get("op") if isinstance(operation, dict) else None
        try:
            document = jsonpatch.JsonPatch([operation]).apply(document, in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            raise ValueError(f"operation {index}: the test failed") from None
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError):
            raise ValueError(f"operation {index} ({op!r}) does not apply") from None
        # Only `copy` makes more than the body brought: it alone may double the document.
        if op == "copy" and len(encode_json(document)) > MAX_PATCHED_BYTES:
            raise ValueError(f"operation {index}: the document grows past {MAX_PATCHED_BYTES}")
    return document


def _admitted(raws: list[Any], matched: list[tuple[Any, bytes, Document | None]]) -> list[Document]:
    """The bundle as documents: the ones known (sent again as before) as they are stored,
    the rest admitted (all or nothing)."""
    unknown = [i for i, (_, _, doc) in enumerate(matched) if doc is None]
    fresh = iter(admit_bundle([raws[i] for i in unknown], unknown, len(raws)))
    return [doc if doc is not None else next(fresh) for _, _, doc in matched]


def _first_change(outcome: Outcome, code: int) -> Response:
    """The answer of a write that names one document: it, with its status after the write."""
    return json_response(with_status(outcome.changes[0].document, outcome.snapshot.statuses), code)
