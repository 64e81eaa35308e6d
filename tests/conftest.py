"""Shared test fixtures and the `--regen-golden` option."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        help="rewrite tests/data/translate/*.out.yaml from the current output of translate",
    )
