"""The compiled routing snapshot and the per-connection lookup (SPEC.md §10).

Pure. A `Snapshot` is built once per configuration change by `translate` and never mutated: a
connection reads it once, after its ClientHello, and keeps it for its life (ARCHITECTURE.md).
Lookup cost is a few dict probes: exact name, then each wildcard suffix of the SNI from the
longest, then the hostname-less entry; no scan over listeners or routes.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import itertools
from collections.abc import Iterator, Mapping
from enum import StrEnum

from attrs import field, frozen

from gateway.api.kinds import ObjectKey
from gateway.api.names import NamespacedName, ip_version
from gateway.api.status import Status
from gateway.routing.hostnames import normalize_sni, specificity, wildcard_suffixes


@frozen
class Endpoint:
    """A backend address; FQDN endpoints are resolved at connect time (API.md)."""

    address: str
    port: int
    #: 4 or 6 for an IP address, 0 for a name to resolve; and `host:port` as logs write it.
    #: Made once per endpoint (builds share endpoint values), not once per connection.
    ip_version: int = field(init=False, eq=False, repr=False)
    text: str = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "ip_version", ip_version(self.address) or 0)
        host = f"[{self.address}]" if ":" in self.address else self.address
        object.__setattr__(self, "text", f"{host}:{self.port}")

    def __str__(self) -> str:
        return self.text


@frozen(kw_only=True)
class Certificate:
    """A Secret's certificate chain and private key (PEM), as the data plane serves or
    presents them: a connection needs nothing but the snapshot. The key never appears in a
    repr, a log line or the table's wire form."""

    secret: NamespacedName
    chain: bytes = field(repr=False)
    key: bytes = field(repr=False)


@frozen(kw_only=True)
class BackendTLS:
    """Re-encryption to a backend Service targeted by an accepted BackendTLSPolicy (SPEC.md
    §10.7): TLS with SNI = hostname, verified against the CA bundles (or the system roots) and
    the hostname, or the subjectAltNames when the policy lists some. Terminate listeners only."""

    policy: str
    hostname: str
    ca_config_maps: tuple[NamespacedName, ...] = ()
    #: The `ca.crt` of those ConfigMaps, concatenated (PEM); empty: the system roots.
    ca_bundle: str = ""
    well_known: str | None = None
    subject_alt_names: tuple[tuple[str, str], ...] = ()
    #: Set when the policy is not accepted: its Services' shares are refused (never sent
    #: unverified or in plain text).
    error: str | None = None


@frozen(kw_only=True)
class PassiveCheck:
    """`healthCheck.passive`: eject an endpoint after consecutive connect failures."""

    consecutive_failures: int = 3
    #: Seconds of the first ejection; each repeat doubles it, up to 10 times this.
    base_ejection: float = 30.0
    #: Of a Service's endpoints at most this share is ejected, rounding down, but one may be.
    max_ejection_percent: int = 50


@frozen(kw_only=True)
class ActiveCheck:
    """`healthCheck.active`: probes by the main process, every `interval` seconds."""

    #: `TCP` (a connect) or `TLS` (a full handshake).
    type: str
    interval: float = 5.0
    timeout: float = 1.0
    healthy_threshold: int = 1
    unhealthy_threshold: int = 3


@frozen(kw_only=True)
class BackendTraffic:
    """What the accepted BackendTrafficPolicy of a Service says (API.md "Traffic
    policies"): how tlsgate reaches its endpoints, from every route."""

    #: `namespace/name` of the policies in force (their fields are disjoint).
    policies: tuple[str, ...]
    #: Send a PROXY protocol header of this version (1 or 2) before any other byte.
    proxy_version: int | None = None
    #: Seconds to connect one endpoint, over --connect-timeout.
    connect_timeout: float | None = None
    #: Endpoints tried per connection (distinct ones), over the default of 3.
    attempts: int | None = None
    #: RoundRobin (None), Random, or ConsistentHash (by the client's address).
    balance: str | None = None
    passive: PassiveCheck | None = None
    active: ActiveCheck | None = None

    @property
    def checked(self) -> bool:
        """Is the health of the Service's endpoints followed (so some may be avoided)?"""
        return self.passive is not None or self.active is not None


