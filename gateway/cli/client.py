"""`tlsgate apply/get/delete/explain`: the admin API from the command line (API.md).

I/O edge (standard-library HTTP, so the command needs nothing the gateway does not). Errors are
printed as the Status message with its field causes, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import difflib
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import yaml

from gateway import tlsgate_version
from gateway.api import discovery
from gateway.api.columns import age, columns, wide_columns
from gateway.api.kinds import KINDS, KindInfo
from gateway.api.manifests import ManifestError, flatten, parse_documents
from gateway.api.selectors import label_selector
from gateway.cli.describe import describe_lines
from gateway.cli.files import manifest_paths, read_text
from gateway.dataplane.sockets import is_loopback

#: kubectl's short names (the discovery documents'), and `eps`, the CLI's own.
SHORT_NAMES = {
    short: kind for kind, shorts in discovery.SHORT_NAMES.items() for short in shorts
} | {"eps": "EndpointSlice"}


class ClientError(Exception):
    """Something to print and exit 1 for; `lines` are the Status message and causes."""

    def __init__(self, *lines: str) -> None:
        super().__init__(lines[0])
        self.lines = lines


def resolve_kind(name: str) -> KindInfo:
    """`tlsroutes`, `tlsroute`, `TLSRoute` or a short name like `gw`."""
    wanted = SHORT_NAMES.get(name.lower(), name).lower()
    for info in KINDS:
        if wanted in (info.plural, info.kind.lower()):
            return info
    known = ", ".join(sorted(k.plural for k in KINDS))
    raise ClientError(f"unknown kind {name!r}; known: {known}")


class AdminClient:
    def __init__(
        self,
        server: str,
        token: str | None,
        *,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.context: ssl.SSLContext | None = None
        if self.server.startswith("https://"):
            # Verified against the system's CAs, or --cacert (the gateway's own CA).
            try:
                self.context = ssl.create_default_context(cafile=cacert)
                if cert:
                    self.context.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                raise ClientError(f"TLS settings: {exc}") from None
        elif not self.server.startswith("http://"):
            raise ClientError(f"--server {server!r}: give an http:// or https:// URL")
        elif token and not _is_loopback_url(self.server):
            raise ClientError(
                f"refusing to send the token in clear text to {self.server}: use https://"
            )

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> Any:
        # Named in the gateway's audit lines (`agent`).
        headers = {"Accept": "application/json", "User-Agent": f"tlsgate/{tlsgate_version()}"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.server + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.context) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise _status_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach the admin API at {self.server}: {reason}") from None


def _is_loopback_url(url: str) -> bool:
    return is_loopback(urllib.parse.urlsplit(url).hostname or "")


def _status_error(exc: urllib.error.HTTPError) -> ClientError:
    try:
        status = json.loads(exc.read())
    except (json.JSONDecodeError, ValueError):
        return ClientError(f"{exc.code} {exc.reason}")
    lines = [f"{status.get('message', exc.reason)} ({status.get('code')} {status.get('reason')})"]
    for cause in (status.get("details") or {}).get("causes") or ():
        field = f"{cause['field']}: " if cause.get("field") else ""
        lines.append(f"  {field}{cause.get('message', '')} [{cause.get('reason', '')}]")
    return ClientError(*lines)


def item_path(info: KindInfo, name: str, namespace: str | None) -> str:
    if not info.namespaced:
        return f"/v1/{info.plural}/{urllib.parse.quote(name)}"
    if "/" in name:
        namespace, name = name.split("/", 1)
    return (
        f"/v1/{info.plural}/{urllib.parse.quote(namespace or 'default')}/{urllib.parse.quote(name)}"
    )


DRY = " (server dry run)"


def apply(client: AdminClient, texts: list[str], output: str | None, dry_run: bool) -> None:
    body = "\n---\n".join(texts).encode()
    query = "?dryRun=All" if dry_run else ""
    result = client.request("POST", "/v1/apply" + query, body, "application/yaml")
    if output in ("yaml", "json"):
        _print(result, output)
        return
    for item in result["items"]:
        print(_ref(item) if output == "name" else f"{_ref(item)} {item['action']}{DRY * dry_run}")


def _selected(items: list[dict[str, Any]], selector: str | None) -> list[dict[str, Any]]:
    """The items whose labels a label selector (kubectl's grammar) selects."""
    if not selector:
        return items
    try:
        selects = label_selector(selector)
    except ValueError as exc:
        raise ClientError(f"invalid label selector {selector!r}: {exc}") from None
    return [i for i in items if selects((i.get("metadata") or {}).get("labels") or {})]


def _list(
    client: AdminClient, info: KindInfo, namespace: str | None, selector: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    query = f"?namespace={urllib.parse.quote(namespace)}" if namespace else ""
    result = client.request("GET", f"/v1/{info.plural}{query}")
    items = _selected(result["items"], selector)
    return {**result, "items": items}, items


def get(
    client: AdminClient,
    kind: str,
    name: str | None,
    namespace: str | None,
    output: str | None,
    selector: str | None = None,
) -> None:
    info = resolve_kind(kind)
    if name is not None:
        if selector:
            raise ClientError("name an object or give a selector (-l), not both")
        result = client.request("GET", item_path(info, name, namespace))
        items = [result]
    else:
        result, items = _list(client, info, namespace, selector)
    if output in ("yaml", "json"):
        _print(result, output)
    elif output == "name":
        for item in items:
            print(_ref(item))
    else:
        _table(info, items, wide=output == "wide")


def delete(
    client: AdminClient,
    kind: str,
    name: str | None,
    namespace: str | None,
    selector: str | None,
    dry_run: bool,
    all_namespaces: bool = False,
) -> None:
    """One document, or every one a selector selects (`-l`, in one namespace or `-A`)."""
    info = resolve_kind(kind)
    if name is not None:
        if selector:
            raise ClientError("name an object or give a selector (-l), not both")
        paths = [item_path(info, name, namespace)]
    elif selector:
        if info.namespaced and not namespace and not all_namespaces:
            raise ClientError(f"delete {kind} -l: give -n NAMESPACE, or -A for every namespace")
        _, items = _list(client, info, namespace, selector)
        paths = [item_path(info, _name_of(item), None) for item in items]
        if not paths:
            print(f"No {info.plural} found.")
    else:
        raise ClientError(f"delete {kind}: name one, or select them with -l")
    for path in paths:
        _delete(client, path, dry_run)


def _name_of(item: dict[str, Any]) -> str:
    meta = item["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]


def _delete(client: AdminClient, path: str, dry_run: bool) -> None:
    result = client.request("DELETE", path + ("?dryRun=All" if dry_run else ""))
    print(f"{_ref(result)} deleted{DRY * dry_run}")


def _documents_of(texts: list[str]) -> list[tuple[KindInfo, str] | ClientError]:
    """(kind, NAMESPACE/NAME) of each document of manifest texts, or what is wrong with it."""
    found = []
    for text in texts:
        try:
            raws = [raw for document in parse_documents(text) for raw in flatten(document)]
        except ManifestError as exc:
            raise ClientError(str(exc)) from None
        for raw in raws:
            found.append(_named(raw))
    return found


def _named(raw: Any) -> tuple[KindInfo, str] | ClientError:
    """A document's kind and NAMESPACE/NAME, or what is wrong with it."""
    if not isinstance(raw, dict) or not isinstance(raw.get("metadata"), dict):
        return ClientError("a document without metadata names nothing to delete")
    try:
        info = resolve_kind(str(raw.get("kind", "")))
    except ClientError as exc:
        return exc
    meta = raw["metadata"]
    name = str(meta.get("name", ""))
    if info.namespaced:
        name = f"{meta.get('namespace') or 'default'}/{name}"
    return info, name


def delete_files(client: AdminClient, texts: list[str], dry_run: bool) -> int:
    """`delete -f`: every document the files name; each failure said, the rest deleted."""
    failed = 0
    for named in _documents_of(texts):
        try:
            if isinstance(named, ClientError):
                raise named
            info, name = named
            _delete(client, item_path(info, name, None), dry_run)
        except ClientError as exc:
            _report(exc)
            failed += 1
    return 1 if failed else 0


def describe(client: AdminClient, kind: str, name: str, namespace: str | None) -> None:
    """What `kubectl describe` shows: metadata, spec, and every condition as a table."""
    info = resolve_kind(kind)
    item = client.request("GET", item_path(info, name, namespace))
    for line in describe_lines(item):
        print(line)


def diff(client: AdminClient, texts: list[str]) -> int:
    """`diff -f`: what applying the files would change (a server dry run) against what is in
    force, as a unified diff of each document's YAML; 1 if anything would change."""
    body = "\n---\n".join(texts).encode()
    result = client.request("POST", "/v1/apply?dryRun=All", body, "application/yaml")
    changed = 0
    for merged in result["items"]:
        if merged.get("action") == "unchanged":
            continue
        info = resolve_kind(merged["kind"])
        try:
            live: dict[str, Any] | None = client.request(
                "GET", item_path(info, _name_of(merged), None)
            )
        except ClientError:
            live = None
        ref = _ref(merged)
        before = _comparable(live).splitlines(keepends=True) if live else []
        after = _comparable(merged).splitlines(keepends=True)
        lines = list(difflib.unified_diff(before, after, f"live/{ref}", f"merged/{ref}"))
        if lines:
            changed += 1
            sys.stdout.writelines(lines)
    return 1 if changed else 0


#: What a write sets by itself: left out of `diff`.
_SERVER_SET = ("uid", "creationTimestamp", "generation", "resourceVersion", "managedFields")


def _comparable(item: dict[str, Any]) -> str:
    body = {k: v for k, v in item.items() if k not in ("status", "action")}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in _SERVER_SET}
    body["metadata"] = meta
    text: str = yaml.safe_dump(body, sort_keys=False, default_flow_style=False)
    return text


def explain(
    client: AdminClient, port: int, sni: str, address: str | None, output: str | None
) -> None:
    query = {"port": str(port), "sni": sni}
    if address:
        query["address"] = address
    result = client.request("GET", "/v1/explain?" + urllib.parse.urlencode(query))
    if output:
        _print(result, output)
        return
    where = f"{result['address']}:{result['port']} sni={result['sni']}"
    if result["result"] == "rejected":
        print(f"{where}: rejected ({result['reason']}): {result['message']}")
        return
    listener = result["listener"]
    print(
        f"{where}: {result['mode']} via listener {listener['gateway']}/{listener['name']}, "
        f"route {result['route']} (hostname {result['hostname']})"
    )
    for backend in result["backends"]:
        health = backend.get("health", {})
        state = (
            f"REJECTED: {backend['reject']}"
            if backend.get("reject")
            else ", ".join(_endpoint_text(e, health.get(e)) for e in backend["endpoints"])
        )
        print(f"  {backend['share']:.0%}  {backend['name']}  {state}")
    if result.get("shadowed"):
        print(f"  shadowed routes: {', '.join(result['shadowed'])}")
    if result.get("message"):
        print(f"  {result['message']}")


def _ref(item: dict[str, Any]) -> str:
    return f"{item['kind'].lower()}/{_name_of(item)}"


def _endpoint_text(endpoint: str, health: dict[str, str] | None) -> str:
    """An endpoint as explain prints it: with its health when it is not healthy."""
    if not health or health.get("state") == "healthy":
        return endpoint
    state = health["state"]
    if "until" in health:
        state += f" until {health['until']}"
    if "error" in health:
        state += f": {health['error']}"
    return f"{endpoint} ({state})"


def _print(result: Any, output: str) -> None:
    if output == "json":
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        yaml.safe_dump(result, sys.stdout, sort_keys=False)


def _table(info: KindInfo, items: list[dict[str, Any]], *, wide: bool = False) -> None:
    if not items:
        print(f"No {info.plural} found.")
        return
    rows = []
    now = datetime.now(UTC)
    for item in items:
        meta = item["metadata"]
        row = [("NAMESPACE", meta.get("namespace", ""))] if info.namespaced else []
        row += [
            ("NAME", meta["name"]),
            *columns(info, item),
            ("AGE", age(meta.get("creationTimestamp"), now)),
            *(wide_columns(info, item) if wide else []),
        ]
        rows.append(row)
    headers = [h for h, _ in rows[0]]
    widths = [max(len(h), *(len(r[i][1]) for r in rows)) for i, h in enumerate(headers)]
    print("   ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        print("   ".join(v.ljust(w) for (_, v), w in zip(row, widths, strict=True)).rstrip())


def _texts(paths: list[str], recursive: bool) -> list[str]:
    try:
        return [read_text(path) for path in manifest_paths(paths, recursive=recursive)]
    except (OSError, UnicodeDecodeError) as exc:
        raise ClientError(str(exc)) from None


def _report(exc: ClientError) -> None:
    print(f"error: {exc.lines[0]}", file=sys.stderr)
    for line in exc.lines[1:]:
        print(line, file=sys.stderr)


def run_client(args: argparse.Namespace) -> int:
    try:
        admin = AdminClient(
            args.server, args.token, cacert=args.cacert, cert=args.cert, key=args.key
        )
        dry_run = getattr(args, "dry_run", "none") == "server"
        if args.command == "apply":
            apply(admin, _texts(args.file, args.recursive), args.output, dry_run)
        elif args.command == "get":
            get(admin, args.kind, args.name, args.namespace, args.output, args.selector)
        elif args.command == "delete":
            if args.file:
                if args.kind or args.selector:
                    raise ClientError("delete -f takes what the files name: no kind, no -l")
                return delete_files(admin, _texts(args.file, args.recursive), dry_run)
            if not args.kind:
                raise ClientError("delete: name a kind (and a name or -l), or give -f FILE")
            delete(
                admin,
                args.kind,
                args.name,
                args.namespace,
                args.selector,
                dry_run,
                args.all_namespaces,
            )
        elif args.command == "describe":
            describe(admin, args.kind, args.name, args.namespace)
        elif args.command == "diff":
            return diff(admin, _texts(args.file, args.recursive))
        else:
            explain(admin, args.port, args.sni, args.address, args.output)
    except ClientError as exc:
        _report(exc)
        return 1
    return 0
