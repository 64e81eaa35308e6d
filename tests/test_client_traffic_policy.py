"""ClientTrafficPolicy enforced on real connections (API.md "Traffic policies"): PROXY
protocol headers from a real HAProxy (`send-proxy`, `send-proxy-v2`; Debian's haproxy,
installed by the test set-up) and from raw clients, trusted and not, and clientIPs at accept
and per listener. Client source addresses are distinct loopback addresses (127.0.0.x)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from gateway.dataplane.proxy_protocol import V2_SIGNATURE, v1_header, v2_header

from .harness import (
    LineClient,
    Pki,
    backends,
    client_traffic_policy_yaml,
    free_port,
    gateway_yaml,
    listening,
    passthrough_listener,
    route_yaml,
    running_gateway,
    secret_yaml,
    service_yaml,
    terminate_listener,
    wait_until,
)

HOST = "db.example.com"


def _policy(spec: str, name: str = "edge") -> str:
    return client_traffic_policy_yaml(name, spec)


GATEWAY_POLICY = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  proxyProtocol: {trustedCIDRs: [127.0.0.1/32]}
  clientIPs: {deny: [127.0.0.3/32]}
"""


def _manifests(port: int, backend_port: int, policy: str = GATEWAY_POLICY) -> str:
    return (
        gateway_yaml(port)
        + service_yaml("db", backend_port)
        + route_yaml("db", [HOST], [("db", 1)])
        + _policy(policy)
    )


@contextlib.asynccontextmanager
async def _client(
    port: int,
    context: ssl.SSLContext,
    *,
    source: str,
    first: bytes = b"",
    sni: str = HOST,
) -> AsyncIterator[LineClient]:
    """A TLS client from loopback address `source`, sending `first` before its hello."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    try:
        if first:
            await tcp.send_all(first)
        stream = trio.SSLStream(tcp, context, server_hostname=sni)
        await stream.do_handshake()
        client = LineClient(stream)
        assert (await client.line()).startswith("HELLO ")
        yield client
    finally:
        await trio.aclose_forcefully(tcp)


async def _served(port: int, context: ssl.SSLContext, **options: object) -> bool:
    """Does a connection get through to the backend (True) or is it closed (False)?"""
    try:
        with trio.fail_after(10):
            async with _client(port, context, **options) as client:  # type: ignore[arg-type]
                return await client.call("PING") == "PONG"
    except (trio.BrokenResourceError, ssl.SSLError, EOFError, OSError):
        return False


def _access(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tlsgate.access"]


async def _settled(access: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The access lines once `count` connections have ended: a connection's line is written
    when tlsgate sees it end, a moment after the client let go."""
    await wait_until(lambda: len(_access(access)) >= count, 10, f"{count} access lines")
    return _access(access)


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="tlsgate.access")
    return caplog


