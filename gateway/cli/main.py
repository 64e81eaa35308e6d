"""The `tlsgate` command (API.md "Command line").

I/O edge: reads files, prints, exits. `translate` is offline: no server, no store.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from gateway.api.convert import CONVERTER, Invalid, structure_document, unstructure_document
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.api.manifests import ManifestError, parse_documents
from gateway.dataplane.sockets import is_loopback
from gateway.dataplane.tls import load_facts
from gateway.routing.snapshot import table_to_wire
from gateway.store import metadata
from gateway.translate.build import translate
from gateway.translate.facts import Runtime
from gateway.translate.resources import Resources

log = logging.getLogger("tlsgate")

DESCRIPTION = """\
tlsgate routes TLS connections by SNI with Kubernetes Gateway API semantics (TLSRoute):
Passthrough listeners splice the client's own TLS to a backend, Terminate listeners end TLS
with certificates from Secrets. `serve` runs the gateway and its admin API; apply, get,
delete and explain talk to that API; translate checks manifests offline.
"""

#: Problems with TLSGATE_* environment values, found while the parser's defaults were built;
#: reported by `serve` (the only command that reads them), one line each.
_ENV_ERRORS: list[str] = []

RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def _parse_time(value: str) -> datetime:
    try:
        return datetime.strptime(value, RFC3339).replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an RFC 3339 UTC time such as 2026-01-01T00:00:00Z"
        ) from None


def _print_invalid(error: Invalid, where: str) -> None:
    what = f"{error.kind} {error.name!r}" if error.name else (error.kind or "document")
    print(f"error: {where}: {what} is invalid", file=sys.stderr)
    for cause in error.causes:
        field = f"{cause.field}: " if cause.field else ""
        print(f"  {field}{cause.message} [{cause.reason}]", file=sys.stderr)


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _admit_files(paths: Sequence[str], now: datetime) -> tuple[list[Document], bool]:
    """Admit every document, assigning metadata as the store would: creationTimestamp in file
    order (one second apart), unless the document carries one (as exported from a server), so
    that conflict precedence can be reproduced offline."""
    admitted: dict[ObjectKey, Document] = {}
    failed = False
    counter = 0
    for path in paths:
        try:
            raw_documents = parse_documents(_read(path))
        except (OSError, UnicodeDecodeError, ManifestError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed = True
            continue
        for index, raw in enumerate(raw_documents):
            try:
                doc = structure_document(raw)
            except Invalid as exc:
                _print_invalid(exc, f"{path} document {index + 1}")
                failed = True
                continue
            counter += 1
            key = key_of(doc)
            stamp = doc.metadata.creation_timestamp or (
                now + timedelta(seconds=counter - 1)
            ).strftime(RFC3339)
            uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tlsgate:{key}"))
            assigned = metadata.assign(
                doc, previous=admitted.get(key), uid=uid, now=stamp, resource_version=str(counter)
            )
            admitted.pop(key, None)  # a later document replaces an earlier one, in its place
            admitted[key] = assigned
    return list(admitted.values()), failed


def _translate(args: argparse.Namespace) -> int:
    now: datetime = args.now or datetime.now(UTC).replace(microsecond=0)
    documents, failed = _admit_files(args.file, now)
    resources = Resources.of(documents)
    secrets, bundles = load_facts(resources)
    runtime = Runtime(
        now=now.strftime(RFC3339),
        bind_address=args.bind_address,
        secrets=secrets,
        ca_bundles=bundles,
    )
    snapshot = translate(resources, runtime, generation=1)
    items = []
    for doc in documents:
        wire = unstructure_document(doc)
        status = snapshot.statuses.get(key_of(doc))
        if status is not None:
            wire["status"] = CONVERTER.unstructure(status)
        items.append(wire)
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "List",
        "items": items,
        "routingTable": table_to_wire(snapshot),
    }
    if args.output == "json":
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        yaml.safe_dump(out, sys.stdout, sort_keys=False, default_flow_style=False)
    return 1 if failed else 0


def env_name(option: str) -> str:
    return "TLSGATE_" + option.upper().replace("-", "_")


def _env(name: str, default: str) -> str:
    """Every serve option is also an environment variable TLSGATE_<NAME> (API.md)."""
    return os.environ.get(env_name(name), default)


def _env_choice(name: str, default: str, choices: Sequence[str]) -> str:
    """A choice option's default from its environment variable, checked like `_env_number`."""
    text = _env(name, default)
    if text not in choices:
        _ENV_ERRORS.append(f"{env_name(name)}={text!r} is not one of {', '.join(choices)}")
        return default
    return text


