"""A sans-IO TLS ClientHello parser: enough to route by SNI without decrypting.

Pure. A `ClientHelloParser` is fed the bytes of one connection as they arrive; `feed` returns the
`ClientHello`, `None` while more bytes are needed, or raises `ClientHelloError` as soon as the
bytes cannot be the start of a TLS handshake. The hello may be split across TCP segments and
fragmented over several TLS records (RFC 8446 §5.1); both are the normal case for clients
offering post-quantum key shares (~1.8 KB hellos). The parser keeps the record-reassembly state
between calls, so every byte is examined a bounded number of times whatever the fragmentation:
the work is linear in the bytes received (`scanned` counts it). `parse_client_hello(buffer)`
parses one complete buffer.
"""

from __future__ import annotations

from typing import Final

from attrs import frozen

#: A ClientHello larger than this is refused. Today's largest real hellos (X25519MLKEM768 key
#: shares plus a long cipher list and GREASE) are ~2 KB; 64 KiB leaves room for several
#: post-quantum shares and large PSK identities while bounding what one unauthenticated client
#: can make the gateway buffer.
MAX_HELLO_BYTES: Final = 64 * 1024
#: A ClientHello spread over more records than this is refused. RFC 8446 §5.1 lets a sender
#: fragment a handshake message over any number of records and forbids only zero-length
#: fragments, and OpenSSL servers accept that. Real clients send one record (a hello beyond 2^14
#: bytes would need ceil(size / 2^14), at most 5 at the 64 KiB cap); tools that dodge
#: middleboxes split it into many small records. 2048 admits a typical hello (up to ~2 KB,
#: post-quantum shares included) fragmented all the way down to 1-byte records; a bigger one
#: must use records of 32 bytes on average. It bounds what framing alone can cost: 2048 loop
#: steps and 10 KiB of headers per connection.
MAX_HELLO_RECORDS: Final = 2048

CONTENT_TYPE_HANDSHAKE: Final = 22
HANDSHAKE_CLIENT_HELLO: Final = 1
EXTENSION_SERVER_NAME: Final = 0
EXTENSION_ALPN: Final = 16
EXTENSION_SUPPORTED_VERSIONS: Final = 43
SERVER_NAME_HOST_NAME: Final = 0
#: TLSPlaintext.length MUST NOT exceed 2^14 (RFC 8446 §5.1).
MAX_RECORD_LENGTH: Final = 2**14
RECORD_HEADER: Final = 5


class ClientHelloError(ValueError):
    """The bytes are not a valid TLS ClientHello; the message says why (for the access log)."""


@frozen
class ClientHello:
    #: SNI host_name as sent (RFC 6066 §3), or None when absent.
    server_name: str | None
    alpn: tuple[bytes, ...]
    #: supported_versions (RFC 8446 §4.2.1) if sent, else the legacy_version alone.
    versions: tuple[int, ...]
    #: How many bytes of the stream the records holding the hello span (all the bytes fed, when
    #: the hello ends inside a record that has not fully arrived).
    length: int


