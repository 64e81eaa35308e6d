"""The admin listener's settings, socket and TLS context, without the HTTP stack: the
composition root configures the admin API from here and imports Hypercorn only to serve it.

I/O (binds sockets, reads certificate files).
"""

from __future__ import annotations

import socket
import ssl

import attrs

from gateway.dataplane.sockets import listening_socket


class AdminTLSError(Exception):
    """A certificate, key or CA file of the admin API cannot be used; the message says which."""


@attrs.frozen(kw_only=True)
class AdminLimits:
    #: Admin connections served at once; the data plane's connection limit leaves room for
    #: them (`server.connection_limit`), so the admin API can never take its descriptors.
    max_connections: int = 64
    #: Seconds for a request head to arrive, and for an idle keep-alive connection to stay.
    keep_alive_timeout: float = 5.0
    #: Seconds without a byte while a request is being read.
    read_timeout: float = 10.0
    #: Seconds one write toward the client may block (a client that does not read).
    write_timeout: float = 10.0
    #: Seconds for a TLS handshake to finish.
    handshake_timeout: float = 10.0
    #: Concurrent HTTP/2 streams per connection.
    h2_max_streams: int = 8


def bind(host: str, port: int, backlog: int = 128) -> socket.socket:
    """The admin listening socket, bound now so that a taken address fails the start with a
    plain OSError (the caller says which address, in one line)."""
    return listening_socket(host, port, backlog)


def admin_tls_context(
    cert: str | None, key: str | None, client_ca: str | None = None
) -> ssl.SSLContext:
    """The admin API's server context: TLS 1.2 or later, HTTP/1.1 and h2 by ALPN (kubectl
    offers h2), and with `client_ca` a client certificate is required (mutual TLS)."""
    if not cert or not key:
        raise AdminTLSError("--admin-tls-cert and --admin-tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(["h2", "http/1.1"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise AdminTLSError(f"admin TLS certificate {cert} / key {key}: {_reason(exc)}") from None
    if client_ca:
        try:
            context.load_verify_locations(client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise AdminTLSError(f"admin client CA {client_ca}: {_reason(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)
