"""Certificates and CA bundles from Secrets and ConfigMaps -> `ssl.SSLContext` (SPEC.md §7).

A synchronous edge: it touches OpenSSL, not the network. Failures are returned as data
(`LoadResult`) for `translate` to report as `InvalidCertificateRef` and friends; messages never
contain key material. Private keys are handed to OpenSSL through an anonymous in-memory file
(memfd), so they never touch the disk.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping, Sequence

from attrs import frozen as attrs_frozen

from gateway.api import corev1
from gateway.api.convert import secret_bytes
from gateway.api.kinds import Document, ObjectKey
from gateway.routing.snapshot import BackendTLS, ListenerTable
from gateway.translate.facts import LoadResult, NamespacedName
from gateway.translate.resources import Resources

TLS_CERT_KEY = "tls.crt"
TLS_PRIVATE_KEY = "tls.key"
CA_BUNDLE_KEY = "ca.crt"


class CertificateError(Exception):
    """A Secret that cannot serve as a certificate; the message is safe to show."""


@contextlib.contextmanager
def _as_file(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read `data` from: a memfd on Linux, else a private temp file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("tlsgate-pem", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile(prefix="tlsgate-") as handle:  # created mode 0600
        handle.write(data)
        handle.flush()
        yield handle.name


def server_context(certificate: bytes, key: bytes) -> ssl.SSLContext:
    """A server-side context for one certificate chain and key; TLS 1.2 minimum."""
    if b"-----BEGIN" not in certificate:
        raise CertificateError(f"{TLS_CERT_KEY} is not PEM")
    if b"-----BEGIN" not in key:
        raise CertificateError(f"{TLS_PRIVATE_KEY} is not PEM")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _as_file(certificate) as cert_path, _as_file(key) as key_path:
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            # OpenSSL's reason ("KEY_VALUES_MISMATCH", "NO_START_LINE", ...) names no key bytes.
            raise CertificateError(exc.reason or str(exc)) from None
    return context


def secret_pem(secret: corev1.Secret) -> tuple[bytes, bytes]:
    """tls.crt and tls.key of a Secret, or CertificateError saying which is missing."""
    certificate = secret_bytes(secret, TLS_CERT_KEY)
    key = secret_bytes(secret, TLS_PRIVATE_KEY)
    missing = [k for k, v in ((TLS_CERT_KEY, certificate), (TLS_PRIVATE_KEY, key)) if not v]
    if missing or certificate is None or key is None:
        raise CertificateError(f"the Secret has no {' and no '.join(missing)}")
    return certificate, key


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
    """Cached by content, like certificates: every rebuild checks every ConfigMap."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cadata=bundle)
    except (ssl.SSLError, ValueError) as exc:
        return LoadResult(False, f"{CA_BUNDLE_KEY} does not load: {exc}")
    if not context.get_ca_certs():
        return LoadResult(False, f"{CA_BUNDLE_KEY} holds no certificate")
    return LoadResult(True)


def load_facts(
    resources: Resources,
) -> tuple[dict[NamespacedName, LoadResult], dict[NamespacedName, LoadResult]]:
    """Load results for every Secret and ConfigMap, as `Runtime.secrets` / `.ca_bundles`."""
    secrets = {key: check_secret(secret) for key, secret in resources.secrets.items()}
    bundles = {key: check_ca_bundle(cm) for key, cm in resources.config_maps.items()}
    return secrets, bundles


# --- serving certificates -----------------------------------------------------------------


