"""The document store in etcd, through its v3 JSON gateway (issue 13; API.md "Store and
replicas"): the same `load` / `commit` as the SQLite store, so that replicas can share one
configuration.

I/O (blocking HTTP, like the SQLite store's calls: the caller runs them on a worker thread).

Key layout, below the prefix (`/tlsgate` by default, written as given):
`{prefix}/documents/{kind}/{namespace}/{name}` holds the document's wire JSON, `namespace`
empty for cluster-scoped kinds. Names and namespaces are DNS labels or subdomains and kinds
are identifiers, so `/` never appears inside a part.

Consistency: a commit is one etcd transaction (`/v3/kv/txn`), puts and deletes together, all
or nothing; its revision is the transaction's (etcd's `header.revision`, which is every
written key's `mod_revision`). A load is one range read at one revision. etcd's own limits
bound a transaction: `--max-txn-ops` operations (128 by default) and `--max-request-bytes`
(1.5 MiB); a commit over either is refused whole (StoreUnavailable naming the limit), and
nothing changes.

Not here yet (issue 13 is in progress): the watch that keeps a replica current, compares on
`mod_revision` for writes from several replicas, leases and `/v1/replicas`, TLS to etcd.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from gateway.api.kinds import ObjectKey
from gateway.store.sqlite import StoreError, StoreUnavailable

#: Seconds one request to one etcd member may take before the next member is tried.
REQUEST_TIMEOUT = 5.0


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


class EtcdStore:
    """`endpoints` are `http://host:port` of etcd members, tried in turn."""

    def __init__(self, endpoints: Sequence[str], prefix: str = "/tlsgate") -> None:
        if not endpoints:
            raise StoreError("etcd: no endpoint given")
        self.endpoints = list(endpoints)
        self.prefix = prefix.rstrip("/")
        self._documents = f"{self.prefix}/documents/"
        self._http = httpx.Client(timeout=REQUEST_TIMEOUT)
        try:
            self.revision = int(
                self._call("/v3/kv/range", {"key": _b64(self._documents), "count_only": True})[
                    "header"
                ]["revision"]
            )
        except StoreUnavailable as exc:
            self._http.close()
            raise StoreError(str(exc)) from None

    def key(self, key: ObjectKey) -> str:
        return f"{self._documents}{key.kind}/{key.namespace}/{key.name}"

    def load(self) -> list[dict[str, Any]]:
        """Every stored document, as wire JSON (in key order), read at one revision."""
        start = self._documents.encode()
        answer = self._call(
            "/v3/kv/range", {"key": _b64(start), "range_end": _b64(prefix_end(start))}
        )
        self.revision = int(answer["header"]["revision"])
        return [json.loads(_unb64(kv["value"])) for kv in answer.get("kvs", [])]

    def commit(
        self,
        puts: Iterable[tuple[ObjectKey, str]],
        deletes: Iterable[ObjectKey] = (),
    ) -> int:
        """Write everything in one etcd transaction; the new revision. A body is the
        document's JSON text (`convert.encode_json` of its wire form)."""
        operations: list[dict[str, Any]] = [
            {"request_put": {"key": _b64(self.key(key)), "value": _b64(body)}} for key, body in puts
        ]
        operations += [{"request_delete_range": {"key": _b64(self.key(key))}} for key in deletes]
        answer = self._call("/v3/kv/txn", {"compare": [], "success": operations})
        if not answer.get("succeeded", False):  # no compares: only a broken etcd says no
            raise StoreUnavailable("etcd did not apply the transaction; nothing was changed")
        self.revision = int(answer["header"]["revision"])
        return self.revision

    def close(self) -> None:
        self._http.close()

    def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first member that answers. A refusal (a limit) is final; a member
        that cannot be reached makes the next one tried."""
        failures = []
        for endpoint in self.endpoints:
            try:
                response = self._http.post(endpoint + path, json=body)
            except httpx.HTTPError as exc:
                failures.append(f"{endpoint}: {exc or type(exc).__name__}")
                continue
            if response.status_code != 200:
                raise StoreUnavailable(
                    f"etcd refused the request ({_etcd_error(response)}); nothing was changed"
                )
            answer: dict[str, Any] = response.json()
            return answer
        raise StoreUnavailable(
            "etcd cannot be reached (" + "; ".join(failures) + "); nothing was changed"
        )


def _etcd_error(response: httpx.Response) -> str:
    """etcd's own message ("etcdserver: too many operations in txn request"), else the code."""
    try:
        message = response.json().get("error") or response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message) if message else f"HTTP {response.status_code}"
