"""Incremental and full builds agree (issue 11): on random sequences of changes to a small world
of every kind, the build made from the previous one (as the running gateway makes it) equals a
full build of the same documents, statuses and routing table alike, at every step; and the
patch a worker is sent turns the previous table into the new one."""

from __future__ import annotations

from typing import Any

import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.bundle import admit_all
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.api.status import accepted_counts
from gateway.routing.patch import apply, diff
from gateway.store import metadata
from gateway.store.facts import load_facts
from gateway.translate.build import Translation, translate
from gateway.translate.facts import Facts
from gateway.translate.resources import Resources

GW = "gateway.networking.k8s.io/v1"
_CA = trustme.CA()
_CERT = _CA.issue_cert("*.example.com")
GOOD_CERT = {
    "tls.crt": _CERT.cert_chain_pems[0].bytes().decode(),
    "tls.key": _CERT.private_key_pem.bytes().decode(),
}
CA_PEM = _CA.cert_pem.bytes().decode()
HOSTS = ["a.example.com", "b.example.com", "*.example.com", "c.other.org", "*.other.org"]
NAMESPACES = ["apps", "infra", "team"]
#: Where most objects live, so that routes, Services and slices meet often.
MOSTLY_APPS = st.sampled_from(["apps", "apps", "apps", "infra", "team"])


def meta(namespace: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, **extra}


@st.composite
def listeners(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        listener: dict[str, Any] = {
            "name": f"l{i}",
            "port": draw(st.sampled_from([443, 8443])),
            "protocol": draw(st.sampled_from(["TLS", "TLS", "TLS", "HTTP"])),
        }
        hostname = draw(st.sampled_from([None, "*.example.com", "a.example.com", "*.org"]))
        if hostname:
            listener["hostname"] = hostname
        if listener["protocol"] == "TLS":
            mode = draw(st.sampled_from(["Passthrough", "Terminate"]))
            listener["tls"] = {"mode": mode}
            if mode == "Terminate":
                listener["tls"]["certificateRefs"] = [
                    {"name": draw(st.sampled_from(["cert", "bad-cert", "missing"]))}
                ]
        source = draw(st.sampled_from(["All", "Same", "Selector"]))
        namespaces: dict[str, Any] = {"from": source}
        if source == "Selector":
            namespaces["selector"] = {"matchLabels": {"team": "a"}}
        listener["allowedRoutes"] = {"namespaces": namespaces}
        out.append(listener)
    # Admission refuses duplicate (port, hostname): keep the first of each.
    seen: set[tuple[Any, Any]] = set()
    unique = []
    for listener in out:
        if (listener["port"], listener.get("hostname")) not in seen:
            seen.add((listener["port"], listener.get("hostname")))
            unique.append(listener)
    return unique


@st.composite
def gateway(draw: st.DrawFn) -> dict[str, Any]:
    namespace, name = draw(st.sampled_from([("infra", "gw"), ("infra", "gw2"), ("apps", "gw")]))
    spec: dict[str, Any] = {
        "gatewayClassName": draw(st.sampled_from(["tlsgate", "tlsgate", "other"])),
        "listeners": draw(listeners()),
    }
    if draw(st.booleans()):
        spec["addresses"] = [{"value": "127.0.0.1"}]
    return {"apiVersion": GW, "kind": "Gateway", "metadata": meta(namespace, name), "spec": spec}


@st.composite
def route(draw: st.DrawFn) -> dict[str, Any]:
    namespace = draw(MOSTLY_APPS)
    parents = []
    for i in range(draw(st.integers(1, 2))):
        parent: dict[str, Any] = {"name": draw(st.sampled_from(["gw", "gw", "gw", "gw2"]))}
        parent["namespace"] = draw(st.sampled_from(["infra", "infra", "infra", "apps"]))
        if i or draw(st.booleans()):  # two refs to one parent need sectionNames
            parent["sectionName"] = f"l{i}"
        if draw(st.integers(0, 3)) == 0:
            parent["port"] = draw(st.sampled_from([443, 8443]))
        parents.append(parent)
    backends = []
    for _ in range(draw(st.integers(1, 2))):
        backend: dict[str, Any] = {
            "name": draw(st.sampled_from(["s0", "s0", "s0", "s1", "s2"])),
            "port": draw(st.sampled_from([443, 443, 80])),
            "weight": draw(st.sampled_from([0, 1, 5])),
        }
        if draw(st.booleans()):
            backend["namespace"] = draw(MOSTLY_APPS)
        if draw(st.integers(0, 9)) == 0:
            backend["kind"] = "Pod"
        backends.append(backend)
    return {
        "apiVersion": GW,
        "kind": "TLSRoute",
        "metadata": meta(namespace, draw(st.sampled_from(["r0", "r1", "r2", "r3"]))),
        "spec": {
            "parentRefs": parents,
            "hostnames": draw(
                st.lists(st.sampled_from(HOSTS), min_size=1, max_size=3, unique=True)
            ),
            "rules": [{"backendRefs": backends}],
        },
    }


@st.composite
def service(draw: st.DrawFn) -> dict[str, Any]:
    target = draw(st.sampled_from([8443, "tls", "tls", "other"]))
    spec: dict[str, Any] = {"ports": [{"name": "tls", "port": 443, "targetPort": target}]}
    if draw(st.integers(0, 9)) == 0:
        spec = {"type": "ExternalName", "externalName": "db.example.net"}
    namespace, name = draw(MOSTLY_APPS), draw(st.sampled_from(["s0", "s1", "s2"]))
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(namespace, name), "spec": spec}


