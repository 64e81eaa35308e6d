"""Prometheus metrics of one gateway process (`GET /metrics`).

I/O edge (a registry the server owns, not the global one, so several servers can live in one
process, as in the tests). Names follow Prometheus conventions: `_total` counters without
`_created` series, `_seconds` and `_bytes` units, `process_*` for the process tree, labels
bounded by the configuration (gateways, listeners, routes, backends: a counter goes when what
it counts is no longer configured) and by fixed vocabularies (outcomes, directions, codes).
A label with nothing to say is "" (Prometheus' own "no value"), never "-".
"""

from __future__ import annotations

import bisect
import functools
import os
import platform
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gateway import tlsgate_version
from gateway.routing.snapshot import Certificate, Snapshot

# A `_created` sample per counter doubles the exposition for a figure nobody graphs
# (Prometheus derives resets itself); OpenMetrics makes it optional.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

#: Handshake-scale buckets: sub-millisecond on loopback up to the 10 s hello timeout.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Tally(Collector):
    """A labelled counter the data plane keeps as plain integers, per label values, turned
    into samples only when scraped: counting is a dict update (~0.2 us), where a
    prometheus_client child costs a lock and a float per increment and its `labels()`
    lookup more (issue 12). Single-threaded use: the event loop counts, a scrape reads."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        #: Label values (in `labelnames` order) -> the count.
        self.counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def add(self, key: tuple[str, ...], amount: int = 1) -> None:
        counts = self.counts
        counts[key] = counts.get(key, 0) + amount

    def value(self, *key: str) -> int:
        return self.counts.get(key, 0)

    def retain(self, keep: Callable[[tuple[str, ...]], bool]) -> None:
        """Forget the label values `keep` refuses (a route deleted). In place: accept loops
        hold the dict itself, and scrapes read it on the same event loop."""
        counts = self.counts
        for key in [key for key in counts if not keep(key)]:
            del counts[key]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, count in list(self.counts.items()):
            family.add_metric(key, count)
        yield family


class Durations(Collector):
    """A histogram of seconds kept as plain counts per bucket (see `Tally`)."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(buckets)
        #: Observations per bucket (the last one is +Inf), not cumulative.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        registry.register(self)

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def collect(self) -> Iterator[Metric]:
        cumulative, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            cumulative.append((_le(bound), total))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=cumulative, sum_value=self.sum
        )


