"""`relay`, `relay_ends` and `PipePool` on their own, over `socket.socketpair()` pairs.

Each test plays both applications: the client on one pair, the backend on the other, with the
relay between the two gateway-side sockets (non-blocking, as the proxy hands them over). The
idle timeout runs on Trio's autojump clock, so it is exact and costs no real time.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import socket
from collections.abc import Awaitable, Callable, Iterator

import attrs
import pytest
import trio
import trio.testing

from gateway.dataplane.relay import (
    SPLICE_MIN,
    PipePool,
    PlainEnd,
    Transfer,
    _splice_round,
    relay,
    relay_ends,
)

#: An idle timeout no test here meets unless it means to.
IDLE = 60.0
#: How long a test may wait for what should happen at once: a hang fails, it does not stall
#: the suite (a safety net, not a measurement).
SAFETY = 10.0
#: Bytes each way for the bulk tests: several splice rounds, well past one CHUNK.
BULK = 3 << 20


@attrs.define
class Wires:
    """The four raw sockets: `client_app` <-> `client` | relay | `backend` <-> `backend_app`."""

    client_app: socket.socket
    client: socket.socket
    backend: socket.socket
    backend_app: socket.socket

    def streams(self) -> tuple[trio.SocketStream, trio.SocketStream]:
        """The applications' ends as Trio streams (inside the run)."""
        return (
            trio.SocketStream(trio.socket.from_stdlib_socket(self.client_app)),
            trio.SocketStream(trio.socket.from_stdlib_socket(self.backend_app)),
        )


@pytest.fixture
def wires() -> Iterator[Wires]:
    client_app, client = socket.socketpair()
    backend, backend_app = socket.socketpair()
    every = (client_app, client, backend, backend_app)
    for sock in every:
        sock.setblocking(False)
    try:
        yield Wires(client_app, client, backend, backend_app)
    finally:
        for sock in every:
            sock.close()


class CountingPool(PipePool):
    """A real pool that also records how it is used: which path a relay took, and whether
    each pipe went back clean."""

    def __init__(self, limit: int = 64) -> None:
        super().__init__(limit)
        self.acquired = 0
        self.released: list[bool] = []

    async def acquire(self) -> tuple[int, int]:
        self.acquired += 1
        return await super().acquire()

    def release(self, pipe: tuple[int, int], *, clean: bool) -> None:
        self.released.append(clean)
        super().release(pipe, clean=clean)


@pytest.fixture
def pool() -> Iterator[CountingPool]:
    made = CountingPool()
    try:
        yield made
    finally:
        made.close()


