"""kubectl against tlsgate's Kubernetes API (API.md "Kubernetes API compatibility"): the
kubectl on the machine (scripts/setup-env installs Debian's kubernetes-client when there is
none), with a kubeconfig in the test's temporary directory, never the user's."""

from __future__ import annotations

import base64
import functools
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml

from .harness import Pki, admin_gateway, gateway_yaml, route_yaml, secret_yaml, service_yaml

MANIFESTS = (
    gateway_yaml(18443)
    + service_yaml("db", 15432)
    + route_yaml("db", ["db.example.com"], [("db", 1)])
    + route_yaml("web", ["web.example.com"], [("db", 1)])
)


class Kubectl:
    def __init__(
        self, directory: Path, server: str, *, token: str | None = None, ca: str | None = None
    ) -> None:
        binary = shutil.which("kubectl")
        if binary is None:
            pytest.fail("kubectl is missing: scripts/setup-env installs kubernetes-client")
        self.binary = binary
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "kubeconfig"
        cluster: dict[str, str] = {"server": server}
        if ca is not None:
            cluster["certificate-authority"] = ca
        user = {"token": token} if token is not None else {}
        self.config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "tlsgate", "cluster": cluster}],
                    "users": [{"name": "admin", "user": user}],
                    "contexts": [
                        {"name": "tlsgate", "context": {"cluster": "tlsgate", "user": "admin"}}
                    ],
                    "current-context": "tlsgate",
                }
            )
        )
        self.directory = directory
        self.server = server

    async def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [self.binary, "--kubeconfig", str(self.config), *args]

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                # kubectl's cache of discovery and OpenAPI: this test's own.
                env={"HOME": str(self.directory), "PATH": "/usr/bin:/bin"},
            )

        result = await trio.to_thread.run_sync(run)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result


@pytest.fixture
async def kubectl(tmp_path: Path) -> AsyncIterator[Kubectl]:
    async with admin_gateway(None) as (_, url):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            answer = await http.post(
                "/v1/apply", content=MANIFESTS, headers={"Content-Type": "application/yaml"}
            )
            assert answer.status_code == 200, answer.text
        yield Kubectl(tmp_path, url)


async def test_version_and_api_resources(kubectl: Kubectl) -> None:
    version = await kubectl("version", "-o", "json")
    server = json.loads(version.stdout)["serverVersion"]
    assert server["gitVersion"].startswith("v1.32.0+tlsgate.")
    resources = (await kubectl("api-resources", "-o", "name")).stdout.split()
    for name in (
        "tlsroutes.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "clienttrafficpolicies.gateway.tlsgate.dev",
        "services",
        "endpointslices.discovery.k8s.io",
        "namespaces",
    ):
        assert name in resources
    short = (await kubectl("api-resources", "--api-group", "gateway.tlsgate.dev")).stdout
    assert "ctp" in short
    assert "btp" in short


async def test_get_in_every_output(kubectl: Kubectl) -> None:
    table = (await kubectl("get", "tlsroutes", "-A")).stdout.splitlines()
    assert table[0].split() == [
        "NAMESPACE",
        "NAME",
        "HOSTNAMES",
        "ACCEPTED",
        "RESOLVED",
        "AGE",
    ]
    assert [line.split()[:5] for line in table[1:]] == [
        ["apps", "db", "db.example.com", "True", "True"],
        ["apps", "web", "web.example.com", "True", "True"],
    ]
    names = (await kubectl("get", "tlsroutes", "-n", "apps", "-o", "name")).stdout.split()
    assert names == [
        "tlsroute.gateway.networking.k8s.io/db",
        "tlsroute.gateway.networking.k8s.io/web",
    ]
    document = yaml.safe_load(
        (await kubectl("get", "tlsroute", "db", "-n", "apps", "-o", "yaml")).stdout
    )
    assert document["kind"] == "TLSRoute"
    assert document["status"]["parents"][0]["conditions"][0]["type"] == "Accepted"
    path = "{.status.parents[0].conditions[?(@.type=='Accepted')].status}"
    jsonpath = await kubectl("get", "tlsroute", "web", "-n", "apps", "-o", f"jsonpath={path}")
    assert jsonpath.stdout == "True"
    # --sort-by asks the Table for whole objects (includeObject=Object).
    by_hostname = await kubectl(
        "get", "tlsroutes", "-A", "--sort-by=.spec.hostnames[0]", "-o", "name"
    )
    assert by_hostname.stdout.split() == [
        "tlsroute.gateway.networking.k8s.io/db",
        "tlsroute.gateway.networking.k8s.io/web",
    ]
    rows = await kubectl("get", "tlsroutes", "-A", "--sort-by=.metadata.name")
    assert [line.split()[1] for line in rows.stdout.splitlines()[1:]] == ["db", "web"]
    wide = (await kubectl("get", "gateways", "-n", "infra", "-o", "wide")).stdout
    assert "PROGRAMMED" in wide
    assert "127.0.0.1" in wide
    # Typed lists: a client that decodes the JSON sees a TLSRouteList.
    listed = json.loads((await kubectl("get", "tlsroutes", "-A", "-o", "json")).stdout)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["db", "web"]


