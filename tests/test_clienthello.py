"""The ClientHello parser against real hellos from Python's ssl (OpenSSL), split at every byte,
fragmented across records, fed byte by byte and record by record (the work stays linear), and
fuzzed (only a ClientHello, None or ClientHelloError come out)."""

from __future__ import annotations

import itertools
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.dataplane.clienthello import (
    MAX_HELLO_RECORDS,
    ClientHello,
    ClientHelloError,
    ClientHelloParser,
    parse_client_hello,
)

from .harness import real_hello


def records(hello: bytes, size: int) -> list[bytes]:
    """Re-frame one handshake record into records of at most `size` bytes (RFC 8446 §5.1)."""
    assert hello[0] == 22
    header, body = hello[1:3], hello[5:]
    return [
        bytes([22])
        + header
        + len(body[start : start + size]).to_bytes(2)
        + body[start : start + size]
        for start in range(0, len(body), size)
    ]


def fragment(hello: bytes, size: int) -> bytes:
    return b"".join(records(hello, size))


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
        assert isinstance(hello, ClientHello)
        assert hello.server_name is None


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
    assert isinstance(hello, ClientHello)
    assert hello.server_name == "records.example.com"


def test_bytes_after_the_hello_are_ignored() -> None:
    data = real_hello("db.example.com")
    hello = parse_client_hello(data + b"\x17\x03\x03\x00\x05hello")
    assert isinstance(hello, ClientHello)
    assert hello.length == len(data)


def hello_with_extensions(extensions: bytes) -> bytes:
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


def sni_extension(name: bytes) -> bytes:
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
        (hello_with_extensions(sni_extension(b"caf\xc3\xa9.example")), "not ASCII"),
        (
            hello_with_extensions(sni_extension(b"a.example") + sni_extension(b"b.example")),
            "duplicate extension",
        ),
        (hello_with_extensions(sni_extension(b"")), "empty host_name"),
        (hello_with_extensions(b"\x00\x00\x00\x05\x00\x03\x00\x00"), "truncated"),
        (hello_with_extensions(b"\x00\x10\x00\x02\x00\x00"), "empty ALPN list"),
    ],
)
def test_malformed(data: bytes, reason: str) -> None:
    with pytest.raises(ClientHelloError, match=reason):
        parse_client_hello(data)


def test_handmade_hello_parses() -> None:
    hello = parse_client_hello(hello_with_extensions(sni_extension(b"hand.example")))
    assert isinstance(hello, ClientHello)
    assert hello.server_name == "hand.example"
    assert hello.versions == (0x0303,)


def test_size_cap_applies_before_the_bytes_arrive() -> None:
    header = b"\x16\x03\x01\x40\x00\x01" + (70_000).to_bytes(3)
    with pytest.raises(ClientHelloError, match="exceeds"):
        parse_client_hello(header)


def _fed(chunks: list[bytes], parser: ClientHelloParser | None = None) -> ClientHello:
    """Feed the chunks in turn: None until the last one, which completes the hello."""
    parser = parser or ClientHelloParser()
    for chunk in chunks[:-1]:
        assert parser.feed(chunk) is None
    hello = parser.feed(chunks[-1])
    assert isinstance(hello, ClientHello)
    return hello


def test_fed_byte_by_byte() -> None:
    data = real_hello("bytes.example.com", ["h2"])
    parser = ClientHelloParser()
    hello = _fed([data[i : i + 1] for i in range(len(data))], parser)
    assert hello == parse_client_hello(data)
    assert (hello.server_name, hello.alpn, hello.length) == (
        "bytes.example.com",
        (b"h2",),
        len(data),
    )
    assert parser.fed == len(data)
    assert parser.records == 1
    assert parser.scanned <= 2 * parser.fed


