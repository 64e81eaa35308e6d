"""Prometheus metrics of one gateway process (`GET /metrics`).

I/O edge (a registry the server owns, not the global one, so several servers can live in one
process, as in the tests). Names follow Prometheus conventions: `_total` counters, `_seconds`
and `_bytes` units, labels bounded by the configuration (gateways, listeners, routes,
backends) and by fixed vocabularies (outcomes, directions, codes).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

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
            "Connections closed by a ClientTrafficPolicy before any handshake byte, by reason "
            "(client-ip, proxy-protocol)",
            ["reason"],
            registry,
        )
        self.connections_active = Gauge(
            "tlsgate_connections_active", "Connections open now", registry=registry
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

    def render(self) -> bytes:
        return generate_latest(self.registry)