async def receive_exactly(stream: trio.SocketStream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


async def receive_to_eof(stream: trio.SocketStream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(1 << 20):
        data += chunk
    return bytes(data)


def fill(sock: socket.socket, data: bytes) -> None:
    """Queue `data` in a socket pair before the relay starts (it must fit the buffers)."""
    view = memoryview(data)
    while view:
        view = view[sock.send(view) :]


@pytest.fixture(params=["copy", "splice"])
def maybe_pool(request: pytest.FixtureRequest, pool: CountingPool) -> CountingPool | None:
    """The relay without a pool (every round a read and a write), and with one (splice)."""
    return pool if request.param == "splice" else None


# --- relay ----------------------------------------------------------------------------------


async def test_small_messages_both_ways_are_counted(
    wires: Wires, maybe_pool: CountingPool | None
) -> None:
    client, backend = wires.streams()
    transfer = Transfer(idle_timeout=IDLE)
    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay, wires.client, wires.backend, transfer, maybe_pool)
            await client.send_all(b"ping")
            assert await receive_exactly(backend, 4) == b"ping"
            await backend.send_all(b"pong!!")
            assert await receive_exactly(client, 6) == b"pong!!"
            await client.send_eof()
            await backend.send_eof()
            assert await receive_to_eof(client) == b""
            assert await receive_to_eof(backend) == b""
    assert (transfer.up, transfer.down) == (4, 6)
    assert not transfer.scope.cancelled_caught
    if maybe_pool is not None:
        assert maybe_pool.acquired == 0, "a small message is one read and one write, no splice"


@pytest.mark.parametrize("first", ["client", "backend"])
async def test_half_close_propagates_while_the_other_direction_flows(
    wires: Wires, maybe_pool: CountingPool | None, first: str
) -> None:
    client, backend = wires.streams()
    closer, other = (client, backend) if first == "client" else (backend, client)
    transfer = Transfer(idle_timeout=IDLE)
    finished = trio.Event()

    async def run() -> None:
        await relay(wires.client, wires.backend, transfer, maybe_pool)
        finished.set()

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await closer.send_all(b"last words")
            await closer.send_eof()
            # The EOF reaches the other side as a shutdown(SHUT_WR), after the bytes before it.
            assert await receive_to_eof(other) == b"last words"
            await trio.testing.wait_all_tasks_blocked()
            assert not finished.is_set(), "one direction ended: the relay must keep the other"
            await other.send_all(b"the answer")
            assert await receive_exactly(closer, 10) == b"the answer"
            await other.send_eof()
            assert await receive_to_eof(closer) == b""
            await finished.wait()
    moved = {"client": transfer.up, "backend": transfer.down}
    assert moved[first] == 10
    assert transfer.up + transfer.down == 20


async def test_idle_timeout_returns_quietly(
    wires: Wires, maybe_pool: CountingPool | None, autojump_clock: trio.testing.MockClock
) -> None:
    transfer = Transfer(idle_timeout=30)
    start = trio.current_time()
    await relay(wires.client, wires.backend, transfer, maybe_pool)
    assert transfer.scope.cancelled_caught
    assert trio.current_time() == pytest.approx(start + 30)
    assert (transfer.up, transfer.down) == (0, 0)


async def relay_plain_ends(
    client: socket.socket, backend: socket.socket, transfer: Transfer
) -> None:
    await relay_ends(PlainEnd(client), PlainEnd(backend), transfer)


async def relay_without_pool(
    client: socket.socket, backend: socket.socket, transfer: Transfer
) -> None:
    await relay(client, backend, transfer, None)


@pytest.mark.parametrize("relayer", [relay_without_pool, relay_plain_ends], ids=["relay", "ends"])
async def test_traffic_pushes_the_idle_deadline(
    wires: Wires,
    autojump_clock: trio.testing.MockClock,
    relayer: Callable[[socket.socket, socket.socket, Transfer], Awaitable[None]],
) -> None:
    client, backend = wires.streams()
    transfer = Transfer(idle_timeout=10)
    start = trio.current_time()
    with trio.fail_after(100):  # virtual seconds, like everything on this clock
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relayer, wires.client, wires.backend, transfer)
            for at, stream, peer in (
                (6, client, backend),
                (12, backend, client),
                (18, client, backend),
            ):
                await trio.sleep_until(start + at)  # virtual time: the clock, not a synchronisation
                await stream.send_all(b"tick")
                assert await receive_exactly(peer, 4) == b"tick"
                assert transfer.scope.deadline == pytest.approx(start + at + 10)
    # Past the first deadline (start + 10) twice over: only the last traffic counts.
    assert transfer.scope.cancelled_caught
    assert trio.current_time() == pytest.approx(start + 28)
    assert (transfer.up, transfer.down) == (8, 4)


async def test_progress_moves_the_deadline_only_by_more_than_one_percent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transfer = Transfer(idle_timeout=100)
    transfer.scope.deadline = trio.current_time() + 100
    first = transfer.scope.deadline
    await trio.sleep(0.5)
    transfer.progress()
    assert transfer.scope.deadline == first
    await trio.sleep(1)
    transfer.progress()
    assert transfer.scope.deadline == pytest.approx(first + 1.5)


async def test_a_reset_backend_tears_down_both_directions(
    wires: Wires, maybe_pool: CountingPool | None
) -> None:
    # The backend application closes with bytes it never read: reading from it is
    # ECONNRESET. The client direction is open and idle: the error must cancel it too.
    fill(wires.backend, b"unread")
    wires.backend_app.close()
    transfer = Transfer(idle_timeout=IDLE)
    with trio.fail_after(SAFETY), pytest.RaisesGroup(ConnectionResetError):
        await relay(wires.client, wires.backend, transfer, maybe_pool)
    assert not transfer.scope.cancelled_caught