def _le(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (`0.005`, `1.0`, `+Inf`)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


class Metrics:
    """`dataplane=False` in the main process of the process model: the data-plane metrics
    then live in a registry that is not exposed, and the workers' counts are exposed instead
    (`supervisor.WorkerCounters`)."""

    def __init__(self, *, dataplane: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.dataplane = self.registry if dataplane else CollectorRegistry(auto_describe=True)
        registry = self.dataplane
        self.connections_accepted = Tally(
            "tlsgate_connections_accepted_total",
            "Connections accepted, by bind",
            ["address", "port"],
            registry,
        )
        self.connections_finished = Tally(
            "tlsgate_connections_finished_total",
            "Connections finished, by gateway, listener, route and outcome "
            "(closed, idle-timeout, rejected-no-route, ...)",
            ["gateway", "listener", "route", "outcome"],
            registry,
        )
        self.connections_refused = Tally(
            "tlsgate_connections_refused_total",
            "Connections closed before any handshake byte, by reason: a ClientTrafficPolicy "
            "(client-ip, proxy-protocol, connection-limit, ...) or max-connections",
            ["reason"],
            registry,
        )
        self.connections_active = Gauge(
            "tlsgate_connections_active", "Connections open now", registry=registry
        )
        self.listener_connections = Tally(
            "tlsgate_listener_connections_total",
            "Connections whose ClientHello chose a listener, by gateway, listener and route "
            '("" when the listener rejected them)',
            ["gateway", "listener", "route"],
            registry,
        )
        self.listener_bytes = Tally(
            "tlsgate_listener_bytes_total",
            "Bytes relayed per listener; direction up is client to backend",
            ["listener", "direction"],
            registry,
        )
        self.route_bytes = Tally(
            "tlsgate_route_bytes_total",
            "Bytes relayed per route; direction up is client to backend",
            ["route", "direction"],
            registry,
        )
        self.client_hello_duration = Durations(
            "tlsgate_client_hello_duration_seconds",
            "Time from accept to a complete ClientHello",
            _BUCKETS,
            registry,
        )
        self.handshake_duration = Durations(
            "tlsgate_tls_handshake_duration_seconds",
            "Time of the TLS handshake of Terminate listeners (after the ClientHello)",
            _BUCKETS,
            registry,
        )
        self.backend_connect_failures = Tally(
            "tlsgate_backend_connect_failures_total",
            "Failed connections to backend endpoints, by backend",
            ["backend"],
            registry,
        )
        self.limits_untracked = Tally(
            "tlsgate_limit_untracked_total",
            "Admissions a connection limit could not count (its shared bucket was full)",
            [],
            registry,
        )
        registry = self.registry
        self.snapshot_generation = Gauge(
            "tlsgate_snapshot_generation",
            "Generation of the routing table in force",
            registry=registry,
        )
        self.snapshot_swap_time = Gauge(
            "tlsgate_snapshot_last_swap_timestamp_seconds",
            "Unix time of the last routing-table swap",
            registry=registry,
        )
        self.store_up = Gauge(
            "tlsgate_store_up",
            "1 while the store takes writes, 0 while it cannot be reached (etcd down)",
            registry=registry,
        )
        self.admin_requests = Counter(
            "tlsgate_admin_requests_total",
            "Admin API requests, by method and status code",
            ["method", "code"],
            registry=registry,
        )

    def retain(self, snapshot: Snapshot) -> None:
        """Keep the counters of what `snapshot` configures, and those without a name (""):
        per-route and per-listener series stay as many as the configuration has."""
        keep = configured(snapshot)
        for tally in (
            self.connections_finished,
            self.listener_connections,
            self.listener_bytes,
            self.route_bytes,
            self.backend_connect_failures,
            self.connections_accepted,
        ):
            names = tally.labelnames
            tally.retain(lambda key, names=names: keep(dict(zip(names, key, strict=True))))  # type: ignore[misc]

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def totals(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The data plane's counters as (sample name, sorted labels) -> value: the shape the
        main process sums the workers' counters into (`supervisor.WorkerCounters.totals`)."""
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for tally in (
            self.connections_finished,
            self.connections_refused,
            self.listener_connections,
            self.listener_bytes,
            self.route_bytes,
        ):
            names = tally.labelnames
            for key, count in list(tally.counts.items()):
                out[tally.name, tuple(sorted(zip(names, key, strict=True)))] = count
        return out


#: Connections open now per (gateway, listener full name, route): what a connection counts
#: in from the moment its ClientHello chose a listener to its close.
Open = dict[tuple[str, str, str], int]


def count_open(counts: Open, key: tuple[str, str, str], step: int) -> None:
    """Count a connection in (`step` 1) or out (-1); a key at zero goes, so the map holds
    only what has connections open."""
    value = counts.get(key, 0) + step
    if value:
        counts[key] = value
    else:
        del counts[key]


class OpenConnections(Collector):
    """`tlsgate_listener_connections_active{gateway, listener, route}`, summed over the maps
    `sources` gives (the process's own, or every live worker's)."""

    def __init__(self, sources: Callable[[], Iterable[Mapping[tuple[str, str, str], int]]]):
        self.sources = sources

    def sums(self) -> Open:
        out: Open = {}
        for counts in self.sources():
            for key, value in list(counts.items()):
                out[key] = out.get(key, 0) + value
        return out

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tlsgate_listener_connections_active",
            "Connections open now, by gateway, listener and route (from the ClientHello on)",
            labels=["gateway", "listener", "route"],
        )
        for key, value in sorted(self.sums().items()):
            family.add_metric(key, value)
        yield family


def configured(snapshot: Snapshot) -> Callable[[dict[str, str]], bool]:
    """Whether a series' labels name only what a table configures: its listeners (full
    names, `ns/gateway/listener`), routes, backends and binds; "" names nothing, and is kept."""
    listeners: set[str] = set()
    routes: set[str] = set()
    backends: set[str] = set()
    for listener in snapshot.listeners():
        listeners.add(listener.full_name)
        for target in listener.routes.values():
            routes.add(target.route)
            backends.update(backend.name for backend in target.backends)
    binds = {(address, str(port)) for address, port in snapshot.binds}
    known = {"listener": listeners, "route": routes, "backend": backends}

    def keep(labels: dict[str, str]) -> bool:
        for name, values in known.items():
            value = labels.get(name)
            if value and value not in values:
                return False
        return "address" not in labels or (labels["address"], labels.get("port", "")) in binds

    return keep


class BuildInfo(Collector):
    """`tlsgate_build_info{version, python_version}` 1, as Prometheus' own build_info."""

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tlsgate_build_info",
            "tlsgate's version and the Python running it (always 1)",
            labels=["version", "python_version"],
        )
        family.add_metric([tlsgate_version(), platform.python_version()], 1.0)
        yield family


class ProcessTree(Collector):
    """The standard `process_*` metrics for the whole process tree: CPU, memory and open
    file descriptors summed over the main process and its workers (what the machine gives
    tlsgate), `process_max_fds` and `process_start_time_seconds` of the main process (the
    connection limit derives from the former). Read from /proc, as prometheus_client does
    for one process; a worker gone between listing and reading is left out."""

    _SUMMED = frozenset(
        {
            "process_cpu_seconds",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
        }
    )

    def __init__(self, workers: Callable[[], Sequence[int]] = tuple) -> None:
        self.workers = workers
        #: The CPU seconds each process had at the last scrape, and those of processes
        #: gone since (a worker that exited): the total never goes down.
        self._cpu: dict[int, float] = {}
        self._gone_cpu = 0.0

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        totals: dict[str, float] = {}
        cpu: dict[int, float] = {}
        for index, pid in enumerate((os.getpid(), *self.workers())):
            reader = ProcessCollector(pid=functools.partial(int, pid), registry=None)
            for family in reader.collect():
                if not family.samples:
                    continue
                if family.name in self._SUMMED:
                    value = family.samples[0].value
                    totals[family.name] = totals.get(family.name, 0.0) + value
                    families.setdefault(family.name, family)
                    if family.name == "process_cpu_seconds":
                        cpu[pid] = value
                elif index == 0:
                    families[family.name] = family
        self._gone_cpu += sum(v for pid, v in self._cpu.items() if pid not in cpu)
        self._cpu = cpu
        if "process_cpu_seconds" in totals:
            totals["process_cpu_seconds"] += self._gone_cpu
        for name, family in families.items():
            if name in totals:
                kind = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
                yield kind(name, family.documentation, value=totals[name])
            else:
                yield family


class CertificateExpiry(Collector):
    """`tlsgate_certificate_expiry_timestamp_seconds{secret}`: when the leaf certificate of
    each Secret the routing table serves or presents stops being valid (Unix time), so an
    alert can say "renew within 14 days"."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot
        #: chain -> its leaf's notAfter, for the chains of the last table scraped.
        self._seen: dict[bytes, float | None] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tlsgate_certificate_expiry_timestamp_seconds",
            "When each served or presented certificate expires (Unix time), by Secret",
            labels=["secret"],
        )
        for secret, expiry in self.expiries().items():
            family.add_metric([secret], expiry)
        yield family

    def expiries(self) -> dict[str, float]:
        """Secret (`ns/name`) -> its leaf's notAfter (Unix time), in name order."""
        found: dict[str, float] = {}
        seen: dict[bytes, float | None] = {}
        for certificate in _certificates(self.snapshot()):
            if certificate.chain not in seen:
                seen[certificate.chain] = self._seen.get(certificate.chain) or not_after(
                    certificate.chain
                )
            expiry = seen[certificate.chain]
            if expiry is not None:
                found[str(certificate.secret)] = expiry
        self._seen = seen
        return dict(sorted(found.items()))


def _certificates(snapshot: Snapshot) -> Iterator[Certificate]:
    for listener in snapshot.listeners():
        yield from listener.certificates
        if listener.backend_client_certificate is not None:
            yield listener.backend_client_certificate


def not_after(chain: bytes) -> float | None:
    """The Unix time the first certificate of a PEM chain expires; None if it cannot be
    read (admission checked it, so only for a chain that is not a certificate at all)."""
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificate(chain)
    except ValueError:
        return None
    return leaf.not_valid_after_utc.timestamp()
