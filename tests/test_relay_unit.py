"""`RelayLoop` and `PipePool` on their own, over `socket.socketpair()` pairs.

Each test plays both applications: the client on one pair, the backend on the other, with the
relay between the two gateway-side sockets (non-blocking, as the proxy hands them over). The
loop runs in the test's nursery, as the data plane runs it in the connections nursery. The
idle timeout runs on Trio's autojump clock, so it is exact and costs no real time.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import socket
from collections.abc import Iterator
from functools import partial

import attrs
import pytest
import trio
import trio.testing

from gateway.dataplane.dial import start_connect
from gateway.dataplane.relay import SPLICE_MIN, ConnectError, PipePool, RelayLoop, Transfer

from .streams import receive_exactly, receive_to_eof

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

    def every(self) -> tuple[socket.socket, ...]:
        return (self.client_app, self.client, self.backend, self.backend_app)

    def close(self) -> None:
        for sock in self.every():
            sock.close()

    def streams(self) -> tuple[trio.SocketStream, trio.SocketStream]:
        """The applications' ends as Trio streams (inside the run)."""
        return (
            trio.SocketStream(trio.socket.from_stdlib_socket(self.client_app)),
            trio.SocketStream(trio.socket.from_stdlib_socket(self.backend_app)),
        )


def make_wires() -> Wires:
    client_app, client = socket.socketpair()
    backend, backend_app = socket.socketpair()
    made = Wires(client_app, client, backend, backend_app)
    for sock in made.every():
        sock.setblocking(False)
    return made


@pytest.fixture
def wires() -> Iterator[Wires]:
    made = make_wires()
    try:
        yield made
    finally:
        made.close()


class CountingPool(PipePool):
    """A real pool that also records how it is used: which path a relay took, and whether
    each pipe went back clean."""

    def __init__(self, limit: int = 64) -> None:
        super().__init__(limit)
        self.acquired = 0
        self.released: list[bool] = []

    def take(self) -> tuple[int, int] | None:
        pipe = super().take()
        self.acquired += pipe is not None
        return pipe

    def give_back(self, pipe: tuple[int, int], *, clean: bool) -> None:
        self.released.append(clean)
        super().give_back(pipe, clean=clean)


@pytest.fixture
def pool() -> Iterator[CountingPool]:
    made = CountingPool()
    try:
        yield made
    finally:
        made.close()


def fill(sock: socket.socket, data: bytes) -> None:
    """Queue `data` in a socket pair before the relay starts (it must fit the buffers)."""
    view = memoryview(data)
    while view:
        view = view[sock.send(view) :]


@pytest.fixture(params=["copy", "splice"])
def maybe_pool(request: pytest.FixtureRequest, pool: CountingPool) -> CountingPool | None:
    """The relay without a pool (every round a read and a write), and with one (splice)."""
    return pool if request.param == "splice" else None


async def start(nursery: trio.Nursery, pool: PipePool | None) -> RelayLoop:
    loop = RelayLoop(pool)
    await nursery.start(loop.run)
    return loop


@pytest.fixture
async def relays(nursery: trio.Nursery, maybe_pool: CountingPool | None) -> RelayLoop:
    """A running loop, with and without splice; cancelled when the test ends."""
    return await start(nursery, maybe_pool)


async def converse(
    wires: Wires, relays: RelayLoop, transfer: Transfer, query: bytes, answer: bytes, times: int = 1
) -> None:
    """Relay the pair while the client asks and the backend answers `times` over, then both
    half-close and read to EOF: the relay returns once both EOFs are through."""
    client, backend = wires.streams()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relays.relay, wires.client, wires.backend, transfer)
        for _ in range(times):
            await client.send_all(query)
            assert await receive_exactly(backend, len(query)) == query
            await backend.send_all(answer)
            assert await receive_exactly(client, len(answer)) == answer
        await client.send_eof()
        await backend.send_eof()
        assert await receive_to_eof(client) == b""
        assert await receive_to_eof(backend) == b""


# --- RelayLoop ------------------------------------------------------------------------------


async def test_small_messages_both_ways_are_counted(
    wires: Wires, relays: RelayLoop, maybe_pool: CountingPool | None
) -> None:
    transfer = Transfer(idle_timeout=IDLE)
    with trio.fail_after(SAFETY):
        await converse(wires, relays, transfer, b"ping", b"pong!!")
    assert (transfer.up, transfer.down) == (4, 6)
    assert not transfer.scope.cancelled_caught
    assert relays.relaying == 0
    if maybe_pool is not None:
        assert maybe_pool.acquired == 0, "a small message is one read and one write, no splice"


