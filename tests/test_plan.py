"""The write plan (gateway/store/plan.py) over plain values: what each incoming document does,
the server metadata it gets (docs/api.md "Metadata set by the server"), and RFC 7386."""

from __future__ import annotations

import base64
import copy
import itertools
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from gateway.api import corev1
from gateway.api.convert import structure_document
from gateway.api.kinds import Document, ObjectKey
from gateway.store import writes
from gateway.store.plan import Action, Change, Conflict, carry_private_keys, merge_patch, plan

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-02T00:00:00Z"
SERVICE = ObjectKey("Service", "apps", "web")
SECRET = ObjectKey("Secret", "infra", "cert")


def uids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"uid-{next(counter)}"


def service(
    port: int = 443,
    *,
    labels: Mapping[str, str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Document:
    meta: dict[str, Any] = {"name": "web", "namespace": "apps", **(metadata or {})}
    if labels is not None:
        meta["labels"] = dict(labels)
    return structure_document(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"ports": [{"name": "tls", "port": port}]},
        }
    )


def secret(data: Mapping[str, str]) -> Document:
    return structure_document(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "cert", "namespace": "infra"},
            "type": "kubernetes.io/tls",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
    )


def run(
    current: Mapping[ObjectKey, Document],
    incoming: Sequence[Document],
    *,
    now: str = T1,
    resource_version: str = "2",
    expected_versions: Mapping[ObjectKey, str] | None = None,
) -> list[Change]:
    return plan(
        current,
        incoming,
        now=now,
        resource_version=resource_version,
        new_uid=uids(),
        expected_versions=expected_versions,
    )


def stored(*docs: Document) -> dict[ObjectKey, Document]:
    """Documents as the store holds them after a first write at T0, resourceVersion 1."""
    changes = plan({}, docs, now=T0, resource_version="1", new_uid=uids())
    return {c.key: c.document for c in changes}


def data_of(doc: Document) -> dict[str, str]:
    assert isinstance(doc, corev1.Secret)
    return {k: base64.b64decode(v).decode() for k, v in (doc.data or {}).items()}


# --- actions and server metadata ----------------------------------------------------------


def test_a_new_document_is_created_with_server_metadata() -> None:
    [change] = run({}, [service()])
    assert (change.key, change.action) == (SERVICE, Action.CREATED)
    meta = change.document.metadata
    assert (meta.uid, meta.creation_timestamp, meta.generation, meta.resource_version) == (
        "uid-1",
        T1,
        1,
        "2",
    )


def test_client_sent_server_metadata_is_ignored() -> None:
    forged: dict[str, Any] = {
        "uid": "forged",
        "creationTimestamp": "1999-01-01T00:00:00Z",
        "generation": 42,
        "resourceVersion": "99",
    }
    [created] = run({}, [service(metadata=forged)])
    meta = created.document.metadata
    assert (meta.uid, meta.creation_timestamp, meta.generation, meta.resource_version) == (
        "uid-1",
        T1,
        1,
        "2",
    )
    # On an update too: the stored values stay, and server metadata alone is no change.
    current = stored(service())
    [same] = run(current, [service(metadata=forged)])
    assert same.action is Action.UNCHANGED
    [changed] = run(current, [service(444, metadata=forged)])
    meta = changed.document.metadata
    assert (meta.uid, meta.creation_timestamp, meta.generation, meta.resource_version) == (
        "uid-1",
        T0,
        2,
        "2",
    )


def test_the_same_content_again_is_unchanged_and_keeps_the_stored_document() -> None:
    current = stored(service())
    [change] = run(current, [service()])
    assert change.action is Action.UNCHANGED
    assert change.document is current[SERVICE]
    assert change.document.metadata.resource_version == "1"


