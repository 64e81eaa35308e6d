"""Loading certificates from Secrets with real PEM from trustme."""

from __future__ import annotations

import base64
import ssl

import trustme

from gateway.api import corev1
from gateway.api.model import ObjectMeta
from gateway.dataplane.tls import server_context
from gateway.store.facts import check_ca_bundle, check_secret


def _secret(crt: bytes, key: bytes) -> corev1.Secret:
    return corev1.Secret(
        api_version="v1",
        metadata=ObjectMeta(name="s", namespace="n"),
        type="kubernetes.io/tls",
        data={"tls.crt": base64.b64encode(crt).decode(), "tls.key": base64.b64encode(key).decode()},
    )


def test_valid_certificate_loads_and_serves_tls12_minimum() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("db.example.com")
    crt = b"".join(b.bytes() for b in cert.cert_chain_pems)
    key = cert.private_key_pem.bytes()
    assert check_secret(_secret(crt, key)).ok
    context = server_context(crt, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_mismatched_key_and_garbage_are_reported_without_key_material() -> None:
    ca = trustme.CA()
    crt = ca.issue_cert("a.example.com").cert_chain_pems[0].bytes()
    other_key = ca.issue_cert("b.example.com").private_key_pem.bytes()
    result = check_secret(_secret(crt, other_key))
    assert not result.ok
    assert "MISMATCH" in result.message
    assert other_key.decode().splitlines()[1] not in result.message
    result = check_secret(_secret(b"Hello world", b"Hello world"))
    assert not result.ok
    assert "not PEM" in result.message


def test_missing_keys() -> None:
    empty = corev1.Secret(api_version="v1", metadata=ObjectMeta(name="s"), type="Opaque", data={})
    result = check_secret(empty)
    assert not result.ok
    assert "no tls.crt and no tls.key" in result.message


def test_ca_bundles() -> None:
    ca = trustme.CA()
    good = corev1.ConfigMap(
        api_version="v1",
        metadata=ObjectMeta(name="c"),
        data={"ca.crt": ca.cert_pem.bytes().decode()},
    )
    assert check_ca_bundle(good).ok
    bad = corev1.ConfigMap(api_version="v1", metadata=ObjectMeta(name="c"), data={"ca.crt": "nope"})
    assert not check_ca_bundle(bad).ok
    missing = corev1.ConfigMap(api_version="v1", metadata=ObjectMeta(name="c"), data={})
    assert "no ca.crt" in check_ca_bundle(missing).message
