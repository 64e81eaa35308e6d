"""Reading a whole message or to the end from anything with `receive_some` (Trio streams,
the test's own TLS clients): the relay tests' readers."""

from __future__ import annotations

from typing import Protocol


class Receives(Protocol):
    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...


async def receive_exactly(stream: Receives, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def receive_to_eof(stream: Receives) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(1 << 20):
        data += chunk
    return bytes(data)
