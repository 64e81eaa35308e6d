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
from collections.abc import Iterator

from gateway import corev1
from gateway.convert import secret_bytes
from gateway.resources import Resources
from gateway.runtime import LoadResult, NamespacedName

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
