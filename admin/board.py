"""What the dashboard shows (API.md "Dashboard"), as plain values for its templates.

Pure: the documents with their status, the routing table, samples of the data plane's
counters and the recent access lines go in; rows, badges, rates and sparkline points come
out. `admin/dashboard.py` does the I/O (the views, when to sample) and the templates only
lay these values out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from gateway.logs import logfmt
from gateway.routing.snapshot import Snapshot

#: (sample name, sorted labels) -> value: how the main process holds the data plane's
#: counters (`Metrics.totals`, `supervisor.WorkerCounters.totals`).
Totals = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]
#: (gateway, listener full name, route) -> connections open now.
OpenCounts = Mapping[tuple[str, str, str], int]

#: Samples kept per series: two minutes at one a second.
HISTORY = 120
#: A gap longer than this between two samples (nobody was looking) starts the history
#: again: a rate over it would be an average nobody asked for.
GAP_SECONDS = 10.0
#: Days before its certificate expires that a Secret is shown as a warning.
EXPIRY_WARNING_DAYS = 14


# --- badges ---------------------------------------------------------------------------------


@attrs.frozen
class Badge:
    """One condition as the dashboard shows it: `tone` is `ok`, `bad` or `warn` (CSS
    classes), from whether the condition's status is the healthy one for its type."""

    type: str
    status: str
    reason: str
    message: str
    tone: str


#: Condition types whose healthy status is False (SPEC.md: a Conflicted listener is broken).
_HEALTHY_FALSE = frozenset({"Conflicted"})


def badges(conditions: object) -> tuple[Badge, ...]:
    if not isinstance(conditions, list):
        return ()
    out = []
    for condition in conditions:
        if not isinstance(condition, dict):
            continue
        kind, status = str(condition.get("type", "")), str(condition.get("status", ""))
        healthy = "False" if kind in _HEALTHY_FALSE else "True"
        tone = "ok" if status == healthy else ("warn" if status == "Unknown" else "bad")
        out.append(
            Badge(
                kind,
                status,
                str(condition.get("reason", "")),
                str(condition.get("message", "")),
                tone,
            )
        )
    return tuple(out)


# --- Gateways and routes -----------------------------------------------------------------


@attrs.frozen
class ListenerRow:
    name: str
    port: object
    protocol: str
    mode: str
    hostname: str
    attached: object
    badges: tuple[Badge, ...]


@attrs.frozen
class GatewayRow:
    namespace: str
    name: str
    gateway_class: str
    addresses: str
    badges: tuple[Badge, ...]
    listeners: tuple[ListenerRow, ...]


def gateway_rows(gateways: Iterable[Mapping[str, Any]]) -> list[GatewayRow]:
    """Gateways as the API shows them (`with_status`), with each listener's status."""
    rows = []
    for wire in gateways:
        meta, spec, status = _parts(wire)
        listener_status = {
            entry.get("name"): entry
            for entry in status.get("listeners", [])
            if isinstance(entry, dict)
        }
        listeners = []
        for listener in spec.get("listeners", []):
            if not isinstance(listener, dict):
                continue
            seen = listener_status.get(listener.get("name"), {})
            tls = listener.get("tls") if isinstance(listener.get("tls"), dict) else {}
            listeners.append(
                ListenerRow(
                    name=str(listener.get("name", "")),
                    port=listener.get("port", ""),
                    protocol=str(listener.get("protocol", "")),
                    mode=str((tls or {}).get("mode", "")),
                    hostname=str(listener.get("hostname") or "*"),
                    attached=seen.get("attachedRoutes", ""),
                    badges=badges(seen.get("conditions")),
                )
            )
        addresses = ", ".join(
            str(a.get("value")) for a in status.get("addresses", []) if isinstance(a, dict)
        )
        rows.append(
            GatewayRow(
                namespace=str(meta.get("namespace", "")),
                name=str(meta.get("name", "")),
                gateway_class=str(spec.get("gatewayClassName", "")),
                addresses=addresses,
                badges=badges(status.get("conditions")),
                listeners=tuple(listeners),
            )
        )
    return rows


@attrs.frozen
class ParentRow:
    parent: str
    badges: tuple[Badge, ...]


@attrs.frozen
class RouteRow:
    namespace: str
    name: str
    hostnames: str
    backends: str
    parents: tuple[ParentRow, ...]
    #: "hostname on listener" entries where another route won this route's hostname.
    shadowed: tuple[str, ...]


