"""Hostile ClientHellos over real sockets (issue 9): a hello as 1-byte records costs the gateway
work linear in what it sends while other clients are served, and an SNI holding CR, LF, NUL and a
fake log line cannot forge access-log lines."""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
from pathlib import Path

import pytest
import trio

from gateway.dataplane.access import AccessRecord, Outcome
from gateway.dataplane.clienthello import MAX_HELLO_RECORDS

from .harness import (
    Pki,
    backends,
    db_route,
    free_port,
    running_gateway,
    serve_manifests,
    tls_client,
)
from .test_clienthello import hello_with_extensions, padded_hello, records, sni_extension


class _MemoryClient:
    """A real TLS client (OpenSSL through memory BIOs) whose bytes the test sends itself, so its
    ClientHello can go out re-framed as 1-byte records."""

    def __init__(self, context: ssl.SSLContext, server_name: str) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_name)
        with pytest.raises(ssl.SSLWantReadError):
            self.tls.do_handshake()
        self.hello = self.outgoing.read()

    async def _exchange(self, stream: trio.SocketStream) -> None:
        if pending := self.outgoing.read():
            await stream.send_all(pending)
        data = await stream.receive_some(65536)
        assert data, "the connection closed during the handshake"
        self.incoming.write(data)

    async def finish(self, stream: trio.SocketStream) -> str:
        """Complete the handshake after the hello was sent; the server's first line."""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._exchange(stream)
        text = b""
        while b"\n" not in text:
            try:
                text += self.tls.read(65536)
            except ssl.SSLWantReadError:
                await self._exchange(stream)  # sends the client Finished first
        return text.decode()


async def _closed_by_peer(stream: trio.SocketStream) -> bool:
    try:
        return await stream.receive_some(1024) == b""
    except trio.BrokenResourceError:
        return True  # closed with our bytes unread: a reset