@pytest.mark.parametrize("first", ["client", "backend"])
async def test_half_close_propagates_while_the_other_direction_flows(
    wires: Wires, relays: RelayLoop, first: str
) -> None:
    client, backend = wires.streams()
    closer, other = (client, backend) if first == "client" else (backend, client)
    transfer = Transfer(idle_timeout=IDLE)
    finished = trio.Event()

    async def run() -> None:
        await relays.relay(wires.client, wires.backend, transfer)
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


async def test_idle_timeout_returns_quietly_and_leaves_the_set(
    wires: Wires, relays: RelayLoop, autojump_clock: trio.testing.MockClock
) -> None:
    transfer = Transfer(idle_timeout=30)
    start_time = trio.current_time()
    await relays.relay(wires.client, wires.backend, transfer)
    assert transfer.scope.cancelled_caught
    assert trio.current_time() == pytest.approx(start_time + 30)
    assert (transfer.up, transfer.down) == (0, 0)
    assert relays.relaying == 0
    # Out of the set: bytes arriving now are not moved (and the sockets may close).
    wires.client_app.send(b"late")
    await trio.testing.wait_all_tasks_blocked()
    assert wires.client.recv(10) == b"late"


async def relay_with_loop(
    client: socket.socket, backend: socket.socket, transfer: Transfer
) -> None:
    async with trio.open_nursery() as nursery:
        loop = await start(nursery, None)
        await loop.relay(client, backend, transfer)
        nursery.cancel_scope.cancel()


async def test_traffic_pushes_the_idle_deadline(
    wires: Wires,
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, backend = wires.streams()
    transfer = Transfer(idle_timeout=10)
    start_time = trio.current_time()
    with trio.fail_after(100):  # virtual seconds, like everything on this clock
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_with_loop, wires.client, wires.backend, transfer)
            for at, stream, peer in (
                (6, client, backend),
                (12, backend, client),
                (18, client, backend),
            ):
                # virtual time: the clock, not a synchronisation
                await trio.sleep_until(start_time + at)
                await stream.send_all(b"tick")
                assert await receive_exactly(peer, 4) == b"tick"
                assert transfer.scope.deadline == pytest.approx(start_time + at + 10)
    # Past the first deadline (start + 10) twice over: only the last traffic counts.
    assert transfer.scope.cancelled_caught
    assert trio.current_time() == pytest.approx(start_time + 28)
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


async def test_a_reset_backend_ends_the_pair_with_the_error(
    wires: Wires, relays: RelayLoop
) -> None:
    # The backend application closes with bytes it never read: reading from it is
    # ECONNRESET. The client direction is open and idle: the pair ends all the same.
    fill(wires.backend, b"unread")
    wires.backend_app.close()
    transfer = Transfer(idle_timeout=IDLE)
    with trio.fail_after(SAFETY), pytest.raises(ConnectionResetError):
        await relays.relay(wires.client, wires.backend, transfer)
    assert not transfer.scope.cancelled_caught
    assert relays.relaying == 0


async def test_a_backend_that_answers_an_upload_it_will_not_read_is_heard(
    wires: Wires, relays: RelayLoop
) -> None:
    """The backend stops reading an upload, answers (an HTTP 413, say) and closes: sending it
    the rest fails, and its answer still reaches the client before the pair ends."""
    client, _ = wires.streams()
    transfer = Transfer(idle_timeout=IDLE)
    failure: list[OSError] = []

    async def relay() -> None:
        try:
            await relays.relay(wires.client, wires.backend, transfer)
        except OSError as exc:
            failure.append(exc)

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay)
            nursery.start_soon(client.send_all, b"u" * (16 << 20))
            moved = -1
            while moved != transfer.up:  # until the upload is stuck (real time)
                moved = transfer.up
                await trio.sleep(0.2)
            # The answer and the close at once (no checkpoint between): the loop sees the
            # backend gone (its send fails) with the answer still unread.
            wires.backend_app.send(b"413 too large")
            wires.backend_app.close()  # with the upload unread
            assert await receive_exactly(client, 13) == b"413 too large"
            nursery.cancel_scope.cancel()  # the client's upload, stuck for good
    assert failure  # the upload was cut: an error, after the answer
    assert relays.relaying == 0


