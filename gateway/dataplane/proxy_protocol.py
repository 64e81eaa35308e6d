"""The PROXY protocol, versions 1 and 2: reading the header a load balancer puts before a
connection's first byte, and writing one for a backend (issue 14; API.md "Traffic policies").
The reference is HAProxy's `doc/proxy-protocol.txt` (2020-03-05); section numbers below are
its.

Pure (sans-IO), like the ClientHello parser. `parse` takes the bytes received so far and says
either what the header is and how long it is (so the caller hands exactly the bytes after it
to the ClientHello parser: nothing past the header is read as header), or how many more bytes
it needs before it can say more (so a header sent one byte at a time costs linear work), or
why the bytes are not a header. It is strict where the specification is: a v1 line is at most
107 bytes, fields are separated by single spaces, ports are decimal without sign; a v2 header
is a signature, version 2, a known command, family and transport, an address block of the
family's size, and TLVs that fit exactly.

Why not a library: PyPI's `proxy-protocol` (0.11.3) unpacks headers without I/O, but leaves
finding the end of a v1 line and its length bound to the caller, accepts ports that Python's
`int` accepts (`+1`, ` 1`, `1_0`), lets `struct.error` and `ValueError` out of a v2 header
whose address block is short, and takes a datagram transport for a stream. Those are the
bounds this parser exists for; it is small enough to read whole.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from collections.abc import Sequence
from typing import Final

import attrs

#: §2.2: the v2 signature, and the v1 one (§2.1).
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
V1_SIGNATURE: Final = b"PROXY "
#: §2.1: "a receiver must not try to read more than 107 bytes" for a v1 line, CRLF included.
V1_MAX_LENGTH: Final = 107
#: §2.2: the fixed part of a v2 header; its length field counts what follows (at most 65535).
V2_FIXED: Final = 16
V2_MAX_LENGTH: Final = V2_FIXED + 0xFFFF

#: §2.2.1: TLV types this gateway reads or writes.
PP2_TYPE_ALPN: Final = 0x01
PP2_TYPE_AUTHORITY: Final = 0x02

_V2_COMMAND_LOCAL, _V2_COMMAND_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_TRANSPORT_UNSPEC, _TRANSPORT_STREAM = 0x0, 0x1
#: §2.2: the address block's size for each family.
_ADDRESS_BLOCK: Final = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}

Address = tuple[str, int]


class ProxyHeaderError(Exception):
    """The bytes are not a PROXY protocol header (the connection is closed)."""


class Command(enum.Enum):
    #: The connection is the sender's own (a health check): its real addresses apply.
    LOCAL = "LOCAL"
    #: The connection is relayed for a client: the header's addresses apply.
    PROXY = "PROXY"


@attrs.frozen
class ProxyHeader:
    version: int
    command: Command
    #: The client's address and port, and the address and port it connected to; None when
    #: the header carries none (v2 LOCAL or AF_UNSPEC, v1 UNKNOWN, a UNIX socket): then the
    #: connection's own addresses stand.
    source: Address | None
    destination: Address | None
    #: v2 TLVs as (type, value), in the order sent.
    tlvs: tuple[tuple[int, bytes], ...]
    #: The header's length: the bytes after it are the connection's own.
    length: int

    def tlv(self, kind: int) -> bytes | None:
        for found, value in self.tlvs:
            if found == kind:
                return value
        return None


@attrs.frozen
class NeedMore:
    """Too few bytes to decide: call again once at least `total` bytes have arrived."""

    total: int


def could_be_header(data: bytes | bytearray | memoryview) -> bool:
    """Do the first bytes start like a PROXY header (either version)? False as soon as one
    byte says otherwise: a ClientHello begins with 0x16, never with `P` or CR."""
    head = bytes(data[: len(V2_SIGNATURE)])
    return V2_SIGNATURE.startswith(head) or V1_SIGNATURE.startswith(head[: len(V1_SIGNATURE)])


def parse(data: bytes | bytearray | memoryview) -> ProxyHeader | NeedMore:
    """The header at the start of `data`, or what is needed to decide; ProxyHeaderError if
    the bytes are not one."""
    view = memoryview(data) if not isinstance(data, memoryview) else data
    if not view:
        return NeedMore(1)
    if view[0] == V2_SIGNATURE[0]:
        return _parse_v2(view)
    if view[0] == V1_SIGNATURE[0]:
        return _parse_v1(view)
    raise ProxyHeaderError("not a PROXY protocol header")


def _parse_v1(view: memoryview) -> ProxyHeader | NeedMore:
    window = bytes(view[:V1_MAX_LENGTH])
    if not V1_SIGNATURE.startswith(window[: len(V1_SIGNATURE)]):
        raise ProxyHeaderError("not a PROXY protocol header")
    end = window.find(b"\r\n")
    if end < 0:
        if len(window) >= V1_MAX_LENGTH:
            raise ProxyHeaderError(f"a v1 header longer than {V1_MAX_LENGTH} bytes")
        if b"\n" in window or b"\r" in window[:-1]:
            raise ProxyHeaderError("a v1 header whose line does not end with CRLF")
        return NeedMore(len(window) + 1)
    line = window[len(V1_SIGNATURE) : end]
    length = end + 2
    if line == b"UNKNOWN" or line.startswith(b"UNKNOWN "):
        # §2.1: the receiver ignores whatever follows UNKNOWN on the line.
        return ProxyHeader(1, Command.PROXY, None, None, (), length)
    parts = line.split(b" ")
    if len(parts) != 5:
        raise ProxyHeaderError("a v1 header needs a protocol, two addresses and two ports")
    protocol, source, destination, source_port, destination_port = parts
    if protocol not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError(f"a v1 header with protocol {protocol!r}")
    version = 4 if protocol == b"TCP4" else 6
    return ProxyHeader(
        1,
        Command.PROXY,
        (_v1_address(source, version), _v1_port(source_port)),
        (_v1_address(destination, version), _v1_port(destination_port)),
        (),
        length,
    )


def _v1_address(text: bytes, version: int) -> str:
    try:
        address = ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderError(f"a v1 header with address {text!r}") from None
    if address.version != version:
        raise ProxyHeaderError(f"a v1 header with an IPv{address.version} address for TCP{version}")
    return str(address)


def _v1_port(text: bytes) -> int:
    if not (1 <= len(text) <= 5 and text.isdigit() and text.isascii()) or int(text) > 0xFFFF:
        raise ProxyHeaderError(f"a v1 header with port {text!r}")
    return int(text)


def _parse_v2(view: memoryview) -> ProxyHeader | NeedMore:
    head = bytes(view[:V2_FIXED])
    if not V2_SIGNATURE.startswith(head[: len(V2_SIGNATURE)]):
        raise ProxyHeaderError("not a PROXY protocol header")
    if len(head) < V2_FIXED:
        return NeedMore(V2_FIXED)
    version_command, family_transport, size = struct.unpack_from("!BBH", head, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"a PROXY protocol header of version {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (_V2_COMMAND_LOCAL, _V2_COMMAND_PROXY):
        raise ProxyHeaderError(f"a v2 header with command {command}")
    family, transport = family_transport >> 4, family_transport & 0x0F
    if family not in _ADDRESS_BLOCK:
        raise ProxyHeaderError(f"a v2 header with address family {family}")
    if command == _V2_COMMAND_PROXY and transport not in (_TRANSPORT_UNSPEC, _TRANSPORT_STREAM):
        # A listener is a TCP socket: a datagram's addresses describe no connection here.
        raise ProxyHeaderError(f"a v2 header with transport {transport}, not a stream")
    length = V2_FIXED + size
    if len(view) < length:
        return NeedMore(length)
    block = _ADDRESS_BLOCK[family]
    if size < block:
        raise ProxyHeaderError(f"a v2 header of {size} bytes cannot hold its addresses")
    body = bytes(view[V2_FIXED:length])
    source = destination = None
    if command == _V2_COMMAND_PROXY and family in (_AF_INET, _AF_INET6):
        width = 4 if family == _AF_INET else 16
        source_ip, destination_ip = body[:width], body[width : 2 * width]
        source_port, destination_port = struct.unpack_from("!HH", body, 2 * width)
        source = (str(ipaddress.ip_address(source_ip)), source_port)
        destination = (str(ipaddress.ip_address(destination_ip)), destination_port)
    tlvs = _tlvs(body[block:])
    return ProxyHeader(2, Command(("LOCAL", "PROXY")[command]), source, destination, tlvs, length)


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    """§2.2.1: type (1 byte), length (2 bytes), value; they must fill the rest exactly."""
    found = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyHeaderError("a v2 header whose TLVs do not fill it")
        kind, size = struct.unpack_from("!BH", data, offset)
        offset += 3
        if offset + size > len(data):
            raise ProxyHeaderError(f"a v2 TLV of {size} bytes past the header's end")
        found.append((kind, data[offset : offset + size]))
        offset += size
    return tuple(found)


# --- writing (to backends) -------------------------------------------------------------------


def _families(source: Address, destination: Address) -> tuple[str, str, int]:
    """Both addresses in one family: an IPv4 one becomes IPv4-mapped IPv6 when the other is
    IPv6 (as HAProxy does), since a header carries one family."""
    one, two = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if one.version == two.version:
        return str(one), str(two), one.version
    mapped = [ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a for a in (one, two)]
    return str(mapped[0]), str(mapped[1]), 6


def v1_header(source: Address, destination: Address) -> bytes:
    """§2.1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n`."""
    one, two, version = _families(source, destination)
    return f"PROXY TCP{version} {one} {two} {source[1]} {destination[1]}\r\n".encode("ascii")


def v2_header(
    source: Address, destination: Address, tlvs: Sequence[tuple[int, bytes]] = ()
) -> bytes:
    """§2.2: a PROXY command over a stream, the addresses, then the TLVs given (a value of
    more than 65535 bytes, or a header past 65535, is a ValueError)."""
    one, two, version = _families(source, destination)
    family = _AF_INET if version == 4 else _AF_INET6
    addresses = (
        ipaddress.ip_address(one).packed
        + ipaddress.ip_address(two).packed
        + struct.pack("!HH", source[1], destination[1])
    )
    extra = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    size = len(addresses) + len(extra)
    if size > 0xFFFF or any(len(value) > 0xFFFF for _, value in tlvs):
        raise ValueError("a PROXY v2 header holds at most 65535 bytes after its fixed part")
    fixed = V2_SIGNATURE + struct.pack(
        "!BBH", 0x20 | _V2_COMMAND_PROXY, family << 4 | _TRANSPORT_STREAM, size
    )
    return fixed + addresses + extra