@st.composite
def endpoint_slice(draw: st.DrawFn) -> dict[str, Any]:
    namespace = draw(MOSTLY_APPS)
    owner = draw(st.sampled_from(["s0", "s0", "s0", "s1", "s2"]))
    endpoints = [
        {
            "addresses": [f"10.0.0.{draw(st.integers(1, 3))}"],
            "conditions": {"ready": draw(st.booleans())},
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta(
            namespace,
            draw(st.sampled_from(["e0", "e1"])),
            labels={"kubernetes.io/service-name": owner},
        ),
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "tls", "port": draw(st.sampled_from([8443, 8443, 9443]))}],
    }


@st.composite
def others(draw: st.DrawFn) -> dict[str, Any]:
    """GatewayClasses, Namespaces, grants, policies, Secrets, ConfigMaps."""
    kind = draw(
        st.sampled_from(
            [
                "GatewayClass",
                "Namespace",
                "ReferenceGrant",
                "BackendTLSPolicy",
                "Secret",
                "ConfigMap",
            ]
        )
    )
    if kind == "GatewayClass":
        controller = draw(st.sampled_from(["tlsgate.dev/gateway-controller", "example.com/other"]))
        return {
            "apiVersion": GW,
            "kind": kind,
            "metadata": {"name": draw(st.sampled_from(["tlsgate", "other"]))},
            "spec": {"controllerName": controller},
        }
    if kind == "Namespace":
        labels = draw(st.sampled_from([{}, {"team": "a"}, {"team": "b"}]))
        name = draw(st.sampled_from(NAMESPACES))
        return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "labels": labels}}
    if kind == "ReferenceGrant":
        return {
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": kind,
            "metadata": meta(draw(MOSTLY_APPS), "grant"),
            "spec": {
                "from": [
                    {
                        "group": "gateway.networking.k8s.io",
                        "kind": draw(st.sampled_from(["TLSRoute", "TLSRoute", "Gateway"])),
                        "namespace": draw(st.sampled_from(["infra", "team", "apps"])),
                    }
                ],
                "to": [{"group": "", "kind": draw(st.sampled_from(["Service", "Secret"]))}],
            },
        }
    if kind == "BackendTLSPolicy":
        validation: dict[str, Any] = {"hostname": "db.example.com"}
        if draw(st.booleans()):
            validation["wellKnownCACertificates"] = "System"
        else:
            validation["caCertificateRefs"] = [
                {"group": "", "kind": "ConfigMap", "name": draw(st.sampled_from(["ca", "nope"]))}
            ]
        target: dict[str, Any] = {"group": "", "kind": "Service", "name": "s0"}
        if draw(st.booleans()):
            target["sectionName"] = "tls"
        return {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": kind,
            "metadata": meta(
                draw(st.sampled_from(["apps", "infra"])), draw(st.sampled_from(["p0", "p1"]))
            ),
            "spec": {"targetRefs": [target], "validation": validation},
        }
    if kind == "Secret":
        data = GOOD_CERT if draw(st.booleans()) else {"tls.crt": "junk", "tls.key": "junk"}
        return {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": meta("infra", draw(st.sampled_from(["cert", "bad-cert"]))),
            "type": "kubernetes.io/tls",
            "stringData": data,
        }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(draw(st.sampled_from(["apps", "infra"])), "ca"),
        "data": {"ca.crt": CA_PEM if draw(st.booleans()) else "junk"},
    }


documents = st.one_of(
    gateway(), route(), route(), route(), service(), endpoint_slice(), others(), others()
)
#: A put of a document, a deletion (of the n-th document in force), or a bind failure toggled.
steps = st.lists(
    st.one_of(
        documents.map(lambda d: ("put", d)),
        documents.map(lambda d: ("put", d)),
        st.integers(0, 1000).map(lambda n: ("delete", n)),
        st.just(("bind", None)),
    ),
    min_size=1,
    max_size=16,
)
#: A starting world: a class of ours and a few of everything.
worlds = st.lists(documents, min_size=8, max_size=24)