async def test_a_failed_write_ends_the_pair_with_the_error(wires: Wires, relays: RelayLoop) -> None:
    # The backend stopped reading (SHUT_RD): writing to it is EPIPE, while the backend's own
    # direction is open and idle.
    wires.backend_app.shutdown(socket.SHUT_RD)
    fill(wires.client_app, b"x" * (SPLICE_MIN + 1000))
    transfer = Transfer(idle_timeout=IDLE)
    with trio.fail_after(SAFETY), pytest.raises(BrokenPipeError):
        await relays.relay(wires.client, wires.backend, transfer)


async def test_a_pipe_that_saw_a_failed_splice_is_closed_not_reused(
    wires: Wires, nursery: trio.Nursery, pool: CountingPool
) -> None:
    relays = await start(nursery, pool)
    client, _ = wires.streams()
    transfer = Transfer(idle_timeout=IDLE)
    failed: list[BaseException] = []
    ended = trio.Event()

    async def run() -> None:
        try:
            await relays.relay(wires.client, wires.backend, transfer)
        except OSError as exc:
            failed.append(exc)
        ended.set()

    nursery.start_soon(run)
    # The backend application reads nothing: bulk from the client fills its buffers and a
    # pipe is left holding bytes, waiting for room.
    with trio.move_on_after(0.5):
        await client.send_all(random.Random(5).randbytes(BULK))
    await trio.testing.wait_all_tasks_blocked()
    assert pool.taken == 1, "the blocked direction holds one pipe with bytes in it"
    wires.backend_app.close()  # now the pipe's bytes can never be sent
    with trio.fail_after(SAFETY):
        await ended.wait()
    assert isinstance(failed[0], (BrokenPipeError, ConnectionResetError))
    assert pool.released[-1] is False
    assert pool.taken == 0


async def test_a_cancelled_relay_gives_its_pipe_back_closed(
    wires: Wires, nursery: trio.Nursery, pool: CountingPool
) -> None:
    relays = await start(nursery, pool)
    client, _ = wires.streams()
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await relays.relay(wires.client, wires.backend, Transfer(idle_timeout=IDLE))

    nursery.start_soon(run)
    # The backend application reads nothing: a pipe is left holding bytes.
    with trio.move_on_after(0.5):
        await client.send_all(random.Random(6).randbytes(BULK))
    await trio.testing.wait_all_tasks_blocked()
    assert pool.taken == 1
    scope.cancel()  # as the drain timeout cancels every connection
    await trio.testing.wait_all_tasks_blocked()
    assert scope.cancelled_caught
    assert relays.relaying == 0
    assert pool.taken == 0
    assert pool.released[-1] is False, "the cancelled pipe still held bytes: closed, not reused"


async def test_bulk_both_ways_at_once_arrives_intact(
    wires: Wires, relays: RelayLoop, maybe_pool: CountingPool | None
) -> None:
    up = random.Random(1).randbytes(BULK)
    down = random.Random(2).randbytes(BULK)
    transfer = Transfer(idle_timeout=IDLE)
    received = await exchange_bulk(wires, relays, transfer, up, down)
    digest = hashlib.sha256
    assert digest(received["backend"]).digest() == digest(up).digest()
    assert digest(received["client"]).digest() == digest(down).digest()
    assert (transfer.up, transfer.down) == (BULK, BULK)
    if maybe_pool is not None:
        assert maybe_pool.acquired > 0, "bulk must go through the pipes"
        assert maybe_pool.released == [True] * maybe_pool.acquired


async def exchange_bulk(
    wires: Wires, relays: RelayLoop, transfer: Transfer, up: bytes, down: bytes
) -> dict[str, bytes]:
    """Both applications send their bytes and half-close while reading to EOF."""
    client, backend = wires.streams()
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
            nursery.start_soon(relays.relay, wires.client, wires.backend, transfer)
            nursery.start_soon(play, client, up, "client")
            nursery.start_soon(play, backend, down, "backend")
    return received


async def test_bulk_pairs_beyond_the_pool_copy_instead_of_waiting(
    nursery: trio.Nursery,
) -> None:
    # One pipe for three bulk pairs at once: whoever finds it taken copies; nobody waits.
    pool = CountingPool(limit=1)
    relays = await start(nursery, pool)
    made = [make_wires() for _ in range(3)]
    results: dict[int, dict[str, bytes]] = {}
    payloads = [random.Random(10 + i).randbytes(BULK) for i in range(3)]

    async def one(index: int) -> None:
        transfer = Transfer(idle_timeout=IDLE)
        results[index] = await exchange_bulk(
            made[index], relays, transfer, payloads[index], payloads[index][::-1]
        )

    try:
        async with trio.open_nursery() as group:
            for index in range(3):
                group.start_soon(one, index)
    finally:
        pool.close()
        for wired in made:
            wired.close()
    for index, payload in enumerate(payloads):
        assert results[index]["backend"] == payload
        assert results[index]["client"] == payload[::-1]
    assert pool.acquired > 0
    assert pool.taken == 0


