"""The main process's side of the process model: start N worker processes, give each every
snapshot, know what each runs, restart the dead, stop them all (API.md "Process model").

I/O. One task per worker slot keeps a worker alive: it starts `python -m
gateway.dataplane.worker` with one end of a socket pair, sends `Start` and the snapshot in
force, then at every swap a `Patch` from the snapshot it sent last (or a new `Install` when
it would touch over `patch.MAX_PATCHED_TARGETS` route targets); it reads `Running`
(generation, bind failures, open connections) and `Counters`. When the process exits the
slot logs it, counts a restart and starts another at once; the other workers and their
connections are untouched.

"Acknowledged means in force": `wait_in_force(g)` returns once every live worker reports a
generation of at least g; the write path awaits it before answering. A worker that dies
meanwhile stops counting as live, so a write never waits on a corpse.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import socket
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping

import attrs
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.dataplane.channel import (
    AccessLines,
    Counters,
    Health,
    Install,
    Outcomes,
    Receiver,
    Running,
    Start,
    encode,
    send_frame,
    send_message,
)
from gateway.dataplane.limits import clear_region, shared_block
from gateway.dataplane.plane import PlaneConfig
from gateway.dataplane.proxy import RECENT_LINES, ProxyConfig
from gateway.metrics import Metrics, OpenConnections, configured
from gateway.monitor import HealthMonitor
from gateway.routing.patch import diff
from gateway.routing.snapshot import Snapshot
from gateway.store.state import State

log = logging.getLogger("tlsgate.server")

#: Seconds a stopping worker gets beyond the drain timeout before it is killed.
STOP_GRACE = 5.0
#: A worker that exits sooner than this after its start is restarted after a pause that
#: doubles up to RESTART_PAUSE_MAX (a worker that cannot start must not spin the CPU or
#: flood the log); one that ran longer is restarted at once.
QUICK_EXIT = 1.0
RESTART_PAUSE_MAX = 5.0
#: Seconds a live worker has to run a new generation; one that does not is killed (and
#: replaced), so that a stuck worker can never hold every write.
IN_FORCE_TIMEOUT = 10.0


@attrs.define
class Worker:
    """What the main process knows of one worker slot."""

    id: int
    alive: bool = False
    generation: int = 0
    bind_failures: Mapping[tuple[str, int], str] = attrs.Factory(dict)
    connections: int = 0
    #: Its connections open per (gateway, listener, route).
    open: Mapping[tuple[str, str, str], int] = attrs.Factory(dict)
    process: trio.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    def __init__(
        self,
        state: State,
        count: int,
        *,
        proxy: ProxyConfig,
        plane: PlaneConfig,
        log_level: str = "info",
        log_format: str = "text",
        monitor: HealthMonitor | None = None,
    ) -> None:
        self.state = state
        self.monitor = monitor
        self.count = count
        self.proxy = proxy
        self.plane = attrs.evolve(plane, reuse_port=True)
        self.log_level = log_level
        self.log_format = log_format
        self.workers = {i: Worker(i) for i in range(count)}
        self.counters = WorkerCounters(lambda: self.state.snapshot)
        #: The newest access-log lines of every worker, as they reported them.
        self.recent: deque[tuple[float, dict[str, object]]] = deque(maxlen=RECENT_LINES)
        #: The connection limits' counters: a region per worker slot (dataplane/limits.py).
        self._limits_fd, self._limits = shared_block(count)
        self._restarts_metric: Counter | None = None
        self._progress = trio.Event()
        self._frame: tuple[int, bytes] | None = None
        self._patches: tuple[tuple[int, int], bytes | None] | None = None

    def register(self, registry: CollectorRegistry) -> None:
        """Expose the workers' counts in the main process's registry (one exposition for the
        process tree), the connections open over all of them, and the restarts."""
        registry.register(self.counters)
        Gauge(
            "tlsgate_connections_active",
            "Connections open now, over every worker",
            registry=registry,
        ).set_function(lambda: sum(w.connections for w in self.workers.values() if w.alive))
        registry.register(self.open_connections)
        self._restarts_metric = Counter(
            "tlsgate_worker_restarts",
            "Worker processes started again after one exited",
            registry=registry,
        )

    # --- what the rest of the main process asks ------------------------------------------------

    def not_ready(self) -> str | None:
        """Why /readyz is 503 in the process model: a worker down, or behind."""
        generation = self.state.generation
        down = [w.id for w in self.workers.values() if not w.alive]
        if down:
            return f"workers not running: {', '.join(map(str, down))}"
        behind = [w.id for w in self.workers.values() if w.generation < generation]
        if behind:
            return f"workers not yet on generation {generation}: {', '.join(map(str, behind))}"
        return None

    async def wait_in_force(self, generation: int) -> None:
        """Until every live worker runs `generation` or a later one. A worker that does not
        within IN_FORCE_TIMEOUT is killed: it no longer counts, and a new one starts from the
        snapshot in force."""
        with trio.move_on_after(IN_FORCE_TIMEOUT):
            while self._behind(generation):
                await self._progress.wait()
            return
        for worker in self._behind(generation):
            log.warning(
                "worker %d (pid %s) did not run generation %d within %.0fs; killing it",
                worker.id,
                worker.pid,
                generation,
                IN_FORCE_TIMEOUT,
            )
            if worker.process is not None:
                worker.process.kill()
            worker.alive = False

    def _behind(self, generation: int) -> list[Worker]:
        return [w for w in self.workers.values() if w.alive and w.generation < generation]

    @functools.cached_property
    def open_connections(self) -> OpenConnections:
        return OpenConnections(lambda: [w.open for w in self.workers.values() if w.alive])

    def pids(self) -> list[int]:
        """The process ids of the workers alive now (the metrics' process tree)."""
        return [w.pid for w in self.workers.values() if w.alive and w.pid is not None]

    def table(self) -> list[dict[str, object]]:
        """The `workers` of `GET /v1/routingtable`."""
        return [
            {"id": w.id, "pid": w.pid, "generation": w.generation, "connections": w.connections}
            for w in self.workers.values()
        ]

    # --- running ----------------------------------------------------------------------------

    async def serve(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep every worker running until `stop`, then stop them all and wait for them.
        `task_status` at once: the admin API comes up even if workers cannot start, and
        /readyz says which are not running yet."""
        async with trio.open_nursery() as nursery:
            for worker in self.workers.values():
                nursery.start_soon(self._keep, worker, stop)
            task_status.started()

    async def _keep(self, worker: Worker, stop: trio.Event) -> None:
        pause = 0.0
        while True:
            started = trio.current_time()
            code = await self._run_one(worker, stop)
            if stop.is_set():
                log.info("worker %d (pid %s) stopped", worker.id, worker.pid)
                return
            if self._restarts_metric is not None:
                self._restarts_metric.inc()
            quick = trio.current_time() - started < QUICK_EXIT
            pause = min(max(pause * 2, 0.1), RESTART_PAUSE_MAX) if quick else 0.0
            log.warning(
                "worker %d (pid %s) exited with %s; starting another%s",
                worker.id,
                worker.pid,
                code,
                f" in {pause:.1f}s" if pause else "",
            )
            with trio.move_on_after(pause):
                await stop.wait()
            if stop.is_set():
                return

    async def _run_one(self, worker: Worker, stop: trio.Event) -> int:
        # The slot's last process is gone, and its connections with it: so are their counts.
        clear_region(self._limits, worker.id)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await trio.lowlevel.open_process(
                [
                    sys.executable,
                    "-m",
                    "gateway.dataplane.worker",
                    str(theirs.fileno()),
                    str(self._limits_fd),
                ],
                pass_fds=(theirs.fileno(), self._limits_fd),
            )
        finally:
            theirs.close()
        worker.process, worker.alive, worker.generation = process, True, 0
        log.info("worker %d started, pid %d", worker.id, process.pid)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._feed, stream, worker)
                nursery.start_soon(self._listen, stream, worker)
                nursery.start_soon(self._stop_when, stop, process)
                code = await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            worker.alive = False
            worker.open = {}  # its connections died with it
            self.counters.retire(worker.id)
            self._notify()
            await trio.aclose_forcefully(stream)
            if process.returncode is None:  # cancelled from outside: never leave it behind
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
        return code

    async def _feed(self, stream: trio.SocketStream, worker: Worker) -> None:
        start = Start(
            worker=worker.id,
            proxy=self.proxy,
            plane=self.plane,
            log_level=self.log_level,
            log_format=self.log_format,
        )
        sent: Snapshot | None = None
        # A worker that exits (drained, killed) breaks the channel, even mid-frame: that
        # is its slot's business (`_run_one` waits for the process), never an error here.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await send_message(stream, start)
            health = -1
            monitor = self.monitor
            while True:
                snapshot = self.state.snapshot
                if sent is None or snapshot.generation != sent.generation:
                    patch = self._patch(sent, snapshot) if sent is not None else None
                    if patch is not None:
                        await send_frame(stream, patch)
                    else:
                        await send_frame(stream, await self._install_frame(snapshot))
                    sent = snapshot
                if monitor is not None and monitor.version != health:
                    health = monitor.version
                    await send_message(stream, Health(monitor.view))
                await _either(
                    functools.partial(self.state.wait_changed, sent.generation),
                    functools.partial(monitor.wait_changed, health) if monitor else None,
                )

    def _patch(self, sent: Snapshot, snapshot: Snapshot) -> bytes | None:
        """The frame of the patch from `sent` to `snapshot` (None: send a whole snapshot),
        diffed and encoded once for every worker that needs it (workers in step all do)."""
        key = (sent.generation, snapshot.generation)
        cached = self._patches
        if cached is None or cached[0] != key:
            patch = diff(sent, snapshot)
            cached = self._patches = (key, encode(patch) if patch is not None else None)
        return cached[1]

    async def _install_frame(self, snapshot: Snapshot) -> bytes:
        """The Install frame of a snapshot, encoded once for every worker (on a thread: a
        10,000-route table takes ~80 ms to pickle). Statuses stay here: a worker routes,
        the main process reports."""
        cached = self._frame
        if cached is not None and cached[0] == snapshot.generation:
            return cached[1]
        message = Install(attrs.evolve(snapshot, statuses={}))
        frame = await trio.to_thread.run_sync(encode, message)
        self._frame = (snapshot.generation, frame)
        return frame

    async def _listen(self, stream: trio.SocketStream, worker: Worker) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._read_reports(stream, worker)

    async def _read_reports(self, stream: trio.SocketStream, worker: Worker) -> None:
        receiver = Receiver(stream)
        while (message := await receiver.receive()) is not None:
            if isinstance(message, Running):
                worker.generation = message.generation
                worker.bind_failures = message.bind_failures
                worker.connections = message.connections
                worker.open = message.open
                self._bind_failures_changed()
                self._notify()
            elif isinstance(message, Counters):
                self.counters.update(worker.id, message)
            elif isinstance(message, Outcomes) and self.monitor is not None:
                self.monitor.observe_all(message.items)
            elif isinstance(message, AccessLines):
                self.recent.extend(message.items)

    async def _stop_when(self, stop: trio.Event, process: trio.Process) -> None:
        await stop.wait()
        process.send_signal(signal.SIGTERM)  # the worker drains for the drain timeout
        await trio.sleep(self.plane.drain_timeout + STOP_GRACE)
        process.kill()

    def _bind_failures_changed(self) -> None:
        """A bind that fails in any worker is PortUnavailable (status is one for all)."""
        failures: dict[tuple[str, int], str] = {}
        for w in self.workers.values():
            if w.alive and w.generation == self.state.generation:
                failures.update(w.bind_failures)
        if all(w.generation == self.state.generation for w in self.workers.values() if w.alive):
            self.state.set_bind_failures(failures)

    def _notify(self) -> None:
        progress, self._progress = self._progress, trio.Event()
        progress.set()


async def _either(
    first: Callable[[], Awaitable[object]], second: Callable[[], Awaitable[object]] | None
) -> None:
    """Until one of the two waits returns."""
    if second is None:
        await first()
        return
    async with trio.open_nursery() as nursery:

        async def one(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(one, first)
        nursery.start_soon(one, second)


class WorkerCounters(Collector):
    """The workers' counters and histograms as one exposition: summed over workers, and
    never going backwards (a dead worker's counts are kept in `retired`)."""

    def __init__(self, snapshot: Callable[[], Snapshot] | None = None) -> None:
        #: The table in force: a dead worker's counts of what it no longer configures go.
        self.snapshot = snapshot
        self._pruned_at: Snapshot | None = None
        self.live: dict[int, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        self.retired: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        #: metric family name -> (type, help), from the metrics a worker has.
        self.families: dict[str, tuple[str, str]] = {
            family.name: (family.type, family.documentation)
            for family in Metrics(dataplane=False).dataplane.collect()
            if family.type in ("counter", "histogram")
        }

    def update(self, worker: int, counters: Counters) -> None:
        self.live[worker] = {(name, labels): value for name, labels, value in counters.samples}

    def retire(self, worker: int) -> None:
        """Keep a dead worker's counts (`collect` forgets those of what is no longer
        configured, as the workers do)."""
        for key, value in self.live.pop(worker, {}).items():
            self.retired[key] = self.retired.get(key, 0.0) + value

    def _prune(self) -> None:
        if self.retired and self.snapshot is not None:
            snapshot = self.snapshot()
            if snapshot is not self._pruned_at:
                keep = configured(snapshot)
                self.retired = {k: v for k, v in self.retired.items() if keep(dict(k[1]))}
                self._pruned_at = snapshot

    def totals(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        out = dict(self.retired)
        for samples in self.live.values():
            for key, value in samples.items():
                out[key] = out.get(key, 0.0) + value
        return out

    def collect(self) -> Iterator[Metric]:
        self._prune()
        totals = self.totals()
        for family, (kind, documentation) in self.families.items():
            if kind == "counter":
                metric: Metric = CounterMetricFamily(family, documentation, labels=None)
                name = family + "_total"
            else:
                metric = HistogramMetricFamily(family, documentation)
                name = family
            for (sample, labels), value in sorted(totals.items()):
                if sample == name or (kind == "histogram" and sample.startswith(family + "_")):
                    metric.add_sample(sample, dict(labels), value)
            yield metric
