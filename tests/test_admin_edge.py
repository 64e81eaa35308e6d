"""The admin API against hostile and careless clients, over real sockets: answers sent before
the body arrives, bodies over the limit or too slow, idle and never-reading clients, invented
methods (issue 9, items 1 and 4)."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from admin.edge import BODY_BUDGET_FACTOR
from admin.listen import AdminLimits

from .harness import admin_gateway, open_fds, wait_until
from .test_admin import assert_status, route

TOKEN = "s3cret"


async def _request(stream: trio.SocketStream, head: bytes, body: bytes = b"") -> None:
    """Send the head, then the body in a later TCP segment: the case that used to wedge."""
    await stream.send_all(head)
    if body:
        await trio.sleep(0.05)  # not synchronisation: makes the body a separate segment
        await stream.send_all(body)


async def _response(stream: trio.SocketStream, buffer: bytearray) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response (status, body, closed after it) read from `stream`."""
    while b"\r\n\r\n" not in buffer:
        chunk = await stream.receive_some(65536)
        assert chunk, f"connection closed before a response: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        assert chunk
        rest += chunk
    buffer[:] = rest[length:]
    return code, rest[:length], headers.get("connection") == "close"


def _head(method: str, path: str, length: int, content_type: str = "application/json") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


EARLY_ANSWERS = [
    # (method, path, content type, authorized, expected code)
    ("POST", "/v1/tlsroutes", "application/json", False, 401),
    ("POST", "/v1/widgets", "application/json", True, 404),
    ("PUT", "/v1/tlsroutes", "application/json", True, 405),
    ("POST", "/v1/apply?dryRun=Yes", "application/json", True, 400),
    ("PATCH", "/v1/tlsroutes/apps/db", "application/json", True, 415),
    ("PATCH", "/v1/tlsroutes/apps/db?dryRun=x", "application/merge-patch+json", True, 400),
]


async def test_early_answers_leave_a_keep_alive_connection_usable(tmp_path: Path) -> None:
    """Every answer that can be given before the body has arrived, then a second request on
    the same connection: it is answered (it used to hang for ever)."""
    body = json.dumps(route()).encode()
    async with admin_gateway(None, token=TOKEN) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            buffer = bytearray()
            for method, path, content_type, authorized, expected in EARLY_ANSWERS:
                head = _head(method, path, len(body), content_type)
                if authorized:
                    head = head.replace(
                        b"\r\n\r\n", f"\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
                    )
                with trio.fail_after(5):
                    await _request(stream, head, body)
                    code, answer, closed = await _response(stream, buffer)
                assert (code, closed) == (expected, False), answer
                assert json.loads(answer)["code"] == expected
            with trio.fail_after(5):
                await _request(stream, b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
                code, answer, _ = await _response(stream, buffer)
            assert code == 200, answer


async def test_httpx_keep_alive_survives_early_answers(tmp_path: Path) -> None:
    """The same through a real HTTP client that reuses its connection: each body is sent in
    two pieces, after the head."""

    async def slow_body() -> AsyncIterator[bytes]:
        data = json.dumps(route()).encode()
        yield data[:10]
        await trio.sleep(0.02)
        yield data[10:]

    async with (
        admin_gateway(None, token=TOKEN) as (_, url),
        httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=1)) as http,
    ):
        for _ in range(3):
            with trio.fail_after(5):
                denied = await http.post(
                    "/v1/tlsroutes",
                    content=slow_body(),
                    headers={"Content-Type": "application/json"},
                )
            assert_status(denied, 401, "Unauthorized")
        with trio.fail_after(5):
            ok = await http.post(
                "/v1/tlsroutes",
                content=slow_body(),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            )
        assert ok.status_code == 201, ok.text


async def test_over_the_limit_is_413_and_the_connection_closes(tmp_path: Path) -> None:
    async with admin_gateway(None, body_limit=1000) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        # Declared too large: refused without reading a byte of it.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            with trio.fail_after(5):
                await stream.send_all(_head("POST", "/v1/apply", 10**9))
                code, answer, closed = await _response(stream, bytearray())
                assert (code, closed) == (413, True)
                assert json.loads(answer)["reason"] == "RequestEntityTooLarge"
                assert await stream.receive_some(100) == b""  # closed, not left hanging
        # Chunked, growing past the limit while it is read.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            head = (
                b"POST /v1/apply HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            with trio.fail_after(5):
                await stream.send_all(head + b"400\r\n" + b" " * 1024 + b"\r\n")
                code, _, closed = await _response(stream, bytearray())
                assert (code, closed) == (413, True)


