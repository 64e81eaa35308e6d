"""The `tlsgate` command (API.md "Command line").

I/O edge: reads files, prints, exits. `translate` is offline: no server, no store.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from gateway import metadata
from gateway.convert import CONVERTER, Invalid, structure_document, unstructure_document
from gateway.kinds import Document, ObjectKey, key_of
from gateway.manifests import ManifestError, parse_documents
from gateway.resources import Resources
from gateway.routing import table_to_wire
from gateway.runtime import Runtime
from gateway.tls import load_facts
from gateway.translate import translate

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlsgate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
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
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
