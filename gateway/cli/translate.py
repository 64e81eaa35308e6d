"""`tlsgate translate`: admit manifests and print every status and the routing table,
offline (API.md "Command line"): no server, no store.

I/O edge (reads files, prints).
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

from gateway.api.convert import Invalid, with_status
from gateway.api.kinds import Document, ObjectKey, key_of
from gateway.api.names import RFC3339
from gateway.cli.describe import placed_conditions
from gateway.cli.files import admit_files
from gateway.routing.explain import table_to_wire
from gateway.store import metadata
from gateway.store.facts import compile_snapshot


def print_invalid(error: Invalid, where: str) -> None:
    what = f"{error.kind} {error.name!r}" if error.name else (error.kind or "document")
    print(f"error: {where}: {what} is invalid", file=sys.stderr)
    for cause in error.causes:
        field = f"{cause.field}: " if cause.field else ""
        print(f"  {field}{cause.message} [{cause.reason}]", file=sys.stderr)


def _admit_files(paths: Sequence[str], now: datetime) -> tuple[list[Document], bool]:
    """Admit every document, assigning metadata as the store would: creationTimestamp in file
    order (one second apart), unless the document carries one (as exported from a server), so
    that conflict precedence can be reproduced offline."""
    documents, problems = admit_files(paths)
    for problem in problems:
        if problem.invalid is not None:
            print_invalid(problem.invalid, problem.where)
        else:
            print(f"error: {problem.where}: {problem.message}", file=sys.stderr)
    admitted: dict[ObjectKey, Document] = {}
    for counter, doc in enumerate(documents, start=1):
        key = key_of(doc)
        stamp = doc.metadata.creation_timestamp or (now + timedelta(seconds=counter - 1)).strftime(
            RFC3339
        )
        uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tlsgate:{key}"))
        assigned = metadata.assign(
            doc, previous=admitted.get(key), uid=uid, now=stamp, resource_version=str(counter)
        )
        admitted.pop(key, None)  # a later document replaces an earlier one, in its place
        admitted[key] = assigned
    return list(admitted.values()), bool(problems)


def run_translate(args: argparse.Namespace) -> int:
    now: datetime = args.now or datetime.now(UTC).replace(microsecond=0)
    documents, failed = _admit_files(args.file, now)
    snapshot = compile_snapshot(
        documents, now=now.strftime(RFC3339), generation=1, bind_address=args.bind_address
    )
    items = [with_status(doc, snapshot.statuses) for doc in documents]
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
    if args.strict:
        problems = [problem for item in items for problem in not_serving(item)]
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        failed = failed or bool(problems)
    return 1 if failed else 0


#: Conditions that say "this serves" when True; Conflicted says it when False.
_GOOD_WHEN_TRUE = ("Accepted", "Programmed", "ResolvedRefs")


def not_serving(item: dict[str, Any]) -> list[str]:
    """What `--strict` fails on in one document's status: each condition that says part of
    it would not serve, named with where it is (a listener, a parent), as describe names it."""
    meta = item.get("metadata") or {}
    name = f"{meta['namespace']}/{meta.get('name')}" if meta.get("namespace") else meta.get("name")
    problems = []
    for where, conditions in placed_conditions(item.get("status") or {}):
        for condition in conditions:
            kind, value = condition.get("type"), condition.get("status")
            if (kind in _GOOD_WHEN_TRUE and value != "True") or (
                kind == "Conflicted" and value == "True"
            ):
                problems.append(
                    f"{item.get('kind')} {name}{f' {where}' if where else ''}: {kind}={value} "
                    f"({condition.get('reason', '')}): {condition.get('message', '')}"
                )
    return problems