async def test_a_body_that_never_finishes_gets_408_and_a_close(tmp_path: Path) -> None:
    async with admin_gateway(None, body_timeout=0.5) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(_head("POST", "/v1/apply", 100) + b"{")
            with trio.fail_after(5):
                code, _, closed = await _response(stream, bytearray())
            assert (code, closed) == (408, True)


async def test_admin_connections_are_bounded_and_idle_ones_released(tmp_path: Path) -> None:
    """Idle clients cannot take more than the admin share of descriptors, and the keep-alive
    timeout gives their slots back: a real request gets through afterwards."""
    limits = AdminLimits(max_connections=4, keep_alive_timeout=0.5)
    async with admin_gateway(None, admin_limits=limits) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        before = open_fds()
        idle = []
        try:
            for _ in range(40):
                sock = socket.create_connection(("127.0.0.1", port))  # our own side: 1 fd each
                idle.append(sock)
            await trio.sleep(0.2)  # let the server accept what it will
            # 40 of ours; at most 4 accepted by the server (one descriptor each).
            assert open_fds() - before <= 40 + 4
            async with httpx.AsyncClient(base_url=url) as http:
                with trio.fail_after(10):
                    assert (await http.get("/healthz")).status_code == 200
        finally:
            for sock in idle:
                sock.close()


async def test_a_client_that_never_reads_is_let_go(tmp_path: Path) -> None:
    """Writes toward the client have a deadline: a client that asks for a big answer and never
    reads it loses its connection instead of holding its slot for ever. The answer (~5.4 MB)
    is larger than the kernel's largest send buffer (4 MiB), and the keep-alive timeout is long
    here, so only the write timeout can free the one slot for the next client."""
    limits = AdminLimits(max_connections=1, write_timeout=0.5, keep_alive_timeout=60)
    async with admin_gateway(None, admin_limits=limits) as (_, url):
        async with httpx.AsyncClient(base_url=url) as http:
            for i in range(6):
                blob = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": f"blob{i}", "namespace": "apps"},
                    "data": {"blob": "x" * 900_000},
                }
                assert (await http.post("/v1/configmaps", json=blob)).status_code == 201
        port = int(url.rsplit(":", 1)[1])
        hog = socket.socket()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: tiny window
        hog.connect(("127.0.0.1", port))
        try:
            hog.sendall(b"GET /v1/configmaps HTTP/1.1\r\nHost: a\r\n\r\n")
            async with httpx.AsyncClient(base_url=url, timeout=20) as other:
                with trio.fail_after(15):
                    assert (await other.get("/healthz")).status_code == 200
        finally:
            hog.close()


