"""Manifest files for `serve --bootstrap` and `tlsgate translate`: read, parse, admit.

I/O edge (reads files and standard input). Every file and every document is tried, and every
problem reported, so one run shows all the typos.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from attrs import frozen

from gateway.api.bundle import admit_all
from gateway.api.convert import Invalid
from gateway.api.kinds import Document
from gateway.api.manifests import ManifestError, parse_documents


@frozen
class FileProblem:
    """A file that cannot be read or parsed, or a document that is not admitted."""

    where: str
    message: str
    invalid: Invalid | None = None


#: The files a directory given to `-f` contributes (kubectl's: YAML and JSON).
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def manifest_paths(paths: Sequence[str], *, recursive: bool = False) -> list[str]:
    """The files `-f` names: a file as is ('-' for stdin), a directory's manifest files in
    name order (and, with `recursive`, those of every directory below it). OSError names a
    path that is neither, or a directory without any manifest."""
    found: list[str] = []
    for path in paths:
        if path == "-" or not os.path.isdir(path):
            if path != "-" and not os.path.exists(path):
                raise FileNotFoundError(f"{path}: no such file or directory")
            found.append(path)
            continue
        inside: list[str] = []
        for directory, subdirectories, files in os.walk(path):
            subdirectories.sort()
            if not recursive:
                subdirectories.clear()
            inside += [
                os.path.join(directory, name)
                for name in sorted(files)
                if name.endswith(MANIFEST_SUFFIXES) and not name.startswith(".")
            ]
        if not inside:
            where = " or below it (-R)" if recursive else " (-R reads the ones below it)"
            raise FileNotFoundError(f"{path}: no .yaml, .yml or .json file in it{where}")
        found += inside
    return found


def read_text(path: str) -> str:
    """A file's text, or standard input for '-'."""
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def admit_files(paths: Sequence[str]) -> tuple[list[Document], list[FileProblem]]:
    """Every admitted document of the files, in order (duplicates included: a later one
    replaces an earlier one wherever they are applied), and every problem found."""
    documents: list[Document] = []
    problems: list[FileProblem] = []
    for path in paths:
        try:
            raws = parse_documents(read_text(path))
        except (OSError, UnicodeDecodeError, ManifestError) as exc:
            problems.append(FileProblem(path, str(exc)))
            continue
        admitted, rejected = admit_all(raws)
        documents += admitted
        problems += [
            FileProblem(f"{path} document {index + 1}", error.message, error)
            for index, error in rejected
        ]
    return documents, problems
