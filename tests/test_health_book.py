"""The rules of endpoint health (routing/health.py), with the time given: passive ejection,
its doubling and cap, maxEjectionPercent, active thresholds, and what the data plane avoids."""

from __future__ import annotations

import pytest

from gateway.routing.health import (
    BackendChecks,
    EndpointHealth,
    HealthBook,
    HealthState,
    ejection_allowance,
)
from gateway.routing.snapshot import ActiveCheck, PassiveCheck

SERVICE = "apps/db:5432"
A, B, C = ("10.0.0.1:5432", "10.0.0.2:5432", "10.0.0.3:5432")
PASSIVE = PassiveCheck(consecutive_failures=3, base_ejection=30.0, max_ejection_percent=50)
ACTIVE = ActiveCheck(type="TCP", interval=5.0, healthy_threshold=2, unhealthy_threshold=3)


def _book(
    passive: PassiveCheck | None = PASSIVE,
    active: ActiveCheck | None = None,
    endpoints: tuple[str, ...] = (A, B, C),
) -> HealthBook:
    book = HealthBook()
    book.configure({SERVICE: BackendChecks(passive, active, endpoints)})
    return book


def _fail(book: HealthBook, endpoint: str, times: int, now: float) -> None:
    for _ in range(times):
        book.connect_failed((SERVICE, endpoint), "Connection refused", now)


@pytest.mark.parametrize(
    ("endpoints", "percent", "allowed"),
    [(2, 50, 1), (3, 10, 1), (10, 50, 5), (7, 50, 3), (10, 100, 10), (1, 0, 1), (0, 50, 0)],
)
def test_the_ejection_allowance_rounds_down_but_allows_one(
    endpoints: int, percent: int, allowed: int
) -> None:
    assert ejection_allowance(endpoints, percent) == allowed


def test_consecutive_failures_eject_until_the_time_passes() -> None:
    book = _book()
    _fail(book, A, 2, 100.0)
    assert book.state((SERVICE, A), 100.0) == book.state((SERVICE, B), 100.0)  # both healthy
    assert (SERVICE, A) in book.view(100.0).suspects  # its successes must be reported
    _fail(book, A, 1, 100.0)
    health = book.state((SERVICE, A), 100.0)
    assert health is not None
    assert health.state is HealthState.EJECTED
    assert health.until == 130.0
    assert health.error == "Connection refused"
    assert book.view(100.0).avoid == {SERVICE: frozenset({A})}
    assert book.next_expiry(100.0) == 130.0
    assert not book.view(130.0).avoid  # expired: tried again
    assert book.state((SERVICE, A), 130.0).state is HealthState.HEALTHY  # type: ignore[union-attr]


def test_a_success_ends_the_run_of_failures() -> None:
    book = _book()
    _fail(book, A, 2, 1.0)
    assert book.connect_succeeded((SERVICE, A))
    _fail(book, A, 2, 1.0)
    assert not book.view(1.0).avoid
    assert not book.connect_succeeded((SERVICE, B))  # nothing counted: nothing to say


def test_repeated_ejections_double_up_to_ten_times_the_base_then_start_over() -> None:
    book = _book()
    now, durations = 0.0, []
    for _ in range(6):
        _fail(book, A, 3, now)
        until = book.state((SERVICE, A), now).until  # type: ignore[union-attr]
        assert until is not None
        durations.append(until - now)
        now = until + 1  # back, and failing again soon
    assert durations == [30, 60, 120, 240, 300, 300]
    # Unejected for longer than 10 x base: from the base again.
    now += 301
    _fail(book, A, 3, now)
    assert book.state((SERVICE, A), now).until == now + 30  # type: ignore[union-attr]


def test_max_ejection_percent_keeps_the_rest_in_service() -> None:
    book = _book()  # 3 endpoints at 50 %: one at a time
    _fail(book, A, 3, 10.0)
    _fail(book, B, 5, 10.0)
    assert book.view(10.0).avoid == {SERVICE: frozenset({A})}
    assert (SERVICE, B) in book.view(10.0).suspects  # still counted: it tries again
    _fail(book, B, 1, 41.0)  # A is back: B may go now
    assert book.view(41.0).avoid == {SERVICE: frozenset({B})}


