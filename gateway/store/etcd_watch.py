"""Watching the etcd store's documents: every change from a revision on, in order (issue 13;
API.md "Store and replicas").

I/O (Trio and h11 on etcd's streaming `/v3/watch`, a connection of its own).

A replica reads the documents at revision R (`EtcdStore.load`) and watches from R + 1, so no
write between the read and the watch is missed (APISIX lost updates when its watch started
after a write's revision, apache/apisix#9951). `watch` yields every response's events with
their revisions, and nothing is skipped: if etcd compacted the history the caller asked
for, it raises Compacted and the caller reads everything again; if the stream breaks (etcd
unreachable, a member restarting), it raises StoreUnavailable, and the caller watches again
from the revision after the last one it applied, never from "now" (the failure of
apache/apisix#12514).
"""

from __future__ import annotations

import base64
import contextlib
import json
import ssl
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

import attrs
import h11
import trio

from gateway.store.etcd import prefix_end
from gateway.store.sqlite import StoreUnavailable


@attrs.frozen
class Change:
    """One key's new value (`value` None: deleted) at `revision` (its mod_revision)."""

    key: str
    value: bytes | None
    revision: int


@attrs.frozen
class Batch:
    """The changes of one watch response, in revision order, and etcd's revision when it
    sent them (a response without changes is progress: nothing below it is left to come)."""

    revision: int
    changes: tuple[Change, ...]
    #: The watch's first response: it is open (its revision is etcd's now, not progress).
    created: bool = False


class Compacted(Exception):
    """The history asked for is gone (etcd compacted it up to `revision`): read again."""

    def __init__(self, revision: int) -> None:
        super().__init__(f"etcd compacted its history up to revision {revision}")
        self.revision = revision


async def watch(
    endpoints: Sequence[str],
    prefix: str,
    start_revision: int,
    *,
    tls: ssl.SSLContext | None = None,
) -> AsyncGenerator[Batch, None]:
    """Every change under `prefix` from `start_revision` on, one Batch per etcd response,
    until cancelled. Tries the endpoints in turn to open the stream; raises Compacted, or
    StoreUnavailable once the stream cannot be opened or breaks. Use it inside
    `contextlib.aclosing`, so that leaving early closes the stream at once."""
    start = prefix.encode()
    request = {
        "create_request": {
            "key": base64.b64encode(start).decode(),
            "range_end": base64.b64encode(prefix_end(start)).decode(),
            "start_revision": start_revision,
            "progress_notify": True,
        }
    }
    failures = []
    for endpoint in endpoints:
        try:
            # A member that accepts but never answers (frozen, overloaded) must not hold the
            # watch: the next one is tried.
            with trio.fail_after(OPEN_TIMEOUT):
                stream = await _post(endpoint, "/v3/watch", json.dumps(request).encode(), tls)
        except (
            OSError,
            h11.ProtocolError,
            _Refused,
            trio.BrokenResourceError,
            trio.TooSlowError,
        ) as exc:
            failures.append(f"{endpoint}: {exc or type(exc).__name__}")
            continue
        async with stream:
            try:
                async with contextlib.aclosing(_lines(stream.receive)) as lines:
                    async for line in lines:
                        yield _read(line)
            except (OSError, h11.ProtocolError, trio.BrokenResourceError) as exc:
                failures.append(f"{endpoint}: {exc or type(exc).__name__}")
            else:
                failures.append(f"{endpoint}: the watch stream ended")
        break  # it was open: the caller resumes from what it applied
    raise StoreUnavailable("etcd watch: " + "; ".join(failures))


#: Seconds one member may take to connect and answer the watch request's head.
OPEN_TIMEOUT = 3.0


class _Refused(Exception):
    """etcd answered the request with an error status."""


class _Response:
    """A streaming HTTP/1.1 response body over its own connection (h11): httpx's async
    iterators nest generators that Trio finalizes, with a warning, when a watch ends early."""

    def __init__(self, tcp: trio.abc.Stream, connection: h11.Connection) -> None:
        self.tcp, self.connection = tcp, connection

    async def receive(self) -> bytes:
        """The next piece of the body; b"" at its end."""
        while True:
            event = self.connection.next_event()
            if event is h11.NEED_DATA:
                self.connection.receive_data(bytes(await self.tcp.receive_some(65536)))
            elif isinstance(event, h11.Data):
                return bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return b""

    async def __aenter__(self) -> _Response:
        return self

    async def __aexit__(self, *_: object) -> None:
        await trio.aclose_forcefully(self.tcp)


async def _post(
    endpoint: str, path: str, body: bytes, tls: ssl.SSLContext | None = None
) -> _Response:
    """POST `body` and return once the response's head is in (a 200, else _Refused)."""
    url = urllib.parse.urlsplit(endpoint)
    host, port = url.hostname or "127.0.0.1", url.port or 2379
    tcp: trio.abc.Stream = await trio.open_tcp_stream(host, port)
    if url.scheme == "https":
        tcp = trio.SSLStream(tcp, tls or ssl.create_default_context(), server_hostname=host)
    connection = h11.Connection(h11.CLIENT)
    head = h11.Request(
        method="POST",
        target=path,
        headers=[
            ("Host", f"{host}:{port}"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
        ],
    )
    try:
        for outgoing in (head, h11.Data(data=body), h11.EndOfMessage()):
            data = connection.send(outgoing)
            if data:
                await tcp.send_all(data)
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await tcp.receive_some(65536)))
                continue
            if isinstance(event, h11.Response):
                if event.status_code != 200:
                    raise _Refused(f"HTTP {event.status_code}")
                return _Response(tcp, connection)
            if isinstance(event, h11.ConnectionClosed):
                raise _Refused("closed before answering")
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise


async def _lines(receive: Callable[[], Awaitable[bytes]]) -> AsyncGenerator[str, None]:
    """The body's lines (etcd sends one JSON object per line), without empty ones."""
    buffer = b""
    while chunk := await receive():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            if line.strip():
                yield line.decode()


def _read(line: str) -> Batch:
    """One line of the stream as a Batch; a line that is not what etcd's API sends (a
    proxy, a truncated stream) breaks the watch like a closed connection, never the replica."""
    try:
        message = json.loads(line)
        if not isinstance(message, dict):
            raise TypeError(f"a JSON {type(message).__name__}, not an object")
        return _batch(message)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StoreUnavailable(
            f"etcd watch: a response tlsgate cannot read ({type(exc).__name__}: {exc})"
        ) from None


def _batch(message: dict[str, object]) -> Batch:
    result = message.get("result")
    if not isinstance(result, dict):
        error = message.get("error")
        raise StoreUnavailable(f"etcd watch: {error or message}")
    if result.get("compact_revision") and result.get("canceled"):
        raise Compacted(int(result["compact_revision"]))
    if result.get("canceled"):
        raise StoreUnavailable(f"etcd cancelled the watch: {result.get('cancel_reason', '')}")
    header = result.get("header") or {}
    revision = int(header.get("revision", 0)) if isinstance(header, dict) else 0
    changes = []
    for event in result.get("events") or ():
        kv = event["kv"]
        key = base64.b64decode(kv["key"]).decode()
        # Protobuf's JSON leaves out defaults: no "type" is PUT, no "value" is empty.
        deleted = event.get("type") == "DELETE"
        value = None if deleted else base64.b64decode(kv.get("value", ""))
        changes.append(Change(key, value, int(kv["mod_revision"])))
    if result.get("created") and not changes:
        return Batch(revision, (), created=True)  # open: nothing to apply yet
    return Batch(revision, tuple(changes))
