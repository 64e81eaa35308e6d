"""The `tlsgate` command line: subcommands, options, and their environment defaults.

Each subcommand's `run` is a function of the parsed arguments that returns the exit status.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from typing import Any

from gateway import tlsgate_version
from gateway.api.names import RFC3339
from gateway.cli.client import run_client
from gateway.cli.env import (
    admin_address,
    env,
    env_choice,
    env_name,
    env_number,
    env_parsed,
    session_tickets,
    workers_count,
)
from gateway.cli.serve import run_serve
from gateway.cli.translate import run_translate

DESCRIPTION = """\
tlsgate routes TLS connections by SNI with Kubernetes Gateway API semantics (TLSRoute):
Passthrough listeners splice the client's own TLS to a backend, Terminate listeners end TLS
with certificates from Secrets. `serve` runs the gateway and its admin API; apply, get,
delete and explain talk to that API; translate checks manifests offline.
"""


def _parse_time(value: str) -> datetime:
    try:
        return datetime.strptime(value, RFC3339).replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an RFC 3339 UTC time such as 2026-01-01T00:00:00Z"
        ) from None


#: The serve timeouts: option name, default seconds, meaning.
_TIMEOUTS = (
    ("hello-timeout", "10", "seconds a client has to send its ClientHello"),
    ("connect-timeout", "5", "seconds to connect to one backend endpoint"),
    ("idle-timeout", "3600", "seconds without a byte either way before a connection is closed"),
    ("drain-timeout", "30", "on SIGTERM/SIGINT, seconds live connections may finish"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlsgate", description=DESCRIPTION)
    parser.add_argument(
        "--version", action="version", version=f"tlsgate {tlsgate_version()}", help="print it"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_client_commands(commands, _remote_options())
    _add_serve(commands)
    _add_translate(commands)
    return parser


def _remote_options() -> argparse.ArgumentParser:
    """The options every command that talks to a running gateway's admin API takes."""
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
    return remote


def _files(command: argparse.ArgumentParser, *, required: bool = True) -> None:
    command.add_argument(
        "-f",
        "--file",
        action="append",
        required=required,
        metavar="FILE",
        help="manifest file, or directory of .yaml/.yml/.json files ('-' for stdin); repeat",
    )
    command.add_argument(
        "-R",
        "--recursive",
        action="store_true",
        help="with a directory in -f, read the directories below it too",
    )


def _dry_run(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--dry-run",
        choices=("none", "server"),
        default="none",
        help="server: the gateway admits and answers the write but stores nothing "
        "(dryRun=All); default none",
    )


def _namespace(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "-n", "--namespace", help="the namespace of NAME, or of the objects listed (default: all)"
    )


def _add_client_commands(commands: Any, remote: argparse.ArgumentParser) -> None:
    ap = commands.add_parser(
        "apply", parents=[remote], help="create or update the documents of files (POST /v1/apply)"
    )
    _files(ap)
    _dry_run(ap)
    ap.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json", "name"),
        help="print the answer as YAML or JSON, or only the names (default: name and action)",
    )
    ap.set_defaults(run=run_client)
    gt = commands.add_parser("get", parents=[remote], help="list or read documents with status")
    gt.add_argument("kind", help="tlsroutes, gateways, ... (singular, Kind or short names too)")
    gt.add_argument("name", nargs="?", help="NAME or NAMESPACE/NAME")
    _namespace(gt)
    gt.add_argument(
        "-l", "--selector", help="only those whose labels match (kubectl's syntax: a=b,c!=d)"
    )
    gt.add_argument(
        "-o",
        "--output",
        choices=("yaml", "json", "wide", "name"),
        help="YAML or JSON, a table with more columns (wide), or only names (default: a table)",
    )
    gt.set_defaults(run=run_client)
    dl = commands.add_parser(
        "delete", parents=[remote], help="delete documents: by name, by selector or by file"
    )
    dl.add_argument("kind", nargs="?", help="the kind (as for get); not with -f")
    dl.add_argument("name", nargs="?", help="NAME or NAMESPACE/NAME")
    _namespace(dl)
    dl.add_argument(
        "-l",
        "--selector",
        help="delete every one of the kind whose labels match, in -n NAMESPACE or with -A",
    )
    dl.add_argument(
        "-A", "--all-namespaces", action="store_true", help="with -l: in every namespace"
    )
    _files(dl, required=False)
    _dry_run(dl)
    dl.set_defaults(run=run_client)
    ds = commands.add_parser(
        "describe", parents=[remote], help="one document: metadata, spec and every condition"
    )
    ds.add_argument("kind", help="the kind (as for get)")
    ds.add_argument("name", help="NAME or NAMESPACE/NAME")
    _namespace(ds)
    ds.set_defaults(run=run_client)
    df = commands.add_parser(
        "diff",
        parents=[remote],
        help="what applying files would change, as a unified diff; exits 1 if anything would",
    )
    _files(df)
    df.set_defaults(run=run_client)
    ex = commands.add_parser(
        "explain", parents=[remote], help="what a connection with this SNI would get"
    )
    ex.add_argument("--port", type=int, required=True, help="the port the client connects to")
    ex.add_argument("--sni", required=True, help="the server name its ClientHello sends")
    ex.add_argument(
        "--address", help="the address it connects to (default: any the port is bound on)"
    )
    ex.add_argument("-o", "--output", choices=("yaml", "json"), help="YAML or JSON (default: text)")
    ex.set_defaults(run=run_client)