async def test_selectors_and_paging(kubectl: Kubectl) -> None:
    labelled = await kubectl("label", "tlsroute", "web", "-n", "apps", "tier=front")
    assert "tlsroute.gateway.networking.k8s.io/web labeled" in labelled.stdout
    front = await kubectl("get", "tlsroutes", "-A", "-l", "tier=front,!missing", "-o", "name")
    assert front.stdout.split() == ["tlsroute.gateway.networking.k8s.io/web"]
    selected = await kubectl(
        "get", "tlsroutes", "-A", "--field-selector", "metadata.name=web", "-o", "name"
    )
    assert selected.stdout.split() == ["tlsroute.gateway.networking.k8s.io/web"]
    none = await kubectl("get", "tlsroutes", "-A", "-l", "tier in (back)")
    assert "No resources found" in none.stderr
    refused = await kubectl(
        "get", "tlsroutes", "-A", "--field-selector", "spec.hostnames=x", check=False
    )
    assert refused.returncode != 0
    assert "field label not supported" in refused.stderr
    # One item per page: kubectl follows the continue tokens.
    paged = await kubectl("get", "tlsroutes", "-A", "--chunk-size", "1", "-o", "name")
    assert paged.stdout.split() == [
        "tlsroute.gateway.networking.k8s.io/db",
        "tlsroute.gateway.networking.k8s.io/web",
    ]


async def test_describe_and_namespaces(kubectl: Kubectl) -> None:
    described = (await kubectl("describe", "tlsroute", "db", "-n", "apps")).stdout
    assert "Name:         db" in described
    assert "Hostnames:" in described
    assert "Events:" in described
    namespaces = (await kubectl("get", "namespaces", "-o", "name")).stdout.split()
    # Namespaces in use exist without being created.
    assert {"namespace/apps", "namespace/infra", "namespace/default"} <= set(namespaces)
    assert (await kubectl("get", "namespace", "apps", "-o", "name")).stdout.strip() == (
        "namespace/apps"
    )
    missing = await kubectl("get", "tlsroute", "nope", "-n", "apps", check=False)
    assert missing.returncode != 0
    assert 'tlsroutes "nope" not found' in missing.stderr
    # Labelling an implicit namespace stores it, labelled (allowedRoutes selectors read it);
    # a dry run stores nothing.
    await kubectl("label", "namespace", "infra", "team=edge", "--dry-run=server")
    assert "infra" not in (await kubectl("get", "--raw", "/v1/namespaces")).stdout
    labelled = await kubectl("label", "namespace", "apps", "team=blue")
    assert "namespace/apps labeled" in labelled.stdout
    await kubectl("annotate", "namespace", "apps", "owner=dba")
    stored = json.loads((await kubectl("get", "--raw", "/v1/namespaces/apps")).stdout)
    assert stored["metadata"]["labels"]["team"] == "blue"
    assert stored["metadata"]["annotations"]["owner"] == "dba"
    team = await kubectl("get", "ns", "-l", "team=blue", "-o", "name")
    assert team.stdout.split() == ["namespace/apps"]
    phase = await kubectl("get", "ns", "apps", "-o", "jsonpath={.status.phase}")
    assert phase.stdout == "Active"  # stored now, and as live as before
    # Events: none, also when watched (the watch ends at kubectl's request timeout).
    watched = await kubectl("get", "events", "-A", "--watch", "--request-timeout=2s")
    assert (watched.stdout, watched.stderr) == ("", "")
    # With a selector the list ignores, and as kubectl events --for asks.
    selected = await kubectl(
        "get",
        "events",
        "-n",
        "apps",
        "--field-selector",
        "type=Warning",
        "-w",
        "--request-timeout=2s",
    )
    assert (selected.stdout, selected.stderr) == ("", "")
    for_route = await kubectl(
        "events",
        "-n",
        "apps",
        "--for",
        "tlsroute/db",
        "--watch",
        "--request-timeout=2s",
        check=False,
    )
    assert "error" not in for_route.stderr.lower(), for_route.stderr