@frozen(kw_only=True)
class Backend:
    """One weighted backendRef. `reject` says why connections drawn to it are closed
    (an invalid reference, or no ready endpoint): its weight still counts (SPEC.md §10.4)."""

    name: str
    weight: int
    endpoints: tuple[Endpoint, ...] = ()
    reject: str | None = None
    tls: BackendTLS | None = None
    traffic: BackendTraffic | None = None


@frozen(kw_only=True)
class RouteTarget:
    """The route that won one effective hostname on one listener, and what lost to it."""

    route: str
    hostname: str
    backends: tuple[Backend, ...]
    shadowed: tuple[str, ...] = ()
    _cumulative: tuple[int, ...] = field(init=False)

    def __attrs_post_init__(self) -> None:
        backends = self.backends
        cumulative = (
            (backends[0].weight,)
            if len(backends) == 1
            else tuple(itertools.accumulate(b.weight for b in backends))
        )
        object.__setattr__(self, "_cumulative", cumulative)

    @property
    def total_weight(self) -> int:
        return self._cumulative[-1] if self._cumulative else 0

    def choose(self, point: int) -> Backend:
        """The backend owning `point` in [0, total_weight): weight/sum odds (SPEC.md §10.4).
        A zero-weight backend owns no point, so it never receives traffic."""
        return self.backends[bisect.bisect_right(self._cumulative, point)]


@frozen(kw_only=True)
class FrontendValidation:
    """Client-certificate validation of a Terminate listener (SPEC.md §10.8)."""

    mode: str
    ca_config_maps: tuple[NamespacedName, ...]
    #: The `ca.crt` of those ConfigMaps, concatenated (PEM).
    ca_bundle: str = ""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_of(address: str | IP) -> IP | None:
    """An address as policies match it: parsed (None if it is none), IPv4-mapped IPv6 as
    the IPv4 address. The data plane parses a connection's addresses once and passes the
    value: every check below takes either."""
    if isinstance(address, str):
        try:
            address = ipaddress.ip_address(address)
        except ValueError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: str | IP | None, networks: tuple[Network, ...]) -> bool:
    """Is `address` inside one of `networks`?"""
    ip = ip_of(address) if address is not None else None
    return ip is not None and any(ip in network for network in networks)


class LimitKind(StrEnum):
    """A ClientTrafficPolicy's `connection` limits, named as refusals count them
    (`tlsgate_connections_refused_total{reason}`)."""

    #: connectionLimit.value: connections open at once through the policy's target.
    CONNECTIONS = "connection-limit"
    #: perClient.maxConnections: connections open at once from one client address.
    CLIENT_CONNECTIONS = "client-connection-limit"
    #: perClient.connectionsPerSecond: connections admitted per second from one address.
    CLIENT_RATE = "client-rate-limit"


def limit_key(text: str) -> int:
    """The shared counters' key of a rule: a 64-bit hash of its kind and scope, the same in
    every process (Python's hash() of a str is salted per process), never 0 (0 marks a free
    counter). Client addresses are hashed with a secret key by the counters themselves."""
    value = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return (value & 0x7FFF_FFFF_FFFF_FFFF) or 1


