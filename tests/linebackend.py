"""A small line-protocol backend, with or without TLS: what the tests and the demo route to.

With --http it answers every HTTP request with the JSON of `TEST` (for curl). Otherwise, on
connect (after the TLS handshake, if any) it greets first, as servers of MQTT-like or
Postgres-like protocols may: `HELLO <name>`. Then, one command per line:
`PING` -> `PONG`; `IS_TLS` -> `true`/`false`; `TEST` -> JSON naming the backend, the SNI it saw
and whether the connection is TLS; `ECHO <text>` -> `<text>`; `SINK` -> reads until EOF and
answers the byte count; `SOURCE <n>` -> sends n bytes then closes; `RESET` -> closes with a TCP
reset; `QUIT` -> closes. Run as a process with `python -m tests.linebackend --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import socketserver
import ssl
import struct
import sys
import threading
from typing import Any


class _Handler(socketserver.StreamRequestHandler):
    server: LineBackend

    def handle(self) -> None:
        # Without TCP_NODELAY the greeting after the handshake waits for a delayed ACK (40 ms).
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.server.tls_context is None:
            with contextlib.suppress(OSError):
                self._session(None)
            return
        try:
            tls = self.server.tls_context.wrap_socket(self.request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with tls:
            self.connection = tls
            self.rfile = tls.makefile("rb")
            self.wfile = tls.makefile("wb", buffering=0)  # type: ignore[assignment]
            with contextlib.suppress(OSError):
                self._session(getattr(tls, "tlsgate_sni", None))
            self.rfile.close()
            self.wfile.close()
            with contextlib.suppress(OSError, ValueError):
                tls.settimeout(1)
                tls.unwrap()  # close_notify, so clients see a clean TLS close

    def _session(self, sni: str | None) -> None:
        tls = self.server.tls_context is not None
        if self.server.http:
            self._http(sni, tls)
            return
        self.wfile.write(f"HELLO {self.server.name}\n".encode())
        for raw in self.rfile:
            line = raw.decode(errors="replace").rstrip("\r\n")
            command, _, argument = line.partition(" ")
            if command == "PING":
                self.wfile.write(b"PONG\n")
            elif command == "IS_TLS":
                self.wfile.write(b"true\n" if tls else b"false\n")
            elif command == "TEST":
                info = {"backend": self.server.name, "sni": sni, "tls": tls}
                self.wfile.write(json.dumps(info).encode() + b"\n")
            elif command == "ECHO":
                self.wfile.write(argument.encode() + b"\n")
            elif command == "SINK":
                total = sum(len(chunk) for chunk in iter(lambda: self.rfile.read1(1 << 20), b""))
                self.wfile.write(f"{total}\n".encode())
                return
            elif command == "SOURCE":
                remaining = int(argument)
                block = b"x" * (1 << 20)
                while remaining > 0:
                    self.wfile.write(block[:remaining])
                    remaining -= min(remaining, len(block))
                return
            elif command == "RESET":
                raw_sock = self.connection
                raw_sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                raw_sock.close()
                return
            elif command == "QUIT" or not line:
                return
            else:
                self.wfile.write(b"ERROR unknown command\n")

    def _http(self, sni: str | None, tls: bool) -> None:
        """Answer HTTP requests (for curl) with the same JSON as TEST."""
        while True:
            request = self.rfile.readline()
            if not request:
                return
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # headers
            body = json.dumps({"backend": self.server.name, "sni": sni, "tls": tls}) + "\n"
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
            )


class LineBackend(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        name: str,
        address: tuple[str, int] = ("127.0.0.1", 0),
        tls_context: ssl.SSLContext | None = None,
        http: bool = False,
    ) -> None:
        self.name = name
        self.http = http
        self.tls_context = tls_context
        if tls_context is not None:
            tls_context.sni_callback = _remember_sni
            # A client's TCP FIN without close_notify ends its input (`SINK`), as for plain TCP.
            tls_context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    def start(self) -> LineBackend:
        threading.Thread(
            target=self.serve_forever, name=f"backend-{self.name}", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _remember_sni(tls: Any, name: str | None, _context: ssl.SSLContext) -> None:
    tls.tlsgate_sni = name  # the SSLSocket being handshaken: read back by the handler


def tls_server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linebackend", description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert", help="PEM certificate chain: serve TLS")
    parser.add_argument("--key", help="PEM private key for --cert")
    parser.add_argument("--http", action="store_true", help="answer HTTP requests instead")
    args = parser.parse_args(argv)
    context = tls_server_context(args.cert, args.key) if args.cert else None
    server = LineBackend(args.name, (args.host, args.port), context, http=args.http)
    print(f"listening {args.host} {server.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
