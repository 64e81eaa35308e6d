"""Shared test fixtures and the `--regen-golden` option."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import Pki


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        help="rewrite tests/data/translate/*.out.yaml from the current output of translate",
    )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh test CA (trustme) for the end-to-end tests."""
    return Pki(tmp_path)
