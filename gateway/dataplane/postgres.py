"""PostgreSQL's plain-text requests before TLS (issue 14; API.md "PostgreSQL").

Pure (sans-IO). A PostgreSQL client that wants TLS first sends an SSLRequest: 8 bytes, a
length of 8 and the code 80877103, and waits for one byte, `S` (go on with TLS) or `N`
(PostgreSQL docs, "Protocol Flow", 55.2.10 "SSL Session Encryption"). One that may use GSSAPI
encryption sends a GSSENCRequest (code 80877104) first; `N` makes it fall back to an
SSLRequest on the same connection. Only then comes the ClientHello, and with it the SNI that
routes the connection. So a TLS listener reads these first: `prelude` says what the first
bytes of a connection are, and never needs more than 8 of them.

PostgreSQL 17's direct TLS (`sslnegotiation=direct`) sends the ClientHello at once, with the
ALPN protocol `postgresql`: that is plain TLS here.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

#: The SSLRequest and the GSSENCRequest, as a client sends them.
SSL_REQUEST: Final = struct.pack("!II", 8, 80877103)
GSSENC_REQUEST: Final = struct.pack("!II", 8, 80877104)
#: The answers: go on with TLS; not supported (the client goes on in plain text, or falls
#: back to an SSLRequest after a GSSENCRequest).
ACCEPT: Final = b"S"
REFUSE: Final = b"N"
#: The bytes a prelude takes; `prelude` decides once it has this many or fewer.
LENGTH: Final = len(SSL_REQUEST)


class Prelude(enum.Enum):
    #: Not a PostgreSQL request: the bytes are the ClientHello's (or nothing tlsgate serves,
    #: which the ClientHello parser says).
    TLS = "tls"
    SSL_REQUEST = "sslrequest"
    GSSENC_REQUEST = "gssencrequest"
    #: Too few bytes to tell yet.
    MORE = "more"


def prelude(data: bytes | bytearray | memoryview) -> Prelude:
    """What the first bytes of a connection are. A TLS record begins with its content
    type (22 for a handshake), a PostgreSQL request with its length's high byte (0), so
    the first byte almost always decides; only a prefix of a request waits for more."""
    if not data:
        return Prelude.MORE
    if data[0] != 0:
        return Prelude.TLS  # every TLS connection: decided by one byte
    head = bytes(data[:LENGTH])
    for request, kind in (
        (SSL_REQUEST, Prelude.SSL_REQUEST),
        (GSSENC_REQUEST, Prelude.GSSENC_REQUEST),
    ):
        if head == request:
            return kind
        if len(head) < LENGTH and request.startswith(head):
            return Prelude.MORE
    return Prelude.TLS
