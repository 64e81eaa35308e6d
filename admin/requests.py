"""What the admin views share: reading and parsing request bodies, the query options of
API.md (dryRun, namespace, DeleteOptions), admitting documents, mapping write errors to
Status codes, and JSON responses.

HTTP edge. Bodies over 64 KiB are parsed on a worker thread (parsing is pure), so the event
loop that relays every proxied connection keeps running meanwhile.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import trio
from quart import Response, has_request_context, request
from quart_trio.wrappers.response import TrioResponse

from admin.errors import ApiError
from admin.render import dumps
from gateway.api.admission import Cause
from gateway.api.bundle import admit_all
from gateway.api.convert import Invalid, structure_document
from gateway.api.kinds import BY_PLURAL, Document, KindInfo
from gateway.api.manifests import ManifestError, flatten, load_json, parse_documents
from gateway.store.etcd import StoreLimit
from gateway.store.plan import Action, Conflict
from gateway.store.sqlite import StoreUnavailable
from gateway.store.writes import ApplyConflict, BadRequest, NotFound, Outcome

JSON_TYPES = {"application/json"}
YAML_TYPES = {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

T = TypeVar("T")


def text_response(text: str | bytes | list[bytes], code: int) -> Response:
    """A response whose JSON text is made already: as bytes, or for a large one as chunks
    (`render.list_text`), sent one after another and never joined: making one string of ten
    megabytes holds the GIL, and so the event loop, for tens of milliseconds."""
    if not isinstance(text, list):
        return Response(text, code, content_type="application/json")
    # Quart-Trio's response class: it iterates a body of chunks on the trio loop (Quart's
    # own would use asyncio's executor).
    response = TrioResponse(text, code, content_type="application/json")
    response.content_length = sum(len(chunk) for chunk in text)
    return response


def json_response(body: Any, code: int) -> Response:
    return Response(dumps(body) + "\n", code, content_type="application/json")


def kind_info(plural: str) -> KindInfo:
    info = BY_PLURAL.get(plural)
    if info is None:
        raise ApiError(404, f"unknown resource {plural!r}; known: {', '.join(sorted(BY_PLURAL))}")
    return info


def namespace_from_query(raw: Any, info: KindInfo, namespace: str | None = None) -> None:
    """`POST /v1/{plural}?namespace=NS` creates in NS: the body may leave the namespace out,
    but may not name another (as the Kubernetes API refuses a mismatch). `namespace`: the
    one a Kubernetes path names, instead of the query's."""
    if namespace is None:
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


def is_read() -> bool:
    """HEAD is a GET without a body (RFC 9110 §9.3.2): it never writes, whatever it carries."""
    return request.method in ("GET", "HEAD")


@attrs.frozen
class DeleteOptions:
    dry_run: bool = False
    resource_version: str | None = None
    uid: str | None = None


def delete_options(data: bytes) -> DeleteOptions:
    """A DELETE body, if any, is a Kubernetes DeleteOptions: `dryRun: [All]` and
    `preconditions` (resourceVersion, uid) are honoured; propagationPolicy and the grace
    period mean nothing here (nothing has dependents or a termination period)."""
    if not data.strip():
        return DeleteOptions()
    body = json_body(data)
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


def dry_run_requested() -> bool:
    values = request.args.getlist("dryRun")
    if values not in ([], ["All"]):
        raise ApiError(400, "dryRun takes only the value 'All', once")
    return bool(values)


#: `?wait=replicas` waits this long unless `timeoutSeconds` says otherwise (API.md).
WAIT_TIMEOUT = 10.0
#: The longest `timeoutSeconds` taken: an admin connection is not held open for hours.
MAX_WAIT_TIMEOUT = 300.0


def replica_wait() -> float | None:
    """`?wait=replicas[&timeoutSeconds=N]` on a write: how long to wait for every live
    replica to apply it, or None for no wait. Checked before the write is made."""
    waits = request.args.getlist("wait")
    if not waits:
        return None
    if waits != ["replicas"]:
        raise ApiError(400, "wait takes only the value 'replicas', once")
    text = request.args.get("timeoutSeconds", "")
    if not text:
        return WAIT_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= MAX_WAIT_TIMEOUT:
        raise ApiError(
            400,
            "timeoutSeconds must be a number of seconds, above 0 and at most "
            f"{MAX_WAIT_TIMEOUT:.0f}",
        )
    return seconds