class ClientHelloParser:
    """Reassembles the first handshake message of one connection from its TLS records
    (RFC 8446 §5.1) as the bytes arrive, then parses it.

    The state kept between calls: the partial header of the current record, how much of that
    record's payload is still to come, the handshake bytes so far and the message length. So
    each byte fed is looked at once by the record layer and once more by the body parser:
    `scanned` counts both and stays at most twice `fed`, however the hello is fragmented. Once it
    has returned a ClientHello or raised, the parser is spent: later calls return the same hello
    (the bytes after it are not its concern) or raise the same error."""

    __slots__ = (
        "_error",
        "_handshake",
        "_header",
        "_left",
        "_message_length",
        "_result",
        "fed",
        "max_records",
        "max_size",
        "records",
        "scanned",
    )

    def __init__(
        self, max_size: int = MAX_HELLO_BYTES, max_records: int = MAX_HELLO_RECORDS
    ) -> None:
        self.max_size = max_size
        self.max_records = max_records
        #: Bytes passed to `feed` up to and including the call that completed the hello.
        self.fed = 0
        #: Bytes examined: record headers and payloads as they arrive, then the hello body once.
        self.scanned = 0
        #: Records begun.
        self.records = 0
        self._header = b""  # the current record's header while it is incomplete
        self._left = 0  # payload bytes of the current record not yet seen
        self._handshake = bytearray()
        self._message_length = -1  # until the 4-byte handshake header is in
        self._result: ClientHello | None = None
        self._error: str | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> ClientHello | None:
        """The next bytes of the stream: the ClientHello once complete, else None."""
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise ClientHelloError(self._error)
        try:
            self._result = self._feed(data)
        except ClientHelloError as exc:
            self._error = str(exc)
            raise
        return self._result

    def _feed(self, data: bytes | bytearray | memoryview) -> ClientHello | None:
        pos, end = 0, len(data)
        handshake = self._handshake
        while pos < end:
            if not self._left:
                pos = self._record_header(data, pos, end)
                if not self._left:
                    break  # the header is incomplete
            take = min(self._left, end - pos)
            self._left -= take
            self.scanned += take
            handshake += data[pos : pos + take]
            pos += take
            message_length = self._message_length
            if message_length < 0:
                if len(handshake) < 4:
                    continue
                message_length = self._message_length = self._start(handshake)
            if len(handshake) >= message_length + 4:
                # The hello ends in this record; when the record is complete `pos` is its end,
                # else the whole chunk was taken and `pos` is the end of the bytes fed.
                length = self.fed + pos
                self.fed += end
                self.scanned += message_length
                return _parse_body(bytes(handshake[4 : 4 + message_length]), length)
        self.fed += end
        return None

    def _record_header(self, data: bytes | bytearray | memoryview, pos: int, end: int) -> int:
        """Read a record header at `pos`: all five bytes in this chunk (the usual case), or
        pieced together over calls, failing on its first bytes (plain HTTP, garbage) without
        waiting for the rest. Sets `_left` once the header is complete; returns the new pos."""
        partial = self._header
        header: bytes | bytearray | memoryview
        if partial or end - pos < RECORD_HEADER:
            header = partial + bytes(data[pos : pos + RECORD_HEADER - len(partial)])
            self.scanned += len(header) - len(partial)
            pos += len(header) - len(partial)
            if len(header) < RECORD_HEADER:
                _check_record_prefix(header)
                self._header = header
                return pos
            self._header = b""
        else:
            header = data[pos : pos + RECORD_HEADER]
            self.scanned += RECORD_HEADER
            pos += RECORD_HEADER
        content_type, major, length = header[0], header[1], (header[3] << 8) | header[4]
        if content_type != CONTENT_TYPE_HANDSHAKE:
            # Also refuses other record types interleaved with the hello (RFC 8446 §5.1).
            raise ClientHelloError(f"not a TLS handshake record (content type {content_type})")
        if major != 3:
            raise ClientHelloError(f"unsupported record version {major}.{header[2]}")
        if length == 0 or length > MAX_RECORD_LENGTH:
            # Zero-length handshake fragments are forbidden too (RFC 8446 §5.1).
            raise ClientHelloError(f"invalid handshake record length {length}")
        self.records += 1
        if self.records > self.max_records:
            raise ClientHelloError(f"ClientHello spread over more than {self.max_records} records")
        self._left = length
        return pos

    def _start(self, handshake: bytearray) -> int:
        """The handshake header (RFC 8446 §4): type and length, refused before the body comes."""
        if handshake[0] != HANDSHAKE_CLIENT_HELLO:
            raise ClientHelloError(
                f"first handshake message is type {handshake[0]}, not a ClientHello"
            )
        message_length = int.from_bytes(handshake[1:4])
        if message_length + 4 > self.max_size:
            raise ClientHelloError(
                f"ClientHello of {message_length} bytes exceeds the {self.max_size}-byte limit"
            )
        return message_length


def parse_client_hello(
    buffer: bytes | bytearray | memoryview, max_size: int = MAX_HELLO_BYTES
) -> ClientHello | None:
    """Parse everything read so far in one go (tests, the benchmark); a connection feeds a
    `ClientHelloParser` instead, so that it does not rescan its buffer on every receive."""
    return ClientHelloParser(max_size).feed(buffer)


def _check_record_prefix(prefix: bytes) -> None:
    """Fail fast on the first bytes: plain HTTP or garbage is refused without waiting for more."""
    if len(prefix) >= 1 and prefix[0] != CONTENT_TYPE_HANDSHAKE:
        raise ClientHelloError(f"not a TLS handshake record (content type {prefix[0]})")
    if len(prefix) >= 2 and prefix[1] != 3:
        raise ClientHelloError(f"unsupported record version {prefix[1]}")


