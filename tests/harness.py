"""End-to-end harness: real TLS backends, a real gateway on loopback, real TLS clients."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

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


def real_hello(
    server_name: str | None = "db.example.com",
    alpn: list[str] | None = None,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
) -> bytes:
    """The bytes OpenSSL sends first, taken from a memory BIO (STACK-NOTES.md)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    context.minimum_version = minimum
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello, "OpenSSL wrote no ClientHello"
    return hello


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


def client_traffic_policy_yaml(name: str, spec: str, namespace: str = "infra") -> str:
    """A ClientTrafficPolicy; `spec` is its indented YAML (targetRefs and fields)."""
    return f"""
---
apiVersion: gateway.tlsgate.dev/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
{spec}
"""


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
    await server.serve(task_status=task_status)


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


async def wait_until(
    condition: Callable[[], bool], seconds: float = 5, what: str = "the condition"
) -> None:
    """Poll an outside condition (a port listening, a status) until it holds, failing with
    `what` after `seconds`. What the test can wait on directly (an event, a log line, a
    process's exit) it waits on instead. `wait_until` is for Trio code: it sleeps with Trio, so
    a gateway in the same run keeps serving. `poll_until` is for synchronous code (a sync test,
    a thread watching a real process): it blocks its thread. A condition may raise to fail at
    once (a process that exited)."""
    try:
        with trio.fail_after(seconds):
            while not condition():  # noqa: ASYNC110 (nothing to wait on: the condition is outside)
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise AssertionError(f"{what}: not within {seconds} s") from None


def poll_until(
    condition: Callable[[], bool], seconds: float = 5, what: str = "the condition"
) -> None:
    """Poll an outside condition until it holds, failing with `what` after `seconds`: the
    synchronous twin of `wait_until`, whose docstring says when to use which."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.05)  # polling interval, not synchronisation


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port` (one bare connect)."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


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
    await server.serve(task_status=task_status)


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


class ServeProcess:
    """`tlsgate serve` in a real process: see `serve_process`."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None,
        admin_url: str | None,
        path: str,
        verify: ssl.SSLContext | bool,
        port: int | None,
        capture: bool,
        seconds: float,
    ) -> None:
        self.command = [sys.executable, "-m", "gateway", "serve", "--bind-address", "127.0.0.1"]
        self.command += args
        self.env = env
        self.admin_url, self.path, self.verify = admin_url, path, verify
        self.port, self.capture, self.seconds = port, capture, seconds
        self.log: IO[str] | None = None
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> subprocess.Popen[str]:
        self.log = None if self.capture else tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE if self.capture else self.log,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        what = f"`tlsgate {shlex.join(self.command[3:])}`"
        try:
            poll_until(self._serving_or_exited, self.seconds, f"{what} serving")
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}; it wrote:\n{self._stop(read=True)}") from None
        except BaseException:
            self._stop()
            raise
        if (code := self.process.poll()) is not None:
            raise AssertionError(f"{what} exited with {code}:\n{self._stop(read=True)}")
        return self.process

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    async def __aenter__(self) -> subprocess.Popen[str]:
        return await trio.to_thread.run_sync(self.__enter__)

    async def __aexit__(self, *exc_info: object) -> None:
        await trio.to_thread.run_sync(self._stop)

    def _serving_or_exited(self) -> bool:
        import httpx

        assert self.process is not None
        if self.process.poll() is not None:
            return True
        if self.port is not None and not listening(self.port):
            return False
        if self.admin_url is not None:
            try:
                answer = httpx.get(f"{self.admin_url}{self.path}", timeout=2, verify=self.verify)
            except httpx.TransportError:
                return False
            return answer.status_code == 200
        return True

    def _stop(self, *, read: bool = False) -> str:
        """Stop it if it runs and close its output; what it wrote, if `read`."""
        process = self.process
        assert process is not None
        if process.poll() is None:
            process.terminate()  # SIGTERM to its PID: only the process this test started
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        output = ""
        if self.log is not None:
            if read:
                self.log.seek(0)
                output = self.log.read()
            self.log.close()
        if process.stdout is not None:
            if read:
                output = process.stdout.read()
            process.stdout.close()
        return output


def serve_process(
    *args: str,
    env: Mapping[str, str] | None = None,
    admin_url: str | None = None,
    path: str = "/healthz",
    verify: ssl.SSLContext | bool = True,
    port: int | None = None,
    capture: bool = False,
    seconds: float = 30,
) -> ServeProcess:
    """`tlsgate serve --bind-address 127.0.0.1 ARGS...` as a user runs it, in a real process
    with environment `env` (default: this one's); a context manager, `with` in sync tests and
    `async with` in Trio tests (there the waits run in a thread), yielding the `Popen` for
    tests that send it signals or read its output.

    Entered once it serves: `admin_url` + `path` answers 200 (over `verify`), and `port`
    accepts a connection, for those given; with neither, at once (for a test that waits on a
    log line, where a probe connection would show in the log). Fails after `seconds`, or as
    soon as the process exits, with what it wrote (its stdout and stderr, merged). With
    `capture` that output is the text pipe `process.stdout`, for the test to read (a pipe can
    fill: a test that makes it log much reads as it goes); without, a temporary file. On exit
    it is stopped by PID (SIGTERM, 20 s to exit, then SIGKILL) and its output closed."""
    return ServeProcess(
        args,
        env=env,
        admin_url=admin_url,
        path=path,
        verify=verify,
        port=port,
        capture=capture,
        seconds=seconds,
    )


def serve_manifests(directory: Path, manifests: str, *args: str, **options: Any) -> ServeProcess:
    """`serve_process` bootstrapped with `manifests` (written to a file in `directory`), with
    no admin API and no store: the usual setup of a data-plane test in a real process."""
    bootstrap = directory / "gateway.yaml"
    bootstrap.write_text(manifests)
    base = ["--bootstrap", str(bootstrap), "--admin", "", "--state-dir", ""]
    return serve_process(*base, *args, **options)
