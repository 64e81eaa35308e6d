"""End-to-end harness: real TLS backends, a real gateway on loopback, real TLS clients."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio
import trustme

from gateway.dataplane.proxy import ProxyConfig
from gateway.server import ServeConfig, Server
from gateway.store.state import State

from .helpers import GATEWAY_CLASS, World
from .linebackend import LineBackend


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class Pki:
    """One test CA and the certificates issued from it, written to files for the backends."""

    directory: Path
    ca: trustme.CA = attrs.field(factory=trustme.CA)

    def server_files(self, *names: str) -> tuple[str, str]:
        cert = self.ca.issue_cert(*names)
        stem = self.directory / names[0].replace("*", "_")
        cert.private_key_and_cert_chain_pem.write_to_path(str(stem) + ".pem")
        return str(stem) + ".pem", str(stem) + ".pem"

    def backend_context(self, *names: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ca.issue_cert(*names).configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def ca_file(self) -> str:
        path = self.directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return str(path)


@contextlib.contextmanager
def backends(pki: Pki, *specs: tuple[str, Sequence[str] | None]) -> Iterator[list[LineBackend]]:
    """Start line backends: (name, certificate names or None for plain TCP)."""
    started = [
        LineBackend(name, tls_context=pki.backend_context(*names) if names else None).start()
        for name, names in specs
    ]
    try:
        yield started
    finally:
        for backend in started:
            backend.stop()


def gateway_yaml(port: int, listeners: str | None = None) -> str:
    listeners = (
        listeners
        or f"""
  - name: tls
    port: {port}
    protocol: TLS
    tls: {{mode: Passthrough}}
    allowedRoutes: {{namespaces: {{from: All}}}}
"""
    )
    return (
        GATEWAY_CLASS
        + f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: tlsgate
  addresses: [{{value: 127.0.0.1}}]
  listeners:{listeners}"""
    )


def service_yaml(
    name: str, *ports: int, namespace: str = "apps", not_ready: Sequence[int] = ()
) -> str:
    """A Service on port 443 whose endpoints are 127.0.0.1 at each given port, one slice each."""
    out = f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec: {{ports: [{{name: tls, port: 443, targetPort: tls}}]}}
"""
    for index, port in enumerate(ports):
        ready = "false" if port in not_ready else "true"
        out += f"""
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{index}
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: {ready}}}}}]
ports: [{{name: tls, port: {port}}}]
"""
    return out


def route_yaml(
    name: str,
    hostnames: Sequence[str],
    backends: Sequence[tuple[str, int]],
    namespace: str = "apps",
    section: str | None = None,
) -> str:
    refs = ", ".join(f"{{name: {b}, port: 443, weight: {w}}}" for b, w in backends)
    section_part = f", sectionName: {section}" if section else ""
    hosts = ", ".join(json.dumps(h) for h in hostnames)
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{{name: gw, namespace: infra{section_part}}}]
  hostnames: [{hosts}]
  rules: [{{backendRefs: [{refs}]}}]
"""


@contextlib.asynccontextmanager
async def running_gateway(manifests: str, **config: Any) -> AsyncIterator[Server]:
    """A gateway serving `manifests`, in this Trio run; cancelled on exit."""
    world = World()
    world.apply(manifests)
    state = State(bind_address="127.0.0.1")
    state.replace_documents(world.docs.values())
    proxy_config = ProxyConfig(
        **{k: config.pop(k) for k in list(config) if k in attrs.fields_dict(ProxyConfig)}
    )
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(_run, ServeConfig(proxy=proxy_config, **config), state)
        yield server
        nursery.cancel_scope.cancel()