async def test_hello_in_1_byte_records_costs_linear_work_while_others_are_served(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        async with running_gateway(db_route(port, db.port), hello_timeout=60) as server:
            with caplog.at_level(logging.INFO, logger="tlsgate.access"), trio.fail_after(60):
                # A real client's hello, one record per byte (~520 records: under the cap), sent
                # a record at a time while good clients come and go through the gateway.
                slow = _MemoryClient(pki.client_context(), "db.example.com")
                pieces = records(slow.hello, 1)
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                served = 0
                for index, piece in enumerate(pieces):
                    await stream.send_all(piece)
                    if index % 50 == 0:
                        async with tls_client(port, "db.example.com", pki.client_context()) as good:
                            assert await good.call("PING") == "PONG"
                        served += 1
                # Routed, replayed verbatim: the backend's OpenSSL takes the fragmented hello.
                assert await slow.finish(stream) == "HELLO db\n"
                await stream.aclose()

                # A 10 KB hello in 1-byte records is refused at the record cap.
                hostile = await trio.open_tcp_stream("127.0.0.1", port)
                big = records(padded_hello(b"db.example.com", 10_000), 1)
                assert len(big) > MAX_HELLO_RECORDS
                for start in range(0, len(big), 100):
                    try:
                        await hostile.send_all(b"".join(big[start : start + 100]))
                    except trio.BrokenResourceError:
                        break  # the gateway has closed it
                    if start % 500 == 0:
                        async with tls_client(port, "db.example.com", pki.client_context()) as good:
                            assert await good.call("PING") == "PONG"
                        served += 1
                assert await _closed_by_peer(hostile)
                await hostile.aclose()
                await server.proxy.idle.wait()
    assert served > len(range(0, len(pieces), 50))
    access = [r.fields for r in caplog.records if r.name == "tlsgate.access"]  # type: ignore[attr-defined]
    refused = [f for f in access if f["outcome"] == "rejected-not-tls"]
    assert len(refused) == 1
    assert f"more than {MAX_HELLO_RECORDS} records" in str(refused[0]["detail"])
    # The work: every byte the parsers were fed was examined at most twice (once framed, once
    # parsed), however it was fragmented. Re-parsing the buffer after each receive examined
    # the slow client's hello once per record received.
    work = server.proxy.hello_work
    assert work.fed >= 6 * len(pieces) + 6 * MAX_HELLO_RECORDS
    assert work.scanned <= 2 * work.fed


FAKE_LINE = (
    "2026-01-01 00:00:00,000 INFO tlsgate.access client=203.0.113.9:4242 bind=127.0.0.1:443"
    " sni=bank.example.com listener=infra/gw/tls route=apps/bank backend=bank"
    " endpoint=10.0.0.1:443 bytes_up=1 bytes_down=1 duration=0.001 outcome=ok"
)
HOSTILE_SNI = 'evil.example.com outcome=ok "x\\\r\n' + FAKE_LINE + "\x00\r\n"


def _logfmt(line: str) -> list[tuple[str, str]]:
    """key=value pairs; a quoted value is a JSON string."""
    pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|[^\s"]+)(?=\s|$)', line)
    return [(key, json.loads(value) if value.startswith('"') else value) for key, value in pairs]


async def test_an_sni_with_cr_lf_nul_cannot_forge_access_log_lines(
    pki: Pki, tmp_path: Path
) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        async with serve_manifests(
            tmp_path,
            db_route(port, db.port),
            "--log-format",
            "text",
            capture=True,
        ) as process:  # entered at once: the test waits on its log below
            assert process.stdout is not None
            output = trio.lowlevel.FdStream(os.dup(process.stdout.fileno()))  # read with Trio
            try:
                received = b""
                with trio.fail_after(30):
                    # Ready once the listener is bound; no probe connection, so the one connection
                    # below is the only one the access log can speak of.
                    while b"listener bound" not in received:
                        chunk = await output.receive_some(65536)
                        assert chunk, received.decode()
                        received += chunk
                    client = await trio.open_tcp_stream("127.0.0.1", port)
                    client_port = client.socket.getsockname()[1]
                    await client.send_all(
                        hello_with_extensions(sni_extension(HOSTILE_SNI.encode()))
                    )
                    assert await _closed_by_peer(client)  # no route for that name
                    await client.aclose()
                    # Logged after the close: read until the connection's outcome and its line end.
                    while not re.search(rb"outcome=rejected-.*\n", received):
                        chunk = await output.receive_some(65536)
                        assert chunk, received.decode()
                        received += chunk
            finally:
                await output.aclose()
    lines = received.decode("ascii").splitlines()
    access = [line for line in lines if "tlsgate.access" in line]
    assert len(access) == 1, access
    assert not any(line.startswith(FAKE_LINE[:23]) for line in lines)
    pairs = _logfmt(access[0].split(" tlsgate.access ", 1)[1])
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), keys  # no field was injected
    fields = dict(pairs)
    assert fields["client"] == f"127.0.0.1:{client_port}"
    assert fields["sni"] == HOSTILE_SNI
    assert fields["outcome"] == "rejected-no-route"


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "a b",
        'say "hi"',
        "back\\slash",
        "k=v",
        "\x7f",
        "\x1b[31mred",
        "\u2028",
        "\x85",
        "é",
    ],
)
def test_every_value_is_one_token_on_one_printable_line(value: str) -> None:
    conn = AccessRecord(peer=("127.0.0.1", 5000), bind=("127.0.0.1", 443), sni="x" + value)
    conn.outcome, conn.detail = Outcome.REJECTED_NO_ROUTE, value
    fields = conn.fields()
    line = AccessRecord.line(fields)
    assert line.isascii()
    assert line.isprintable()
    assert dict(_logfmt(line)) == {key: "-" if v is None else str(v) for key, v in fields.items()}


def test_ordinary_values_are_written_as_they_are() -> None:
    conn = AccessRecord(peer=("::1", 5000), bind=("127.0.0.1", 443), sni="db.example.com")
    conn.outcome = Outcome.CLOSED
    line = AccessRecord.line(conn.fields())
    assert line.startswith("client=[::1]:5000 bind=127.0.0.1:443 sni=db.example.com listener=- ")
    assert line.endswith(" outcome=closed ended_by=-")  # no transfer: nothing says who
