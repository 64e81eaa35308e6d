"""A data-plane worker process: `python -m gateway.dataplane.worker FD`, started by the main
process's supervisor with one end of a Unix socket pair as FD (API.md "Process model").

I/O. One `trio.run`: a task per bound listener (SO_REUSEPORT: every worker binds every
port and the kernel spreads connections), a task per connection, and the channel. The worker
never imports the admin stack or the translator: it receives compiled snapshots and swaps
them (one assignment, as in the single-process mode), then reports what it runs.

It stops on SIGTERM/SIGINT, or when the channel closes (the main process is gone): listening
sockets close at once, live connections get the drain timeout.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import signal
import socket
import sys
from collections.abc import Mapping

import trio

from gateway.dataplane.channel import (
    AccessLines,
    Counters,
    Health,
    Install,
    Outcomes,
    Receiver,
    Running,
    Start,
    send_message,
)
from gateway.dataplane.limits import SharedCounts, map_block
from gateway.dataplane.plane import SWITCH_INTERVAL, serve_dataplane
from gateway.dataplane.proxy import Proxy
from gateway.dataplane.relay import PipePool
from gateway.logs import setup_logging
from gateway.metrics import Metrics
from gateway.routing.patch import Patch, apply
from gateway.routing.snapshot import Snapshot

log = logging.getLogger("tlsgate.worker")

#: Seconds between two looks at what to report: open connections and counters are sent when
#: they changed, so a worker killed with SIGKILL loses at most this much of its counts.
REPORT_EVERY = 0.1
#: Counters are sent at least this often even when unchanged.
COUNTERS_AT_LEAST_EVERY = 5.0
#: Access-log lines sent per report at most: at thousands of connections a second, the
#: dashboard's recent lines are the newest of each report, not every one.
LINES_PER_REPORT = 64
#: Connect outcomes kept between two reports; more are dropped (a flood of failures to one
#: endpoint says no more than its first few).
MAX_OUTCOMES = 4096


class WorkerState:
    """The worker's `SnapshotSource`: the snapshot in force, and what its binds did."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.bind_failures: dict[tuple[str, int], str] = {}
        #: The generation whose binds were last reconciled: what this worker runs.
        self.running = 0
        self._changed = trio.Event()
        #: Set when there is something new to tell the main process.
        self.report = trio.Event()

    @property
    def generation(self) -> int:
        return self.snapshot.generation

    def install(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot  # the swap: connections that read the old one keep it
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def set_bind_failures(self, failures: Mapping[tuple[str, int], str]) -> None:
        # Called once the binds of the snapshot in force are reconciled: report either way.
        self.bind_failures = dict(failures)
        self.running = self.snapshot.generation
        self.report.set()

    async def wait_changed(self, generation: int) -> Snapshot:
        while self.snapshot.generation == generation:
            await self._changed.wait()
        return self.snapshot


def samples(metrics: Metrics) -> Counters:
    """The worker's counters and histogram samples (gauges are the main process's own)."""
    out = []
    for family in metrics.registry.collect():
        if family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out.append((sample.name, tuple(sorted(sample.labels.items())), sample.value))
    return Counters(tuple(out))


class _Worker:
    """One worker's tasks around its data plane: the channel in, the reports out, signals."""

    def __init__(
        self, stream: trio.SocketStream, receiver: Receiver, start: Start, limits: SharedCounts
    ) -> None:
        self.stream = stream
        self.limits = limits
        self.receiver = receiver
        self.id = start.worker
        self.plane = start.plane
        self.metrics = Metrics()
        self.state: WorkerState
        self.proxy: Proxy
        self.stop = trio.Event()
        self.start = start
        #: Connect outcomes for the main process's health monitor, sent with the reports.
        self.outcomes: list[tuple[str, str, str | None]] = []

    async def run(self, first: Install) -> None:
        self.state = WorkerState(first.snapshot)
        self.proxy = Proxy(
            lambda: self.state.snapshot,
            self.start.proxy,
            PipePool() if self.start.proxy.splice else None,
            metrics=self.metrics,
            worker=self.id,
            limits=self.limits,
        )
        self.proxy.dialer.report = self.observe
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.receive_snapshots)
                nursery.start_soon(self.send_reports)
                nursery.start_soon(self.signals)
                await serve_dataplane(self.state, self.proxy, self.plane, self.stop)
                # The last counts, so the main process's totals include every connection.
                await self.tell(samples(self.metrics))
                nursery.cancel_scope.cancel()
        finally:
            if self.proxy.pool is not None:
                self.proxy.pool.close()

    def observe(self, backend: str, endpoint: str, error: str | None) -> None:
        """A connect outcome for the monitor: the first of a batch wakes the reports (a
        failure may eject); the rest go with it, whatever their number."""
        if not self.outcomes:
            self.state.report.set()
        if len(self.outcomes) < MAX_OUTCOMES:  # bounded if the main process stops reading
            self.outcomes.append((backend, endpoint, error))

    def _orphaned(self) -> None:
        if not self.stop.is_set():
            log.info("worker %d: the main process is gone; stopping", self.id)
            self.stop.set()

    async def tell(self, message: Running | Counters | Outcomes | AccessLines) -> bool:
        """Send to the main process; if it is gone, stop."""
        try:
            await send_message(self.stream, message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._orphaned()
            return False
        return True

    async def receive_snapshots(self) -> None:
        while True:
            try:
                message = await self.receiver.receive()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                message = None
            if message is None:
                self._orphaned()
                return
            if isinstance(message, Install):
                self.state.install(message.snapshot)
            elif isinstance(message, Health):
                self.proxy.dialer.health = message.view
            elif isinstance(message, Patch):
                # A patch for another snapshot raises PatchMismatch: the worker exits and
                # is restarted with a whole snapshot, rather than route by a wrong table.
                self.state.install(apply(self.state.snapshot, message))

    async def send_reports(self) -> None:
        state, proxy = self.state, self.proxy
        sent: tuple[object, ...] | None = None
        counted, counted_at = -1, trio.current_time()
        lines_sent = 0
        while True:
            with trio.move_on_after(REPORT_EVERY):
                await state.report.wait()
            state.report = trio.Event()
            running = (state.running, state.bind_failures, proxy.active, proxy.open)
            if running != sent:
                # A copy: the proxy goes on counting in its own map.
                sent = (*running[:3], dict(proxy.open))
                report = Running(
                    generation=state.running,
                    bind_failures=state.bind_failures,
                    connections=proxy.active,
                    open=sent[3],
                )
                if not await self.tell(report):
                    return
            fresh = min(proxy.recent_count - lines_sent, LINES_PER_REPORT, len(proxy.recent))
            if fresh > 0:
                lines_sent = proxy.recent_count
                lines = tuple(itertools.islice(proxy.recent, len(proxy.recent) - fresh, None))
                if not await self.tell(AccessLines(lines)):
                    return
            if self.outcomes:
                outcomes, self.outcomes = tuple(self.outcomes), []
                if not await self.tell(Outcomes(outcomes)):
                    return
            now = trio.current_time()
            since = now - counted_at
            # Counters at most every REPORT_EVERY, however often outcomes wake this loop.
            if (proxy.finished != counted and since >= REPORT_EVERY) or (
                since >= COUNTERS_AT_LEAST_EVERY
            ):
                counted, counted_at = proxy.finished, now
                if not await self.tell(samples(self.metrics)):
                    return

    async def signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as received:
            async for _ in received:
                self.stop.set()
                return


async def run(channel: socket.socket, limits: mmap.mmap) -> None:
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(channel))
    receiver = Receiver(stream)
    start = await receiver.receive()
    first = await receiver.receive()
    if not isinstance(start, Start) or not isinstance(first, Install):
        raise SystemExit("the main process sent no Start and Install")
    setup_logging(start.log_level, start.log_format)
    await _Worker(stream, receiver, start, SharedCounts(limits, start.worker)).run(first)


def main(argv: list[str]) -> int:
    channel = socket.socket(fileno=int(argv[0]))
    os.set_inheritable(channel.fileno(), False)
    # The connection limits' counters, shared with every worker (dataplane/limits.py).
    limits = map_block(int(argv[1]))
    os.close(int(argv[1]))
    # A whole snapshot is decoded on a thread (channel.THREAD_ABOVE): hand the GIL back to
    # the event loop every 0.2 ms rather than 5, or a connection arriving meanwhile waits
    # ~5 ms at each step of its handshake. With one thread running it changes nothing.
    sys.setswitchinterval(SWITCH_INTERVAL)
    trio.run(run, channel, limits)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