def content_type() -> str:
    return (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()


async def read_body() -> bytes:
    data: bytes = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    return data


#: Bodies larger than this are parsed on a worker thread, so that the event loop (which
#: relays every proxied connection) keeps running meanwhile.
PARSE_IN_THREAD = 64 * 1024
_PARSERS = trio.CapacityLimiter(2)


def json_body(data: bytes) -> Any:
    try:
        return load_json(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except ManifestError as exc:
        raise ApiError(400, f"the body is refused: {exc}") from None


def _json_documents(data: bytes) -> list[Any]:
    return flatten(json_body(data))


def _json_document(data: bytes) -> list[Any]:
    return [json_body(data)]


def yaml_body(data: bytes) -> list[Any]:
    try:
        return parse_documents(data.decode("utf-8"))
    except (ManifestError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not valid YAML: {exc}") from None


#: Work over more documents than this (admission, planning, rendering a response) runs on a
#: worker thread too: 30,000 documents take most of a second.
MANY_DOCUMENTS = 64


async def off_loop(many: bool, work: Callable[[], T]) -> T:
    """`work()`, on a worker thread when `many` (it must be pure: it touches nothing shared
    but frozen values and maps that are replaced, never changed in place)."""
    if not many:
        return work()
    return await trio.to_thread.run_sync(work, limiter=_PARSERS)


async def parse_body(parse: Callable[[bytes], Any], data: bytes) -> Any:
    if len(data) <= PARSE_IN_THREAD:
        return parse(data)
    # Parsing is pure (it touches nothing shared), so a thread is safe here; its own limiter
    # keeps it out of the queue of DNS lookups (trio's default limiter).
    return await trio.to_thread.run_sync(parse, data, limiter=_PARSERS)


async def body_documents(*, allow_many: bool) -> list[Any]:
    return await body_of(await read_body(), allow_many=allow_many)


#: A body larger than this is parsed with the collector paused (`collector.bulk`): a bundle of
#: 10,000 routes parses into a million objects, and collections of them as they are made hold
#: the GIL (and so the event loop) for tens of milliseconds at a time.
BULK_BODY = 256 << 10


async def body_of(data: bytes, *, allow_many: bool) -> list[Any]:
    """The documents of a request body already read (JSON or YAML, as its Content-Type says)."""
    given = content_type()
    if given in JSON_TYPES:
        parse = _json_documents if allow_many else _json_document
        documents: list[Any] = await parse_body(parse, data)
    elif given in YAML_TYPES:
        documents = await parse_body(yaml_body, data)
    else:
        raise ApiError(
            400,
            f"Content-Type {given or '(none)'!r} is not supported: send "
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


def admit_one(raw: Any, info: KindInfo) -> Document:
    if isinstance(raw, dict) and raw.get("kind") not in (None, info.kind):
        raise ApiError(400, f"the body is a {raw.get('kind')}, the path names {info.kind}")
    try:
        return structure_document(raw)
    except Invalid as exc:
        raise ApiError(
            422, exc.message, kind=exc.kind or info.kind, name=exc.name, causes=exc.causes
        ) from None


def admit_bundle(
    raws: list[Any], positions: list[int] | None = None, total: int | None = None
) -> list[Document]:
    """A bundle is admitted as a whole: every bad document is reported, none is stored.
    `positions`: where each of `raws` stands in the request of `total` documents (when some
    were not admitted again, `admin/known.py`), for the `items[i]` of the causes."""
    documents, rejected = admit_all(raws)
    if rejected:
        where = positions or list(range(len(raws)))
        causes = [
            Cause(
                f"items[{where[index]}].{c.field}" if c.field else f"items[{where[index]}]",
                c.reason,
                c.message,
            )
            for index, error in rejected
            for c in error.causes
        ]
        first = rejected[0][1]
        raise ApiError(
            422,
            f"{len(rejected)} of {total or len(raws)} documents are invalid; nothing was applied. "
            f"First: {first.message}",
            kind=first.kind or None,
            name=first.name or None,
            causes=causes,
        )
    return documents


#: One line per document a write changed: who changed what (docs/configuration.md "Logs").
audit_log = logging.getLogger("tlsgate.audit")


def audit(outcome: Outcome, *, credential: str = "none") -> None:
    """The audit lines of a committed write (`WritePath.on_commit`): one per document
    created, configured or deleted (nothing for what stayed unchanged), with the request's
    method, path, client and user agent, what it had to show (`credential`), and the
    document's generation and revision. A write outside a request (the bootstrap at start)
    says `source: bootstrap`."""
    if outcome.revision is None or not audit_log.isEnabledFor(logging.INFO):
        return
    asked: dict[str, object] = {"source": "bootstrap"}
    if has_request_context():
        agent = request.headers.get("User-Agent", "")
        asked = {
            "method": request.method,
            "path": request.path[:256],
            "client": request.remote_addr or "",
            "credential": credential,
            "agent": agent[:128],
        }
        if manager := request.args.get("fieldManager"):
            asked["field_manager"] = manager[:128]
    for change in outcome.changes:
        if change.action is Action.UNCHANGED:
            continue
        meta = change.document.metadata
        audit_log.info(
            "admin write",
            extra={
                "fields": {
                    "action": change.action.value,
                    "kind": change.key.kind,
                    "namespace": change.key.namespace,
                    "name": change.key.name,
                    "generation": meta.generation,
                    "resource_version": str(outcome.revision),
                    **asked,
                }
            },
        )


async def run_write(operation: Any) -> Outcome:
    try:
        outcome: Outcome = await operation
    except Conflict as exc:
        raise ApiError(409, str(exc), reason=exc.reason) from None
    except ApplyConflict as exc:
        causes = [
            Cause(c.field, "FieldManagerConflict", f'conflict with "{c.manager}"')
            for c in exc.conflicts
        ]
        raise ApiError(409, str(exc), reason="Conflict", causes=causes) from None
    except NotFound as exc:
        raise ApiError(404, str(exc), kind=exc.key.kind, name=exc.key.name) from None
    except BadRequest as exc:
        raise ApiError(400, str(exc)) from None
    except StoreLimit as exc:
        raise ApiError(413, str(exc)) from None
    except StoreUnavailable as exc:
        raise ApiError(503, str(exc)) from None
    except Invalid as exc:
        raise ApiError(422, exc.message, kind=exc.kind, name=exc.name, causes=exc.causes) from None
    return outcome