def test_active_thresholds_mark_down_and_up() -> None:
    book = _book(passive=None, active=ACTIVE)
    key = (SERVICE, B)
    assert not book.probed(key, "Connection refused")
    assert not book.probed(key, None)  # a pass in between: the run starts again
    assert not book.probed(key, "Connection refused")
    assert not book.probed(key, "Connection refused")
    assert book.probed(key, "Connection refused")  # the third in a row
    health = book.state(key, 0.0)
    assert health is not None
    assert (health.state, health.error) == (HealthState.UNHEALTHY, "Connection refused")
    assert book.view(0.0).avoid == {SERVICE: frozenset({B})}
    assert not book.probed(key, None)
    assert book.probed(key, None)  # healthyThreshold 2
    assert not book.view(0.0).avoid
    # Connect failures count only with a passive check.
    assert not book.connect_failed(key, "refused", 0.0)


def test_every_endpoint_avoided_is_reported_for_fail_open() -> None:
    book = _book(passive=None, active=ActiveCheck(type="TCP", unhealthy_threshold=1))
    for endpoint in (A, B):
        book.probed((SERVICE, endpoint), "down")
    assert book.all_avoided(book.view(0.0)) == set()
    book.probed((SERVICE, C), "down")
    assert book.all_avoided(book.view(0.0)) == {SERVICE}


def test_a_new_table_keeps_what_stays_and_forgets_the_rest() -> None:
    book = _book(active=ACTIVE)
    _fail(book, A, 3, 0.0)
    for _ in range(3):
        book.probed((SERVICE, B), "down")
    book.configure({SERVICE: BackendChecks(PASSIVE, ACTIVE, (A, B))})
    assert book.view(1.0).avoid == {SERVICE: frozenset({A, B})}
    # A changed passive check starts the ejections over; a new endpoint starts healthy.
    changed = PassiveCheck(consecutive_failures=5)
    book.configure({SERVICE: BackendChecks(changed, ACTIVE, (A, B, "10.0.0.9:5432"))})
    assert book.view(1.0).avoid == {SERVICE: frozenset({B})}
    book.configure({})
    assert not book.view(1.0).avoid
    assert book.state((SERVICE, A), 1.0) is None


def test_failures_while_ejected_are_not_counted() -> None:
    """Connections reach an ejected endpoint only when all are avoided or were under way:
    after the ejection it takes as many failures again."""
    book = _book()
    _fail(book, A, 3, 0.0)
    _fail(book, A, 5, 10.0)  # fail open, say
    _fail(book, A, 2, 31.0)  # the ejection ended at 30
    assert not book.view(31.0).avoid
    _fail(book, A, 1, 31.0)
    assert book.view(31.0).avoid == {SERVICE: frozenset({A})}


def test_an_ejected_endpoint_shows_its_connect_error_and_an_unhealthy_one_its_probe_error() -> None:
    book = _book(active=ActiveCheck(type="TLS", unhealthy_threshold=1))
    book.probed((SERVICE, A), "TLS handshake: EOF")
    book.connect_failed((SERVICE, B), "Connection refused", 0.0)
    book.probed((SERVICE, B), "TLS handshake: EOF")
    _fail(book, B, 2, 0.0)
    assert book.state((SERVICE, A), 0.0) == EndpointHealth(
        HealthState.UNHEALTHY, None, "TLS handshake: EOF"
    )
    assert book.state((SERVICE, B), 0.0) == EndpointHealth(
        HealthState.EJECTED, 30.0, "Connection refused"
    )


def test_ejections_in_a_row_never_overflow() -> None:
    """An endpoint that stays listed and dead is ejected again and again, for days."""
    book = _book(passive=PassiveCheck(consecutive_failures=1, base_ejection=1.0))
    now = 0.0
    for _ in range(2000):  # each time failing again just after the ejection ended
        _fail(book, A, 1, now)
        until = book.state((SERVICE, A), now).until  # type: ignore[union-attr]
        assert until is not None
        assert until - now == (10.0 if now > 100 else until - now)
        now = until + 0.5