async def test_a_failed_write_tears_down_both_directions(wires: Wires, pool: CountingPool) -> None:
    # The backend stopped reading (SHUT_RD): writing to it is EPIPE, while the backend's own
    # direction is open and idle.
    wires.backend_app.shutdown(socket.SHUT_RD)
    fill(wires.client_app, b"x" * (SPLICE_MIN + 1000))
    transfer = Transfer(idle_timeout=IDLE)
    with trio.fail_after(SAFETY), pytest.RaisesGroup(BrokenPipeError):
        await relay(wires.client, wires.backend, transfer, pool)


async def test_a_pipe_that_saw_a_failed_splice_is_closed_not_reused(
    wires: Wires, pool: CountingPool
) -> None:
    # It may still hold bytes of the failed write.
    wires.backend_app.shutdown(socket.SHUT_RD)
    fill(wires.client_app, b"x" * (SPLICE_MIN + 1000))
    with trio.fail_after(SAFETY), pytest.raises(BrokenPipeError):
        await _splice_round(wires.client.fileno(), wires.backend, wires.backend.fileno(), pool)
    assert pool.released == [False]


async def test_bulk_both_ways_at_once_arrives_intact(
    wires: Wires, maybe_pool: CountingPool | None
) -> None:
    up = random.Random(1).randbytes(BULK)
    down = random.Random(2).randbytes(BULK)
    client, backend = wires.streams()
    transfer = Transfer(idle_timeout=IDLE)
    received: dict[str, bytes] = {}

    async def play(stream: trio.SocketStream, outgoing: bytes, name: str) -> None:
        async def send() -> None:
            for offset in range(0, len(outgoing), 256 * 1024):
                await stream.send_all(outgoing[offset : offset + 256 * 1024])
            await stream.send_eof()

        async with trio.open_nursery() as inner:
            inner.start_soon(send)
            received[name] = await receive_to_eof(stream)

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay, wires.client, wires.backend, transfer, maybe_pool)
            nursery.start_soon(play, client, up, "client")
            nursery.start_soon(play, backend, down, "backend")
    digest = hashlib.sha256
    assert digest(received["backend"]).digest() == digest(up).digest()
    assert digest(received["client"]).digest() == digest(down).digest()
    assert (transfer.up, transfer.down) == (BULK, BULK)
    if maybe_pool is not None:
        assert maybe_pool.acquired > 0, "bulk must go through the pipes"
        assert maybe_pool.released == [True] * maybe_pool.acquired


# --- PipePool -------------------------------------------------------------------------------


def identity(pipe: tuple[int, int]) -> tuple[int, int]:
    """Which kernel pipe this is: a new pipe may well get the same descriptor numbers."""
    read_end, write_end = os.fstat(pipe[0]), os.fstat(pipe[1])
    assert read_end.st_ino == write_end.st_ino
    return read_end.st_dev, read_end.st_ino


def closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return True
    return False


async def test_pipe_pool_gives_nonblocking_pipes_of_the_size_asked() -> None:
    pool = PipePool(limit=2, size=256 * 1024)
    try:
        read_fd, write_fd = await pool.acquire()
        assert not os.get_blocking(read_fd)
        assert not os.get_blocking(write_fd)
        assert fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ) == 256 * 1024
        os.write(write_fd, b"through")
        assert os.read(read_fd, 100) == b"through"
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 100)
        pool.release((read_fd, write_fd), clean=True)
    finally:
        pool.close()


async def test_pipe_pool_reuses_clean_pipes_and_closes_dirty_ones() -> None:
    pool = PipePool(limit=2)
    try:
        first = await pool.acquire()
        first_pipe = identity(first)
        pool.release(first, clean=True)
        again = await pool.acquire()
        # A clean pipe is reused.
        assert again == first
        assert identity(again) == first_pipe
        pool.release(again, clean=False)
        # A dirty pipe is closed.
        assert closed(first[0])
        assert closed(first[1])
        fresh = await pool.acquire()
        assert identity(fresh) != first_pipe
        pool.release(fresh, clean=True)
    finally:
        pool.close()
    # close() closes the free pipes.
    assert closed(fresh[0])
    assert closed(fresh[1])