def _route_with_defaults(hostname: str, extra: str = "") -> str:
    """A TLSRoute whose manifest spells out the fields the server defaults, so that applying
    it again changes nothing (as against a cluster with the Gateway API CRDs)."""
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: extra, namespace: apps}}
spec:
  parentRefs:
  - {{group: gateway.networking.k8s.io, kind: Gateway, name: gw, namespace: infra}}
  hostnames: [{hostname}]
  rules:
  - backendRefs: [{{group: "", kind: Service, name: db, port: 443, weight: 1}}]
{extra}"""


async def test_apply_with_validation_diff_and_dry_runs(kubectl: Kubectl, tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    route = manifests / "route.yaml"
    route.write_text(_route_with_defaults("extra.example.com"))
    created = await kubectl("apply", "-f", f"{manifests}/")
    assert "tlsroute.gateway.networking.k8s.io/extra created" in created.stdout
    again = await kubectl("apply", "-f", f"{manifests}/")
    assert "tlsroute.gateway.networking.k8s.io/extra unchanged" in again.stdout
    # An unknown field is refused, and names itself (fieldValidation=Strict, by the server).
    (manifests / "bad.yaml").write_text(
        _route_with_defaults("bad.example.com", "  colour: blue\n").replace("extra", "bad")
    )
    refused = await kubectl("apply", "-f", str(manifests / "bad.yaml"), check=False)
    assert refused.returncode != 0
    assert 'unknown field "colour"' in refused.stderr
    (manifests / "bad.yaml").unlink()
    # diff and a server-side dry run change nothing.
    route.write_text(_route_with_defaults("other.example.com"))
    diff = await kubectl("diff", "-f", str(route), check=False)
    assert diff.returncode == 1, diff.stderr  # 1: there are differences
    assert "+  - other.example.com" in diff.stdout
    assert "-  - extra.example.com" in diff.stdout
    await kubectl("delete", "-f", str(route), "--dry-run=server")
    hostname = "jsonpath={.spec.hostnames[0]}"
    live = await kubectl("get", "tlsroute", "extra", "-n", "apps", "-o", hostname)
    assert live.stdout == "extra.example.com"
    configured = await kubectl("apply", "-f", str(route))
    assert "tlsroute.gateway.networking.k8s.io/extra configured" in configured.stdout
    live = await kubectl("get", "tlsroute", "extra", "-n", "apps", "-o", hostname)
    assert live.stdout == "other.example.com"
    deleted = await kubectl("delete", "-f", str(route))
    assert 'tlsroute.gateway.networking.k8s.io "extra" deleted' in deleted.stdout
    gone = await kubectl("get", "tlsroute", "extra", "-n", "apps", check=False)
    assert gone.returncode != 0


async def test_older_versions_at_their_own_paths(kubectl: Kubectl, tmp_path: Path) -> None:
    """Manifests written for v1alpha2 TLSRoutes and v1beta1 ReferenceGrants apply as they
    are; each version's path answers in its own version, over one stored object."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "route.yaml").write_text(
        _route_with_defaults("old.example.com")
        .replace("gateway.networking.k8s.io/v1\n", "gateway.networking.k8s.io/v1alpha2\n")
        .replace("name: extra", "name: old")
    )
    (old / "grant.yaml").write_text(
        """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-apps, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TLSRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
"""
    )
    created = await kubectl("apply", "-f", f"{old}/")
    assert "tlsroute.gateway.networking.k8s.io/old created" in created.stdout, created.stdout
    assert "referencegrant.gateway.networking.k8s.io/from-apps created" in created.stdout
    again = await kubectl("apply", "-f", f"{old}/")
    assert "tlsroute.gateway.networking.k8s.io/old unchanged" in again.stdout, again.stdout
    version = "jsonpath={.apiVersion}"
    for resource, answered in (
        ("tlsroutes.v1alpha2.gateway.networking.k8s.io", "gateway.networking.k8s.io/v1alpha2"),
        ("tlsroutes.v1alpha3.gateway.networking.k8s.io", "gateway.networking.k8s.io/v1alpha3"),
        ("tlsroutes", "gateway.networking.k8s.io/v1"),
    ):
        got = await kubectl("get", resource, "old", "-n", "apps", "-o", version)
        assert got.stdout == answered
    grants = await kubectl(
        "get", "referencegrants.v1beta1.gateway.networking.k8s.io", "-A", "-o", "json"
    )
    assert {item["apiVersion"] for item in json.loads(grants.stdout)["items"]} == {
        "gateway.networking.k8s.io/v1beta1"
    }
    # What v1 no longer allows stays refused at v1alpha2's path (SPEC.md §1).
    (old / "route.yaml").write_text(
        _route_with_defaults("x")
        .replace("gateway.networking.k8s.io/v1\n", "gateway.networking.k8s.io/v1alpha2\n")
        .replace("  hostnames: [x]\n", "")
        .replace("name: extra", "name: bare")
    )
    refused = await kubectl("apply", "-f", str(old / "route.yaml"), check=False)
    assert refused.returncode != 0
    assert "hostnames" in refused.stderr