class HAProxy:
    """HAProxy in TCP mode: one frontend per PROXY protocol version, both to `target`."""

    def __init__(self, directory: Path, target: int) -> None:
        if shutil.which("haproxy") is None:
            pytest.fail("haproxy is missing: scripts/setup-env installs Debian's haproxy")
        self.v1, self.v2 = free_port(), free_port()
        config = directory / "haproxy.cfg"
        config.write_text(
            f"""
global
  maxconn 200
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend v1
  bind 127.0.0.1:{self.v1}
  default_backend gw_v1
frontend v2
  bind 127.0.0.1:{self.v2}
  default_backend gw_v2
backend gw_v1
  server gw 127.0.0.1:{target} send-proxy
backend gw_v2
  server gw 127.0.0.1:{target} send-proxy-v2
"""
        )
        self.log = (directory / "haproxy.log").open("w")
        self.process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while not (listening(self.v1) and listening(self.v2)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError((directory / "haproxy.log").read_text())
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


@pytest.fixture
def pki_backend(tmp_path: Path) -> Iterator[tuple[Pki, int]]:
    pki = Pki(tmp_path)
    with backends(pki, ("db", [HOST])) as (db,):
        yield pki, db.port


@pytest.mark.slow
async def test_haproxy_v1_and_v2_headers_carry_the_client_address(
    pki_backend: tuple[Pki, int], tmp_path: Path, access: pytest.LogCaptureFixture
) -> None:
    """Behind HAProxy the client's own address is the one clientIPs judge and the access
    log names (`client=`, with HAProxy as `peer=`)."""
    pki, backend_port = pki_backend
    port = free_port()
    proxy = HAProxy(tmp_path, port)
    context = pki.client_context()
    try:
        async with running_gateway(_manifests(port, backend_port)):
            for front in (proxy.v1, proxy.v2):
                assert await _served(front, context, source="127.0.0.2")
                assert not await _served(front, context, source="127.0.0.3")
            lines = await _settled(access, 4)
    finally:
        proxy.stop()
    served = [line for line in lines if "outcome=closed" in line]
    refused = [line for line in lines if "outcome=refused-client-ip" in line]
    assert len(served) == 2
    assert len(refused) == 2
    assert all("client=127.0.0.2:" in line and "peer=127.0.0.1:" in line for line in served)
    assert all('detail="127.0.0.3 is in clientIPs.deny"' in line for line in refused)


async def test_a_header_from_an_untrusted_peer_or_none_from_a_trusted_one_is_refused(
    pki_backend: tuple[Pki, int], access: pytest.LogCaptureFixture
) -> None:
    pki, backend_port = pki_backend
    port = free_port()
    context = pki.client_context()
    header = v1_header(("203.0.113.7", 51812), ("127.0.0.1", port))
    async with running_gateway(_manifests(port, backend_port)) as server:
        # 127.0.0.4 is not trusted: its own address stands, and a header from it is refused.
        assert await _served(port, context, source="127.0.0.4")
        assert not await _served(port, context, source="127.0.0.4", first=header)
        # 127.0.0.1 is trusted and must send one (optional is false)...
        assert not await _served(port, context, source="127.0.0.1")
        assert await _served(port, context, source="127.0.0.1", first=header)
        v2 = v2_header(("2001:db8::7", 1), ("127.0.0.1", port))
        assert await _served(port, context, source="127.0.0.1", first=v2)
        # ...a LOCAL one (a load balancer's own check) keeps the socket's addresses...
        local = V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
        assert await _served(port, context, source="127.0.0.1", first=local)
        # ...and a malformed one is refused.
        assert not await _served(port, context, source="127.0.0.1", first=b"PROXY TCP4 x\r\n")
        lines = await _settled(access, 7)
        refused = server.metrics.connections_refused.value("proxy-protocol")
    # A served connection's line is written when it ends, which may be after the next
    # one's: compared as a set of lines, each found by what it must say.
    outcomes = sorted(line.split("outcome=")[1].split()[0] for line in lines)
    assert outcomes == ["closed"] * 4 + ["refused-proxy-protocol"] * 3
    assert refused == 3

    def line(*parts: str) -> str:
        [found] = [line for line in lines if all(part in line for part in parts)]
        return found

    untrusted = line("no listener here trusts it")
    assert "client=127.0.0.4:" in untrusted  # an untrusted header's claim is not believed
    assert "peer=" not in untrusted
    assert "outcome=refused-proxy-protocol" in line("127.0.0.1 is in", "sent no header")
    assert "outcome=closed" in line("client=203.0.113.7:51812", "peer=127.0.0.1:")
    assert "outcome=closed" in line("client=[2001:db8::7]:1", "peer=127.0.0.1:")
    assert "outcome=refused-proxy-protocol" in line("a v1 header needs")
    own = [x for x in lines if "client=127.0.0.1:" in x and "outcome=closed" in x]
    assert len(own) == 1  # the LOCAL header: the socket's own address, no peer field
    assert "peer=" not in own[0]


async def test_a_denied_address_is_closed_at_accept_before_a_byte_is_read(
    pki_backend: tuple[Pki, int], access: pytest.LogCaptureFixture
) -> None:
    _, backend_port = pki_backend
    port = free_port()
    async with running_gateway(_manifests(port, backend_port)) as server:

        def connect() -> bytes:
            with socket.socket() as sock:
                sock.bind(("127.0.0.3", 0))
                sock.settimeout(10)
                sock.connect(("127.0.0.1", port))
                return sock.recv(1)  # b"" once tlsgate closes: it sent nothing

        with trio.fail_after(10):
            assert await trio.to_thread.run_sync(connect) == b""
        assert server.metrics.connections_refused.value("client-ip") == 1
    [line] = _access(access)
    assert "outcome=refused-client-ip" in line
    assert "sni=-" in line  # closed before the ClientHello was read


async def test_a_listeners_own_policy_decides_once_the_hello_names_it(
    pki_backend: tuple[Pki, int], access: pytest.LogCaptureFixture
) -> None:
    """An allow list on one listener: its clients are judged after the ClientHello names
    it; the other listener on the same port serves everyone, and takes no PROXY header."""
    pki, backend_port = pki_backend
    port = free_port()
    listeners = passthrough_listener("db", port, HOST) + passthrough_listener(
        "other", port, "other.example.com"
    )
    policy = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: db}]
  clientIPs: {allow: [127.0.0.2/32]}
  proxyProtocol: {trustedCIDRs: [127.0.0.9/32]}
