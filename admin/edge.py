"""The admin API's front door: an ASGI layer in front of the Quart app that authenticates,
reads the whole request body (bounded in size and time) before anything answers, and counts
every request.

HTTP edge. Why the body is read first: an answer sent before the body has arrived (401, 404,
405, 413) leaves Hypercorn's HTTP/1.1 connection with a request half read; it then tries to
close the connection from inside the app's task, which quart-trio has just cancelled, so the
connection is neither closed nor reused and the next request on it hangs for ever. With the
body read first, every answer ends a complete exchange and keep-alive works; where the body
is not read (too large, too slow), the answer says `connection: close` and the close runs
shielded from that cancellation.

An unauthenticated request gets its 401 at once: a small body already on its way is read and
dropped (so the connection stays usable), a large or slow one is not waited for (the 401 then
closes the connection). Bodies held in memory are bounded in total across connections and
HTTP/2 streams (429 beyond). Metrics labels are fixed vocabularies: an invented method is
`other`.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any

import trio

from admin import session
from admin.errors import ApiError
from gateway.api.convert import encode_json
from gateway.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

#: The `method` label's vocabulary (RFC 9110 §9 plus PATCH, RFC 5789).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


#: Request bodies held in memory at once, all connections together, in body limits.
BODY_BUDGET_FACTOR = 8
#: How long, and how much, an unauthenticated body is read (and dropped) so that its 401 can
#: keep the connection; beyond either, the 401 closes it.
UNAUTHENTICATED_DRAIN_SECONDS = 1.0
UNAUTHENTICATED_DRAIN_BYTES = 64 * 1024


class ConnectionGuard:
    """One admin connection's write watchdog: it ends the connection (`scope`) and every
    shielded send on it (`shields`) when sends are waiting and no byte reached the client
    (`sent`, counted by the connection's stream) for `timeout` seconds."""

    def __init__(self, scope: trio.CancelScope, timeout: float) -> None:
        self.scope = scope
        self.timeout = timeout
        self.sent = 0
        self.shields: set[trio.CancelScope] = set()

    async def watch(self) -> None:
        seen = -1
        try:
            while True:
                await trio.sleep(self.timeout)
                if self.shields and self.sent == seen:
                    self.scope.cancel()
                    return
                seen = self.sent
        finally:
            # Whatever ends the watch (a stall, the connection's end, shutdown) ends the
            # shielded sends too: nothing else can.
            for shield in list(self.shields):
                shield.cancel()


#: The guard of the connection a request arrived on, when the server provides one
#: (admin.serve sets it per connection; the tasks serving it inherit it).
CONNECTION: ContextVar[ConnectionGuard | None] = ContextVar("admin_connection", default=None)


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        body_limit: int,
        body_timeout: float,
        open_paths: Collection[str],
        metrics: Metrics | None,
        write_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.token = token
        self.body_limit = body_limit
        self.body_timeout = body_timeout
        self.open_paths = open_paths
        self.metrics = metrics
        self.write_timeout = write_timeout
        #: Bytes of request bodies held in memory now, across connections and streams.
        self.buffered = 0
        self.buffer_budget = BODY_BUDGET_FACTOR * body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # None are served today; the token guards them all the same, should one appear.
            headers = {k.lower(): v for k, v in scope["headers"]}
            if not self._authorized(scope["path"], "GET", headers, cookies=False):
                await send({"type": "websocket.close", "code": 1008})
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        abandoned = False

        async def shielded_send(message: Message) -> None:
            nonlocal abandoned
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            if abandoned:
                return  # the client stopped reading: the rest of the answer goes nowhere
            # Hypercorn may close the connection from inside this call (after the last body
            # message); quart-trio cancels its request nursery on the disconnect that close
            # reports, which would abandon the close half done: hence the shield. It has a
            # deadline, since a send can wait for ever on a client that reads nothing (an
            # HTTP/2 window it never opens); then the connection is ended.
            # It is bounded by progress: the connection's guard (admin.serve) cancels it when
            # nothing reached the client for the write timeout, so a slow but steady reader
            # gets a whole answer. Without a guard, a plain deadline.
            guard = CONNECTION.get(None)
            with trio.CancelScope(shield=True) as bounded:
                if guard is None:
                    bounded.deadline = trio.current_time() + self.write_timeout
                else:
                    guard.shields.add(bounded)
                try:
                    await send(message)
                finally:
                    if guard is not None:
                        guard.shields.discard(bounded)
            if bounded.cancelled_caught:
                abandoned = True
                if guard is not None:
                    guard.scope.cancel()

        try:
            await self._serve(scope, receive, shielded_send)
        finally:
            if self.metrics is not None:
                code = str(status[0]) if status else "none"
                self.metrics.admin_requests.labels(method_label(scope["method"]), code).inc()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.lower(): v for k, v in scope["headers"]}
        method = scope["method"]
        authorized = self._authorized(scope["path"], method, headers)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body_limit:
            await _answer(send, ApiError(413, self._too_large()), close=True)
            return
        if not authorized:
            if session.is_dashboard(scope["path"]) and method in ("GET", "HEAD"):
                # A browser without the dashboard's cookie: to the login form (an htmx
                # request of a page whose cookie expired: the whole page goes there).
                htmx = headers.get(b"hx-request") == b"true"
                await self._refuse(receive, send, functools.partial(_to_login, htmx=htmx))
            else:
                await self._refuse(receive, send, _unauthorized)
            return
        body = bytearray()
        held = 0
        try:
            with trio.move_on_after(self.body_timeout) as deadline:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client went away: nobody to answer
                    chunk = message.get("body", b"")
                    if len(body) + len(chunk) > self.body_limit:
                        await _answer(send, ApiError(413, self._too_large()), close=True)
                        return
                    if chunk and self.buffered + len(chunk) > self.buffer_budget:
                        # Every connection may carry bodies on several HTTP/2 streams: the
                        # total kept in memory is bounded, and the client told to come back.
                        error = ApiError(
                            429, "too many request bodies are being received now; retry shortly"
                        )
                        await _answer(send, error, close=True, retry_after=1)
                        return
                    body += chunk
                    held += len(chunk)
                    self.buffered += len(chunk)
                    if not message.get("more_body", False):
                        break
            if deadline.cancelled_caught:
                error = ApiError(
                    408, f"the request body did not arrive within {self.body_timeout:g}s"
                )
                await _answer(send, error, close=True)
                return
            data = bytes(body)
            body.clear()
            # Still counted while the app works on it: a parsed body costs more than its bytes.
            await self.app(scope, _replay(data, receive), send)
        finally:
            self.buffered -= held

    async def _refuse(
        self, receive: Receive, send: Send, answer: Callable[[Send, bool], Awaitable[None]]
    ) -> None:
        """401 (or the dashboard's way to its login form), keeping the connection when that
        is cheap: a small body already on its way is read and dropped (then keep-alive
        works, see the module docstring); one that is large or slow is not waited for, so
        unauthenticated clients cannot hold admin connections for the body deadline. Then
        the answer closes the connection."""
        drained = 0
        with trio.move_on_after(min(UNAUTHENTICATED_DRAIN_SECONDS, self.body_timeout)):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                drained += len(message.get("body", b""))
                if drained > UNAUTHENTICATED_DRAIN_BYTES:
                    break
                if not message.get("more_body", False):
                    await answer(send, False)
                    return
        await answer(send, True)

    def _authorized(
        self, path: str, method: str, headers: Mapping[bytes, bytes], *, cookies: bool = True
    ) -> bool:
        """The token in `Authorization: Bearer`; or, for the dashboard's reads only, its
        cookie (so a cookie can never write, and a page elsewhere cannot make a browser
        write with it: SameSite=Strict besides)."""
        token = self.token
        if token is None or path in self.open_paths:
            return True
        if session.is_dashboard(path):
            if session.is_open(path):
                return True
            if cookies and method in ("GET", "HEAD"):
                cookie = headers.get(b"cookie", b"").decode("latin-1")
                if session.has_session(cookie, token):
                    return True
        header = headers.get(b"authorization", b"")
        scheme, _, given = header.decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("latin-1"), token.encode()
        )

    def _too_large(self) -> str:
        return f"the request body is larger than the {self.body_limit}-byte limit"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive callable that yields the body already read, then the client's next event
    (its disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


async def _unauthorized(send: Send, close: bool) -> None:
    error = ApiError(401, "a valid 'Authorization: Bearer <token>' header is required")
    await _answer(send, error, close=close)


async def _to_login(send: Send, close: bool, *, htmx: bool) -> None:
    """303 to the login form; to htmx, 401 with `HX-Redirect` (it would otherwise follow
    the 303 and put the form inside the fragment it was refreshing)."""
    headers = [
        (b"content-length", b"0"),
        (b"cache-control", b"no-store"),
        (b"hx-redirect" if htmx else b"location", b"/ui/login"),
    ]
    if close:
        headers.append((b"connection", b"close"))
    status = 401 if htmx else 303
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _answer(
    send: Send, error: ApiError, *, close: bool = False, retry_after: int | None = None
) -> None:
    body = (encode_json(error.body()) + "\n").encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": error.code, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