def route_rows(routes: Iterable[Mapping[str, Any]], snapshot: Snapshot) -> list[RouteRow]:
    """TLSRoutes with each parent's conditions, and where they are shadowed (SPEC.md §10.2:
    an older route won the same hostname on the same listener)."""
    lost: dict[str, list[str]] = {}
    for listener in snapshot.listeners():
        for target in listener.routes.values():
            for loser in target.shadowed:
                lost.setdefault(loser, []).append(
                    f"{target.hostname} on {listener.full_name} (won by {target.route})"
                )
    rows = []
    for wire in routes:
        meta, spec, status = _parts(wire)
        key = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        parents = []
        for entry in status.get("parents", []):
            if not isinstance(entry, dict):
                continue
            ref = entry.get("parentRef") if isinstance(entry.get("parentRef"), dict) else {}
            name = f"{(ref or {}).get('namespace', '')}/{(ref or {}).get('name', '')}"
            if (ref or {}).get("sectionName"):
                name += f"/{(ref or {})['sectionName']}"
            parents.append(ParentRow(name.lstrip("/"), badges(entry.get("conditions"))))
        backends = []
        for rule in spec.get("rules", []):
            for ref in rule.get("backendRefs", []) if isinstance(rule, dict) else []:
                if isinstance(ref, dict):
                    backends.append(f"{ref.get('name', '')}:{ref.get('port', '')}")
        rows.append(
            RouteRow(
                namespace=str(meta.get("namespace", "")),
                name=str(meta.get("name", "")),
                hostnames=", ".join(str(h) for h in spec.get("hostnames", [])) or "*",
                backends=", ".join(backends),
                parents=tuple(parents),
                shadowed=tuple(lost.get(key, ())),
            )
        )
    return rows