def admitted(raw: dict[str, Any]) -> Document | None:
    docs, rejected = admit_all([raw])
    return docs[0] if docs and not rejected else None


def full_build(docs: dict[ObjectKey, Document], facts: Facts) -> Translation:
    resources = Resources.of(docs.values())
    secrets, bundles = load_facts(resources)
    return translate(
        resources, Facts(**{**_fields(facts), "secrets": secrets, "ca_bundles": bundles})
    )


def _fields(facts: Facts) -> dict[str, Any]:
    return {
        "now": facts.now,
        "bind_address": facts.bind_address,
        "bind_failures": facts.bind_failures,
        "previous": facts.previous,
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds, steps)
def test_incremental_and_full_builds_agree(start: list[dict[str, Any]], changes: list[Any]) -> None:
    class_of_ours = {
        "apiVersion": GW,
        "kind": "GatewayClass",
        "metadata": {"name": "tlsgate"},
        "spec": {"controllerName": "tlsgate.dev/gateway-controller"},
    }
    base_gateway = {
        "apiVersion": GW,
        "kind": "Gateway",
        "metadata": meta("infra", "gw"),
        "spec": {
            "gatewayClassName": "tlsgate",
            "listeners": [
                {
                    "name": "l0",
                    "port": 443,
                    "protocol": "TLS",
                    "tls": {"mode": "Passthrough"},
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                },
                {
                    "name": "l1",
                    "port": 8443,
                    "protocol": "TLS",
                    "hostname": "*.example.com",
                    "tls": {"mode": "Terminate", "certificateRefs": [{"name": "cert"}]},
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                },
            ],
        },
    }
    docs: dict[ObjectKey, Document] = {}
    clock = 0

    def stored(raw: dict[str, Any]) -> Document | None:
        nonlocal clock
        doc = admitted(raw)
        if doc is None:
            return None
        clock += 1
        key = key_of(doc)
        # Equal timestamps on purpose now and then: precedence falls back to names.
        now = f"2026-01-01T00:00:{clock // 2:02d}Z"
        return metadata.assign(
            doc, previous=docs.get(key), uid=str(key), now=now, resource_version=str(clock)
        )

    for raw in [class_of_ours, base_gateway, *start]:
        if (doc := stored(raw)) is not None:
            docs[key_of(doc)] = doc
    failures: dict[tuple[str, int], str] = {}

    def facts_for(step: int, previous: Translation | None) -> Facts:
        resources = Resources.of(docs.values())
        secrets, bundles = load_facts(resources)
        return Facts(
            now=f"2026-01-01T01:00:{step:02d}Z",
            bind_failures=dict(failures),
            secrets=secrets,
            ca_bundles=bundles,
            previous=previous.snapshot.statuses if previous is not None else {},
        )

    resources = Resources.of(docs.values())
    current = translate(resources, facts_for(0, None))
    for step, (action, raw) in enumerate(changes, start=1):
        puts: list[Document] = []
        deletes: list[ObjectKey] = []
        if action == "bind":
            if failures:
                failures.clear()
            else:
                failures[("0.0.0.0", 443)] = "[Errno 98] Address already in use"
        elif action == "delete":
            key = sorted(docs)[raw % len(docs)]
            deletes.append(key)
            del docs[key]
        elif (doc := stored(raw)) is not None:
            puts.append(doc)
            docs[key_of(doc)] = doc
        resources = current.build.resources.updated(puts, deletes)
        facts = facts_for(step, current)
        # The load results of the running gateway are kept when no Secret changed: use the
        # very same maps then, as `compile_translation` does.
        if resources.secrets is current.build.resources.secrets:
            facts = Facts(
                **{
                    **_fields(facts),
                    "secrets": current.build.facts.secrets,
                    "ca_bundles": facts.ca_bundles,
                }
            )
        incremental = translate(resources, facts, previous=current)
        full = full_build(docs, facts)
        assert dict(incremental.snapshot.statuses) == dict(full.snapshot.statuses), (step, action)
        assert dict(incremental.snapshot.binds) == dict(full.snapshot.binds), (step, action)
        # What the next build starts from agrees too (so later steps test more than luck).
        assert incremental.routes == full.routes, (step, action)
        assert incremental.counts == accepted_counts(full.snapshot.statuses)
        # And what the workers are sent turns the table they run into the new one.
        patch = diff(current.snapshot, incremental.snapshot)
        if patch is not None:
            assert apply(current.snapshot, patch).binds == incremental.snapshot.binds
        current = incremental
