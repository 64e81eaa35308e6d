"""Golden files: `tlsgate translate -f <case>.in.yaml` must print exactly `<case>.out.yaml`.

Each input says in its header what it shows. Regenerate after an intended change with
`scripts/test --regen-golden`, then read the diff: the goldens are reviewed output, not a
snapshot to rubber-stamp.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli.main import main

from .helpers import NOW

DATA = Path(__file__).parent / "data" / "translate"
CASES = sorted(DATA.glob("*.in.yaml"))


def test_there_are_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name.removesuffix(".in.yaml"))
def test_translate_matches_golden(
    case: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["translate", "-f", str(case), "--now", NOW])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.err == ""
    golden = case.with_name(case.name.removesuffix(".in.yaml") + ".out.yaml")
    if request.config.getoption("--regen-golden"):
        golden.write_text(out.out)
        pytest.skip(f"regenerated {golden.name}")
    assert golden.exists(), f"{golden.name} is missing: run scripts/test --regen-golden"
    assert out.out == golden.read_text()