def certificate_names(certificate_pem: bytes) -> tuple[str, ...]:
    """The DNS names of the leaf certificate (SANs; the CN only when there are none)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    leaf = x509.load_pem_x509_certificate(certificate_pem)
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        dns = tuple(n.lower() for n in names.value.get_values_for_type(x509.DNSName))
        if dns:
            return dns
    except x509.ExtensionNotFound:
        pass
    common = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return tuple(str(a.value).lower() for a in common)


def name_rank(pattern: str, server_name: str) -> tuple[int, int] | None:
    """How well a certificate name covers an SNI: exact beats wildcard, a longer name beats a
    shorter one; a wildcard covers exactly one label (RFC 6125 §6.4.3, as clients check)."""
    if pattern == server_name:
        return (2, len(pattern))
    if pattern.startswith("*.") and server_name.endswith(pattern[1:]):
        head = server_name[: -len(pattern) + 1]
        if head and "." not in head:
            return (1, len(pattern))
    return None


@attrs_frozen
class ServedCertificate:
    names: tuple[str, ...]
    context: ssl.SSLContext


def choose_certificate(
    certificates: Sequence[ServedCertificate], server_name: str | None
) -> ssl.SSLContext:
    """The certificate whose name best matches the SNI ("longest matching SNI out of all
    available certificates", SPEC.md §10.6); the first one when none matches."""
    best: tuple[tuple[int, int], ssl.SSLContext] | None = None
    name = (server_name or "").lower().removesuffix(".")
    for certificate in certificates:
        for pattern in certificate.names:
            rank = name_rank(pattern, name)
            if rank is not None and (best is None or rank > best[0]):
                best = (rank, certificate.context)
    return best[1] if best is not None else certificates[0].context


class ContextRegistry:
    """SSL contexts for Terminate listeners and re-encrypted backends, built from the Secrets
    and ConfigMaps in force. Contexts are cached by the digest of what they are made of, so
    updating a Secret changes the certificate of the next connection and nothing else."""

    def __init__(self) -> None:
        self._contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
        self._names: dict[bytes, tuple[str, ...]] = {}
        self._listeners: dict[tuple[int, str, str], list[ServedCertificate]] = {}

    #: Contexts kept at most: rotated certificates must not accumulate for the process's life.
    MAX_CONTEXTS = 1024

    def _remember(self, key: tuple[object, ...], context: ssl.SSLContext) -> None:
        if len(self._contexts) >= self.MAX_CONTEXTS:
            self._contexts.clear()  # rebuilt on demand: the next connections pay ~1 ms each
            self._names.clear()
        self._contexts[key] = context

    def server_certificates(
        self, generation: int, listener: ListenerTable, documents: Mapping[ObjectKey, Document]
    ) -> list[ServedCertificate]:
        key = (generation, listener.gateway, listener.name)
        found = self._listeners.get(key)
        if found is None:
            if self._listeners and next(iter(self._listeners))[0] != generation:
                self._listeners.clear()  # a new snapshot: forget the old one's choices
            found = self._listeners[key] = self._build(listener, documents)
        return found

    def _build(
        self, listener: ListenerTable, documents: Mapping[ObjectKey, Document]
    ) -> list[ServedCertificate]:
        bundle, mode = b"", None
        if listener.frontend is not None:
            mode = listener.frontend.mode
            bundle = b"".join(
                _ca_bundle(documents, ns, name).encode()
                for ns, name in listener.frontend.ca_config_maps
            )
        served = []
        for namespace, name in listener.certificates:
            secret = documents.get(ObjectKey("Secret", namespace, name))
            if not isinstance(secret, corev1.Secret):
                continue
            try:
                certificate, key = secret_pem(secret)
                digest = hashlib.sha256(certificate + b"\0" + key).digest()
                context = self._server_context(digest, certificate, key, bundle, mode)
                names = self._names.get(digest)
                if names is None:
                    names = self._names[digest] = certificate_names(certificate)
            except (CertificateError, ValueError):
                continue  # reported in status already (InvalidCertificateRef)
            served.append(ServedCertificate(names, context))
        return served

    def _server_context(
        self, digest: bytes, certificate: bytes, key: bytes, bundle: bytes, mode: str | None
    ) -> ssl.SSLContext:
        cache_key = ("server", digest, hashlib.sha256(bundle).digest(), mode)
        context = self._contexts.get(cache_key)
        if context is None:
            context = server_context(certificate, key)
            if mode is not None:
                # Client-certificate validation (SPEC.md §10.8). AllowInsecureFallback admits
                # clients without a valid certificate: no certificate is asked for, since its
                # identity is not passed on and a bad one would otherwise fail the handshake.
                context.load_verify_locations(cadata=bundle.decode())
                context.verify_mode = (
                    ssl.CERT_REQUIRED if mode == "AllowValidOnly" else ssl.CERT_NONE
                )
            self._remember(cache_key, context)
        return context

    def backend_context(
        self,
        policy: BackendTLS,
        client_certificate: tuple[str, str] | None,
        documents: Mapping[ObjectKey, Document],
    ) -> ssl.SSLContext:
        """A client context to re-encrypt to a backend (SPEC.md §10.7)."""
        bundle = "".join(_ca_bundle(documents, ns, name) for ns, name in policy.ca_config_maps)
        client_pem: tuple[bytes, bytes] | None = None
        if client_certificate is not None:
            secret = documents.get(ObjectKey("Secret", *client_certificate))
            if isinstance(secret, corev1.Secret):
                client_pem = secret_pem(secret)
        cache_key = (
            "client",
            hashlib.sha256(bundle.encode()).digest(),
            policy.well_known,
            bool(policy.subject_alt_names),
            hashlib.sha256(b"".join(client_pem)).digest() if client_pem else None,
        )
        context = self._contexts.get(cache_key)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if bundle:
                context.load_verify_locations(cadata=bundle)
            else:
                context.load_default_certs()  # wellKnownCACertificates: System
            # With subjectAltNames the names checked are those, after the handshake.
            context.check_hostname = not policy.subject_alt_names
            if client_pem is not None:
                with _as_file(client_pem[0]) as cert_path, _as_file(client_pem[1]) as key_path:
                    context.load_cert_chain(cert_path, key_path)
            self._remember(cache_key, context)
        return context


def _ca_bundle(documents: Mapping[ObjectKey, Document], namespace: str, name: str) -> str:
    config_map = documents.get(ObjectKey("ConfigMap", namespace, name))
    if isinstance(config_map, corev1.ConfigMap):
        return (config_map.data or {}).get(CA_BUNDLE_KEY, "") + "\n"
    return ""


def subject_alt_names_match(peer: Mapping[str, object], wanted: Sequence[tuple[str, str]]) -> bool:
    """Does the backend certificate carry one of the policy's subjectAltNames (SPEC.md §7)?"""
    sans = peer.get("subjectAltName", ())
    have = [(kind, str(value).lower()) for kind, value in sans]  # type: ignore[attr-defined]
    for kind, value in wanted:
        if kind == "Hostname" and any(k == "DNS" and name_rank(v, value.lower()) for k, v in have):
            return True
        if kind == "URI" and ("URI", value.lower()) in have:
            return True
    return False