@frozen
class LimitRule:
    """One limit in force on a listener: what it counts, over which target, and the most it
    admits. `scope` is the policy's target as written (`ns/gateway` or
    `ns/gateway/listener`): connections of every listener a Gateway's limit reaches count
    together."""

    kind: LimitKind
    scope: str
    value: int
    #: The counter key of the rule (per-client limits mix in their client's, `mixed`).
    key: int = field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "key", limit_key(f"{self.kind}|{self.scope}"))

    @property
    def per_client(self) -> bool:
        return self.kind is not LimitKind.CONNECTIONS

    def mixed(self, client_key: int) -> int:
        """A per-client rule's key for the client whose own key is `client_key` (one hash of
        the address per connection, whatever the number of rules)."""
        return ((self.key * 0x9E37_79B9_7F4A_7C15) ^ client_key) & 0x7FFF_FFFF_FFFF_FFFF or 1

    def refusal(self, client: str) -> str:
        if self.kind is LimitKind.CONNECTIONS:
            return f"connectionLimit {self.value} of {self.scope} reached"
        if self.kind is LimitKind.CLIENT_CONNECTIONS:
            return f"perClient.maxConnections {self.value} of {self.scope} reached by {client}"
        return f"perClient.connectionsPerSecond {self.value} of {self.scope} reached by {client}"


@frozen(kw_only=True)
class ClientPolicy:
    """What the accepted ClientTrafficPolicies say for one listener, the listener's own
    fields over the Gateway's (API.md "Traffic policies", GEP-713: the more specific
    target wins)."""

    #: `namespace/name` of the policies in force here, as logs and explain name them.
    policies: tuple[str, ...]
    #: PROXY protocol expected from peers in these networks; None: not expected.
    proxy_trusted: tuple[Network, ...] | None = None
    proxy_optional: bool = False
    #: Client addresses admitted (None: any) and refused; deny wins.
    allow: tuple[Network, ...] | None = None
    deny: tuple[Network, ...] = ()
    #: Seconds, over the serve flags (None: the flag's): idle either way; for the
    #: ClientHello (and what precedes it); for a Terminate listener's handshake.
    idle_timeout: float | None = None
    hello_timeout: float | None = None
    handshake_timeout: float | None = None
    #: Its `connection` limits, counted over the whole process tree (dataplane/limits.py).
    limits: tuple[LimitRule, ...] = ()

    def refuses(self, client: str | IP) -> str | None:
        """Why the client address is refused by `clientIPs`, or None."""
        if self.deny and in_networks(client, self.deny):
            return f"{client} is in clientIPs.deny"
        if self.allow is not None and not in_networks(client, self.allow):
            return f"{client} is not in clientIPs.allow"
        return None

    def trusts(self, peer: str | IP) -> bool:
        return self.proxy_trusted is not None and in_networks(peer, self.proxy_trusted)

    def refusal(self, peer: str | IP, client: str | IP, proxied: bool) -> tuple[str, str] | None:
        """Why this listener closes a connection from socket peer `peer`, whose client
        address is `client` (carried by a PROXY header if `proxied`), as (reason, message);
        None to serve it."""
        if proxied and not self.trusts(peer):
            return (
                "proxy-protocol",
                f"{peer} sent a PROXY header but is not in proxyProtocol.trustedCIDRs",
            )
        if not proxied and self.trusts(peer) and not self.proxy_optional:
            return ("proxy-protocol", f"{peer} is in proxyProtocol.trustedCIDRs but sent no header")
        why = self.refuses(client)
        return ("client-ip", why) if why is not None else None


