"""Runtime facts about certificates, and the one recipe from documents to a snapshot.

A synchronous edge: loading a certificate touches OpenSSL, not the network. Whether each
Secret and CA bundle loads becomes a `LoadResult` for `translate` to report as
`InvalidCertificateRef` and friends (messages never contain key material); results are cached
by content. `compile_translation` is what the running gateway calls for every build (from the
previous one); `compile_snapshot`, a full build from documents, is what `tlsgate translate`
and the tests call.
"""

from __future__ import annotations

import functools
import hashlib
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from gateway.api import corev1
from gateway.api.kinds import Document, ObjectKey
from gateway.api.names import NamespacedName
from gateway.api.status import Status
from gateway.dataplane.tls import CA_BUNDLE_KEY, CertificateError, secret_pem, server_context
from gateway.routing.snapshot import Snapshot
from gateway.translate.build import Translation, translate
from gateway.translate.facts import Facts, LoadResult
from gateway.translate.resources import Resources

_D = TypeVar("_D", corev1.Secret, corev1.ConfigMap)


@functools.lru_cache(maxsize=1024)
def _check_pair(digest: bytes, certificate: bytes, key: bytes) -> LoadResult:
    del digest  # part of the cache key only
    try:
        server_context(certificate, key)
    except CertificateError as exc:
        return LoadResult(False, str(exc))
    return LoadResult(True)


def check_secret(secret: corev1.Secret) -> LoadResult:
    try:
        certificate, key = secret_pem(secret)
    except CertificateError as exc:
        return LoadResult(False, str(exc))
    digest = hashlib.sha256(certificate + b"\0" + key).digest()
    return _check_pair(digest, certificate, key)


def check_ca_bundle(config_map: corev1.ConfigMap) -> LoadResult:
    bundle = (config_map.data or {}).get(CA_BUNDLE_KEY)
    if not bundle:
        return LoadResult(False, f"the ConfigMap has no {CA_BUNDLE_KEY}")
    return _check_bundle(bundle)


@functools.lru_cache(maxsize=1024)
def _check_bundle(bundle: str) -> LoadResult:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cadata=bundle)
    except (ssl.SSLError, ValueError) as exc:
        return LoadResult(False, f"{CA_BUNDLE_KEY} does not load: {exc}")
    if not context.get_ca_certs():
        return LoadResult(False, f"{CA_BUNDLE_KEY} holds no certificate")
    return LoadResult(True)


def load_facts(
    resources: Resources, previous: Translation | None = None
) -> tuple[Mapping[NamespacedName, LoadResult], Mapping[NamespacedName, LoadResult]]:
    """Load results for every Secret and ConfigMap, as `Facts.secrets` / `.ca_bundles`.
    With the `previous` build, a map of documents that is the same object keeps its results
    (the same object: the build can tell nothing changed there), and otherwise a document
    that is the same object keeps its own (one Secret written checks one Secret)."""
    old = previous.build if previous is not None else None
    secrets = _checked(
        resources.secrets,
        old.resources.secrets if old else None,
        old.facts.secrets if old else None,
        check_secret,
    )
    bundles = _checked(
        resources.config_maps,
        old.resources.config_maps if old else None,
        old.facts.ca_bundles if old else None,
        check_ca_bundle,
    )
    return secrets, bundles


def _checked(
    documents: Mapping[NamespacedName, _D],
    before: Mapping[NamespacedName, _D] | None,
    results: Mapping[NamespacedName, LoadResult] | None,
    check: Callable[[_D], LoadResult],
) -> Mapping[NamespacedName, LoadResult]:
    if before is None or results is None:
        return {key: check(doc) for key, doc in documents.items()}
    if documents is before:
        return results
    out = {}
    for key, doc in documents.items():
        known = results.get(key)
        out[key] = known if known is not None and before.get(key) is doc else check(doc)
    return out


def compile_translation(
    resources: Resources,
    *,
    now: str,
    generation: int,
    bind_address: str,
    bind_failures: Mapping[tuple[str, int], str],
    previous: Translation | None,
) -> Translation:
    """The next build, from `previous` when there is one (load results kept for what did not
    change: `load_facts`)."""
    secrets, bundles = load_facts(resources, previous)
    facts = Facts(
        now=now,
        bind_address=bind_address,
        bind_failures=dict(bind_failures),
        secrets=secrets,
        ca_bundles=bundles,
        previous=previous.snapshot.statuses if previous is not None else {},
    )
    return translate(resources, facts, generation, previous=previous)


def compile_snapshot(
    documents: Iterable[Document],
    *,
    now: str,
    generation: int,
    bind_address: str = "0.0.0.0",
    bind_failures: Mapping[tuple[str, int], str] | None = None,
    previous: Mapping[ObjectKey, Status] | None = None,
) -> Snapshot:
    """Documents in force and this process's runtime facts -> the snapshot (pure apart from
    loading certificates, which is cached)."""
    resources = Resources.of(documents)
    secrets, bundles = load_facts(resources)
    facts = Facts(
        now=now,
        bind_address=bind_address,
        bind_failures=dict(bind_failures or {}),
        secrets=secrets,
        ca_bundles=bundles,
        previous=dict(previous or {}),
    )
    return translate(resources, facts, generation=generation).snapshot
