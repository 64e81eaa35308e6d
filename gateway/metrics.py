"""Prometheus metrics of one gateway process (`GET /metrics`).

I/O edge (a registry the server owns, not the global one, so several servers can live in one
process, as in the tests). Names follow Prometheus conventions: `_total` counters, `_seconds`
and `_bytes` units, labels bounded by the configuration (gateways, listeners, routes,
backends) and by fixed vocabularies (outcomes, directions, codes).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Handshake-scale buckets: sub-millisecond on loopback up to the 10 s hello timeout.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """`dataplane=False` in the main process of the process model: the data-plane metrics
    then live in a registry that is not exposed, and the workers' counts are exposed instead
    (`supervisor.WorkerCounters`)."""

    def __init__(self, *, dataplane: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.dataplane = self.registry if dataplane else CollectorRegistry(auto_describe=True)
        registry = self.dataplane
        self.connections_accepted = Counter(
            "tlsgate_connections_accepted_total",
            "Connections accepted, by bind",
            ["address", "port"],
            registry=registry,
        )
        self.connections_finished = Counter(
            "tlsgate_connections_finished_total",
            "Connections finished, by gateway, listener, route and outcome "
            "(closed, idle-timeout, rejected-no-route, ...)",
            ["gateway", "listener", "route", "outcome"],
            registry=registry,
        )
        self.connections_active = Gauge(
            "tlsgate_connections_active", "Connections open now", registry=registry
        )
        self.route_bytes = Counter(
            "tlsgate_route_bytes_total",
            "Bytes relayed per route; direction up is client to backend",
            ["route", "direction"],
            registry=registry,
        )
        self.client_hello_duration = Histogram(
            "tlsgate_client_hello_duration_seconds",
            "Time from accept to a complete ClientHello",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.handshake_duration = Histogram(
            "tlsgate_tls_handshake_duration_seconds",
            "Time of the TLS handshake of Terminate listeners (after the ClientHello)",
            buckets=_BUCKETS,
            registry=registry,
        )
        self.backend_connect_failures = Counter(
            "tlsgate_backend_connect_failures_total",
            "Failed connections to backend endpoints, by backend",
            ["backend"],
            registry=registry,
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
        self.admin_requests = Counter(
            "tlsgate_admin_requests_total",
            "Admin API requests, by method and status code",
            ["method", "code"],
            registry=registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
