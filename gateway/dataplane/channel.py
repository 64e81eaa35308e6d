"""What the main process and a worker process say to each other, and how it is framed.

I/O (framing over a Trio stream). The channel is a private Unix socket pair between two
processes of the same program, so messages are pickles: a compiled snapshot of 10,000 routes
goes across in one frame, with no schema to keep in step. Each frame is a 4-byte big-endian
length and the pickle.

Main -> worker: `Start` once, then `Install` with a whole snapshot, then for every new snapshot
a `Patch` from the one it runs (`routing/patch.py`: a write at 10,000 routes sends one route
target, not the table), or an `Install` when a patch would touch over MAX_PATCHED_TARGETS
route targets; `Health` with the endpoint health view whenever it changes. Worker -> main:
`Running` after each snapshot's binds are reconciled (so the main process knows what is in
force where), `Counters` now and then and at the end (the main process sums them for
`/metrics`), `Outcomes`: the connect outcomes the health monitor follows, and `AccessLines`:
the newest access-log lines, for the dashboard.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Mapping

import attrs
import trio

from gateway.dataplane.plane import PlaneConfig
from gateway.dataplane.proxy import ProxyConfig
from gateway.routing.health import HealthView
from gateway.routing.patch import Patch
from gateway.routing.snapshot import Snapshot

_HEADER = struct.Struct("!I")
#: A frame larger than this is a broken peer, not a configuration.
MAX_FRAME = 1 << 30


@attrs.frozen(kw_only=True)
class Start:
    worker: int
    proxy: ProxyConfig
    plane: PlaneConfig
    log_level: str = "info"
    log_format: str = "text"


@attrs.frozen
class Install:
    """Swap to this snapshot (statuses left out: a worker routes, it does not report)."""

    snapshot: Snapshot


@attrs.frozen(kw_only=True)
class Running:
    generation: int
    bind_failures: Mapping[tuple[str, int], str]
    connections: int
    #: Connections open per (gateway, listener, route) (`Proxy.open`).
    open: Mapping[tuple[str, str, str], int] = attrs.field(factory=dict)


@attrs.frozen
class Counters:
    """Every counter and histogram sample of the worker: (metric, labels, value)."""

    samples: tuple[tuple[str, tuple[tuple[str, str], ...], float], ...]


@attrs.frozen
class Health:
    """The endpoint health view in force (`routing/health.py`), sent at every change."""

    view: HealthView


@attrs.frozen
class Outcomes:
    """Connect outcomes of health-checked Services: (backend, endpoint, error or None)."""

    items: tuple[tuple[str, str, str | None], ...]


@attrs.frozen
class AccessLines:
    """Access-log lines the worker wrote since its last report, (Unix time, fields), the
    newest last; at most `worker.LINES_PER_REPORT` of them (the dashboard's recent lines)."""

    items: tuple[tuple[float, dict[str, object]], ...]


Message = Start | Install | Patch | Running | Counters | Health | Outcomes | AccessLines


#: Frames larger than this are encoded and decoded on a worker thread: a 10,000-route snapshot
#: takes ~60 ms to unpickle, which would stall every connection of the worker meanwhile (the
#: GIL is released to the event loop every few milliseconds instead).
THREAD_ABOVE = 256 * 1024


def encode(message: Message) -> bytes:
    """A whole frame: the length, then the pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def send_message(stream: trio.abc.SendStream, message: Message) -> None:
    await stream.send_all(encode(message))


async def send_frame(stream: trio.abc.SendStream, frame: bytes) -> None:
    """Send a frame made by `encode` (made once when several workers get the same one)."""
    await stream.send_all(frame)


class Receiver:
    """Reads whole frames off a stream; `receive` returns None at EOF."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self, size: int) -> bool:
        while len(self.buffer) < size:
            chunk = await self.stream.receive_some(max(65536, size - len(self.buffer)))
            if not chunk:
                return False
            self.buffer += chunk
        return True

    async def receive(self) -> Message | None:
        if not await self._fill(_HEADER.size):
            return None
        (length,) = _HEADER.unpack_from(self.buffer)
        if length > MAX_FRAME:
            raise ValueError(f"a frame of {length} bytes on the worker channel")
        if not await self._fill(_HEADER.size + length):
            return None
        data = bytes(self.buffer[_HEADER.size : _HEADER.size + length])
        del self.buffer[: _HEADER.size + length]
        if length > THREAD_ABOVE:
            decoded: Message = await trio.to_thread.run_sync(pickle.loads, data)
            return decoded
        message: Message = pickle.loads(data)
        return message
