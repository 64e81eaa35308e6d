"""The snapshot's certificates and CA bundles -> `ssl.SSLContext`s (SPEC.md §7, §10.6-§10.8).

A synchronous edge: it touches OpenSSL, not the network. The material comes from the snapshot
(the build put each listener's certificates and CA bundles there), so a connection reads one
reference. Whether a Secret loads at all is checked earlier, on the control side
(`gateway.store.facts`). Private keys are handed to OpenSSL through an anonymous in-memory
file (memfd), so they never touch the disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping, Sequence

from attrs import frozen as attrs_frozen

from gateway.api import corev1
from gateway.api.names import FrontendValidationMode
from gateway.routing.snapshot import BackendTLS, Certificate, ListenerTable

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


#: TLS 1.3 session tickets sent after each full handshake: OpenSSL's default.
SESSION_TICKETS = 2


def server_context(
    certificate: bytes, key: bytes, session_tickets: int = SESSION_TICKETS
) -> ssl.SSLContext:
    """A server-side context for one certificate chain and key; TLS 1.2 minimum.

    `session_tickets` is how many TLS 1.3 tickets follow a full handshake; 0 sends none and
    no TLS 1.2 ticket either, which saves a write and 25-50 us of CPU per handshake, at
    the price of resumption (a ticket's keys belong to one context in one process: with
    several workers, a client resumes only when it comes back to the same one)."""
    if b"-----BEGIN" not in certificate:
        raise CertificateError(f"{TLS_CERT_KEY} is not PEM")
    if b"-----BEGIN" not in key:
        raise CertificateError(f"{TLS_PRIVATE_KEY} is not PEM")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # A client asking for TLS 1.2 renegotiation gets an alert: each one costs a handshake's
    # CPU, at the client's will (as HAProxy and nginx refuse it).
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.num_tickets = session_tickets
    if not session_tickets:
        context.options |= ssl.OP_NO_TICKET
    with _as_file(certificate) as cert_path, _as_file(key) as key_path:
        try:
            context.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            # OpenSSL's reason ("KEY_VALUES_MISMATCH", "NO_START_LINE", ...) names no key bytes.
            raise CertificateError(exc.reason or str(exc)) from None
    return context


def secret_pem(secret: corev1.Secret) -> tuple[bytes, bytes]:
    """tls.crt and tls.key of a Secret, or CertificateError saying which is missing."""
    certificate = corev1.secret_bytes(secret, TLS_CERT_KEY)
    key = corev1.secret_bytes(secret, TLS_PRIVATE_KEY)
    missing = [k for k, v in ((TLS_CERT_KEY, certificate), (TLS_PRIVATE_KEY, key)) if not v]
    if missing or certificate is None or key is None:
        raise CertificateError(f"the Secret has no {' and no '.join(missing)}")
    return certificate, key


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
    """SSL contexts for Terminate listeners and re-encrypted backends, built from the
    certificate and CA material in the snapshot. Contexts are cached by the digest of what
    they are made of, so updating a Secret changes the certificate of the next connection and
    nothing else."""

    #: Contexts kept at most: rotated certificates must not accumulate for the process's life.
    MAX_CONTEXTS = 1024

    def __init__(self, session_tickets: int = SESSION_TICKETS) -> None:
        self.session_tickets = session_tickets
        self._contexts: dict[tuple[object, ...], ssl.SSLContext] = {}
        self._names: dict[bytes, tuple[str, ...]] = {}
        self._listeners: dict[tuple[int, str, str], list[ServedCertificate]] = {}

    def _remember(self, key: tuple[object, ...], context: ssl.SSLContext) -> None:
        if len(self._contexts) >= self.MAX_CONTEXTS:
            self._contexts.clear()  # rebuilt on demand: the next connections pay ~1 ms each
            self._names.clear()
        self._contexts[key] = context

    def server_certificates(
        self, generation: int, listener: ListenerTable
    ) -> list[ServedCertificate]:
        key = (generation, listener.gateway, listener.name)
        found = self._listeners.get(key)
        if found is None:
            if self._listeners and next(iter(self._listeners))[0] != generation:
                self._listeners.clear()  # a new snapshot: forget the old one's choices
            found = self._listeners[key] = self._build(listener)
        return found

    def _build(self, listener: ListenerTable) -> list[ServedCertificate]:
        bundle, mode = b"", None
        if listener.frontend is not None:
            mode = listener.frontend.mode
            bundle = listener.frontend.ca_bundle.encode()
        served = []
        for certificate in listener.certificates:
            try:
                digest = hashlib.sha256(certificate.chain + b"\0" + certificate.key).digest()
                context = self._server_context(
                    digest, certificate.chain, certificate.key, bundle, mode, listener.alpn
                )
                names = self._names.get(digest)
                if names is None:
                    names = self._names[digest] = certificate_names(certificate.chain)
            except (CertificateError, ValueError):
                continue  # reported in status already (InvalidCertificateRef)
            served.append(ServedCertificate(names, context))
        return served

    def _server_context(
        self,
        digest: bytes,
        certificate: bytes,
        key: bytes,
        bundle: bytes,
        mode: str | None,
        alpn: tuple[str, ...] = (),
    ) -> ssl.SSLContext:
        cache_key = ("server", digest, hashlib.sha256(bundle).digest(), mode, alpn)
        context = self._contexts.get(cache_key)
        if context is None:
            context = server_context(certificate, key, self.session_tickets)
            if alpn:
                # A protocol that both sides name is selected; a client that offers none
                # of them goes on without ALPN (CPython's callback answers "no ack").
                context.set_alpn_protocols(list(alpn))
            if mode is not None:
                # Client-certificate validation (SPEC.md §10.8). AllowInsecureFallback admits
                # clients without a valid certificate: no certificate is asked for, since its
                # identity is not passed on and a bad one would otherwise fail the handshake.
                context.load_verify_locations(cadata=bundle.decode())
                context.verify_mode = (
                    ssl.CERT_REQUIRED
                    if mode == FrontendValidationMode.ALLOW_VALID_ONLY
                    else ssl.CERT_NONE
                )
            self._remember(cache_key, context)
        return context

    def backend_context(
        self, policy: BackendTLS, client_certificate: Certificate | None
    ) -> ssl.SSLContext:
        """A client context to re-encrypt to a backend (SPEC.md §10.7)."""
        bundle = policy.ca_bundle
        client_pem = (
            (client_certificate.chain, client_certificate.key) if client_certificate else None
        )
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