async def _run(
    config: ServeConfig,
    state: State,
    *,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    server = Server(config, state)
    await server.run(task_status=task_status)


@attrs.define
class LineClient:
    stream: trio.abc.Stream
    buffer: bytearray = attrs.field(factory=bytearray)

    async def line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError(f"connection closed; buffered {bytes(self.buffer)!r}")
            self.buffer += chunk
        line, _, rest = self.buffer.partition(b"\n")
        self.buffer = bytearray(rest)
        return line.decode()

    async def call(self, command: str) -> str:
        await self.stream.send_all(command.encode() + b"\n")
        return await self.line()

    async def test(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(await self.call("TEST"))
        return result


@contextlib.asynccontextmanager
async def tls_client(
    port: int, sni: str | None, context: ssl.SSLContext, host: str = "127.0.0.1"
) -> AsyncIterator[LineClient]:
    """A TLS client through the gateway; the greeting is read before it is handed out."""
    tcp = await trio.open_tcp_stream(host, port)
    stream = trio.SSLStream(tcp, context, server_hostname=sni)
    try:
        await stream.do_handshake()
        client = LineClient(stream)
        greeting = await client.line()
        assert greeting.startswith("HELLO "), greeting
        yield client
    finally:
        await trio.aclose_forcefully(stream)


async def handshake_outcome(
    port: int, sni: str | None, context: ssl.SSLContext, payload: bytes | None = None
) -> str:
    """How a client's handshake ends: 'ok', 'eof' or 'reset' (the conformance rejection check
    counts EOF and reset as rejected, an alert or a completed handshake as not)."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        if payload is not None:
            await tcp.send_all(payload)
            data = await tcp.receive_some(1024)
            return "eof" if not data else f"data {data[:20]!r}"
        stream = trio.SSLStream(tcp, context, server_hostname=sni)
        await stream.do_handshake()
        return "ok"
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ConnectionResetError):
            return "reset"
        if isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return "eof"
        if isinstance(cause, ssl.SSLError) and "EOF" in str(cause):
            return "eof"
        return f"error {cause!r}"
    except ConnectionResetError:
        return "reset"
    finally:
        await trio.aclose_forcefully(tcp)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_until(condition: Callable[[], bool], seconds: float = 5) -> None:
    """Poll an outside condition (a port listening, a status) with a deadline; for what the
    test can wait on directly, it waits on an event instead."""
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 (nothing to wait on: the condition is outside)
            await trio.sleep(0.02)


@contextlib.asynccontextmanager
async def admin_gateway(
    state_dir: Path | None, *, token: str | None = None, **config: Any
) -> AsyncIterator[tuple[Server, str]]:
    """A gateway with its admin API on a free loopback port (and a store, given a directory);
    yields the server and the admin base URL."""
    serve_config = ServeConfig(
        admin=("127.0.0.1", 0),
        admin_token=token,
        state_dir=str(state_dir) if state_dir else None,
        bind_address="127.0.0.1",
        **config,
    )
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(_run_server, Server(serve_config))
        yield server, server.admin_urls[0]
        nursery.cancel_scope.cancel()


async def _run_server(
    server: Server, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
) -> None:
    await server.run(task_status=task_status)


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


def secret_yaml(name: str, cert: trustme.LeafCert, namespace: str = "infra") -> str:
    chain = "".join(b.bytes().decode() for b in cert.cert_chain_pems)
    return f"""
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: {namespace}}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{_indent(chain, 4)}
  tls.key: |
{_indent(cert.private_key_pem.bytes().decode(), 4)}
"""


def ca_config_map_yaml(name: str, ca: trustme.CA, namespace: str = "infra") -> str:
    return f"""
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}, namespace: {namespace}}}
data:
  ca.crt: |
{_indent(ca.cert_pem.bytes().decode(), 4)}
"""


def terminate_listener(name: str, port: int, hostname: str | None, *secrets: str) -> str:
    host = f", hostname: {json.dumps(hostname)}" if hostname else ""
    refs = ", ".join(f"{{name: {s}}}" for s in secrets)
    return f"""
  - {{name: {name}, port: {port}, protocol: TLS{host},
     tls: {{mode: Terminate, certificateRefs: [{refs}]}},
     allowedRoutes: {{namespaces: {{from: All}}}}}}"""


def passthrough_listener(name: str, port: int, hostname: str | None) -> str:
    host = f", hostname: {json.dumps(hostname)}" if hostname else ""
    return f"""
  - {{name: {name}, port: {port}, protocol: TLS{host}, tls: {{mode: Passthrough}},
     allowedRoutes: {{namespaces: {{from: All}}}}}}"""


def db_route(port: int, backend_port: int) -> str:
    """The most common setup: a Passthrough Gateway on `port` and one route for
    db.example.com to the backend on `backend_port`."""
    return (
        gateway_yaml(port)
        + service_yaml("db", backend_port)
        + route_yaml("db", ["db.example.com"], [("db", 1)])
    )


def run_tlsgate(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`tlsgate ARGS...` as a user runs it, in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


def wait_serving(
    url: str,
    process: subprocess.Popen[Any],
    *,
    path: str = "/healthz",
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Poll a `tlsgate serve` process's admin API until `path` answers 200 (30 s at most),
    failing at once if the process exits."""
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the gateway exited"
        try:
            if httpx.get(f"{url}{path}", timeout=2, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the admin API never answered {path}")