def _add_serve(commands: Any) -> None:
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
        default=[p for p in env("bootstrap", "").split(",") if p],
        help="manifests applied at start (repeat; env: comma-separated)",
    )
    sv.add_argument(
        "--admin",
        type=admin_address,
        default=env_parsed("admin", "127.0.0.1:9901", admin_address),
        metavar="HOST:PORT",
        help="admin API address (default 127.0.0.1:9901; empty turns it off)",
    )
    sv.add_argument(
        "--admin-token-file",
        default=env("admin-token-file", ""),
        metavar="FILE",
        help="bearer token for the admin API (else TLSGATE_ADMIN_TOKEN)",
    )
    sv.add_argument(
        "--admin-tls-cert",
        default=env("admin-tls-cert", ""),
        metavar="FILE",
        help="serve the admin API over HTTPS with this certificate chain (PEM)",
    )
    sv.add_argument(
        "--admin-tls-key",
        default=env("admin-tls-key", ""),
        metavar="FILE",
        help="the private key of --admin-tls-cert (PEM)",
    )
    sv.add_argument(
        "--admin-client-ca",
        default=env("admin-client-ca", ""),
        metavar="FILE",
        help="require admin clients to present a certificate from this CA bundle (PEM)",
    )
    sv.add_argument(
        "--admin-plaintext",
        action="store_true",
        default=env("admin-plaintext", "") not in ("", "0", "false"),
        help="allow plain HTTP on a non-loopback admin address: TLS is ended in front",
    )
    sv.add_argument(
        "--admin-max-connections",
        type=int,
        default=env_number("admin-max-connections", "64", int),
        metavar="N",
        help="admin connections served at once; more wait in the kernel's queue (default 64)",
    )
    sv.add_argument(
        "--state-dir",
        default=env("state-dir", "./tlsgate-state"),
        help="embedded store directory (default ./tlsgate-state; empty: in memory)",
    )
    sv.add_argument(
        "--store",
        default=env("store", ""),
        metavar="URL",
        help="where the configuration is kept: sqlite:DIR (the default, the --state-dir "
        "directory) or etcd://HOST:PORT[,HOST:PORT...][/PREFIX] shared by replicas "
        "(etcds:// for TLS; default prefix /tlsgate)",
    )
    for name, meaning in (
        ("etcd-cacert", "CA bundle (PEM) that etcd's server certificates chain to"),
        ("etcd-cert", "client certificate (PEM) for etcd's --client-cert-auth"),
        ("etcd-key", "the private key of --etcd-cert (PEM)"),
    ):
        sv.add_argument(f"--{name}", default=env(name, ""), metavar="FILE", help=meaning)
    sv.add_argument(
        "--replica-name",
        default=env("replica-name", ""),
        metavar="NAME",
        help="this replica's name in GET /v1/replicas (default: host name:admin port)",
    )
    sv.add_argument(
        "--replica-lease",
        type=int,
        default=env_number("replica-lease", "10", int),
        metavar="SECONDS",
        help="etcd lease of this replica's registration: a replica that dies is forgotten "
        "after it (default 10)",
    )
    sv.add_argument(
        "--body-limit",
        type=int,
        default=env_number("body-limit", str(4 << 20), int),
        help="largest admin request body in bytes (default 4 MiB)",
    )
    sv.add_argument(
        "--bind-address",
        default=env("bind-address", "0.0.0.0"),
        help="where listeners bind when a Gateway has no spec.addresses (default 0.0.0.0)",
    )
    for name, default, meaning in _TIMEOUTS:
        sv.add_argument(
            f"--{name}",
            type=float,
            default=env_number(name, default, float),
            metavar="SECONDS",
            help=f"{meaning} (default {default})",
        )
    sv.add_argument(
        "--workers",
        type=workers_count,
        default=env_parsed("workers", "auto", workers_count),
        metavar="N|auto",
        help="data-plane worker processes; auto: one per usable CPU; 0: serve connections in "
        "the main process (default auto)",
    )
    sv.add_argument(
        "--max-connections",
        type=int,
        default=env_number("max-connections", "0", int) or None,
        help="concurrent connections (default: derived from the fd limit)",
    )
    sv.add_argument(
        "--tls-session-tickets",
        type=session_tickets,
        default=env_parsed("tls-session-tickets", "2", session_tickets),
        metavar="N",
        help="TLS 1.3 session tickets sent after a full handshake on Terminate listeners; "
        "0 sends none: cheaper handshakes, no resumption (default 2, OpenSSL's)",
    )
    sv.add_argument(
        "--no-splice",
        action="store_true",
        default=env("no-splice", "") not in ("", "0", "false"),
        help="relay with receive/send instead of zero-copy splice",
    )
    sv.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=env_choice("log-format", "text", ("text", "json")),
        help="text (key=value access lines) or json (one object per line); default text",
    )
    levels = ("debug", "info", "warning", "error")
    sv.add_argument(
        "--log-level",
        default=env_choice("log-level", "info", levels),
        choices=levels,
        help="default info (one access line per connection)",
    )
    sv.set_defaults(run=run_serve)
    _name_environment(sv)


def _name_environment(command: argparse.ArgumentParser) -> None:
    """Every serve option says the environment variable it reads (API.md: each option is
    also TLSGATE_ and its name in capitals)."""
    for action in command._actions:
        long = [o for o in action.option_strings if o.startswith("--")]
        if not long or action.dest == "help" or action.help is None:
            continue
        variable = env_name(long[0][2:])
        if variable not in action.help:
            action.help = f"{action.help} (env {variable})"


def _add_translate(commands: Any) -> None:
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
    tr.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="default yaml")
    tr.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when anything would not serve: a condition Accepted, Programmed or "
        "ResolvedRefs that is not True, or Conflicted that is (each said on stderr)",
    )
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
    tr.set_defaults(run=run_translate)