async def test_create_refuses_what_exists(kubectl: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "route.yaml"
    manifest.write_text(route_yaml("extra", ["extra.example.com"], [("db", 1)]))
    created = await kubectl("create", "-f", str(manifest))
    assert "tlsroute.gateway.networking.k8s.io/extra created" in created.stdout
    again = await kubectl("create", "-f", str(manifest), check=False)
    assert "AlreadyExists" in again.stderr or "already exists" in again.stderr


async def test_explain(kubectl: Kubectl) -> None:
    rules = (await kubectl("explain", "tlsroute.spec.rules")).stdout
    assert "KIND:       TLSRoute" in rules
    assert "VERSION:    v1" in rules
    assert "backendRefs\t<[]Object> -required-" in rules
    assert "Services to send connections to, each with a weight" in rules
    recursive = (await kubectl("explain", "clienttrafficpolicy.spec", "--recursive")).stdout
    for field in ("proxyProtocol", "trustedCIDRs", "connectionLimit", "connectionsPerSecond"):
        assert field in recursive
    deep = (await kubectl("explain", "gateway.spec.listeners.allowedRoutes.namespaces.from")).stdout
    assert "Same (the default: the Gateway's namespace), All, or Selector." in deep
    status = (await kubectl("explain", "gateway.status.listeners.attachedRoutes")).stdout
    assert "How many routes are attached to it." in status


async def test_get_watch_sees_a_change_made_through_v1(kubectl: Kubectl, tmp_path: Path) -> None:
    command = [kubectl.binary, "--kubeconfig", str(kubectl.config), "get", "tlsroutes", "-A"]
    command += ["--watch", "--output-watch-events"]
    env = {"HOME": str(kubectl.directory), "PATH": "/usr/bin:/bin"}
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process, command, stdout=subprocess.PIPE, env=env, check=False
            )
        )
        try:
            assert process.stdout is not None
            buffer = b""

            async def until(text: str) -> None:
                nonlocal buffer
                with trio.fail_after(20):
                    while text not in buffer.decode():
                        chunk = await process.stdout.receive_some(65536)
                        assert chunk, f"kubectl ended; it wrote {buffer.decode()!r}"
                        buffer += chunk

            await until("web.example.com")  # the objects in force first
            async with httpx.AsyncClient(base_url=kubectl.server, timeout=10) as http:
                route = route_yaml("late", ["late.example.com"], [("db", 1)])
                answer = await http.post(
                    "/v1/apply", content=route, headers={"Content-Type": "application/yaml"}
                )
                assert answer.status_code == 200, answer.text
                await until("late.example.com")
                deleted = await http.delete("/v1/tlsroutes/apps/late")
                assert deleted.status_code == 200
                await until("DELETED")
            lines = buffer.decode().splitlines()
        finally:
            process.kill()  # kubectl, started by this test
    events = [line.split()[0] for line in lines[1:]]
    assert events == ["ADDED", "ADDED", "ADDED", "DELETED"]