async def test_a_stalled_reader_holds_one_round_and_stalls_nobody_else(
    nursery: trio.Nursery, maybe_pool: CountingPool | None
) -> None:
    relays = await start(nursery, maybe_pool)
    stalled, lively = make_wires(), make_wires()
    try:
        stalled_client, _ = stalled.streams()
        stalled_transfer = Transfer(idle_timeout=IDLE)
        nursery.start_soon(relays.relay, stalled.client, stalled.backend, stalled_transfer)
        # The stalled backend application never reads: the client's sending must stop once
        # the buffers and at most one round (a pipe's worth or a read) are full.
        sent = 0
        with trio.move_on_after(0.5):
            payload = b"y" * (256 * 1024)
            while sent < 64 << 20:
                await stalled_client.send_all(payload)
                sent += len(payload)
        assert sent < 64 << 20, "the relay read on although its destination was full"
        held = stalled_transfer.up
        # Meanwhile a second pair is served at once, both ways.
        transfer = Transfer(idle_timeout=IDLE)
        with trio.fail_after(SAFETY):
            await converse(lively, relays, transfer, b"query", b"answer", times=20)
        assert (transfer.up, transfer.down) == (100, 120)
        assert stalled_transfer.up == held, "the stalled pair moved nothing meanwhile"
    finally:
        stalled.close()
        lively.close()


async def test_pairs_left_when_the_loop_stops_get_an_error(wires: Wires) -> None:
    failed: list[BaseException] = []

    async def run(loop: RelayLoop) -> None:
        try:
            await loop.relay(wires.client, wires.backend, Transfer(idle_timeout=IDLE))
        except trio.ClosedResourceError as exc:
            failed.append(exc)

    with trio.fail_after(SAFETY):
        async with trio.open_nursery() as outer, trio.open_nursery() as inner:
            loop = await start(inner, None)
            outer.start_soon(run, loop)
            await trio.testing.wait_all_tasks_blocked()
            assert loop.relaying == 1
            inner.cancel_scope.cancel()  # only the loop's task
    assert len(failed) == 1
    assert loop.relaying == 0


async def test_relay_without_the_loop_running_is_refused(wires: Wires) -> None:
    with pytest.raises(RuntimeError, match="not running"):
        await RelayLoop(None).relay(wires.client, wires.backend, Transfer(idle_timeout=IDLE))


async def test_many_pairs_through_one_loop(nursery: trio.Nursery) -> None:
    # Many pairs at once in one set: each gets its own bytes back, and the set empties.
    relays = await start(nursery, None)
    made = [make_wires() for _ in range(300)]

    async def one(index: int, wired: Wires) -> None:
        message = f"message {index}".encode()
        await converse(wired, relays, Transfer(idle_timeout=IDLE), message, message[::-1])

    try:
        with trio.fail_after(SAFETY):
            async with trio.open_nursery() as group:
                for index, wired in enumerate(made):
                    group.start_soon(one, index, wired)
    finally:
        for wired in made:
            wired.close()
    assert relays.relaying == 0


# --- connecting in the loop ------------------------------------------------------------------


