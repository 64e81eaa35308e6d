"""gateway/dataplane/postgres.py: what the first bytes of a connection are."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.dataplane.postgres import GSSENC_REQUEST, SSL_REQUEST, Prelude, prelude


def test_requests_are_recognised_whole_and_wait_while_partial() -> None:
    assert prelude(SSL_REQUEST) is Prelude.SSL_REQUEST
    assert prelude(GSSENC_REQUEST) is Prelude.GSSENC_REQUEST
    assert prelude(SSL_REQUEST + b"\x16\x03\x01") is Prelude.SSL_REQUEST
    for cut in range(LENGTH := len(SSL_REQUEST)):
        assert prelude(SSL_REQUEST[:cut]) is Prelude.MORE
        assert prelude(GSSENC_REQUEST[:cut]) is Prelude.MORE
    assert LENGTH == 8


def test_a_clienthello_or_anything_else_is_tls_for_the_parser_to_judge() -> None:
    assert prelude(b"\x16\x03\x01\x02\x00") is Prelude.TLS
    assert prelude(b"\x16") is Prelude.TLS
    # A StartupMessage without SSL (length 8+, protocol 3.0) and a CancelRequest.
    assert prelude(b"\x00\x00\x00\x29\x00\x03\x00\x00") is Prelude.TLS
    assert prelude(b"\x00\x00\x00\x10\x04\xd2\x16\x2e") is Prelude.TLS
    assert prelude(b"GET / HTTP/1.1\r\n") is Prelude.TLS


@given(st.binary(max_size=32))
def test_any_bytes_get_an_answer_and_more_only_for_a_request_prefix(data: bytes) -> None:
    kind = prelude(data)
    if kind is Prelude.MORE:
        assert SSL_REQUEST.startswith(data) or GSSENC_REQUEST.startswith(data)
        assert len(data) < len(SSL_REQUEST)
    elif kind is Prelude.SSL_REQUEST:
        assert data[:8] == SSL_REQUEST
    elif kind is Prelude.GSSENC_REQUEST:
        assert data[:8] == GSSENC_REQUEST
