"""The document store in etcd, through its v3 JSON gateway (issue 13; API.md "Store and
replicas"): the same `load` / `commit` as the SQLite store, so that replicas can share one
configuration, plus the lease calls replicas register with.

I/O (blocking HTTP, like the SQLite store's calls: the caller runs them on a worker thread).

Key layout, below the prefix (`/tlsgate` by default, written as given):
- `{prefix}/documents/{kind}/{namespace}/{name}` holds the document's wire JSON, `namespace`
  empty for cluster-scoped kinds. Names and namespaces are DNS labels or subdomains and kinds
  are identifiers, so `/` never appears inside a part.
- `{prefix}/documents/.written` is put by every transaction that changes a document, with an
  ID of the write: its `mod_revision` is the revision of tlsgate's last write, deletions
  included (which leave no key of their own to say when they happened). The view compare
  below, the follower's watchdog, and a write retried on another member read it.
- `{prefix}/replicas/{name}` holds a replica's registration (`gateway/store/replicas.py`),
  under that replica's lease.

Consistency: a commit is one etcd transaction (`/v3/kv/txn`), puts and deletes together, all
or nothing; its revision is the transaction's (etcd's `header.revision`, which is every
written key's `mod_revision`, and so the written documents' `resourceVersion`). The
transaction compares every key the write names with what the writer planned against (its
`mod_revision`, or "absent" for a create): a replica whose view is behind gets Stale with the
keys' current revisions, and plans again once it has caught up, so a conflict (409) holds
across replicas. A write that names more keys than a transaction may compare (`MAX_COMPARES`)
compares the writer's whole view instead, in one compare of one key: tlsgate wrote nothing
after the revision the view is at (the write marker's `mod_revision`). A load is one range
read at one revision; each document's resourceVersion is its key's `mod_revision`.

A transaction that a member took but did not answer (it timed out, the member stopped) is
sent to the next member, and may have been committed already: its compares then fail on its
own changes. The write marker's ID says so, and the write is answered as committed.

etcd's own limits bound a transaction: `--max-txn-ops` operations (128 by default: a write
may change one object fewer, the marker being one) and `--max-request-bytes` (1.5 MiB); a
write that changes more objects than that, or is larger, is refused whole (StoreLimit naming
the limit), and nothing changes. Objects a write names unchanged cost no operation beyond the
limit: they are compared with the view.

Every answer is checked as it is read: one etcd (or a proxy in front of it) answers with
something other than what its API says is StoreUnavailable, never an exception that ends
the replica.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import ssl
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import attrs
import httpx

from gateway.api.kinds import BY_KIND, ObjectKey
from gateway.store.sqlite import StoreError, StoreUnavailable

log = logging.getLogger("tlsgate.store")

#: Seconds one request to one etcd member may take before the next member is tried.
REQUEST_TIMEOUT = 3.0
#: Keys one transaction compares one by one, at most (etcd's --max-txn-ops default): a
#: write that names more compares the writer's view as a whole.
MAX_COMPARES = 128
#: Below the documents prefix, the key every write puts (not a document: one part).
WRITE_MARKER = ".written"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _answer_checked(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """An answer without the fields etcd's API promises (a proxy's page, another server on
    the port, a truncated body) is the store being unavailable, not a crash."""

    @functools.wraps(method)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreUnavailable(
                f"etcd answered something tlsgate cannot read ({type(exc).__name__}: {exc}); "
                "nothing was changed"
            ) from None

    return checked


class StoreLimit(StoreUnavailable):
    """etcd refuses the write as too large (operations or bytes): it never will take it."""


class Stale(Exception):
    """The transaction's compares failed: a key the write names changed since the writer's
    view. `current` is each compared key's mod_revision in etcd now (None: absent); when
    the whole view was compared, `revision` is the newest document revision instead."""

    def __init__(self, current: Mapping[ObjectKey, int | None], revision: int = 0) -> None:
        super().__init__(f"{len(current) or 'some'} keys changed under the write")
        self.current = dict(current)
        self.revision = revision


@attrs.frozen
class EtcdTLS:
    """TLS to etcd (`etcds://`): the CA that signed its certificates, and a client
    certificate if etcd asks for one (`--client-cert-auth`)."""

    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cacert)
        if self.cert:
            context.load_cert_chain(self.cert, self.key)
        return context


def _b64(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


def prefix_end(prefix: bytes) -> bytes:
    """The key just past every key that starts with `prefix` (etcd's `range_end` for a
    prefix: the last byte below 0xff, plus one)."""
    data = bytearray(prefix)
    while data:
        if data[-1] < 0xFF:
            data[-1] += 1
            return bytes(data)
        data.pop()
    return b"\0"  # every key


def stamped(value: bytes, mod_revision: int) -> dict[str, Any]:
    """A stored document's wire JSON with its resourceVersion: its key's mod_revision (the
    text stored may carry the writer's guess, made before etcd numbered the write)."""
    raw: dict[str, Any] = json.loads(value)
    metadata = raw.setdefault("metadata", {})
    if isinstance(metadata, dict):
        metadata["resourceVersion"] = str(mod_revision)
    return raw


def key_in(raw: object) -> ObjectKey | None:
    """The key of the object `raw` (wire JSON) says it is, or None if it names none."""
    if not isinstance(raw, dict) or not isinstance(raw.get("metadata"), dict):
        return None
    metadata, info = raw["metadata"], BY_KIND.get(str(raw.get("kind")))
    if info is None:
        return None
    # The namespace the document gets once defaulted (convert.py): "default" when a
    # namespaced kind names none, none for a cluster-scoped kind.
    namespace = (metadata.get("namespace") or "default") if info.namespaced else ""
    name = metadata.get("name")
    if not isinstance(name, str) or not isinstance(namespace, str):
        return None
    return ObjectKey(info.kind, namespace, name)


def holds(key: ObjectKey, raw: object) -> bool:
    """Is `raw` (wire JSON) the object its key names? A value written into etcd by hand
    under another object's key would otherwise be in force under two names."""
    return key_in(raw) == key


class EtcdStore:
    """`endpoints` are `http(s)://host:port` of etcd members, tried in turn."""

    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str = "/tlsgate",
        *,
        tls: EtcdTLS | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        if not endpoints:
            raise StoreError("etcd: no endpoint given")
        self.endpoints = list(endpoints)
        self.prefix = prefix.rstrip("/")
        self.tls = tls
        self.documents_prefix = f"{self.prefix}/documents/"
        self.marker = self.documents_prefix + WRITE_MARKER
        #: The keys of the last load that hold no document tlsgate can read (not JSON,
        #: another object than the key names), with their mod_revision: present in etcd,
        #: not in force, and replaced by a write of their object.
        self.unreadable: dict[ObjectKey, int] = {}
        self.replicas_prefix = f"{self.prefix}/replicas/"
        try:
            verify: ssl.SSLContext | bool = tls.context() if tls is not None else True
        except (OSError, ssl.SSLError) as exc:
            raise StoreError(f"etcd TLS: {exc}") from None
        self._http = httpx.Client(timeout=timeout, verify=verify)
        try:
            self.revision = self.current_revision()
        except StoreUnavailable as exc:
            self._http.close()
            raise StoreError(str(exc)) from None

    def __repr__(self) -> str:
        return f"etcd {','.join(self.endpoints)} {self.prefix}"

    def key(self, key: ObjectKey) -> str:
        return f"{self.documents_prefix}{key.kind}/{key.namespace}/{key.name}"

    def object_key(self, key: str) -> ObjectKey | None:
        """The document a key under the prefix holds, or None for any other key."""
        if not key.startswith(self.documents_prefix):
            return None
        parts = key.removeprefix(self.documents_prefix).split("/")
        if len(parts) != 3 or not parts[0] or not parts[2]:
            return None
        return ObjectKey(*parts)

    @_answer_checked
    def current_revision(self) -> int:
        """etcd's revision now (a linearizable read)."""
        answer = self._call(
            "/v3/kv/range", {"key": _b64(self.documents_prefix), "count_only": True}
        )
        return int(answer["header"]["revision"])

    @_answer_checked
    def latest_revision(self) -> int:
        """The revision of tlsgate's last write (the write marker's; 0 before any): what a
        replica's watch must have delivered by now (`follow.py`'s watchdog). One key read,
        whatever the number of documents."""
        return self._marker()[0]

    def _marker(self) -> tuple[int, str]:
        """The write marker's mod_revision and write ID (0 and "" before any write)."""
        answer = self._call("/v3/kv/range", {"key": _b64(self.marker)})
        kvs = answer.get("kvs", [])
        if not kvs:
            return 0, ""
        try:
            written = json.loads(_unb64(kvs[0].get("value", "")))
        except ValueError:
            written = {}
        identity = written.get("id") if isinstance(written, dict) else None
        return int(kvs[0]["mod_revision"]), str(identity or "")

    @_answer_checked
    def revision_of(self, key: ObjectKey) -> int | None:
        """The key's mod_revision in etcd now, or None if it does not exist."""
        answer = self._call("/v3/kv/range", {"key": _b64(self.key(key)), "keys_only": True})
        kvs = answer.get("kvs", [])
        return int(kvs[0]["mod_revision"]) if kvs else None

    def load(self) -> list[dict[str, Any]]:
        """Every stored document, as wire JSON (in key order), read at one revision, which
        becomes `revision`."""
        return [raw for _, raw in self.load_keyed()]

    @_answer_checked
    def load_keyed(self) -> list[tuple[ObjectKey, dict[str, Any]]]:
        start = self.documents_prefix.encode()
        answer = self._call(
            "/v3/kv/range", {"key": _b64(start), "range_end": _b64(prefix_end(start))}
        )
        revision = int(answer["header"]["revision"])
        found, unreadable = [], {}
        for kv in answer.get("kvs", []):
            name = _unb64(kv["key"]).decode(errors="replace")
            key = self.object_key(name)
            if key is None:
                continue
            try:
                raw = stamped(_unb64(kv.get("value", "")), int(kv["mod_revision"]))
            except (ValueError, AttributeError) as exc:
                log.error("ignoring %s: not a document tlsgate can read (%s)", name, exc)
                unreadable[key] = int(kv["mod_revision"])
                continue
            if not holds(key, raw):
                log.error("ignoring %s: it holds another object than its key names", name)
                unreadable[key] = int(kv["mod_revision"])
                continue
            found.append((key, raw))
        self.revision, self.unreadable = revision, unreadable
        return found

    @_answer_checked
    def commit(
        self,
        puts: Iterable[tuple[ObjectKey, str]],
        deletes: Iterable[ObjectKey] = (),
        expect: Mapping[ObjectKey, str | None] | None = None,
        view: int | None = None,
    ) -> int:
        """Write everything in one etcd transaction; the new revision. A body is the
        document's JSON text (`convert.encode_json` of its wire form). `expect` is what
        each key must be at for the write to happen: a resourceVersion (its mod_revision)
        or None for absent; else Stale, and nothing changed. `view` is the revision the
        writer's documents are at: with more keys than `MAX_COMPARES` to compare, the
        transaction compares that nothing changed after it instead.

        A write that changes nothing (every key named is as expected) returns the newest
        revision among them: what a replica must have applied to hold all of them."""
        written = list(puts)
        deleted = list(deletes)
        operations: list[dict[str, Any]] = [
            {"request_put": {"key": _b64(self.key(key)), "value": _b64(body)}}
            for key, body in written
        ]
        operations += [{"request_delete_range": {"key": _b64(self.key(key))}} for key in deleted]
        identity = uuid.uuid4().hex
        if operations:
            last = deleted[-1] if deleted else written[-1][0]
            marker = json.dumps({"id": identity, "last": self.key(last)})
            operations.append({"request_put": {"key": _b64(self.marker), "value": _b64(marker)}})
        compared = list((expect or {}).items())
        whole_view = view is not None and len(compared) > MAX_COMPARES
        try:
            answer = self._txn(operations, compared, None if not whole_view else view)
        except StoreLimit:
            # An etcd whose --max-txn-ops is below MAX_COMPARES: the compares were over it,
            # not the changes; the view as a whole is one compare.
            if whole_view or view is None or len(compared) <= len(operations):
                raise
            whole_view = True
            answer = self._txn(operations, compared, view)
        if not answer.get("succeeded", False) and operations:
            # Sent again to another member after one took it without answering? Then the
            # compares failed on this very write: the marker holds its ID.
            revision, last_identity = self._marker()
            if last_identity == identity:
                self.revision = revision
                return revision
        if not answer.get("succeeded", False):
            kvs = [
                kv
                for response in answer.get("responses", [])
                for kv in response.get("response_range", {}).get("kvs", [])
            ]
            if whole_view:
                raise Stale({}, max((int(kv["mod_revision"]) for kv in kvs), default=0))
            current: dict[ObjectKey, int | None] = {key: None for key, _ in compared}
            for kv in kvs:
                found = self.object_key(_unb64(kv["key"]).decode())
                if found is not None:
                    current[found] = int(kv["mod_revision"])
            raise Stale(current)
        if not operations:
            return max((int(version) for _, version in compared if version), default=0)
        self.revision = int(answer["header"]["revision"])
        return self.revision

    def _txn(
        self,
        operations: list[dict[str, Any]],
        compared: list[tuple[ObjectKey, str | None]],
        view: int | None,
    ) -> dict[str, Any]:
        """One transaction: `operations` if every key is as compared, or, given `view`, if
        nothing under the documents prefix changed after it."""
        if view is not None:
            # One key, whatever the number of documents: a range compare would make every
            # member read every document (values included) on its apply path.
            marker = {"key": _b64(self.marker)}
            compares = [{**marker, "target": "MOD", "result": "LESS", "mod_revision": view + 1}]
            reads = [{"request_range": {**marker, "keys_only": True}}]
        else:
            compares = [_compare(self.key(key), version) for key, version in compared]
            # When a compare fails, the same transaction reads the keys: the writer learns
            # what it must catch up to without a second request.
            reads = [{"request_range": {"key": _b64(self.key(key))}} for key, _ in compared]
        return self._call(
            "/v3/kv/txn", {"compare": compares, "success": operations, "failure": reads}
        )

    # --- leases and registrations (gateway/store/replicas.py) -----------------------------------

    @_answer_checked
    def grant(self, ttl: int) -> int:
        """A new lease of `ttl` seconds; its ID."""
        return int(self._call("/v3/lease/grant", {"TTL": ttl})["ID"])

    @_answer_checked
    def keep_alive(self, lease: int) -> bool:
        """Renew the lease; False once it has expired (etcd answers without a TTL)."""
        answer = self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0)) > 0

    def revoke(self, lease: int) -> None:
        self._call("/v3/lease/revoke", {"ID": str(lease)})

    def put_leased(self, key: str, value: str, lease: int) -> None:
        self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": str(lease)})

    @_answer_checked
    def range_prefix(self, prefix: str) -> dict[str, bytes]:
        start = prefix.encode()
        answer = self._call(
            "/v3/kv/range", {"key": _b64(start), "range_end": _b64(prefix_end(start))}
        )
        return {
            _unb64(kv["key"]).decode(): _unb64(kv.get("value", "")) for kv in answer.get("kvs", [])
        }

    def close(self) -> None:
        self._http.close()

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first member that answers. A refusal (a limit) is final; a member
        that cannot be reached makes the next one tried."""
        failures = []
        members = self.endpoints
        for index, endpoint in enumerate(members):
            try:
                response = self._http.post(endpoint + path, json=body)
            except httpx.HTTPError as exc:
                failures.append(f"{endpoint}: {exc or type(exc).__name__}")
                continue
            if response.status_code != 200:
                message = _etcd_error(response)
                if "too many operations" in message or "too large" in message:
                    raise StoreLimit(
                        f"etcd refuses the write as too large ({message}): a write may change "
                        "one object fewer than etcd's --max-txn-ops (127 by default) in at "
                        "most its --max-request-bytes (1.5 MiB by default); nothing was changed"
                    )
                if _unavailable(message):
                    failures.append(f"{endpoint}: {message}")
                    continue
                raise StoreUnavailable(f"etcd refused the request ({message}); nothing was changed")
            answer = response.json()
            if not isinstance(answer, dict):
                raise ValueError(f"a JSON {type(answer).__name__}, not an object")
            if index:
                # The members that failed go last: a member that accepts but never answers
                # (frozen) would cost every later request its timeout. One assignment, so a
                # call on another thread sees the old order or the new one.
                self.endpoints = [*members[index:], *members[:index]]
            return answer
        raise StoreUnavailable(
            "etcd cannot be reached (" + "; ".join(failures) + "); nothing was changed"
        )


def _compare(key: str, version: str | None) -> dict[str, Any]:
    if version is None:
        # Absent: a key that does not exist has version 0 (etcd's Compare, "version").
        return {"key": _b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"}
    if not version.isdigit():
        # Every document this replica holds was numbered by etcd: anything else is a bug,
        # and comparing it as "absent" would overwrite what etcd holds.
        raise StoreError(f"{key}: resourceVersion {version!r} is not an etcd revision")
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": version}


def _unavailable(message: str) -> bool:
    """A member that answers but cannot serve (no leader, stopping): try the next one."""
    return any(
        text in message
        for text in ("no leader", "leader changed", "timed out", "server stopped", "not capable")
    )


def _etcd_error(response: httpx.Response) -> str:
    """etcd's own message ("etcdserver: too many operations in txn request"), else the code."""
    try:
        message = response.json().get("error") or response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else f"HTTP {response.status_code}"