async def test_wait_for_a_condition_and_a_jsonpath(kubectl: Kubectl) -> None:
    met = await kubectl(
        "wait", "--for=condition=Programmed", "gateway/gw", "-n", "infra", "--timeout=20s"
    )
    assert "condition met" in met.stdout
    accepted = '{.status.parents[*].conditions[?(@.type=="Accepted")].status}'
    met = await kubectl(
        "wait", f"--for=jsonpath={accepted}=True", "tlsroute/db", "-n", "apps", "--timeout=20s"
    )
    assert "condition met" in met.stdout
    never = await kubectl(
        "wait", "--for=condition=Nope", "gateway/gw", "-n", "infra", "--timeout=1s", check=False
    )
    assert never.returncode != 0
    assert "timed out waiting for the condition" in never.stderr


async def test_a_list_file_is_validated_by_the_server(kubectl: Kubectl, tmp_path: Path) -> None:
    """kubectl validates a `kind: List` file against /openapi/v2 (as protobuf) whatever v3
    says: tlsgate's empty v2 leaves it to the server, which still refuses bad fields."""
    items = [
        yaml.safe_load(_route_with_defaults("one.example.com").replace("extra", "one")),
        yaml.safe_load(_route_with_defaults("two.example.com").replace("extra", "two")),
    ]
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    applied = await kubectl("apply", "-f", str(listed))
    assert "tlsroute.gateway.networking.k8s.io/one created" in applied.stdout
    assert "tlsroute.gateway.networking.k8s.io/two created" in applied.stdout
    items[0]["spec"]["colour"] = "blue"
    listed.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    refused = await kubectl("apply", "-f", str(listed), check=False)
    assert 'unknown field "colour"' in refused.stderr


async def test_patch_a_service_three_ways(kubectl: Kubectl) -> None:
    target = ["svc", "db", "-n", "apps"]
    ports = "jsonpath={.spec.ports[*].port}:{.spec.ports[*].targetPort}"
    strategic = '{"spec":{"ports":[{"port":443,"targetPort":8443}]}}'
    await kubectl("patch", *target, "--type=strategic", "-p", strategic)
    assert (await kubectl("get", *target, "-o", ports)).stdout == "443:8443"
    added = '{"spec":{"ports":[{"name":"admin","port":9443,"targetPort":9443}]}}'
    await kubectl("patch", *target, "-p", added)  # strategic is kubectl's default for core kinds
    assert (await kubectl("get", *target, "-o", ports)).stdout == "443 9443:8443 9443"
    json_patch = json.dumps(
        [
            {"op": "remove", "path": "/spec/ports/1"},
            {"op": "add", "path": "/metadata/labels", "value": {"tier": "back"}},
        ]
    )
    await kubectl("patch", *target, "--type=json", "-p", json_patch)
    assert (await kubectl("get", *target, "-o", ports)).stdout == "443:8443"
    merge = '{"metadata":{"labels":{"tier":null,"app":"db"}}}'
    await kubectl("patch", *target, "--type=merge", "-p", merge)
    labels = await kubectl("get", *target, "-o", "jsonpath={.metadata.labels}")
    assert json.loads(labels.stdout) == {"app": "db"}
    # A JSON patch whose test fails changes nothing; a strategic one on a Gateway API kind
    # is refused, as for a custom resource.
    failed = await kubectl(
        "patch",
        *target,
        "--type=json",
        "-p",
        '[{"op":"test","path":"/spec/ports/0/port","value":1}]',
        check=False,
    )
    assert failed.returncode != 0
    refused = await kubectl(
        "patch",
        "tlsroute",
        "db",
        "-n",
        "apps",
        "--type=strategic",
        "-p",
        '{"spec":{}}',
        check=False,
    )
    assert refused.returncode != 0
    assert "strategic merge patch" in refused.stderr
    # kubectl apply of a changed Service sends a strategic merge patch, with directives.
    await kubectl(
        "patch", *target, "--type=strategic", "-p", '{"metadata":{"labels":{"app":"db"}}}'
    )


