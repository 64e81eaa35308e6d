"""The import rules of docs/architecture.md, checked over the source: which package may
import which. (The pure/I-O rule on library imports is ruff's TID251; this is the rule on
our own packages, which ruff cannot express per folder.)"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: package -> the packages of ours it may import (itself always).
ALLOWED = {
    "gateway.api": {"gateway"},
    "gateway.routing": {"gateway", "gateway.api"},
    "gateway.translate": {"gateway", "gateway.api", "gateway.routing"},
    "gateway.dataplane": {
        "gateway",
        "gateway.api",
        "gateway.routing",
        "gateway.metrics",
        "gateway.logs",
    },
    "gateway.store": {
        "gateway",
        "gateway.api",
        "gateway.routing",
        "gateway.translate",
        "gateway.dataplane",  # ssl contexts, to check that a Secret loads
        "gateway.collector",  # builds are bulk work (a leaf module: gc and threading)
    },
}


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "gateway" and len(parts) > 1 else parts[0]


def _imports(path: Path) -> set[str]:
    """Our modules a file imports; `from gateway import X` counts as gateway.X when X is a
    module or package, else as `gateway` (its top-level constants)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("gateway", "admin"):
                for alias in node.names:
                    sub = ROOT / node.module / alias.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").exists()
                    found.add(f"{node.module}.{alias.name}" if is_module else node.module)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] in ("gateway", "admin")}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_it_may(package: str) -> None:
    folder = ROOT / package.replace(".", "/")
    allowed = ALLOWED[package] | {package}
    wrong = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted(folder.rglob("*.py"))
        for name in _imports(path)
        if _package(name) not in allowed
    }
    assert not wrong, sorted(wrong)


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward import is seen."""
    module = tmp_path / "m.py"
    module.write_text(
        "from gateway.store.state import State\n"
        "from gateway import GATEWAY_GROUP\n"
        "from gateway import metrics\n"
        "import admin.app\n"
    )
    found = {_package(n) for n in _imports(module)}
    assert found == {"gateway.store", "gateway", "gateway.metrics", "admin"}


def test_a_worker_process_loads_no_admin_stack_and_no_translator() -> None:
    """Worker processes stay small: importing the worker pulls in neither the HTTP stack nor
    the control plane (API.md "Process model": workers never parse admin bodies or run
    translation), and not the admission and conversion code (cattrs) the admin API runs."""
    probe = "import sys, gateway.dataplane.worker\nprint('\\n'.join(sorted(sys.modules)))\n"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    forbidden = (
        "quart",
        "quart_trio",
        "hypercorn",
        "werkzeug",
        "admin",
        "yaml",
        "sqlite3",
        "cattrs",
    )
    control = ("gateway.translate", "gateway.store", "gateway.cli", "gateway.api.admission")
    wrong = [
        name
        for name in loaded
        if name.split(".")[0] in forbidden
        or name.startswith(control)
        or name == "gateway.api.convert"
    ]
    assert not wrong, wrong