def _env_admin(default: str) -> tuple[str, int] | None:
    text = _env("admin", default)
    try:
        return _admin_address(text)
    except argparse.ArgumentTypeError as exc:
        _ENV_ERRORS.append(f"{env_name('admin')}: {exc}")
        return _admin_address(default)


def _env_number(name: str, default: str, kind: type[int] | type[float]) -> Any:
    """A numeric option's default from its environment variable; a value that is not a
    number is remembered (reported by `serve`, naming the variable) and the default used."""
    text = _env(name, default)
    try:
        value = kind(text)
        if value < 0:
            raise ValueError(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        _ENV_ERRORS.append(f"{env_name(name)}={text!r} is not {noun} of at least 0")
        return kind(default)
    return value


def _setup_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)  # structured access-log fields, next to the text line
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _admin_address(value: str) -> tuple[str, int] | None:
    """`HOST:PORT` ([v6]:port too); an empty value turns the admin API off."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def _admin_token(args: argparse.Namespace) -> str | None:
    """--admin-token-file wins over TLSGATE_ADMIN_TOKEN (API.md "Security")."""
    if args.admin_token_file:
        with open(args.admin_token_file, encoding="utf-8") as handle:
            token = handle.read().strip()
        if not token:
            raise ValueError(f"{args.admin_token_file} is empty")
        return token
    return os.environ.get("TLSGATE_ADMIN_TOKEN") or None


def _serve(args: argparse.Namespace) -> int:
    import trio

    from admin.listen import AdminLimits
    from gateway.dataplane.proxy import ProxyConfig
    from gateway.server import BootstrapError, ServeConfig, StartError, load_bootstrap, serve
    from gateway.store.sqlite import StoreError, StoreUnavailable

    if _ENV_ERRORS:
        for problem in _ENV_ERRORS:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    _setup_logging(args.log_level, args.log_format)
    try:
        token = _admin_token(args)
    except (OSError, ValueError) as exc:
        print(f"error: admin token: {exc}", file=sys.stderr)
        return 2
    refusal = _admin_refusal(args, token)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        documents = load_bootstrap(args.bootstrap)
    except BootstrapError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    proxy = ProxyConfig(
        hello_timeout=args.hello_timeout,
        connect_timeout=args.connect_timeout,
        idle_timeout=args.idle_timeout,
        **({"splice": False} if args.no_splice else {}),
    )
    config = ServeConfig(
        bootstrap=tuple(args.bootstrap),
        bind_address=args.bind_address,
        drain_timeout=args.drain_timeout,
        proxy=proxy,
        max_connections=args.max_connections,
        admin=args.admin,
        admin_token=token,
        admin_tls_cert=args.admin_tls_cert or None,
        admin_tls_key=args.admin_tls_key or None,
        admin_client_ca=args.admin_client_ca or None,
        admin_limits=AdminLimits(max_connections=max(1, args.admin_max_connections)),
        body_limit=args.body_limit,
        state_dir=args.state_dir or None,
    )
    try:
        trio.run(serve, config, documents)
    except (StartError, StoreError, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _admin_refusal(args: argparse.Namespace, token: str | None) -> str | None:
    """Why the admin API must not start as configured (API.md "Security"), or None."""
    if args.admin_client_ca and not (args.admin_tls_cert and args.admin_tls_key):
        return (
            "--admin-client-ca needs --admin-tls-cert and --admin-tls-key: client "
            "certificates are asked for only over HTTPS"
        )
    if args.admin is None or is_loopback(args.admin[0]):
        return None
    host = args.admin[0]
    if token is None:
        return (
            f"refusing to serve the admin API on {host} without a token: set "
            "--admin-token-file or TLSGATE_ADMIN_TOKEN, or bind it to a loopback address"
        )
    if not (args.admin_tls_cert or args.admin_tls_key) and not args.admin_plaintext:
        return (
            f"refusing to serve the admin API on {host} in plain HTTP: the token would cross "
            "the network in clear text. Give --admin-tls-cert and --admin-tls-key, or "
            "--admin-plaintext if TLS is ended in front of tlsgate"
        )
    return None


def _client_command(args: argparse.Namespace) -> int:
    from gateway.cli import client

    try:
        admin = client.AdminClient(
            args.server, args.token, cacert=args.cacert, cert=args.cert, key=args.key
        )
        if args.command == "apply":
            texts = []
            for path in args.file:
                try:
                    texts.append(_read(path))
                except (OSError, UnicodeDecodeError) as exc:
                    raise client.ClientError(f"{path}: {exc}") from None
            client.apply(admin, texts, args.output)
        elif args.command == "get":
            client.get(admin, args.kind, args.name, args.namespace, args.output)
        elif args.command == "delete":
            client.delete(admin, args.kind, args.name, args.namespace)
        else:
            client.explain(admin, args.port, args.sni, args.address, args.output)
    except client.ClientError as exc:
        print(f"error: {exc.lines[0]}", file=sys.stderr)
        for line in exc.lines[1:]:
            print(line, file=sys.stderr)
        return 1
    return 0


#: The serve timeouts: option name, default seconds, meaning.
_TIMEOUTS = (
    ("hello-timeout", "10", "seconds a client has to send its ClientHello"),
    ("connect-timeout", "5", "seconds to connect to one backend endpoint"),
    ("idle-timeout", "3600", "seconds without a byte either way before a connection is closed"),
    ("drain-timeout", "30", "on SIGTERM/SIGINT, seconds live connections may finish"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlsgate", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--server",
        default=os.environ.get("TLSGATE_SERVER", "http://127.0.0.1:9901"),
        help="admin API URL (env TLSGATE_SERVER; default http://127.0.0.1:9901)",
    )
    remote.add_argument(
        "--token",
        default=os.environ.get("TLSGATE_ADMIN_TOKEN"),
        help="bearer token (env TLSGATE_ADMIN_TOKEN); sent only over https:// or to loopback",
    )
    remote.add_argument(
        "--cacert",
        metavar="FILE",
        default=os.environ.get("TLSGATE_CACERT"),
        help="CA bundle that the https:// admin API's certificate chains to "
        "(env TLSGATE_CACERT; default: the system's CAs)",
    )
    remote.add_argument(
        "--cert",
        metavar="FILE",
        default=os.environ.get("TLSGATE_CLIENT_CERT"),
        help="client certificate (PEM) for an admin API that requires one "
        "(env TLSGATE_CLIENT_CERT)",
    )
    remote.add_argument(
        "--key",
        metavar="FILE",
        default=os.environ.get("TLSGATE_CLIENT_KEY"),
        help="the client certificate's key, if not in --cert (env TLSGATE_CLIENT_KEY)",
    )
    ap = commands.add_parser(
        "apply", parents=[remote], help="create or update the documents of files (POST /v1/apply)"
    )
    ap.add_argument(
        "-f",
        "--file",
        action="append",
        required=True,
        metavar="FILE",
        help="manifest file ('-' for stdin); repeat",
    )
    ap.add_argument("-o", "--output", choices=("yaml", "json"))
    ap.set_defaults(run=_client_command)
    gt = commands.add_parser("get", parents=[remote], help="list or read documents with status")
    gt.add_argument("kind", help="tlsroutes, gateways, ... (singular, Kind or short names too)")
    gt.add_argument("name", nargs="?", help="NAME or NAMESPACE/NAME")
    gt.add_argument("-n", "--namespace")
    gt.add_argument("-o", "--output", choices=("yaml", "json"))
    gt.set_defaults(run=_client_command)
    dl = commands.add_parser("delete", parents=[remote], help="delete one document")
    dl.add_argument("kind")
    dl.add_argument("name", help="NAME or NAMESPACE/NAME")
    dl.add_argument("-n", "--namespace")
    dl.set_defaults(run=_client_command)
    ex = commands.add_parser(
        "explain", parents=[remote], help="what a connection with this SNI would get"
    )
    ex.add_argument("--port", type=int, required=True)
    ex.add_argument("--sni", required=True)
    ex.add_argument("--address")
    ex.add_argument("-o", "--output", choices=("yaml", "json"))
    ex.set_defaults(run=_client_command)
    sv = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway and its admin API.",
        epilog="Every option is also an environment variable: TLSGATE_ and the option's name "
        "in capitals, e.g. TLSGATE_ADMIN=0.0.0.0:9901 or TLSGATE_IDLE_TIMEOUT=600. "
        "TLSGATE_ADMIN_TOKEN holds the admin API's bearer token.",
    )
    sv.add_argument(
        "--bootstrap",
        action="append",
        metavar="FILE",
        default=[p for p in _env("bootstrap", "").split(",") if p],
        help="manifests applied at start (repeat; env: comma-separated)",
    )
    sv.add_argument(
        "--admin",
        type=_admin_address,
        default=_env_admin("127.0.0.1:9901"),
        metavar="HOST:PORT",
        help="admin API address (default 127.0.0.1:9901; empty turns it off)",
    )
    sv.add_argument(
        "--admin-token-file",
        default=_env("admin-token-file", ""),
        metavar="FILE",
        help="bearer token for the admin API (else TLSGATE_ADMIN_TOKEN)",
    )
    sv.add_argument(
        "--admin-tls-cert",
        default=_env("admin-tls-cert", ""),
        metavar="FILE",
        help="serve the admin API over HTTPS with this certificate chain (PEM)",
    )
    sv.add_argument(
        "--admin-tls-key",
        default=_env("admin-tls-key", ""),
        metavar="FILE",
        help="the private key of --admin-tls-cert (PEM)",
    )
    sv.add_argument(
        "--admin-client-ca",
        default=_env("admin-client-ca", ""),
        metavar="FILE",
        help="require admin clients to present a certificate from this CA bundle (PEM)",
    )
    sv.add_argument(
        "--admin-plaintext",
        action="store_true",
        default=_env("admin-plaintext", "") not in ("", "0", "false"),
        help="allow plain HTTP on a non-loopback admin address: TLS is ended in front",
    )
    sv.add_argument(
        "--admin-max-connections",
        type=int,
        default=_env_number("admin-max-connections", "64", int),
        metavar="N",
        help="admin connections served at once; more wait in the kernel's queue (default 64)",
    )
    sv.add_argument(
        "--state-dir",
        default=_env("state-dir", "./tlsgate-state"),
        help="embedded store directory (default ./tlsgate-state; empty: in memory)",
    )
    sv.add_argument(
        "--body-limit",
        type=int,
        default=_env_number("body-limit", str(4 << 20), int),
        help="largest admin request body in bytes (default 4 MiB)",
    )
    sv.add_argument(
        "--bind-address",
        default=_env("bind-address", "0.0.0.0"),
        help="where listeners bind when a Gateway has no spec.addresses (default 0.0.0.0)",
    )
    for name, default, meaning in _TIMEOUTS:
        sv.add_argument(
            f"--{name}",
            type=float,
            default=_env_number(name, default, float),
            metavar="SECONDS",
            help=f"{meaning} (default {default})",
        )
    sv.add_argument(
        "--max-connections",
        type=int,
        default=_env_number("max-connections", "0", int) or None,
        help="concurrent connections (default: derived from the fd limit)",
    )
    sv.add_argument(
        "--no-splice",
        action="store_true",
        default=_env("no-splice", "") not in ("", "0", "false"),
        help="relay with receive/send instead of zero-copy splice",
    )
    sv.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=_env_choice("log-format", "text", ("text", "json")),
        help="text (key=value access lines) or json (one object per line); default text",
    )
    levels = ("debug", "info", "warning", "error")
    sv.add_argument(
        "--log-level",
        default=_env_choice("log-level", "info", levels),
        choices=levels,
        help="default info (one access line per connection)",
    )
    sv.set_defaults(run=_serve)
    tr = commands.add_parser(
        "translate", help="admit manifests and print every status and the routing table, offline"
    )
    tr.add_argument(
        "-f",
        "--file",
        action="append",
        required=True,
        metavar="FILE",
        help="manifest file (JSON or multi-document YAML; '-' for stdin); repeat",
    )
    tr.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    tr.add_argument(
        "--bind-address",
        default="0.0.0.0",
        help="where listeners of a Gateway without spec.addresses bind (default 0.0.0.0)",
    )
    tr.add_argument(
        "--now",
        type=_parse_time,
        default=None,
        help="the clock, as 2026-01-01T00:00:00Z, for reproducible output "
        "(default: the current time)",
    )
    tr.set_defaults(run=_translate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`tlsgate get ... | head`): stop quietly, as other Unix tools
        # do, and keep the interpreter's final flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # as if ended by SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