@frozen(kw_only=True)
class ListenerTable:
    gateway: str
    name: str
    hostname: str | None
    mode: str
    port: int
    #: The certificates this listener serves (Terminate), from its certificateRefs.
    certificates: tuple[Certificate, ...] = ()
    frontend: FrontendValidation | None = None
    #: Its ClientTrafficPolicies, merged; None without any.
    client: ClientPolicy | None = None
    #: ALPN protocols a Terminate listener negotiates, preferred first (its
    #: `tls.options["gateway.tlsgate.dev/alpn"]`, API.md "PostgreSQL").
    alpn: tuple[str, ...] = ()
    #: The Gateway's spec.tls.backend.clientCertificateRef, presented when re-encrypting.
    backend_client_certificate: Certificate | None = None
    #: Set when the listener cannot serve: the connections it wins are closed, never handed to
    #: a broader listener (SPEC.md §10.1 recommendation).
    reject: str | None = None
    #: Effective hostname -> its target: the lookup index itself (never changed once made).
    routes: Mapping[str, RouteTarget] = field(factory=dict)
    #: `namespace/gateway/listener`, as the access log and the metrics name it: made once
    #: here, not per connection, and the one place that says how.
    full_name: str = field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "full_name", f"{self.gateway}/{self.name}")

    def route_for(self, sni: str) -> RouteTarget | None:
        """Most specific effective hostname: exact, then longest wildcard (SPEC.md §10.2)."""
        target = self.routes.get(sni)
        if target is not None:
            return target
        for pattern in wildcard_suffixes(sni):
            target = self.routes.get(pattern)
            if target is not None:
                return target
        return None

    def ordered_routes(self) -> list[RouteTarget]:
        """The targets as the table lists them: more specific hostnames first (§10.2)."""
        return [self.routes[h] for h in sorted(self.routes, key=lambda h: (specificity(h), h))]


@frozen(kw_only=True)
class Bind:
    """One (address, port) socket, served by one Gateway or by a merged set of Gateways whose
    listeners there have distinct hostnames (SPEC.md §9.2 "Across Gateways")."""

    address: str
    port: int
    gateways: tuple[str, ...]
    listeners: tuple[ListenerTable, ...]
    #: The last bind attempt's error; the data plane keeps retrying while it is set.
    error: str | None = None
    _by_hostname: Mapping[str | None, ListenerTable] = field(init=False)

    _screened: bool = field(init=False)
    _headers: bool = field(init=False)
    #: The limits every listener here has (a whole Gateway's): counted at accept.
    _accept_limits: tuple[LimitRule, ...] = field(init=False)
    #: The longest helloTimeout a policy sets here, and whether a listener has none.
    _hello: tuple[float | None, bool] = field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_hostname", {lst.hostname: lst for lst in self.listeners})
        # Decided once per table, not per connection: most sockets have no policy at all.
        policies = [lst.client for lst in self.listeners]
        object.__setattr__(self, "_screened", any(p is not None for p in policies))
        object.__setattr__(
            self,
            "_headers",
            any(p is not None and p.proxy_trusted is not None for p in policies),
        )
        first = policies[0] if policies else None
        common = set(first.limits) if first is not None else set()
        for p in policies[1:]:
            common &= set(p.limits) if p is not None else set()
        accept = tuple(r for r in first.limits if r in common) if first is not None else ()
        object.__setattr__(self, "_accept_limits", accept)
        hellos = [p.hello_timeout if p is not None else None for p in policies]
        given = [h for h in hellos if h is not None]
        object.__setattr__(
            self, "_hello", (max(given) if given else None, len(given) < len(hellos))
        )

    @property
    def screened(self) -> bool:
        """Has a listener here a ClientTrafficPolicy (so connections are screened)?"""
        return self._screened

    def expects_proxy_headers(self) -> bool:
        """Does a listener here read PROXY headers (so a connection's first bytes are checked
        for one)?"""
        return self._headers

    def trusts(self, peer: str | IP) -> bool:
        """Does a listener here take PROXY headers from `peer`? A header from a peer none of
        them trusts is refused at once: its claimed address is never believed, not even
        in a log line."""
        return any(lst.client is not None and lst.client.trusts(peer) for lst in self.listeners)

    def hello_timeout(self, default: float) -> float:
        """How long a connection here may take to send its ClientHello. The listener is not
        known before it: the longest of the listeners' (each the flag's, `default`, unless
        a policy sets one), so no listener's clients get less than its policy gives."""
        longest, some_without = self._hello
        if longest is None:
            return default
        return max(longest, default) if some_without else longest

    def refusal_at_accept(self, peer: str | IP) -> str | None:
        """Why a connection from `peer` is closed at once, before a byte is read, or None:
        when no listener here would serve that address (clientIPs), and no listener takes a
        PROXY header from it (whose address would decide instead)."""
        if not self._screened:
            return None
        reasons = []
        for lst in self.listeners:
            client = lst.client
            if client is None or client.trusts(peer):
                return None
            why = client.refuses(peer)
            if why is None:
                return None
            reasons.append(why)
        return reasons[0] if reasons else None

    def limits_at_accept(self, peer: str | IP) -> tuple[LimitRule, ...]:
        """The limits counted before a byte is read: those of every listener here (a whole
        Gateway's, API.md "Traffic policies"). A per-client limit waits for the hello when a
        PROXY header may yet name another client."""
        rules = self._accept_limits
        if rules and self._headers and self.trusts(peer):
            return tuple(r for r in rules if not r.per_client)
        return rules

    def listener_for(self, sni: str) -> ListenerTable | None:
        """Exact hostname, then longest wildcard suffix, then no hostname (SPEC.md §10.1)."""
        found = self._by_hostname.get(sni)
        if found is not None:
            return found
        for pattern in wildcard_suffixes(sni):
            found = self._by_hostname.get(pattern)
            if found is not None:
                return found
        return self._by_hostname.get(None)