def test_a_spec_change_is_configured_and_bumps_the_generation() -> None:
    current = stored(service())
    [change] = run(current, [service(8443)])
    assert change.action is Action.CONFIGURED
    meta = change.document.metadata
    assert meta.uid == "uid-1", "uid is kept across updates"
    assert meta.creation_timestamp == T0, "creationTimestamp is kept across updates"
    assert meta.generation == 2
    assert meta.resource_version == "2"
    assert change.document == structure_document(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "web",
                "namespace": "apps",
                "uid": "uid-1",
                "creationTimestamp": T0,
                "generation": 2,
                "resourceVersion": "2",
            },
            "spec": {"ports": [{"name": "tls", "port": 8443}]},
        }
    )


def test_a_metadata_change_is_configured_without_a_new_generation() -> None:
    current = stored(service())
    [change] = run(current, [service(labels={"team": "db"})])
    assert change.action is Action.CONFIGURED
    assert change.document.metadata.labels == {"team": "db"}
    assert change.document.metadata.generation == 1
    assert change.document.metadata.resource_version == "2"


def test_generation_counts_each_content_change() -> None:
    current = stored(service())
    for version, port in enumerate([444, 445, 446], start=2):
        [change] = run(current, [service(port)], resource_version=str(version))
        current = {change.key: change.document}
    assert current[SERVICE].metadata.generation == 4
    assert current[SERVICE].metadata.resource_version == "4"


def test_a_secrets_data_change_bumps_the_generation() -> None:
    current = stored(secret({"tls.crt": "A", "tls.key": "K"}))
    [change] = run(current, [secret({"tls.crt": "B", "tls.key": "K"})])
    assert change.action is Action.CONFIGURED
    assert change.document.metadata.generation == 2


def test_a_new_private_key_alone_bumps_the_generation() -> None:
    current = stored(secret({"tls.crt": "A", "tls.key": "K1"}))
    [change] = run(current, [secret({"tls.crt": "A", "tls.key": "K2"})])
    assert change.action is Action.CONFIGURED
    assert data_of(change.document)["tls.key"] == "K2"
    assert change.document.metadata.generation == 2


def test_documents_are_planned_independently() -> None:
    other = structure_document(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ca", "namespace": "apps"},
            "data": {"ca.crt": "x"},
        }
    )
    current = stored(service())
    changes = run(current, [service(), other])
    assert [(c.key, c.action) for c in changes] == [
        (SERVICE, Action.UNCHANGED),
        (ObjectKey("ConfigMap", "apps", "ca"), Action.CREATED),
    ]
    assert changes[1].document.metadata.uid == "uid-1"
    assert current == stored(service()), "the documents in force are not modified"


# --- expected versions ----------------------------------------------------------------------


def test_an_expected_version_that_matches_lets_the_write_through() -> None:
    [change] = run(stored(service()), [service(444)], expected_versions={SERVICE: "1"})
    assert change.action is Action.CONFIGURED


@pytest.mark.parametrize(
    ("current", "expected", "in_message"),
    [
        (lambda: stored(service()), "7", "resourceVersion 1, not 7"),
        (dict, "1", "resourceVersion none, not 1"),
    ],
    ids=["stale", "absent"],
)
def test_an_expected_version_that_differs_is_a_conflict(
    current: Callable[[], dict[ObjectKey, Document]], expected: str, in_message: str
) -> None:
    with pytest.raises(Conflict) as caught:
        run(current(), [service(444)], expected_versions={SERVICE: expected})
    assert caught.value.reason == "Conflict"
    assert in_message in str(caught.value)
    assert str(SERVICE) in str(caught.value)


def test_an_expected_version_for_another_object_does_not_apply() -> None:
    other = ObjectKey("Service", "apps", "other")
    [change] = run(stored(service()), [service(444)], expected_versions={other: "7"})
    assert change.action is Action.CONFIGURED


# --- duplicates in one request ---------------------------------------------------------------


def test_a_later_duplicate_replaces_an_earlier_one_and_stays_created() -> None:
    changes = run({}, [service(443), service(8443)])
    assert [(c.key, c.action) for c in changes] == [(SERVICE, Action.CREATED)]
    [change] = changes
    assert isinstance(change.document, corev1.Service)
    assert change.document.spec.ports is not None
    assert change.document.spec.ports[0].port == 8443
    assert change.document.metadata.creation_timestamp == T1


