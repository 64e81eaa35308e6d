"""The admin HTTP API (API.md): a Quart-Trio app with thin views over `WritePath`.

HTTP edge. Every view is `async def`: Quart-Trio runs plain `def` views on a worker thread,
which would break the atomic swap (ARCHITECTURE.md). Errors are Kubernetes `Status` bodies.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from admin.errors import ApiError
from gateway.api.admission import Cause
from gateway.api.convert import CONVERTER, Invalid, structure_document, unstructure_document
from gateway.api.kinds import BY_PLURAL, Document, KindInfo, ObjectKey, key_of
from gateway.api.manifests import ManifestError, flatten, load_json, parse_documents
from gateway.metrics import Metrics
from gateway.routing.explain import explain, table_to_wire
from gateway.routing.snapshot import Snapshot
from gateway.store.plan import Action, Conflict
from gateway.store.sqlite import StoreUnavailable
from gateway.store.writes import BadRequest, NotFound, Outcome, WritePath

JSON_TYPES = {"application/json"}
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
MERGE_PATCH = "application/merge-patch+json"
log = logging.getLogger("tlsgate.admin")

OPEN_PATHS = {"/healthz", "/readyz", "/metrics"}


def create_app(
    control: WritePath,
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
        return _json(error.body(), error.code)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        if isinstance(error, RequestEntityTooLarge):
            message = f"the request body is larger than the {body_limit}-byte limit"
        else:
            message = error.description or error.name
        return _json(ApiError(code, message).body(), code)

    @app.errorhandler(Exception)
    async def internal_error(error: Exception) -> Response:
        # Nothing was swapped: a write that fails (a full disk, say) changes nothing in force.
        log.exception("admin request failed: %s %s", request.method, request.path)
        body = ApiError(500, f"internal error: {type(error).__name__}: {error}").body()
        return _json(body, 500)

    @app.get("/healthz")
    async def healthz() -> Response:
        return _json({"status": "ok"}, 200)

    @app.get("/readyz")
    async def readyz() -> Response:
        reason = ready()
        if reason is None:
            return _json({"status": "ready", "generation": control.state.generation}, 200)
        return _json(ApiError(503, reason).body(), 503)

    @app.get("/metrics")
    async def metrics_view() -> Response:
        body = metrics.render() if metrics is not None else b""
        return Response(body, 200, content_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/routingtable")
    async def routing_table() -> Response:
        return _json(table_to_wire(control.state.snapshot), 200)

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
            result = explain(control.state.snapshot, address, int(port_text), sni)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return _json(result, 200)

    @app.post("/v1/apply")
    async def apply_view() -> Response:
        dry_run = _dry_run()
        raws = await _body_documents(allow_many=True)
        documents = _admit_all(raws)
        outcome = await _write(control.apply(documents, dry_run=dry_run))
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                _with_status(c.document, outcome.snapshot) | {"action": c.action.value}
                for c in outcome.changes
            ],
            "metadata": {"resourceVersion": _revision(control)},
        }
        if dry_run:
            body["dryRun"] = True
            body["routingTable"] = table_to_wire(outcome.snapshot)
        return _json(body, 200)

    @app.route("/v1/<plural>", methods=["GET", "POST"])
    async def collection(plural: str) -> Response:
        info = _kind(plural)
        if _reading():
            namespace = request.args.get("namespace")
            items = [
                _with_status(doc, control.state.snapshot)
                for key, doc in sorted(control.state.documents.items())
                if key.kind == info.kind and (namespace is None or key.namespace == namespace)
            ]
            return _json(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": items,
                    "metadata": {"resourceVersion": _revision(control)},
                },
                200,
            )
        (raw,) = await _body_documents(allow_many=False)
        _namespace_from_query(raw, info)
        doc = _admit_one(raw, info)
        outcome = await _write(control.apply([doc], must_not_exist=True, dry_run=_dry_run()))
        return _json(_with_status(outcome.changes[0].document, outcome.snapshot), 201)

    @app.route("/v1/<plural>/<first>", methods=["GET", "PUT", "PATCH", "DELETE"])
    async def cluster_item(plural: str, first: str) -> Response:
        info = _kind(plural)
        if info.namespaced:
            raise ApiError(
                404, f"{info.kind} is namespaced: use /v1/{plural}/{{namespace}}/{{name}}"
            )
        return await _item(info, ObjectKey(info.kind, "", first))

    @app.route("/v1/<plural>/<namespace>/<name>", methods=["GET", "PUT", "PATCH", "DELETE"])
    async def namespaced_item(plural: str, namespace: str, name: str) -> Response:
        info = _kind(plural)
        if not info.namespaced:
            raise ApiError(404, f"{info.kind} is cluster-scoped: use /v1/{plural}/{{name}}")
        return await _item(info, ObjectKey(info.kind, namespace, name))

    async def _item(info: KindInfo, key: ObjectKey) -> Response:
        if _reading():
            return _json(_with_status(_get(key), control.state.snapshot), 200)
        if request.method == "DELETE":
            options = _delete_options(await _read_body())
            _get(key)
            outcome = await _write(
                control.delete(
                    key,
                    dry_run=_dry_run() or options.dry_run,
                    expected_version=options.resource_version,
                    expected_uid=options.uid,
                )
            )
            return _json(_with_status(outcome.changes[0].document, outcome.snapshot), 200)
        if request.method == "PATCH":
            if _content_type() != MERGE_PATCH:
                raise ApiError(415, f"PATCH takes a JSON merge patch (Content-Type: {MERGE_PATCH})")
            dry_run = _dry_run()
            patch = await _parse(_json_body, await _read_body())
            if not isinstance(patch, dict):
                raise ApiError(400, "a merge patch must be a JSON object")
            _get(key)
            outcome = await _write(control.patch(key, patch, dry_run=dry_run))
            return _json(_with_status(outcome.changes[0].document, outcome.snapshot), 200)
        (raw,) = await _body_documents(allow_many=False)
        doc = _admit_one(raw, info)
        if key_of(doc) != key:
            raise ApiError(400, f"the body is {key_of(doc)} but the path names {key}")
        meta = raw.get("metadata") if isinstance(raw, dict) else None
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        expected = {key: str(version)} if version not in (None, "") else None
        outcome = await _write(control.apply([doc], expected_versions=expected, dry_run=_dry_run()))
        # Decided under the write lock: of two concurrent PUTs of a new object, one creates.
        created = outcome.changes[0].action is Action.CREATED
        return _json(
            _with_status(outcome.changes[0].document, outcome.snapshot), 201 if created else 200
        )

    def _get(key: ObjectKey) -> Document:
        try:
            return control.get(key)
        except NotFound:
            raise ApiError(404, f"{key} not found", kind=key.kind, name=key.name) from None

    return app


# --- request helpers ---------------------------------------------------------------------


def _json(body: Any, code: int) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")) + "\n", code, content_type="application/json"
    )


def _kind(plural: str) -> KindInfo:
    info = BY_PLURAL.get(plural)
    if info is None:
        raise ApiError(404, f"unknown resource {plural!r}; known: {', '.join(sorted(BY_PLURAL))}")
    return info


def _namespace_from_query(raw: Any, info: KindInfo) -> None:
    """`POST /v1/{plural}?namespace=NS` creates in NS: the body may leave the namespace out,
    but may not name another (as the Kubernetes API refuses a mismatch)."""
    namespace = request.args.get("namespace")
    if namespace is None or not isinstance(raw, dict):
        return
    if not info.namespaced:
        raise ApiError(400, f"{info.kind} is cluster-scoped: it takes no namespace")
    meta = raw.setdefault("metadata", {})
    if not isinstance(meta, dict):
        return  # admission reports the malformed metadata
    given = meta.setdefault("namespace", namespace)
    if given != namespace:
        raise ApiError(
            400, f"the body's namespace {given!r} differs from the request's {namespace!r}"
        )


def _reading() -> bool:
    """HEAD is a GET without a body (RFC 9110 §9.3.2): it never writes, whatever it carries."""
    return request.method in ("GET", "HEAD")


@attrs.frozen
class DeleteOptions:
    dry_run: bool = False
    resource_version: str | None = None
    uid: str | None = None


def _delete_options(data: bytes) -> DeleteOptions:
    """A DELETE body, if any, is a Kubernetes DeleteOptions: `dryRun: [All]` and
    `preconditions` (resourceVersion, uid) are honoured; propagationPolicy and the grace
    period mean nothing here (nothing has dependents or a termination period)."""
    if not data.strip():
        return DeleteOptions()
    body = _json_body(data)
    if not isinstance(body, dict) or body.get("kind") not in (None, "DeleteOptions"):
        raise ApiError(400, "a DELETE body must be a DeleteOptions object")
    # Strict: a malformed option must never fall back to "delete for real, unguarded".
    dry_run = body.get("dryRun")
    if dry_run is None:
        dry_run = []
    if not isinstance(dry_run, list) or any(v != "All" for v in dry_run):
        raise ApiError(400, "dryRun takes a list whose only value is 'All'")
    preconditions = body.get("preconditions")
    if preconditions is None:
        preconditions = {}
    if not isinstance(preconditions, dict):
        raise ApiError(400, "preconditions must be an object")
    version, uid = preconditions.get("resourceVersion"), preconditions.get("uid")
    for name, value in (("resourceVersion", version), ("uid", uid)):
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"preconditions.{name} must be a string")
    return DeleteOptions(dry_run=bool(dry_run), resource_version=version, uid=uid)


def _dry_run() -> bool:
    values = request.args.getlist("dryRun")
    if values not in ([], ["All"]):
        raise ApiError(400, "dryRun takes only the value 'All', once")
    return bool(values)


def _content_type() -> str:
    return (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()


async def _read_body() -> bytes:
    data: bytes = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    return data


#: Bodies larger than this are parsed on a worker thread, so that the event loop (which
#: relays every proxied connection) keeps running meanwhile.
PARSE_IN_THREAD = 64 * 1024
_PARSERS = trio.CapacityLimiter(2)


def _json_body(data: bytes) -> Any:
    try:
        return load_json(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except ManifestError as exc:
        raise ApiError(400, f"the body is refused: {exc}") from None


def _yaml_body(data: bytes) -> list[Any]:
    try:
        return parse_documents(data.decode("utf-8"))
    except (ManifestError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid YAML: {exc}") from None


async def _parse(parse: Callable[[bytes], Any], data: bytes) -> Any:
    if len(data) <= PARSE_IN_THREAD:
        return parse(data)
    # Parsing is pure (it touches nothing shared), so a thread is safe here; its own limiter
    # keeps it out of the queue of DNS lookups (trio's default limiter).
    return await trio.to_thread.run_sync(parse, data, limiter=_PARSERS)


async def _body_documents(*, allow_many: bool) -> list[Any]:
    content_type = _content_type()
    data = await _read_body()
    if content_type in JSON_TYPES:
        value = await _parse(_json_body, data)
        documents = flatten(value) if allow_many else [value]
    elif content_type in YAML_TYPES:
        documents = await _parse(_yaml_body, data)
    else:
        raise ApiError(
            400,
            f"Content-Type {content_type or '(none)'!r} is not supported: send "
            "application/json or application/yaml",
        )
    if not documents:
        raise ApiError(400, "the body holds no document")
    if not allow_many and len(documents) != 1:
        raise ApiError(
            400,
            f"this endpoint takes one document, the body holds {len(documents)}"
            "; POST several to /v1/apply",
        )
    for document in documents:
        if not isinstance(document, dict):
            raise ApiError(400, "every document must be an object")
    return documents


def _admit_one(raw: Any, info: KindInfo) -> Document:
    if isinstance(raw, dict) and raw.get("kind") not in (None, info.kind):
        raise ApiError(400, f"the body is a {raw.get('kind')}, the path names {info.kind}")
    try:
        return structure_document(raw)
    except Invalid as exc:
        raise ApiError(
            422, exc.message, kind=exc.kind or info.kind, name=exc.name, causes=exc.causes
        ) from None


def _admit_all(raws: list[Any]) -> list[Document]:
    """A bundle is admitted as a whole: every bad document is reported, none is stored."""
    documents, causes, first = [], [], None
    for index, raw in enumerate(raws):
        try:
            documents.append(structure_document(raw))
        except Invalid as exc:
            first = first or exc
            causes += [
                Cause(
                    f"items[{index}].{c.field}" if c.field else f"items[{index}]",
                    c.reason,
                    c.message,
                )
                for c in exc.causes
            ]
    if first is not None:
        bad = len({c.field.split("]")[0] for c in causes})
        raise ApiError(
            422,
            f"{bad} of {len(raws)} documents are invalid; nothing was applied. "
            f"First: {first.message}",
            kind=first.kind or None,
            name=first.name or None,
            causes=causes,
        )
    return documents


async def _write(operation: Any) -> Outcome:
    try:
        outcome: Outcome = await operation
    except Conflict as exc:
        raise ApiError(409, str(exc), reason=exc.reason) from None
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    except BadRequest as exc:
        raise ApiError(400, str(exc)) from None
    except StoreUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    except Invalid as exc:
        raise ApiError(422, exc.message, kind=exc.kind, name=exc.name, causes=exc.causes) from None
    return outcome


def _with_status(doc: Document, snapshot: Snapshot) -> dict[str, Any]:
    wire = unstructure_document(doc)
    status = snapshot.statuses.get(key_of(doc))
    if status is not None:
        wire["status"] = CONVERTER.unstructure(status)
    return wire


def _revision(control: WritePath) -> str:
    return str(control.store.revision if control.store else control.state.generation)