async def test_pipe_pool_limit_makes_the_next_acquire_wait_for_a_release() -> None:
    pool = PipePool(limit=2)
    got: list[tuple[int, int]] = []

    async def third() -> None:
        got.append(await pool.acquire())

    try:
        one = await pool.acquire()
        two = await pool.acquire()
        two_pipe = identity(two)
        assert identity(one) != two_pipe
        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [], "two pipes exist at the limit of two: the third must wait"
            pool.release(two, clean=True)
        # The waiter gets the released pipe.
        assert got == [two]
        assert identity(got[0]) == two_pipe
        pool.release(one, clean=True)
        pool.release(got[0], clean=True)
        # Every slot is back: two acquires without waiting.
        with trio.fail_after(SAFETY):
            pool.release(await pool.acquire(), clean=True)
            held = [await pool.acquire(), await pool.acquire()]
        for pipe in held:
            pool.release(pipe, clean=True)
    finally:
        pool.close()


# --- relay_ends -----------------------------------------------------------------------------


async def test_relay_ends_client_half_close_lets_the_answer_through(wires: Wires) -> None:
    client, backend = wires.streams()
    transfer = Transfer(idle_timeout=IDLE)
    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                relay_ends, PlainEnd(wires.client), PlainEnd(wires.backend), transfer
            )
            await client.send_all(b"request")
            await client.send_eof()
            assert await receive_to_eof(backend) == b"request"
            await backend.send_all(b"response")
            await backend.send_eof()
            assert await receive_to_eof(client) == b"response"
    assert (transfer.up, transfer.down) == (7, 8)
    assert not transfer.scope.cancelled_caught


async def test_relay_ends_backend_ending_ends_both(wires: Wires) -> None:
    client, backend = wires.streams()
    transfer = Transfer(idle_timeout=IDLE)
    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                relay_ends, PlainEnd(wires.client), PlainEnd(wires.backend), transfer
            )
            await client.send_all(b"hi")
            assert await receive_exactly(backend, 2) == b"hi"
            await backend.send_all(b"bye")
            await backend.send_eof()
            # The client never ends its side: the backend's end finishes the client's and
            # returns, without waiting for it.
            assert await receive_to_eof(client) == b"bye"
    assert (transfer.up, transfer.down) == (2, 3)
    assert not transfer.scope.cancelled_caught


async def test_relay_ends_idle_timeout_returns_quietly(
    wires: Wires, autojump_clock: trio.testing.MockClock
) -> None:
    transfer = Transfer(idle_timeout=30)
    start = trio.current_time()
    await relay_ends(PlainEnd(wires.client), PlainEnd(wires.backend), transfer)
    assert transfer.scope.cancelled_caught
    assert trio.current_time() == pytest.approx(start + 30)


async def test_relay_ends_bulk_through_full_buffers(wires: Wires) -> None:
    # More than the socket buffers hold, both ways: PlainEnd.send must wait writable while the
    # same socket's receiver waits readable in the other task.
    up = random.Random(3).randbytes(BULK)
    down = random.Random(4).randbytes(BULK)
    client, backend = wires.streams()
    transfer = Transfer(idle_timeout=IDLE)
    got: dict[str, bytes] = {}

    async def collect(stream: trio.SocketStream, name: str) -> None:
        got[name] = await receive_exactly(stream, BULK)

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                relay_ends, PlainEnd(wires.client), PlainEnd(wires.backend), transfer
            )
            async with trio.open_nursery() as exchange:
                exchange.start_soon(collect, backend, "backend")
                exchange.start_soon(collect, client, "client")
                exchange.start_soon(client.send_all, up)
                exchange.start_soon(backend.send_all, down)
            await client.send_eof()
            assert await receive_to_eof(backend) == b""
            await backend.send_eof()
            assert await receive_to_eof(client) == b""
    assert got["backend"] == up
    assert got["client"] == down
    assert (transfer.up, transfer.down) == (BULK, BULK)