"""
    manifests = (
        gateway_yaml(port, listeners)
        + service_yaml("db", backend_port)
        + route_yaml("db", [HOST], [("db", 1)], section="db")
        + route_yaml("other", ["other.example.com"], [("db", 1)], section="other")
        + _policy(policy)
    )
    context = pki.client_context()
    context.check_hostname = False
    header = v1_header(("203.0.113.7", 1), ("127.0.0.1", port))
    async with running_gateway(manifests):
        assert await _served(port, context, source="127.0.0.2")
        assert not await _served(port, context, source="127.0.0.5")
        assert await _served(port, context, source="127.0.0.5", sni="other.example.com")
        # 127.0.0.9 may send headers to `db` only.
        assert not await _served(
            port, context, source="127.0.0.9", first=header, sni="other.example.com"
        )
        lines = await _settled(access, 4)
    assert sum("127.0.0.5 is not in clientIPs.allow" in x for x in lines) == 1
    assert sum("which takes none" in x and "client=127.0.0.9:" in x for x in lines) == 1
    assert sum("outcome=closed" in x for x in lines) == 2


async def test_a_policys_timeouts_override_the_serve_flags(
    pki_backend: tuple[Pki, int], access: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The serve flags give a minute to everything here; the policy 300 ms. A silent client,
    an idle relayed connection and an unfinished handshake are each closed within seconds:
    without the policy each would wait its minute (and fail this test's 10 s bound)."""
    pki, backend_port = pki_backend
    port, term_port = free_port(), free_port()
    listeners = passthrough_listener("tls", port, None) + terminate_listener(
        "term", term_port, HOST, "cert"
    )
    policy = """
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
  timeout: {tcp: {idleTimeout: 300ms}, tls: {helloTimeout: 300ms, handshakeTimeout: 300ms}}
"""
    manifests = (
        gateway_yaml(port, listeners)
        + secret_yaml("cert", pki.ca.issue_cert(HOST))
        + service_yaml("db", backend_port)
        + route_yaml("db", [HOST], [("db", 1)], section="tls")
        + route_yaml("term", [HOST], [("db", 1)], section="term")
        + _policy(policy)
    )
    context = pki.client_context()
    minute = {"hello_timeout": 60.0, "idle_timeout": 60.0}
    async with running_gateway(manifests, **minute):
        with trio.fail_after(10):
            # Silent: nothing sent at all.
            silent = await trio.open_tcp_stream("127.0.0.1", port)
            assert await silent.receive_some(1) == b""
            await silent.aclose()
            # Idle: relayed, then nothing either way.
            async with _client(port, context, source="127.0.0.1") as client:
                assert await client.call("PING") == "PONG"
                # Closed under TLS without close_notify (passthrough: tlsgate has no TLS
                # of its own to close): an unclean EOF.
                with contextlib.suppress(trio.BrokenResourceError):
                    assert await client.stream.receive_some(1) == b""
            # Terminate: a ClientHello, the server's flight read, and nothing more.
            outgoing = ssl.MemoryBIO()
            engine = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=HOST)
            with contextlib.suppress(ssl.SSLWantReadError):
                engine.do_handshake()
            stream = await trio.open_tcp_stream("127.0.0.1", term_port)
            await stream.send_all(outgoing.read())
            while await stream.receive_some(65536):
                pass  # until tlsgate closes
            await stream.aclose()
        lines = await _settled(access, 3)
    outcomes = sorted(line.split("outcome=")[1].split()[0] for line in lines)
    assert outcomes == ["handshake-timeout", "hello-timeout", "idle-timeout"]


