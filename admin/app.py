"""The admin HTTP API (API.md): a Quart-Trio app with thin views over `WritePath`.

HTTP edge. Every view is `async def`: Quart-Trio runs plain `def` views on a worker thread,
which would break the atomic swap (ARCHITECTURE.md). Errors are Kubernetes `Status` bodies.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from admin.errors import ApiError
from admin.requests import (
    MERGE_PATCH,
    admit_bundle,
    admit_one,
    body_documents,
    content_type,
    delete_options,
    dry_run_requested,
    is_read,
    json_body,
    json_response,
    kind_info,
    namespace_from_query,
    parse_body,
    read_body,
    run_write,
)
from gateway.api.convert import with_status
from gateway.api.kinds import Document, KindInfo, ObjectKey, key_of
from gateway.metrics import Metrics
from gateway.routing.explain import explain, table_to_wire
from gateway.store.plan import Action
from gateway.store.writes import NotFound, WritePath

log = logging.getLogger("tlsgate.admin")

OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}


def create_app(
    writes: WritePath,
    *,
    body_limit: int = 4 * 1024 * 1024,
    ready: Callable[[], str | None] = lambda: None,
    metrics: Metrics | None = None,
) -> QuartTrio:
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = body_limit
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return json_response(error.body(), error.code)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        if isinstance(error, RequestEntityTooLarge):
            message = f"the request body is larger than the {body_limit}-byte limit"
        else:
            message = error.description or error.name
        return json_response(ApiError(code, message).body(), code)

    @app.errorhandler(Exception)
    async def internal_error(error: Exception) -> Response:
        # Nothing was swapped: a write that fails (a full disk, say) changes nothing in force.
        log.exception("admin request failed: %s %s", request.method, request.path)
        body = ApiError(500, f"internal error: {type(error).__name__}: {error}").body()
        return json_response(body, 500)

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"}, 200)

    @app.get("/readyz")
    async def readyz() -> Response:
        reason = ready()
        if reason is None:
            return json_response({"status": "ready", "generation": writes.snapshot.generation}, 200)
        return json_response(ApiError(503, reason).body(), 503)

    @app.get("/metrics")
    async def metrics_view() -> Response:
        body = metrics.render() if metrics is not None else b""
        return Response(body, 200, content_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/routingtable")
    async def routing_table() -> Response:
        return json_response(table_to_wire(writes.snapshot), 200)

    @app.get("/v1/explain")
    async def explain_view() -> Response:
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
            result = explain(writes.snapshot, address, int(port_text), sni)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return json_response(result, 200)

    @app.post("/v1/apply")
    async def apply_view() -> Response:
        dry_run = dry_run_requested()
        raws = await body_documents(allow_many=True)
        documents = admit_bundle(raws)
        outcome = await run_write(writes.apply(documents, dry_run=dry_run))
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                with_status(c.document, outcome.snapshot.statuses) | {"action": c.action.value}
                for c in outcome.changes
            ],
            "metadata": {"resourceVersion": writes.revision},
        }
        if dry_run:
            body["dryRun"] = True
            body["routingTable"] = table_to_wire(outcome.snapshot)
        return json_response(body, 200)

    @app.route("/v1/<plural>", methods=["GET", "POST"])
    async def collection(plural: str) -> Response:
        info = kind_info(plural)
        if is_read():
            namespace = request.args.get("namespace")
            snapshot = writes.snapshot
            items = [
                with_status(doc, snapshot.statuses) for doc in writes.list(info.kind, namespace)
            ]
            return json_response(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": items,
                    "metadata": {"resourceVersion": writes.revision},
                },
                200,
            )
        (raw,) = await body_documents(allow_many=False)
        namespace_from_query(raw, info)
        doc = admit_one(raw, info)
        outcome = await run_write(
            writes.apply([doc], must_not_exist=True, dry_run=dry_run_requested())
        )
        return json_response(
            with_status(outcome.changes[0].document, outcome.snapshot.statuses), 201
        )

    @app.route("/v1/<plural>/<first>", methods=["GET", "PUT", "PATCH", "DELETE"])
    async def cluster_item(plural: str, first: str) -> Response:
        info = kind_info(plural)
        if info.namespaced:
            raise ApiError(
                404, f"{info.kind} is namespaced: use /v1/{plural}/{{namespace}}/{{name}}"
            )
        return await _item(info, ObjectKey(info.kind, "", first))

    @app.route("/v1/<plural>/<namespace>/<name>", methods=["GET", "PUT", "PATCH", "DELETE"])
    async def namespaced_item(plural: str, namespace: str, name: str) -> Response:
        info = kind_info(plural)
        if not info.namespaced:
            raise ApiError(404, f"{info.kind} is cluster-scoped: use /v1/{plural}/{{name}}")
        return await _item(info, ObjectKey(info.kind, namespace, name))

    async def _item(info: KindInfo, key: ObjectKey) -> Response:
        if is_read():
            return json_response(with_status(_get(key), writes.snapshot.statuses), 200)
        if request.method == "DELETE":
            options = delete_options(await read_body())
            _get(key)
            outcome = await run_write(
                writes.delete(
                    key,
                    dry_run=dry_run_requested() or options.dry_run,
                    expected_version=options.resource_version,
                    expected_uid=options.uid,
                )
            )
            return json_response(
                with_status(outcome.changes[0].document, outcome.snapshot.statuses), 200
            )
        if request.method == "PATCH":
            if content_type() != MERGE_PATCH:
                raise ApiError(415, f"PATCH takes a JSON merge patch (Content-Type: {MERGE_PATCH})")
            dry_run = dry_run_requested()
            patch = await parse_body(json_body, await read_body())
            if not isinstance(patch, dict):
                raise ApiError(400, "a merge patch must be a JSON object")
            _get(key)
            outcome = await run_write(writes.patch(key, patch, dry_run=dry_run))
            return json_response(
                with_status(outcome.changes[0].document, outcome.snapshot.statuses), 200
            )
        (raw,) = await body_documents(allow_many=False)
        doc = admit_one(raw, info)
        if key_of(doc) != key:
            raise ApiError(400, f"the body is {key_of(doc)} but the path names {key}")
        meta = raw.get("metadata") if isinstance(raw, dict) else None
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        expected = {key: str(version)} if version not in (None, "") else None
        outcome = await run_write(
            writes.apply([doc], expected_versions=expected, dry_run=dry_run_requested())
        )
        # Decided under the write lock: of two concurrent PUTs of a new object, one creates.
        created = outcome.changes[0].action is Action.CREATED
        return json_response(
            with_status(outcome.changes[0].document, outcome.snapshot.statuses),
            201 if created else 200,
        )

    def _get(key: ObjectKey) -> Document:
        try:
            return writes.get(key)
        except NotFound:
            raise ApiError(404, f"{key} not found", kind=key.kind, name=key.name) from None

    return app