def _parts(wire: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    def part(name: str) -> dict[str, Any]:
        value = wire.get(name)
        return value if isinstance(value, dict) else {}

    return part("metadata"), part("spec"), part("status")


# --- certificates ---------------------------------------------------------------------------


@attrs.frozen
class CertificateRow:
    secret: str
    expires: float
    days: float
    tone: str


def certificate_rows(expiries: Mapping[str, float], now: float) -> list[CertificateRow]:
    """Each Secret's leaf expiry, soonest first: `bad` once expired, `warn` within
    EXPIRY_WARNING_DAYS."""
    rows = []
    for secret, expires in expiries.items():
        days = (expires - now) / 86400
        tone = "bad" if days <= 0 else "warn" if days <= EXPIRY_WARNING_DAYS else "ok"
        rows.append(CertificateRow(secret, expires, days, tone))
    rows.sort(key=lambda row: (row.expires, row.secret))
    return rows


# --- live figures ---------------------------------------------------------------------------


@attrs.frozen
class Counts:
    """One sample of the data plane's counters, by what the dashboard groups them by."""

    at: float
    #: (gateway, listener, route) -> connections its ClientHello chose it for.
    connections: Mapping[tuple[str, str, str], float]
    #: listener -> the same, over its routes.
    listener_connections: Mapping[str, float]
    #: listener -> bytes both ways.
    listener_bytes: Mapping[str, float]
    #: route -> bytes both ways.
    route_bytes: Mapping[str, float]
    #: (listener, outcome) -> connections rejected or refused ("" listener: none reached).
    rejections: Mapping[tuple[str, str], float]
    #: reason -> connections refused at accept.
    refused: Mapping[str, float]


def counts_of(totals: Totals, at: float) -> Counts:
    connections: dict[tuple[str, str, str], float] = {}
    by_listener: dict[str, float] = {}
    listener_bytes: dict[str, float] = {}
    route_bytes: dict[str, float] = {}
    rejections: dict[tuple[str, str], float] = {}
    refused: dict[str, float] = {}
    for (name, pairs), value in totals.items():
        labels = dict(pairs)
        if name == "tlsgate_listener_connections_total":
            key = (labels.get("gateway", ""), labels.get("listener", ""), labels.get("route", ""))
            connections[key] = connections.get(key, 0.0) + value
            by_listener[key[1]] = by_listener.get(key[1], 0.0) + value
        elif name == "tlsgate_listener_bytes_total":
            listener = labels.get("listener", "")
            listener_bytes[listener] = listener_bytes.get(listener, 0.0) + value
        elif name == "tlsgate_route_bytes_total":
            route = labels.get("route", "")
            route_bytes[route] = route_bytes.get(route, 0.0) + value
        elif name == "tlsgate_connections_finished_total":
            outcome = labels.get("outcome", "")
            if outcome.startswith(("rejected-", "refused-")):
                key2 = (labels.get("listener", ""), outcome)
                rejections[key2] = rejections.get(key2, 0.0) + value
        elif name == "tlsgate_connections_refused_total":
            reason = labels.get("reason", "")
            refused[reason] = refused.get(reason, 0.0) + value
    return Counts(at, connections, by_listener, listener_bytes, route_bytes, rejections, refused)


class History:
    """The last HISTORY samples of the counters, one per `min_interval` at most, whoever
    asks: the dashboard samples when it is looked at, and costs nothing when it is not."""

    def __init__(self, size: int = HISTORY, min_interval: float = 1.0) -> None:
        self.samples: deque[Counts] = deque(maxlen=size)
        self.min_interval = min_interval

    def due(self, now: float) -> bool:
        return not self.samples or now - self.samples[-1].at >= self.min_interval

    def add(self, counts: Counts) -> None:
        if self.samples and counts.at - self.samples[-1].at > GAP_SECONDS:
            self.samples.clear()
        self.samples.append(counts)


@attrs.frozen
class Figure:
    """A rate now (per second, over the last two samples) and its sparkline's points."""

    now: float | None
    points: str


def figure(values: Sequence[float | None], times: Sequence[float]) -> Figure:
    """Rates between consecutive samples of a counter (None where it did not exist: a
    counter that starts at a later sample starts from 0 there, as Prometheus' rate does
    not, but a new route's first connections are what an operator looks for)."""
    rates: list[float] = []
    for i in range(1, len(values)):
        before, after = values[i - 1], values[i]
        span = times[i] - times[i - 1]
        if after is None or span <= 0:
            rates.append(0.0)
            continue
        delta = after - (before or 0.0)
        rates.append(max(delta, 0.0) / span)  # a counter that went down was reset: 0
    return Figure(rates[-1] if rates else None, sparkline(rates))


#: Sparkline box: a viewBox of SPARK_WIDTH x SPARK_HEIGHT user units.
SPARK_WIDTH, SPARK_HEIGHT = 120, 24


#: Slots a sparkline has at least: its first seconds are drawn as wide steps, not a dot.
SPARK_MIN_SLOTS = 20


def sparkline(values: Sequence[float], slots: int = HISTORY - 1) -> str:
    """SVG polyline points for `values`, newest at the right edge, scaled to the largest
    (a flat line at the bottom when all are 0); the box holds as many slots as there are
    values (SPARK_MIN_SLOTS to `slots`)."""
    if not values:
        return ""
    values = list(values)[-slots:]
    slots = max(len(values), SPARK_MIN_SLOTS)
    top = max(values) or 1.0
    step = SPARK_WIDTH / max(slots - 1, 1)
    start = SPARK_WIDTH - step * (len(values) - 1)
    return " ".join(
        f"{start + i * step:.1f},{SPARK_HEIGHT - 1 - (value / top) * (SPARK_HEIGHT - 2):.1f}"
        for i, value in enumerate(values)
    )


@attrs.frozen
class RouteFigures:
    route: str
    active: int
    connections: Figure
    bytes: Figure


@attrs.frozen
class ListenerFigures:
    listener: str
    gateway: str
    mode: str
    port: int
    active: int
    connections: Figure
    bytes: Figure
    rejections: tuple[tuple[str, int], ...]
    routes: tuple[RouteFigures, ...]
    #: Routes on the listener not listed (beyond ROUTES_SHOWN).
    more_routes: int


@attrs.frozen
class LiveFigures:
    listeners: tuple[ListenerFigures, ...]
    #: Connections no listener took, by outcome or refusal reason, since the start.
    unrouted: tuple[tuple[str, int], ...]
    #: Seconds of history the sparklines cover.
    span: float


#: Routes listed per listener at most, the busiest first (10,000 routes are not a page).
ROUTES_SHOWN = 20


def live_figures(
    snapshot: Snapshot, samples: Sequence[Counts], open_now: OpenCounts
) -> LiveFigures:
    """Per listener the table configures, and per route on it: connections open now,
    connections and bytes a second (with their history), and rejections by reason since
    the start (the counters' values)."""
    times = [s.at for s in samples]
    last = samples[-1] if samples else Counts(0.0, {}, {}, {}, {}, {}, {})
    open_by_listener: dict[str, int] = {}
    for (_, listener, _), count in open_now.items():
        open_by_listener[listener] = open_by_listener.get(listener, 0) + count
    rejected: dict[str, list[tuple[str, int]]] = {}
    for (listener, outcome), n in sorted(last.rejections.items()):
        if n:
            rejected.setdefault(listener, []).append((outcome, int(n)))
    listeners = []
    for table in sorted(snapshot.listeners(), key=lambda t: t.full_name):
        name, gateway = table.full_name, table.gateway
        routes = []
        for route in sorted({target.route for target in table.routes.values()}):
            key = (gateway, name, route)
            routes.append(
                RouteFigures(
                    route=route,
                    active=open_now.get(key, 0),
                    connections=figure([s.connections.get(key) for s in samples], times),
                    bytes=figure([s.route_bytes.get(route) for s in samples], times),
                )
            )
        routes.sort(key=lambda r: (-r.active, -(r.connections.now or 0.0), r.route))
        listeners.append(
            ListenerFigures(
                listener=name,
                gateway=gateway,
                mode=str(table.mode),
                port=table.port,
                active=open_by_listener.get(name, 0),
                connections=figure([s.listener_connections.get(name) for s in samples], times),
                bytes=figure([s.listener_bytes.get(name) for s in samples], times),
                rejections=tuple(rejected.get(name, ())),
                routes=tuple(routes[:ROUTES_SHOWN]),
                more_routes=max(len(routes) - ROUTES_SHOWN, 0),
            )
        )
    unrouted = sorted(
        [*rejected.get("", ())]
        + [(f"refused-{reason}", int(n)) for reason, n in last.refused.items() if n]
    )
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return LiveFigures(tuple(listeners), tuple(unrouted), span)


# --- access lines ---------------------------------------------------------------------------


@attrs.frozen
class AccessLine:
    at: float
    fields: Mapping[str, object]
    text: str
    tone: str


#: Lines the dashboard lists at most.
ACCESS_SHOWN = 100


def access_lines(
    recent: Iterable[tuple[float, Mapping[str, object]]], query: str, limit: int = ACCESS_SHOWN
) -> list[AccessLine]:
    """The newest lines first that match every term of `query`: `key=value` matches a field
    whose value contains `value` (`outcome=rejected`, `route=apps/`), a bare term the
    line's text; both ignore case."""
    terms = query.lower().split()
    out: list[AccessLine] = []
    for at, fields in reversed(list(recent)):
        text = logfmt(dict(fields))
        if _matches(fields, text.lower(), terms):
            outcome = str(fields.get("outcome", ""))
            tone = (
                "ok"
                if outcome == "closed"
                else ("bad" if outcome in ("error", "internal-error") else "warn")
            )
            out.append(AccessLine(at, fields, text, tone))
            if len(out) >= limit:
                break
    return out


def _matches(fields: Mapping[str, object], text: str, terms: Sequence[str]) -> bool:
    for term in terms:
        key, equals, value = term.partition("=")
        if equals and key:
            found = fields.get(key)
            if found is None or value not in str(found).lower():
                return False
        elif term not in text:
            return False
    return True


# --- explain --------------------------------------------------------------------------------


def explain_query(args: Mapping[str, str]) -> tuple[int | None, str | None, str | None, str]:
    """The explain form's (port, sni, address) and what is wrong with it ("" when nothing,
    or when the form is empty)."""
    port_text = args.get("port", "").strip()
    sni = args.get("sni", "").strip() or None
    address = args.get("address", "").strip() or None
    if not port_text:
        return None, sni, address, ""
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return None, sni, address, "the port must be a number from 1 to 65535"
    return int(port_text), sni, address, ""


# --- formatting -----------------------------------------------------------------------------


def human_rate(value: float | None, unit: str = "") -> str:
    """`1.5k/s`, `0/s`, `-` before there are two samples."""
    if value is None:
        return "-"
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.1f}{prefix}{unit}/s"
    return f"{value:.1f}{unit}/s" if 0 < value < 10 else f"{value:.0f}{unit}/s"


def human_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for factor, prefix in ((1 << 30, "Gi"), (1 << 20, "Mi"), (1 << 10, "Ki")):
        if value >= factor:
            return f"{value / factor:.1f} {prefix}B/s"
    return f"{value:.0f} B/s"