async def test_apply_a_changed_service(kubectl: Kubectl, tmp_path: Path) -> None:
    """kubectl apply patches a core kind with a strategic merge patch computed from the
    last-applied annotation: ports merged by port, $setElementOrder and all."""
    manifest = tmp_path / "svc.yaml"
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "cache", "namespace": "apps"},
        "spec": {"ports": [{"name": "redis", "port": 6379, "targetPort": 6379}]},
    }
    manifest.write_text(yaml.safe_dump(service))
    assert "service/cache created" in (await kubectl("apply", "-f", str(manifest))).stdout
    assert "service/cache unchanged" in (await kubectl("apply", "-f", str(manifest))).stdout
    service["spec"]["ports"] = [
        {"name": "tls", "port": 6380, "targetPort": 6380},
        {"name": "redis", "port": 6379, "targetPort": 7379},
    ]
    manifest.write_text(yaml.safe_dump(service))
    assert "service/cache configured" in (await kubectl("apply", "-f", str(manifest))).stdout
    ports = await kubectl(
        "get",
        "svc",
        "cache",
        "-n",
        "apps",
        "-o",
        "jsonpath={.spec.ports[*].name}:{.spec.ports[*].targetPort}",
    )
    assert ports.stdout == "tls redis:6380 7379"
    service["spec"]["ports"] = [{"name": "tls", "port": 6380, "targetPort": 6380}]
    manifest.write_text(yaml.safe_dump(service))
    await kubectl("apply", "-f", str(manifest))
    ports = await kubectl(
        "get", "svc", "cache", "-n", "apps", "-o", "jsonpath={.spec.ports[*].name}"
    )
    assert ports.stdout == "tls"  # what the manifest no longer names is removed


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[tuple[str, str, str]]:
    """A gateway whose admin API is HTTPS with a token: (url, token, CA file)."""
    pki = Pki(tmp_path)
    cert, key = pki.server_files("127.0.0.1")
    token = "kubectl-t0ken"
    async with admin_gateway(None, token=token, admin_tls_cert=cert, admin_tls_key=key) as (_, url):
        assert url.startswith("https://")
        async with httpx.AsyncClient(
            base_url=url, timeout=10, verify=ssl.create_default_context(cafile=pki.ca_file())
        ) as http:
            answer = await http.post(
                "/v1/apply",
                content=MANIFESTS,
                headers={"Content-Type": "application/yaml", "Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200, answer.text
        yield url, token, pki.ca_file()


async def test_the_token_in_the_kubeconfig(secure: tuple[str, str, str], tmp_path: Path) -> None:
    url, token, ca = secure
    kubectl = Kubectl(tmp_path, url, token=token, ca=ca)
    routes = await kubectl("get", "tlsroutes", "-A", "-o", "name")
    assert "tlsroute.gateway.networking.k8s.io/db" in routes.stdout.split()
    wrong = Kubectl(tmp_path / "wrong", url, token="not-it", ca=ca)
    refused = await wrong("get", "tlsroutes", "-A", check=False)
    assert refused.returncode != 0
    assert "Unauthorized" in refused.stderr or "must be logged in" in refused.stderr


async def test_the_python_kubernetes_client(secure: tuple[str, str, str]) -> None:
    """The `kubernetes` client library lists TLSRoutes and reads a Service, unchanged."""
    import kubernetes

    url, token, ca = secure

    def use() -> tuple[list[str], int, list[str]]:
        # The client's models type every field as optional: read them as the JSON says.
        configuration = kubernetes.client.Configuration()
        configuration.host = url
        configuration.ssl_ca_cert = ca
        configuration.api_key = {"authorization": f"Bearer {token}"}
        with kubernetes.client.ApiClient(configuration) as client:
            custom = kubernetes.client.CustomObjectsApi(client)
            routes = custom.list_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", "apps", "tlsroutes"
            )
            service = kubernetes.client.CoreV1Api(client).read_namespaced_service("db", "apps")
            namespaces = kubernetes.client.CoreV1Api(client).list_namespace()
        items: Any = routes
        spec: Any = service.spec
        return (
            [item["metadata"]["name"] for item in items["items"]],
            spec.ports[0].port,
            [str(n.metadata.name) for n in namespaces.items if n.metadata is not None],
        )

    names, port, namespaces = await trio.to_thread.run_sync(use)
    assert names == ["db", "web"]
    assert port == 443
    assert {"apps", "infra", "default"} <= set(namespaces)


async def test_a_secrets_key_stays_out_of_the_last_applied_annotation(
    kubectl: Kubectl, tmp_path: Path
) -> None:
    pki = Pki(tmp_path)
    cert = pki.ca.issue_cert("db.example.com")
    key_pem = cert.private_key_pem.bytes().decode()
    manifest = tmp_path / "secret.yaml"
    manifest.write_text(secret_yaml("db-cert", cert, namespace="apps"))
    assert "secret/db-cert created" in (await kubectl("apply", "-f", str(manifest))).stdout
    shown = await kubectl("get", "secret", "db-cert", "-n", "apps", "-o", "json")
    secret = json.loads(shown.stdout)
    annotation = secret["metadata"]["annotations"][
        "kubectl.kubernetes.io/last-applied-configuration"
    ]
    assert json.loads(annotation)["stringData"]["tls.key"].startswith("sha256:")
    # No answer carries key material, as written or in base64.
    assert key_pem.splitlines()[1] not in shown.stdout
    assert base64.b64encode(key_pem.encode()).decode()[:40] not in shown.stdout
    assert "tls.key" not in secret.get("data", {})
    version = secret["metadata"]["resourceVersion"]
    # Applied again unchanged: the same digest, so nothing is written.
    await kubectl("apply", "-f", str(manifest))
    again = json.loads(
        (await kubectl("get", "secret", "db-cert", "-n", "apps", "-o", "json")).stdout
    )
    assert again["metadata"]["resourceVersion"] == version


async def test_server_side_apply(kubectl: Kubectl, tmp_path: Path) -> None:
    """Create, an unchanged apply that writes nothing, field removal, a conflict with
    another manager, and --force-conflicts."""
    manifest = tmp_path / "route.yaml"
    route = yaml.safe_load(_route_with_defaults("ssa.example.com"))
    route["metadata"]["labels"] = {"team": "db", "tier": "back"}
    manifest.write_text(yaml.safe_dump(route))
    target = ["tlsroute", "extra", "-n", "apps"]
    created = await kubectl("apply", "--server-side", "-f", str(manifest))
    assert "tlsroute.gateway.networking.k8s.io/extra serverside-applied" in created.stdout
    version = "jsonpath={.metadata.resourceVersion}"
    first = (await kubectl("get", *target, "-o", version)).stdout
    await kubectl("apply", "--server-side", "-f", str(manifest))
    assert (await kubectl("get", *target, "-o", version)).stdout == first
    # A label the manager no longer names is removed.
    del route["metadata"]["labels"]["tier"]
    manifest.write_text(yaml.safe_dump(route))
    await kubectl("apply", "--server-side", "-f", str(manifest))
    labels = await kubectl("get", *target, "-o", "jsonpath={.metadata.labels}")
    assert json.loads(labels.stdout) == {"team": "db"}
    managed = json.loads(
        (await kubectl("get", *target, "-o", "json", "--show-managed-fields")).stdout
    )["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in managed] == [("kubectl", "Apply")]
    assert "f:hostnames" in managed[0]["fieldsV1"]["f:spec"]
    # Another manager setting a field kubectl owns to another value: a conflict...
    theirs = tmp_path / "theirs.yaml"
    other = yaml.safe_load(_route_with_defaults("other.example.com"))
    theirs.write_text(yaml.safe_dump(other))
    conflict = await kubectl(
        "apply", "--server-side", "--field-manager=ops", "-f", str(theirs), check=False
    )
    assert conflict.returncode != 0
    assert 'Apply failed with 1 conflict: .spec.hostnames (owned by "kubectl")' in conflict.stderr
    # ...which --force-conflicts settles, taking the field over.
    await kubectl(
        "apply", "--server-side", "--field-manager=ops", "--force-conflicts", "-f", str(theirs)
    )
    hostnames = await kubectl("get", *target, "-o", "jsonpath={.spec.hostnames[0]}")
    assert hostnames.stdout == "other.example.com"