async def test_invented_methods_do_not_grow_metrics(tmp_path: Path) -> None:
    async with (
        admin_gateway(None) as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        for i in range(300):
            await http.request(f"X{i}", "/v1/tlsroutes")
        text = (await http.get("/metrics")).text
        lines = [line for line in text.splitlines() if line.startswith("tlsgate_admin_requests")]
        methods = {line.split('method="')[1].split('"')[0] for line in lines if 'method="' in line}
        assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
        assert 'tlsgate_admin_requests_total{code="405",method="other"} 300.0' in text
        assert len(text) < 20_000


async def test_http2_data_after_an_early_answer_ends_only_that_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTP/2 with prior knowledge: a 413 on a stream, then DATA on that finished stream.
    Hypercorn raises on it; that must close the one connection, not the process."""
    import h2.config
    import h2.connection
    import hyperframe.frame

    async with (
        admin_gateway(None, body_limit=1000) as (_, url),
        httpx.AsyncClient(base_url=url) as http,
    ):
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            headers = [
                (":method", "POST"),
                (":path", "/v1/apply"),
                (":scheme", "http"),
                (":authority", "admin"),
                ("content-type", "application/json"),
                ("content-length", "999999999"),
            ]
            conn.send_headers(1, headers)
            await stream.send_all(conn.data_to_send())
            ended = False
            with trio.fail_after(5):
                while not ended:
                    data = await stream.receive_some(65536)
                    assert data
                    events = conn.receive_data(data)
                    ended = any(type(e).__name__ == "StreamEnded" for e in events)
                    await stream.send_all(conn.data_to_send())
            late = hyperframe.frame.DataFrame(1)
            late.data = b"x" * 10
            await stream.send_all(late.serialize())
            with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
                while await stream.receive_some(65536):
                    pass  # until the server closes this connection
        for _ in range(3):
            assert (await http.get("/healthz")).status_code == 200
    failures = [r for r in caplog.records if "admin connection closed after an error" in r.message]
    assert len(failures) == 1
    assert failures[0].exc_info is None


async def test_unauthenticated_clients_cannot_hold_the_admin_slots(tmp_path: Path) -> None:
    """Unauthenticated requests trickling a body are answered 401 without waiting for it, so
    a client with the token gets a slot long before the 30 s body deadline."""
    limits = AdminLimits(max_connections=4)
    async with admin_gateway(None, token=TOKEN, admin_limits=limits) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        holders = []
        try:
            for _ in range(8):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(_head("POST", "/v1/apply", 1000) + b"{")
                holders.append(sock)
            async with httpx.AsyncClient(base_url=url) as http:
                with trio.fail_after(10):
                    answer = await http.get(
                        "/v1/tlsroutes", headers={"Authorization": f"Bearer {TOKEN}"}
                    )
                assert answer.status_code == 200
        finally:
            for sock in holders:
                sock.close()


async def test_bodies_held_in_memory_are_bounded_in_total(tmp_path: Path) -> None:
    """Each connection may hold one body up to the limit; all of them together at most
    BODY_BUDGET_FACTOR limits, and the next one is told 429 to retry."""
    limit = 1000
    async with admin_gateway(None, body_limit=limit) as (server, url):
        port = int(url.rsplit(":", 1)[1])
        streams = []
        try:
            for index in range(BODY_BUDGET_FACTOR):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                streams.append(stream)
                await stream.send_all(_head("POST", "/v1/apply", limit) + b" " * 900)
                held = 900 * (index + 1)
                await wait_until(lambda: bool(server.admin_edge.buffered >= held))  # noqa: B023
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            streams.append(extra)
            await extra.send_all(_head("POST", "/v1/apply", limit) + b" " * 900)
            with trio.fail_after(5):
                code, _, closed = await _response(extra, bytearray())
            assert (code, closed) == (429, True)
        finally:
            for stream in streams:
                await stream.aclose()
        await wait_until(lambda: server.admin_edge.buffered == 0)


def _h2_connect(port: int, *, window: int | None = None) -> tuple[socket.socket, Any]:
    import h2.config
    import h2.connection
    import h2.settings

    sock = socket.create_connection(("127.0.0.1", port))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    if window is not None:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    sock.sendall(conn.data_to_send())
    return sock, conn


_H2_GET = [(":method", "GET"), (":path", "/v1/tlsroutes"), (":scheme", "http"), (":authority", "a")]


async def test_http2_clients_that_never_open_their_window_are_let_go(tmp_path: Path) -> None:
    """A zero HTTP/2 flow-control window means the answer can never be sent: the write
    deadline ends such connections, whether the client then closes or stays, so they cannot
    keep the slots (or the shutdown) for ever."""
    limits = AdminLimits(max_connections=2, write_timeout=0.5, keep_alive_timeout=60)
    async with admin_gateway(None, admin_limits=limits) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        held = []
        try:
            for close in (True, False):
                sock, conn = _h2_connect(port, window=0)
                conn.send_headers(1, _H2_GET, end_stream=True)
                sock.sendall(conn.data_to_send())
                if close:
                    sock.close()
                else:
                    held.append(sock)
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                for _ in range(3):
                    with trio.fail_after(10):
                        assert (await http.get("/healthz")).status_code == 200
        finally:
            for sock in held:
                sock.close()


async def test_idle_keep_alive_connections_make_room_for_newcomers(tmp_path: Path) -> None:
    """Every slot held by keep-alive clients between requests (a poller, an idle CLI, a slow
    request head): the next client gets in at once, the longest idle one is closed."""
    limits = AdminLimits(max_connections=3, keep_alive_timeout=60)
    async with admin_gateway(None, token=TOKEN, admin_limits=limits) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        holders = []
        try:
            for index in range(3):
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                holders.append(stream)
                if index < 2:  # pollers of an open path, idle between their requests
                    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                    with trio.fail_after(5):
                        assert (await _response(stream, bytearray()))[0] == 200
                else:  # a request head that never finishes
                    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHo")
            async with httpx.AsyncClient(base_url=url) as http:
                for _ in range(4):
                    with trio.fail_after(3):
                        answer = await http.get(
                            "/v1/tlsroutes", headers={"Authorization": f"Bearer {TOKEN}"}
                        )
                    assert answer.status_code == 200
        finally:
            for stream in holders:
                await stream.aclose()


async def _big_answer(http: httpx.AsyncClient, count: int = 6) -> None:
    """ConfigMaps whose list is ~0.9 MB each: an answer far larger than a socket buffer."""
    for i in range(count):
        blob = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"blob{i}", "namespace": "apps"},
            "data": {"blob": "x" * 900_000},
        }
        assert (await http.post("/v1/configmaps", json=blob)).status_code == 201


async def test_a_slow_but_steady_reader_gets_the_whole_answer(tmp_path: Path) -> None:
    """The write timeout is about progress: a reader taking seconds for a 5.4 MB answer, in
    steps well inside the 0.5 s timeout, gets all of it, over HTTP/1.1 and HTTP/2."""
    limits = AdminLimits(write_timeout=0.5)
    async with admin_gateway(None, admin_limits=limits) as (_, url):
        async with httpx.AsyncClient(base_url=url) as http:
            await _big_answer(http)
            expected = len((await http.get("/v1/configmaps")).content)
        port = int(url.rsplit(":", 1)[1])
        # HTTP/1.1, a small window, 16 KiB window, a read every 10 ms.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        async with stream:
            await stream.send_all(b"GET /v1/configmaps HTTP/1.1\r\nHost: a\r\n\r\n")
            received = bytearray()
            with trio.fail_after(30):
                while (
                    b"\r\n\r\n" not in received
                    or len(received.partition(b"\r\n\r\n")[2]) < expected
                ):
                    chunk = await stream.receive_some(65536)
                    assert chunk, f"cut after {len(received)} bytes"
                    received += chunk
                    await trio.sleep(0.01)  # pacing the reader, not synchronisation
        # HTTP/2: the window is opened as data is read, every 10 ms.
        h2_sock, conn = _h2_connect(port, window=65535)
        try:
            conn.send_headers(
                1, [*_H2_GET[:1], (":path", "/v1/configmaps"), *_H2_GET[2:]], end_stream=True
            )
            h2_sock.sendall(conn.data_to_send())
            h2_sock.setblocking(False)
            body = 0
            ended = False
            with trio.fail_after(30):
                while not ended:
                    await trio.lowlevel.wait_readable(h2_sock)
                    data = h2_sock.recv(65536)
                    assert data, f"cut after {body} bytes"
                    for event in conn.receive_data(data):
                        name = type(event).__name__
                        if name == "DataReceived":
                            body += len(event.data)
                            conn.acknowledge_received_data(event.flow_controlled_length, 1)
                        ended = ended or name == "StreamEnded"
                        assert name != "StreamReset"
                    h2_sock.sendall(conn.data_to_send())
                    await trio.sleep(0.01)  # pacing the reader
            assert body == expected
        finally:
            h2_sock.close()


async def test_http2_connections_whose_streams_were_reset_can_be_evicted(tmp_path: Path) -> None:
    """A client that opens a stream and resets it leaves an HTTP/2 connection with no stream:
    it must count as idle, or such connections hold every slot until the read timeout."""
    limits = AdminLimits(max_connections=2, keep_alive_timeout=60)
    async with admin_gateway(None, admin_limits=limits) as (server, url):
        port = int(url.rsplit(":", 1)[1])
        held = []
        try:
            for _ in range(2):
                sock, conn = _h2_connect(port)
                post = [(":method", "POST"), *_H2_GET[1:], ("content-type", "application/json")]
                conn.send_headers(1, post)
                conn.send_data(1, b"[")  # a body begun, never finished...
                sock.sendall(conn.data_to_send())
                # ...the request is in the app (its body being read: the edge holds it)...
                await wait_until(lambda: server.admin_edge.buffered == 1)
                conn.reset_stream(1)  # ...and the stream reset: the app lets it go
                sock.sendall(conn.data_to_send())
                await wait_until(lambda: server.admin_edge.buffered == 0)
                held.append(sock)
            async with httpx.AsyncClient(base_url=url) as http:
                for _ in range(3):
                    with trio.fail_after(5):
                        assert (await http.get("/healthz")).status_code == 200
        finally:
            for sock in held:
                sock.close()


async def test_eviction_takes_the_longest_idle_connection(tmp_path: Path) -> None:
    """An honest keep-alive client between two requests is not the one closed for a newcomer
    when an older connection has been idle longer (one that never sent a request)."""
    limits = AdminLimits(max_connections=2, keep_alive_timeout=60)
    async with admin_gateway(None, admin_limits=limits) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        honest = await trio.open_tcp_stream("127.0.0.1", port)  # accepted first
        squatter = await trio.open_tcp_stream("127.0.0.1", port)
        buffer = bytearray()
        async with honest, squatter:
            await trio.sleep(0.1)  # let the squatter be idle for a while, never requesting
            for _ in range(2):
                with trio.fail_after(5):
                    await honest.send_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                    assert (await _response(honest, buffer))[0] == 200
                async with httpx.AsyncClient(base_url=url) as newcomer:
                    with trio.fail_after(5):
                        assert (await newcomer.get("/healthz")).status_code == 200
            with trio.fail_after(5):
                assert await squatter.receive_some(10) == b""  # the squatter was closed