class _Reader:
    """Bounds-checked reads over one byte string; every overrun is a ClientHelloError.
    Error messages are built only on error: a hello has a dozen vectors and ~15 extensions,
    and this runs once per connection."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.end - self.pos:
            raise ClientHelloError(f"truncated {what}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def skip(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise ClientHelloError(f"truncated {what}")
        self.pos += n

    def uint(self, size: int, what: str) -> int:
        pos = self.pos
        if pos + size > self.end:
            raise ClientHelloError(f"truncated {what}")
        self.pos = pos + size
        data = self.data
        if size == 1:
            return data[pos]
        if size == 2:
            return (data[pos] << 8) | data[pos + 1]
        return int.from_bytes(data[pos : pos + size])

    def vector(self, length_size: int, what: str) -> _Reader:
        pos, data = self.pos, self.data
        if pos + length_size > self.end:
            raise ClientHelloError(f"truncated {what} length")
        length = data[pos] if length_size == 1 else (data[pos] << 8) | data[pos + 1]
        start = pos + length_size
        if start + length > self.end:
            raise ClientHelloError(f"truncated {what}")
        self.pos = start + length
        return _Reader(data, start, start + length)


def _parse_body(body: bytes, consumed: int) -> ClientHello:
    """ClientHello fields of RFC 8446 §4.1.2 (the TLS 1.2 layout of RFC 5246 §7.4.1.2 is the
    same on the wire)."""
    r = _Reader(body)
    legacy_version = r.uint(2, "legacy_version")
    r.skip(32, "random")
    if r.vector(1, "legacy_session_id").remaining() > 32:
        raise ClientHelloError("legacy_session_id longer than 32 bytes")
    suites = r.vector(2, "cipher_suites")
    if suites.remaining() < 2 or suites.remaining() % 2:
        raise ClientHelloError("invalid cipher_suites length")
    if r.vector(1, "legacy_compression_methods").remaining() < 1:
        raise ClientHelloError("empty legacy_compression_methods")
    server_name: str | None = None
    alpn: tuple[bytes, ...] = ()
    versions: tuple[int, ...] = (legacy_version,)
    if r.remaining():
        extensions = r.vector(2, "extensions")
        if r.remaining():
            raise ClientHelloError("trailing bytes after the extensions")
        seen: set[int] = set()
        # The hot loop of the parser: plain index arithmetic, a reader only for the three
        # extensions that are read.
        pos, end = extensions.pos, extensions.end
        while pos < end:
            if pos + 4 > end:
                raise ClientHelloError("truncated extension header")
            ext_type = (body[pos] << 8) | body[pos + 1]
            start = pos + 4
            pos = start + ((body[pos + 2] << 8) | body[pos + 3])
            if pos > end:
                raise ClientHelloError(f"truncated extension {ext_type}")
            if ext_type in seen:  # RFC 8446 §4.2: at most one extension of each type
                raise ClientHelloError(f"duplicate extension {ext_type}")
            seen.add(ext_type)
            if ext_type == EXTENSION_SERVER_NAME:
                server_name = _server_name(_Reader(body, start, pos))
            elif ext_type == EXTENSION_ALPN:
                alpn = _alpn(_Reader(body, start, pos))
            elif ext_type == EXTENSION_SUPPORTED_VERSIONS:
                versions = _supported_versions(_Reader(body, start, pos))
    elif r.remaining():
        raise ClientHelloError("trailing bytes")
    return ClientHello(server_name=server_name, alpn=alpn, versions=versions, length=consumed)


def _server_name(ext: _Reader) -> str | None:
    """RFC 6066 §3: a list with at most one name per type; host_name is ASCII (A-labels)."""
    names = ext.vector(2, "server_name_list")
    if ext.remaining():
        raise ClientHelloError("trailing bytes in server_name")
    host: str | None = None
    seen: set[int] = set()
    while names.remaining():
        name_type = names.uint(1, "server name type")
        value = names.vector(2, "server name")
        raw = value.take(value.remaining(), "server name")
        if name_type in seen:
            raise ClientHelloError(f"duplicate server name of type {name_type}")
        seen.add(name_type)
        if name_type == SERVER_NAME_HOST_NAME:
            if not raw:
                raise ClientHelloError("empty host_name")
            try:
                host = raw.decode("ascii")
            except UnicodeDecodeError:
                raise ClientHelloError("host_name is not ASCII") from None
    if not seen:
        raise ClientHelloError("empty server_name_list")
    return host


def _alpn(ext: _Reader) -> tuple[bytes, ...]:
    """RFC 7301 §3.1: a non-empty list of non-empty protocol names."""
    names = ext.vector(2, "protocol_name_list")
    protocols = []
    while names.remaining():
        name = names.vector(1, "protocol name")
        if not name.remaining():
            raise ClientHelloError("empty ALPN protocol name")
        protocols.append(name.take(name.remaining(), "protocol name"))
    if not protocols:
        raise ClientHelloError("empty ALPN list")
    return tuple(protocols)


def _supported_versions(ext: _Reader) -> tuple[int, ...]:
    versions = ext.vector(1, "supported_versions")
    if versions.remaining() < 2 or versions.remaining() % 2:
        raise ClientHelloError("invalid supported_versions length")
    return tuple(versions.uint(2, "version") for _ in range(versions.remaining() // 2))