async def test_an_untrusted_header_is_refused_at_once_with_nothing_sent_back(
    pki_backend: tuple[Pki, int], access: pytest.LogCaptureFixture
) -> None:
    """Refused as soon as the header is seen: an SSLRequest after it gets no S, a silent
    peer no hello timeout, and the log names the socket's peer, never the forged address."""
    _, backend_port = pki_backend
    port = free_port()
    forged = v1_header(("6.6.6.6", 666), ("127.0.0.1", port))
    from gateway.dataplane.postgres import SSL_REQUEST

    async with running_gateway(_manifests(port, backend_port), hello_timeout=60.0):
        for after in (SSL_REQUEST, b""):

            def send(after: bytes = after) -> bytes:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.4", 0))
                    sock.settimeout(10)
                    sock.connect(("127.0.0.1", port))
                    sock.sendall(forged + after)
                    return sock.recv(1)

            with trio.fail_after(10):  # not the 60 s hello timeout
                assert await trio.to_thread.run_sync(send) == b""
        lines = await _settled(access, 2)
    assert all("outcome=refused-proxy-protocol" in x for x in lines)
    assert all("client=127.0.0.4:" in x and "6.6.6.6" not in x for x in lines)


async def test_a_header_sent_a_byte_at_a_time_then_the_hello(
    pki_backend: tuple[Pki, int], access: pytest.LogCaptureFixture
) -> None:
    pki, backend_port = pki_backend
    port = free_port()
    header = v2_header(("203.0.113.9", 4242), ("127.0.0.1", port))
    context = pki.client_context()
    async with running_gateway(_manifests(port, backend_port)):
        tcp = await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.1")
        try:
            for byte in header:
                await tcp.send_all(bytes([byte]))
                await trio.sleep(0.001)
            stream = trio.SSLStream(tcp, context, server_hostname=HOST)
            with trio.fail_after(10):
                await stream.do_handshake()
                assert (await LineClient(stream).line()).startswith("HELLO ")
        finally:
            await trio.aclose_forcefully(tcp)
        [line] = await _settled(access, 1)
    assert "client=203.0.113.9:4242" in line


async def test_a_header_larger_than_any_balancer_sends_is_refused(
    pki_backend: tuple[Pki, int], access: pytest.LogCaptureFixture
) -> None:
    _, backend_port = pki_backend
    port = free_port()
    huge = v2_header(("203.0.113.9", 1), ("127.0.0.1", port), [(0xE0, b"x" * 8000)])
    async with running_gateway(_manifests(port, backend_port)):

        def send() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(huge[:100])  # the length is known from the first 16 bytes
                return sock.recv(1)

        with trio.fail_after(10):
            assert await trio.to_thread.run_sync(send) == b""
        [line] = await _settled(access, 1)
    assert "more than 4096" in line
