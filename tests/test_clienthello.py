"""The ClientHello parser against real hellos from Python's ssl (OpenSSL), split at every byte,
fragmented across records, and fuzzed (only a ClientHello, None or ClientHelloError come out)."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.clienthello import ClientHello, ClientHelloError, parse_client_hello


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
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def fragment(hello: bytes, size: int) -> bytes:
    """Re-frame one handshake record into records of at most `size` bytes (RFC 8446 §5.1)."""
    assert hello[0] == 22
    header, body = hello[1:3], hello[5:]
    out = bytearray()
    for start in range(0, len(body), size):
        chunk = body[start : start + size]
        out += bytes([22]) + header + len(chunk).to_bytes(2) + chunk
    return bytes(out)


@pytest.mark.parametrize(
    ("server_name", "alpn", "maximum"),
    [
        ("db.example.com", None, ssl.TLSVersion.TLSv1_3),
        ("a.b.c.example.com", ["postgresql"], ssl.TLSVersion.TLSv1_3),
        ("localhost", ["h2", "http/1.1"], ssl.TLSVersion.TLSv1_2),
        ("x" * 63 + ".example.com", None, ssl.TLSVersion.TLSv1_2),
    ],
)
def test_real_hellos(server_name: str, alpn: list[str] | None, maximum: ssl.TLSVersion) -> None:
    data = real_hello(server_name, alpn, maximum)
    hello = parse_client_hello(data)
    assert isinstance(hello, ClientHello)
    assert hello.server_name == server_name
    assert hello.alpn == tuple(p.encode() for p in alpn or ())
    assert hello.length == len(data)
    if maximum == ssl.TLSVersion.TLSv1_3:
        assert 0x0304 in hello.versions
    else:
        assert 0x0304 not in hello.versions


def test_no_sni_and_ip_literal() -> None:
    # OpenSSL sends no SNI for an IP literal (RFC 6066 §3 forbids it) nor without a name.
    for name in (None, "10.1.2.3"):
        hello = parse_client_hello(real_hello(name))
        assert isinstance(hello, ClientHello) and hello.server_name is None


def test_every_prefix_needs_more_bytes() -> None:
    data = real_hello("split.example.com", ["h2"])
    for cut in range(len(data)):
        assert parse_client_hello(data[:cut]) is None, cut
    assert isinstance(parse_client_hello(data), ClientHello)


@pytest.mark.parametrize("size", [1, 7, 100, 512])
def test_fragmented_across_records_and_split_everywhere(size: int) -> None:
    data = fragment(real_hello("records.example.com"), size)
    for cut in range(len(data)):
        assert parse_client_hello(data[:cut]) is None, cut
    hello = parse_client_hello(data)
    assert isinstance(hello, ClientHello) and hello.server_name == "records.example.com"


def test_bytes_after_the_hello_are_ignored() -> None:
    data = real_hello("db.example.com")
    hello = parse_client_hello(data + b"\x17\x03\x03\x00\x05hello")
    assert isinstance(hello, ClientHello) and hello.length == len(data)


def _hello_with_extensions(extensions: bytes) -> bytes:
    body = (
        b"\x03\x03"
        + bytes(32)
        + b"\x00"
        + b"\x00\x02\x13\x01"
        + b"\x01\x00"
        + len(extensions).to_bytes(2)
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3) + body
    return b"\x16\x03\x01" + len(handshake).to_bytes(2) + handshake


def _sni(name: bytes) -> bytes:
    entry = b"\x00" + len(name).to_bytes(2) + name
    listing = len(entry).to_bytes(2) + entry
    return b"\x00\x00" + len(listing).to_bytes(2) + listing


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "content type 71"),
        (b"G", "content type 71"),
        (b"\x16\x02", "record version"),
        (b"\x80\x2e\x01\x03\x01", "content type 128"),  # SSLv2-style hello
        (b"\x15\x03\x03\x00\x02\x02\x28", "content type 21"),  # an alert
        (b"\x16\x03\x01\x00\x00", "record length 0"),
        (b"\x16\x03\x01\x40\x01" + bytes(10), "record length 16385"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not a ClientHello"),
        (b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", "exceeds"),
        (_hello_with_extensions(_sni(b"caf\xc3\xa9.example")), "not ASCII"),
        (_hello_with_extensions(_sni(b"a.example") + _sni(b"b.example")), "duplicate extension"),
        (_hello_with_extensions(_sni(b"")), "empty host_name"),
        (_hello_with_extensions(b"\x00\x00\x00\x05\x00\x03\x00\x00"), "truncated"),
        (_hello_with_extensions(b"\x00\x10\x00\x02\x00\x00"), "empty ALPN list"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(ClientHelloError, match=reason):
        parse_client_hello(data)


def test_handmade_hello_parses() -> None:
    hello = parse_client_hello(_hello_with_extensions(_sni(b"hand.example")))
    assert isinstance(hello, ClientHello) and hello.server_name == "hand.example"
    assert hello.versions == (0x0303,)


def test_size_cap_applies_before_the_bytes_arrive() -> None:
    header = b"\x16\x03\x01\x40\x00\x01" + (70_000).to_bytes(3)
    with pytest.raises(ClientHelloError, match="exceeds"):
        parse_client_hello(header)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        result = parse_client_hello(data)
    except ClientHelloError:
        return
    assert result is None or isinstance(result, ClientHello)


HELLO = real_hello("fuzz.example.com", ["h2"])


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(HELLO) - 1), st.integers(0, 255), st.integers(0, len(HELLO)))
def test_fuzz_mutated_real_hello(position: int, value: int, cut: int) -> None:
    data = bytearray(HELLO)
    data[position] = value
    try:
        result = parse_client_hello(bytes(data[: max(cut, 1)]))
    except ClientHelloError:
        return
    assert result is None or isinstance(result, ClientHello)