def test_a_later_duplicate_of_a_stored_document_is_configured_once() -> None:
    changes = run(stored(service()), [service(444), service(445)])
    assert [(c.key, c.action) for c in changes] == [(SERVICE, Action.CONFIGURED)]
    assert changes[0].document.metadata.uid == "uid-1"


def test_an_identical_duplicate_of_a_new_document_is_still_created() -> None:
    changes = run({}, [service(), service()])
    assert [(c.key, c.action) for c in changes] == [(SERVICE, Action.CREATED)]


def test_a_duplicate_of_a_new_document_is_created_at_generation_one() -> None:
    [change] = run({}, [service(443), service(8443)])
    assert change.document.metadata.generation == 1


# --- private keys --------------------------------------------------------------------------


def test_an_omitted_private_key_is_carried_over() -> None:
    current = stored(secret({"tls.crt": "A", "tls.key": "K"}))
    [change] = run(current, [secret({"tls.crt": "B"})])
    assert change.action is Action.CONFIGURED
    assert data_of(change.document) == {"tls.crt": "B", "tls.key": "K"}


def test_a_secret_read_back_without_its_key_is_unchanged() -> None:
    current = stored(secret({"tls.crt": "A", "tls.key": "K"}))
    [change] = run(current, [secret({"tls.crt": "A"})])
    assert change.action is Action.UNCHANGED
    assert data_of(change.document) == {"tls.crt": "A", "tls.key": "K"}


def test_a_sent_private_key_replaces_the_stored_one() -> None:
    current = stored(secret({"tls.crt": "A", "tls.key": "K"}))
    [change] = run(current, [secret({"tls.crt": "A", "tls.key": "NEW"})])
    assert change.action is Action.CONFIGURED
    assert data_of(change.document)["tls.key"] == "NEW"


def test_carry_private_keys_only_carries_private_keys_between_secrets() -> None:
    previous = secret({"tls.crt": "A", "tls.key": "K", "ca.crt": "C"})
    carried = carry_private_keys(secret({"tls.crt": "B"}), previous)
    assert data_of(carried) == {"tls.crt": "B", "tls.key": "K"}, "only tls.key is write-only"
    # Nothing to carry: the very same document back.
    new = secret({"tls.crt": "B"})
    assert carry_private_keys(new, None) is new
    assert carry_private_keys(new, secret({"tls.crt": "A"})) is new
    assert carry_private_keys(service(), previous) == service()
    keyed = secret({"tls.crt": "B", "tls.key": "MINE"})
    assert carry_private_keys(keyed, previous) is keyed


# --- RFC 7386 --------------------------------------------------------------------------------

#: RFC 7386 Appendix A, every example: (original, patch, result).
RFC7386_EXAMPLES: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(
    ("original", "patch", "result"),
    RFC7386_EXAMPLES,
    ids=[f"A-{n}" for n in range(1, len(RFC7386_EXAMPLES) + 1)],
)
def test_merge_patch_rfc7386_appendix_a(original: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(original)
    assert merge_patch(original, patch) == result
    assert original == before, "the target is not modified"


def test_merge_patch_on_a_document() -> None:
    wire: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "apps", "labels": {"a": "1", "b": "2"}},
        "spec": {"ports": [{"port": 443}], "type": "ClusterIP"},
    }
    patch = {"metadata": {"labels": {"a": None, "c": "3"}}, "spec": {"ports": [{"port": 8443}]}}
    assert merge_patch(wire, patch) == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "apps", "labels": {"b": "2", "c": "3"}},
        "spec": {"ports": [{"port": 8443}], "type": "ClusterIP"},
    }
    assert wire["metadata"]["labels"] == {"a": "1", "b": "2"}, "nested objects are copied"


def test_uids_are_distinct_random_version_4_uuids() -> None:
    # Drawn in batches (store/metadata.py); every one must still be a well-formed uuid4.
    uids = [writes.uid_source()() for _ in range(20)]
    source = writes.uid_source()
    uids += [source() for _ in range(3000)]
    assert len(set(uids)) == len(uids)
    for uid in uids:
        parsed = uuid.UUID(uid)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, uid)