class RejectReason(StrEnum):
    NO_BIND = "no-bind"
    NO_SNI = "no-sni"
    NO_LISTENER = "no-listener"
    LISTENER_NOT_PROGRAMMED = "listener-not-programmed"
    NO_ROUTE = "no-route"
    NO_BACKEND = "no-backend"


@frozen
class Routed:
    bind: Bind
    listener: ListenerTable
    target: RouteTarget


@frozen
class Rejected:
    reason: RejectReason
    message: str
    listener: ListenerTable | None = None


@frozen(kw_only=True)
class Snapshot:
    generation: int
    statuses: Mapping[ObjectKey, Status]
    binds: Mapping[tuple[str, int], Bind]

    def listeners(self) -> Iterator[ListenerTable]:
        """Every listener of every bind."""
        for bind in self.binds.values():
            yield from bind.listeners

    def backends(self) -> Iterator[tuple[ListenerTable, Backend]]:
        """Every backend of every route target, with the listener it is reached through."""
        for listener in self.listeners():
            for target in listener.routes.values():
                for backend in target.backends:
                    yield listener, backend

    def lookup(self, address: str, port: int, sni: str | None) -> Routed | Rejected:
        """Route a ClientHello that arrived on the socket bound to (address, port).

        Listener isolation: once the most specific listener is chosen, only its routes are
        considered; there is no fallback to a broader listener (SPEC.md §10.1 step 4).
        """
        bind = self.binds.get((address, port))
        if bind is None:
            return Rejected(RejectReason.NO_BIND, f"nothing is bound to {address}:{port}")
        if not sni:
            # Route hostnames are mandatory, so a hello without SNI matches nothing (§10.3).
            return Rejected(RejectReason.NO_SNI, "the ClientHello has no server_name")
        name = normalize_sni(sni)
        listener = bind.listener_for(name)
        if listener is None:
            return Rejected(
                RejectReason.NO_LISTENER, f"no listener on port {port} matches {name!r}"
            )
        if listener.reject is not None:
            return Rejected(
                RejectReason.LISTENER_NOT_PROGRAMMED,
                f"listener {listener.full_name} is not programmed: {listener.reject}",
                listener,
            )
        target = listener.route_for(name)
        if target is None:
            return Rejected(
                RejectReason.NO_ROUTE,
                f"no route on listener {listener.full_name} matches {name!r}",
                listener,
            )
        if target.total_weight == 0:
            return Rejected(
                RejectReason.NO_BACKEND,
                f"route {target.route} has no backend with a non-zero weight",
                listener,
            )
        return Routed(bind, listener, target)