@pytest.mark.parametrize("size", [1, 7, 100, 512])
def test_fed_record_by_record(size: int) -> None:
    data = real_hello("records.example.com")
    pieces = records(data, size)
    parser = ClientHelloParser()
    hello = _fed(pieces, parser)
    assert hello.server_name == "records.example.com"
    assert hello.length == sum(map(len, pieces))
    assert parser.records == len(pieces)
    assert parser.scanned <= 2 * parser.fed


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.lists(st.integers(0, 3000), max_size=30))
def test_any_chunking_of_fragmented_records_gives_the_same_hello(
    size: int, cuts: list[int]
) -> None:
    data = fragment(HELLO, size)
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    hello = _fed([data[a:b] for a, b in itertools.pairwise(bounds)])
    assert hello == parse_client_hello(data)
    assert hello.length == len(data)


def padded_hello(name: bytes, padding: int) -> bytes:
    """A hand-made hello grown with the padding extension (RFC 7685) to `padding` bytes."""
    return hello_with_extensions(
        sni_extension(name) + b"\x00\x15" + padding.to_bytes(2) + bytes(padding)
    )


def test_work_is_linear_in_the_bytes_of_a_hello_in_1_byte_records() -> None:
    """The attack of issue 9: a ~10 KB hello as 1-byte records, one record per receive. A parser
    that keeps its state examines each byte a bounded number of times; re-parsing the buffer
    after every receive (what the proxy did) examines it once per record: quadratic."""
    pieces = records(padded_hello(b"big.example.com", 10_000), 1)
    assert len(pieces) > 10_000
    parser = ClientHelloParser(max_records=len(pieces))
    hello = _fed(pieces, parser)
    assert hello.server_name == "big.example.com"
    assert parser.fed == hello.length == 6 * len(pieces)
    assert parser.scanned <= 2 * parser.fed

    # The old way on the first 1000 records alone already costs ~500 times their size.
    buffer, rescanned = bytearray(), 0
    for piece in pieces[:1000]:
        buffer += piece
        fresh = ClientHelloParser(max_records=len(pieces))
        assert fresh.feed(buffer) is None
        rescanned += fresh.scanned
    assert rescanned > 400 * len(buffer)


def test_records_beyond_the_cap_are_refused() -> None:
    pieces = records(real_hello("cap.example.com"), 1)
    assert len(pieces) <= MAX_HELLO_RECORDS  # a real hello in 1-byte records is admitted
    assert _fed(pieces, ClientHelloParser(max_records=len(pieces))).server_name == "cap.example.com"
    parser = ClientHelloParser(max_records=len(pieces) - 1)
    for piece in pieces[:-1]:
        assert parser.feed(piece) is None
    with pytest.raises(ClientHelloError, match=f"more than {len(pieces) - 1} records"):
        parser.feed(pieces[-1])
    # The default cap: a 10 KB hello in 1-byte records is refused after MAX_HELLO_RECORDS of them.
    big = fragment(padded_hello(b"big.example.com", 10_000), 1)
    parser = ClientHelloParser()
    with pytest.raises(ClientHelloError, match=f"more than {MAX_HELLO_RECORDS} records"):
        parser.feed(big)
    assert parser.scanned <= 6 * (MAX_HELLO_RECORDS + 1)


def test_a_record_of_another_type_inside_the_hello_is_refused() -> None:
    pieces = records(real_hello("mixed.example.com"), 100)
    alert = b"\x15\x03\x03\x00\x02\x01\x00"
    with pytest.raises(ClientHelloError, match="content type 21"):
        parse_client_hello(pieces[0] + alert + b"".join(pieces[1:]))


def test_length_when_the_hello_ends_inside_a_record() -> None:
    # Bytes after the message in its last record: the record spans them once it has all come.
    data = real_hello("tail.example.com")
    payload = data[5:] + bytes(10)
    record = data[:3] + len(payload).to_bytes(2) + payload
    assert _fed([record[: len(data)]]).length == len(data)
    assert _fed([record[:100], record[100:]]).length == len(record)


def test_a_spent_parser_keeps_its_answer() -> None:
    data = real_hello("spent.example.com")
    parser = ClientHelloParser()
    hello = parser.feed(data)
    assert hello is not None
    assert parser.feed(b"\x17\x03\x03\x00\x01x") is hello
    parser = ClientHelloParser()
    with pytest.raises(ClientHelloError, match="content type 71"):
        parser.feed(b"GET")
    with pytest.raises(ClientHelloError, match="content type 71"):
        parser.feed(data)


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
