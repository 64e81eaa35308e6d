"""Label and field selectors of list requests (gateway/api/selectors.py), as the Kubernetes
API server reads them (k8s.io/apimachinery labels.Parse and fields.ParseSelector)."""

from __future__ import annotations

import pytest

from gateway.api.discovery import PathError, parse_path
from gateway.api.selectors import field_selector, label_selector

LABELS = {"app": "db", "tier": "back", "example.com/owner": "ops", "replicas": "3"}


@pytest.mark.parametrize(
    ("selector", "selected"),
    [
        ("", True),
        ("app=db", True),
        ("app==db", True),
        ("app!=db", False),
        ("app=web", False),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("missing!=x", True),
        ("tier in (back, front)", True),
        ("tier notin (back)", False),
        ("app=db,tier=back", True),
        ("app=db,tier=front", False),
        ("example.com/owner=ops", True),
        (" app = db , tier in (back) ", True),
        ("replicas>2", True),
        ("replicas > 3", False),
        ("replicas<4", True),
        ("replicas<-1", False),
        ("app>1", False),  # not an integer: not selected
        ("missing<9", False),
        ("tier in ()", False),  # in (""), as labels.Parse reads it
        ("tier notin ()", True),
    ],
)
def test_label_selectors(selector: str, selected: bool) -> None:
    assert label_selector(selector)(LABELS) is selected


def test_an_empty_value_is_a_value() -> None:
    assert label_selector("app=")({"app": ""})
    assert not label_selector("app=")(LABELS)


@pytest.mark.parametrize(
    "selector", ["=db", "app in back", "app in (a b)", "a,,b", "a=b=c", "a>b", "a<", "a>1.5"]
)
def test_label_selector_errors_are_refused(selector: str) -> None:
    with pytest.raises(ValueError, match=r"parse|invalid|integer"):
        label_selector(selector)


def test_field_selectors() -> None:
    assert field_selector("metadata.name=db")("apps", "db")
    assert not field_selector("metadata.name!=db")("apps", "db")
    assert field_selector("metadata.namespace==apps,metadata.name=db")("apps", "db")
    assert not field_selector("metadata.namespace=infra")("apps", "db")
    with pytest.raises(ValueError, match="field label not supported"):
        field_selector("spec.hostnames=x")


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("api/v1/namespaces", ("v1", "namespaces", None, None)),
        ("api/v1/namespaces/apps", ("v1", "namespaces", None, "apps")),
        ("api/v1/namespaces/apps/services", ("v1", "services", "apps", None)),
        ("api/v1/namespaces/apps/services/db", ("v1", "services", "apps", "db")),
        ("api/v1/services", ("v1", "services", None, None)),
        (
            "apis/gateway.networking.k8s.io/v1/namespaces/apps/tlsroutes/db",
            ("gateway.networking.k8s.io/v1", "tlsroutes", "apps", "db"),
        ),
        (
            "apis/gateway.networking.k8s.io/v1/gatewayclasses/tlsgate",
            ("gateway.networking.k8s.io/v1", "gatewayclasses", None, "tlsgate"),
        ),
    ],
)
def test_resource_paths(path: str, found: tuple[str, str, str | None, str | None]) -> None:
    target = parse_path(path.split("/"))
    assert (target.group_version, target.resource.plural, target.namespace, target.name) == found


@pytest.mark.parametrize(
    "path",
    [
        "api/v2/services",
        "apis/gateway.networking.k8s.io/v1/namespaces/apps/gatewayclasses/x",
        "apis/gateway.networking.k8s.io/v1/tlsroutes/db",
        "apis/gateway.networking.k8s.io/v1/httproutes",
        "api/v1/namespaces/apps/services/db/status/x",
    ],
)
def test_paths_that_name_nothing(path: str) -> None:
    with pytest.raises(PathError):
        parse_path(path.split("/"))
