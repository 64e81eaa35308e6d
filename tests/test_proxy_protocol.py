"""gateway/dataplane/proxy_protocol.py: PROXY protocol v1 and v2 headers (HAProxy's
doc/proxy-protocol.txt), read strictly and bounded, written for backends; fuzzed."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dataplane.proxy_protocol import (
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    V1_MAX_LENGTH,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    Command,
    NeedMore,
    ProxyHeader,
    ProxyHeaderError,
    could_be_header,
    parse,
    v1_header,
    v2_header,
)

HELLO = b"\x16\x03\x01\x00\x05hello"  # what follows a header: never read as part of it


def test_v1_tcp4_and_tcp6_and_unknown() -> None:
    line = b"PROXY TCP4 203.0.113.7 192.0.2.1 51812 443\r\n"
    header = parse(line + HELLO)
    assert header == ProxyHeader(
        1, Command.PROXY, ("203.0.113.7", 51812), ("192.0.2.1", 443), (), len(line)
    )
    six = b"PROXY TCP6 2001:db8::7 2001:db8::1 51812 443\r\n"
    parsed = parse(six)
    assert isinstance(parsed, ProxyHeader)
    assert parsed.source == ("2001:db8::7", 51812)
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(1, Command.PROXY, None, None, (), 15)
    unknown = b"PROXY UNKNOWN ffff:f...f:ffff 65535 65535\r\n"
    assert parse(unknown) == ProxyHeader(1, Command.PROXY, None, None, (), len(unknown))


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.7 192.0.2.1 +1 443\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 443\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1_0 443\r\n",
        b"PROXY TCP4 203.0.113.7  192.0.2.1 1 443\r\n",
        b"PROXY tcp4 203.0.113.7 192.0.2.1 1 443\r\n",
        b"PROXY TCP4 2001:db8::7 192.0.2.1 1 443\r\n",
        b"PROXY TCP6 203.0.113.7 2001:db8::1 1 443\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 443\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1 443\rX",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 1\r\n",
        b"PROXY UDP4 203.0.113.7 192.0.2.1 1 443\r\n",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 \xd9\xa1 443\r\n",  # an Arabic-Indic digit
        b"proxy TCP4 203.0.113.7 192.0.2.1 1 443\r\n",
        b"PROXY " + b"9" * (V1_MAX_LENGTH - 6),
    ],
)
def test_v1_refuses_what_the_grammar_does_not_allow(line: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(line)


def test_v1_waits_for_its_line_one_byte_at_a_time() -> None:
    line = b"PROXY TCP4 203.0.113.7 192.0.2.1 51812 443\r\n"
    for cut in range(1, len(line)):
        need = parse(line[:cut])
        assert need == NeedMore(cut + 1)
    assert isinstance(parse(line), ProxyHeader)


def test_v2_written_and_read_back_with_tlvs() -> None:
    tlvs = [(PP2_TYPE_AUTHORITY, b"db.example.com"), (PP2_TYPE_ALPN, b"postgresql")]
    data = v2_header(("203.0.113.7", 51812), ("192.0.2.1", 443), tlvs)
    header = parse(data + HELLO)
    assert isinstance(header, ProxyHeader)
    assert header.version == 2
    assert header.command is Command.PROXY
    assert header.source == ("203.0.113.7", 51812)
    assert header.destination == ("192.0.2.1", 443)
    assert header.tlv(PP2_TYPE_AUTHORITY) == b"db.example.com"
    assert header.tlv(PP2_TYPE_ALPN) == b"postgresql"
    assert header.length == len(data)
    # §2.2 byte by byte: the fixed part, then the whole length, and nothing is read past it.
    assert parse(data[:5]) == NeedMore(16)
    assert parse(data[:16]) == NeedMore(len(data))
    assert parse(data[:-1]) == NeedMore(len(data))


def test_v2_local_and_unspec_carry_no_addresses() -> None:
    local = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    assert parse(local) == ProxyHeader(2, Command.LOCAL, None, None, (), 16)
    unspec = V2_SIGNATURE + bytes([0x21, 0x00]) + struct.pack("!H", 0)
    assert parse(unspec) == ProxyHeader(2, Command.PROXY, None, None, (), 16)


def _v2(version_command: int, family_transport: int, body: bytes) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([version_command, family_transport])
        + struct.pack("!H", len(body))
        + body
    )


@pytest.mark.parametrize(
    "data",
    [
        _v2(0x11, 0x11, bytes(12)),  # version 1 under the v2 signature
        _v2(0x22, 0x11, bytes(12)),  # command 2
        _v2(0x21, 0x12, bytes(12)),  # a datagram
        _v2(0x21, 0x41, bytes(12)),  # family 4
        _v2(0x21, 0x11, bytes(11)),  # too short for two IPv4 addresses and ports
        _v2(0x21, 0x21, bytes(35)),  # too short for IPv6
        _v2(0x21, 0x11, bytes(12) + b"\x01\x00"),  # a TLV without its length
        _v2(0x21, 0x11, bytes(12) + b"\x01\x00\x05abc"),  # a TLV past the end
        b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8),
    ],
)
def test_v2_refuses_malformed_headers(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)


def test_a_clienthello_is_not_a_header() -> None:
    assert not could_be_header(HELLO)
    assert could_be_header(b"PROX")
    assert could_be_header(b"\r\n\r\n")
    with pytest.raises(ProxyHeaderError):
        parse(HELLO)


def test_headers_for_backends_map_mixed_families_to_ipv6() -> None:
    assert v1_header(("203.0.113.7", 51812), ("2001:db8::1", 443)) == (
        b"PROXY TCP6 ::ffff:cb00:7107 2001:db8::1 51812 443\r\n"
    )
    header = parse(v2_header(("2001:db8::7", 1), ("192.0.2.1", 443)))
    assert isinstance(header, ProxyHeader)
    assert header.destination == ("::ffff:c000:201", 443)


addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
ports = st.integers(0, 0xFFFF)
tlv_lists = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=64)), max_size=4)


@given(addresses, ports, addresses, ports, tlv_lists, st.binary(max_size=32))
def test_written_headers_read_back_exactly(
    source: str,
    source_port: int,
    destination: str,
    destination_port: int,
    tlvs: list[tuple[int, bytes]],
    after: bytes,
) -> None:
    both_v4 = ipaddress.ip_address(source).version == ipaddress.ip_address(destination).version
    for data, carried in (
        (v1_header((source, source_port), (destination, destination_port)), ()),
        (v2_header((source, source_port), (destination, destination_port), tlvs), tuple(tlvs)),
    ):
        header = parse(data + after)
        assert isinstance(header, ProxyHeader)
        assert header.length == len(data)
        assert header.tlvs == carried
        assert header.source is not None
        assert header.destination is not None
        assert (header.source[1], header.destination[1]) == (source_port, destination_port)
        if both_v4:
            assert (header.source[0], header.destination[0]) == (
                str(ipaddress.ip_address(source)),
                str(ipaddress.ip_address(destination)),
            )


@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(max_size=120).map(lambda b: b"PROXY " + b),
        st.binary(max_size=120).map(lambda b: V2_SIGNATURE + b),
        st.binary(max_size=120).map(lambda b: b"PROXY TCP4 " + b),
    )
)
def test_any_bytes_get_a_header_a_need_or_an_error_and_nothing_else(data: bytes) -> None:
    try:
        result = parse(data)
    except ProxyHeaderError:
        return
    if isinstance(result, NeedMore):
        assert len(data) < result.total <= V2_MAX_LENGTH
        return
    assert result.length <= len(data)
    assert result.length <= V2_MAX_LENGTH
    # The header alone says the same: nothing after it was read.
    assert parse(data[: result.length]) == result


@given(st.binary(min_size=1, max_size=150).map(lambda b: V2_SIGNATURE + b"\x21\x11" + b))
def test_feeding_as_needed_costs_a_bounded_number_of_parses(data: bytes) -> None:
    """The caller parses again only once `NeedMore.total` bytes are in: a v2 header takes
    at most three parses however it is split."""
    calls, have, result = 0, 1, None
    while have <= len(data):
        calls += 1
        try:
            result = parse(data[:have])
        except ProxyHeaderError:
            break
        if isinstance(result, ProxyHeader):
            break
        have = max(have + 1, result.total)
    assert calls <= 3