@pytest.fixture
def client_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client_app, client): the client side of the wires, non-blocking."""
    client_app, client = socket.socketpair()
    for sock in (client_app, client):
        sock.setblocking(False)
    try:
        yield client_app, client
    finally:
        client_app.close()
        client.close()


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


async def test_a_connect_in_the_loop_sends_the_first_bytes_before_the_clients(
    client_pair: tuple[socket.socket, socket.socket], listener: socket.socket, relays: RelayLoop
) -> None:
    client_app, client = client_pair
    client_app.send(b" and the rest")  # already waiting when the relay starts
    transfer = Transfer(idle_timeout=IDLE, first=b"HELLO")
    with start_connect(socket.AF_INET, listener.getsockname()) as backend:
        async with trio.open_nursery() as nursery:
            deadline = trio.current_time() + SAFETY
            nursery.start_soon(
                partial(relays.relay, client, backend, transfer, connect_deadline=deadline)
            )
            backend_app = trio.SocketStream(
                trio.socket.from_stdlib_socket((await trio.to_thread.run_sync(listener.accept))[0])
            )
            client_stream = trio.SocketStream(trio.socket.from_stdlib_socket(client_app))
            assert await receive_exactly(backend_app, 18) == b"HELLO and the rest"
            await backend_app.send_all(b"answer")
            assert await receive_exactly(client_stream, 6) == b"answer"
            await client_stream.send_eof()
            await backend_app.send_eof()
            assert await receive_to_eof(backend_app) == b""
            await backend_app.aclose()
    assert transfer.connected
    assert (transfer.up, transfer.down) == (18, 6)
    assert transfer.first == b""  # let go of once sent
    assert relays.relaying == 0


async def test_a_refused_connect_raises_and_keeps_the_first_bytes(
    client_pair: tuple[socket.socket, socket.socket], relays: RelayLoop
) -> None:
    client_app, client = client_pair
    with socket.create_server(("127.0.0.1", 0)) as gone:
        address = gone.getsockname()  # closed now: nobody listens there
    client_app.send(b"query")
    transfer = Transfer(idle_timeout=IDLE, first=b"HELLO")
    with (
        start_connect(socket.AF_INET, address) as backend,
        trio.fail_after(SAFETY),
        pytest.raises(ConnectError) as raised,
    ):
        await relays.relay(client, backend, transfer, connect_deadline=trio.current_time() + SAFETY)
    assert raised.value.errno == errno.ECONNREFUSED
    assert not transfer.connected
    assert transfer.first == b"HELLO"  # for the next endpoint
    assert (transfer.up, transfer.down) == (0, 0)
    assert relays.relaying == 0
    assert client.recv(10) == b"query"  # the client was not read


async def test_a_connect_that_never_completes_returns_at_its_deadline(
    client_pair: tuple[socket.socket, socket.socket],
    relays: RelayLoop,
    autojump_clock: trio.testing.MockClock,
) -> None:
    _, client = client_pair
    # A listener that never accepts, its queue full: a further SYN is dropped, and the
    # connect stays in progress (as toward a host that is down).
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        queued = [start_connect(socket.AF_INET, full.getsockname()) for _ in range(3)]
        await trio.sleep(0.2)
        transfer = Transfer(idle_timeout=IDLE, first=b"HELLO")
        started = trio.current_time()
        with start_connect(socket.AF_INET, full.getsockname()) as backend:
            await relays.relay(client, backend, transfer, connect_deadline=started + 5)
        for sock in queued:
            sock.close()
    assert trio.current_time() == pytest.approx(started + 5)
    assert transfer.scope.cancelled_caught
    assert not transfer.connected
    assert transfer.first == b"HELLO"
    assert relays.relaying == 0


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


def test_pipe_pool_gives_nonblocking_pipes_of_the_size_asked() -> None:
    pool = PipePool(limit=2, size=256 * 1024)
    try:
        pipe = pool.take()
        assert pipe is not None
        read_fd, write_fd = pipe
        assert not os.get_blocking(read_fd)
        assert not os.get_blocking(write_fd)
        assert fcntl.fcntl(write_fd, fcntl.F_GETPIPE_SZ) == 256 * 1024
        os.write(write_fd, b"through")
        assert os.read(read_fd, 100) == b"through"
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 100)
        pool.give_back(pipe, clean=True)
    finally:
        pool.close()


def test_pipe_pool_reuses_clean_pipes_and_closes_dirty_ones() -> None:
    pool = PipePool(limit=2)
    try:
        first = pool.take()
        assert first is not None
        first_pipe = identity(first)
        pool.give_back(first, clean=True)
        again = pool.take()
        # A clean pipe is reused.
        assert again == first
        assert identity(again) == first_pipe
        pool.give_back(again, clean=False)
        # A dirty pipe is closed.
        assert closed(first[0])
        assert closed(first[1])
        fresh = pool.take()
        assert fresh is not None
        assert identity(fresh) != first_pipe
        pool.give_back(fresh, clean=True)
    finally:
        pool.close()
    # close() closes the free pipes.
    assert closed(fresh[0])
    assert closed(fresh[1])


def test_pipe_pool_at_its_limit_gives_none_until_one_comes_back() -> None:
    pool = PipePool(limit=2)
    try:
        one, two = pool.take(), pool.take()
        assert one is not None
        assert two is not None
        assert identity(one) != identity(two)
        assert pool.take() is None, "two pipes exist at the limit of two"
        pool.give_back(two, clean=True)
        assert pool.take() == two
        pool.give_back(one, clean=False)
        fresh = pool.take()
        assert fresh is not None, "a closed pipe frees its slot too"
        assert pool.taken == 2
        pool.give_back(fresh, clean=True)
        pool.give_back(two, clean=True)
        assert pool.taken == 0
    finally:
        pool.close()
