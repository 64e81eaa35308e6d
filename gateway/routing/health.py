"""Endpoint health, as a BackendTrafficPolicy's `healthCheck` keeps it (API.md "Traffic
policies"): passive ejection after consecutive connect failures, active probes with
thresholds, and the view every data plane routes by.

Pure: a book of facts with the time passed in. The main process's monitor (`gateway/monitor.py`)
feeds it the probes' results and every worker's connect outcomes, and sends its `view` to the
workers; one book for the process tree, so an ejection holds in every worker at once.

Choices where API.md is silent, after Envoy's outlier detection:
- an endpoint starts healthy (a new Service or a configuration change never stalls traffic
  until a first probe answers);
- only connect failures count (refused, timed out, unreachable, unresolvable): an idle
  timeout, a reset mid-stream or a failed backend TLS handshake say nothing of the endpoint
  being there (NGINX Gateway Fabric #5701: an idle timeout ejected a healthy pod);
- the n-th ejection in a row lasts baseEjectionTime x 2^(n-1), at most 10 x baseEjectionTime;
  an endpoint that stays unejected for 10 x baseEjectionTime starts again from the base;
- after an ejection the failure count starts from zero: it takes as many failures again;
- health is kept per backend (a Service port: what a route's backendRef names), so "a
  backend's endpoints" are those a connection to it chooses from;
- at most maxEjectionPercent of the backend's endpoints are ejected at once, rounding down,
  but one may always be (of 2 at 50 %: one; of 3 at 10 %: one; even at 0 %: one); only
  passive ejections count toward it, active checks mark as many endpoints unhealthy as fail;
- failures while an endpoint is ejected are not counted (connections reach it only when
  every endpoint is avoided, or when they were under way);
- when every endpoint of a backend is avoided, all are tried (fail open).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

from attrs import define, field, frozen

from gateway.routing.snapshot import ActiveCheck, PassiveCheck, Snapshot

#: (backend `namespace/service:port`, endpoint `host:port`): health is kept per backend (a
#: Service port, as routes name it), so the endpoints that maxEjectionPercent and fail open
#: count are those that connections to it choose from.
Key = tuple[str, str]


class HealthState(StrEnum):
    HEALTHY = "healthy"
    #: Passive: skipped until `until`.
    EJECTED = "ejected"
    #: Active: below threshold; no new connections until probes pass again.
    UNHEALTHY = "unhealthy"


@frozen
class EndpointHealth:
    state: HealthState
    #: Until when an ejected endpoint is skipped (seconds since the epoch).
    until: float | None = None
    #: The last probe or connect error of an endpoint that is not healthy.
    error: str | None = None


@frozen
class BackendChecks:
    """A backend's checks (its Service's BackendTrafficPolicies) and its endpoints."""

    passive: PassiveCheck | None
    active: ActiveCheck | None
    endpoints: tuple[str, ...]


@frozen(kw_only=True)
class HealthView:
    """What a data plane needs: per backend, the endpoints to avoid; and the endpoints with
    failures counted, whose successful connects it must report (a success ends the run of
    failures; reporting every success would be a message per connection)."""

    avoid: Mapping[str, frozenset[str]] = field(factory=dict)
    suspects: frozenset[Key] = frozenset()


def backend_checks(snapshot: Snapshot) -> dict[str, BackendChecks]:
    """The backends of the table whose endpoints have a health check, by name. Every route
    to a Service port gets the same backend value from one build."""
    found: dict[str, BackendChecks] = {}
    for _, backend in snapshot.backends():
        traffic = backend.traffic
        if traffic is None or not traffic.checked or backend.name in found:
            continue
        endpoints = tuple(e.text for e in backend.endpoints)
        found[backend.name] = BackendChecks(traffic.passive, traffic.active, endpoints)
    return found


def service_of(backend: str) -> tuple[str, str]:
    """(namespace, Service name) of a backend name `namespace/name:port`."""
    namespace, _, rest = backend.partition("/")
    return namespace, rest.rpartition(":")[0] or rest


def ejection_allowance(endpoints: int, percent: int) -> int:
    """How many of a Service's `endpoints` may be ejected at once: `percent` of them rounding
    down, but one may always be (API.md)."""
    return max(1, endpoints * percent // 100) if endpoints else 0


#: 2**(n-1) reaches 10x the base by n = 5: more ejections in a row change nothing.
_MAX_EJECTIONS = 8


@define
class _Record:
    #: Passive: connect failures in a row, ejections in a row, and the current one's end.
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    connect_error: str | None = None
    #: Active: the verdict, and results in a row that disagree with it.
    healthy: bool = True
    streak: int = 0
    probe_error: str | None = None


class HealthBook:
    """Every checked endpoint's record. Methods return whether the view may have changed."""

    def __init__(self) -> None:
        self.checks: dict[str, BackendChecks] = {}
        self._records: dict[Key, _Record] = {}

    def configure(self, checks: Mapping[str, BackendChecks]) -> None:
        """Follow a new table: endpoints that stay keep their record (and a check that stays
        its state); the others are forgotten."""
        records: dict[Key, _Record] = {}
        for backend, new in checks.items():
            old = self.checks.get(backend)
            for endpoint in new.endpoints:
                record = self._records.get((backend, endpoint)) or _Record()
                if old is not None and new.passive != old.passive:
                    record.failures, record.ejections, record.ejected_until = 0, 0, 0.0
                if old is not None and new.active != old.active:
                    record.healthy, record.streak, record.probe_error = True, 0, None
                records[(backend, endpoint)] = record
        self.checks, self._records = dict(checks), records

    def connect_failed(self, key: Key, reason: str, now: float) -> bool:
        record = self._records.get(key)
        passive = self.checks[key[0]].passive if record is not None else None
        if record is None or passive is None:
            return False
        record.connect_error = reason
        if record.ejected_until > now:
            # Connections that still reach it (fail open, connects already under way) say
            # nothing new: after the ejection it takes as many failures again.
            return False
        record.failures += 1
        if record.failures < passive.consecutive_failures:
            return record.failures == 1  # the endpoint became a suspect
        ejected = sum(1 for k in self._backend_keys(key[0]) if self._records[k].ejected_until > now)
        allowed = ejection_allowance(
            len(self.checks[key[0]].endpoints), passive.max_ejection_percent
        )
        if ejected >= allowed:
            return False  # it stays a suspect: its next failure tries again
        longest = 10 * passive.base_ejection
        if record.ejected_until and now - record.ejected_until > longest:
            record.ejections = 0  # long enough without an ejection: from the base again
        # Capped: past 10x the base the count changes nothing (and 2**n must stay a float).
        record.ejections = min(record.ejections + 1, _MAX_EJECTIONS)
        duration = min(passive.base_ejection * 2 ** (record.ejections - 1), longest)
        record.ejected_until = now + duration
        record.failures = 0
        return True

    def connect_succeeded(self, key: Key) -> bool:
        record = self._records.get(key)
        if record is None or not record.failures:
            return False
        record.failures = 0
        return True

    def probed(self, key: Key, error: str | None) -> bool:
        """An active probe's result (None: it passed)."""
        record = self._records.get(key)
        active = self.checks[key[0]].active if record is not None else None
        if record is None or active is None:
            return False
        if error is not None:
            record.probe_error = error
        if (error is None) == record.healthy:
            record.streak = 0
            return False
        record.streak += 1
        threshold = active.healthy_threshold if error is None else active.unhealthy_threshold
        if record.streak < threshold:
            return False
        record.healthy, record.streak = error is None, 0
        return True

    def next_expiry(self, now: float) -> float | None:
        """When the next ejection ends (the view changes then), or None."""
        ends = [r.ejected_until for r in self._records.values() if r.ejected_until > now]
        return min(ends) if ends else None

    def state(self, key: Key, now: float) -> EndpointHealth | None:
        """An endpoint's health; None if it has no check."""
        record = self._records.get(key)
        if record is None:
            return None
        if record.ejected_until > now:
            return EndpointHealth(HealthState.EJECTED, record.ejected_until, record.connect_error)
        if not record.healthy:
            return EndpointHealth(HealthState.UNHEALTHY, None, record.probe_error)
        return EndpointHealth(HealthState.HEALTHY)

    def states(self, now: float) -> Iterable[tuple[Key, EndpointHealth]]:
        for key in self._records:
            found = self.state(key, now)
            assert found is not None
            yield key, found

    def view(self, now: float) -> HealthView:
        avoid: dict[str, set[str]] = {}
        for (backend, endpoint), record in self._records.items():
            if record.ejected_until > now or not record.healthy:
                avoid.setdefault(backend, set()).add(endpoint)
        return HealthView(
            avoid={backend: frozenset(endpoints) for backend, endpoints in avoid.items()},
            suspects=frozenset(k for k, r in self._records.items() if r.failures),
        )

    def all_avoided(self, view: HealthView) -> set[str]:
        """The backends whose every endpoint the view avoids (connections fail open)."""
        return {
            backend
            for backend, endpoints in view.avoid.items()
            if len(endpoints) >= len(self.checks[backend].endpoints)
        }

    def _backend_keys(self, backend: str) -> Iterable[Key]:
        return ((backend, endpoint) for endpoint in self.checks[backend].endpoints)
