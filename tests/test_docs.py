"""What the reference documentation lists is what the code has: a new outcome, or a renamed
one, must reach docs/configuration.md (operators alert on these values)."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.dataplane.access import Outcome

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_access_log_outcome_is_documented_and_no_other() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    table = text.split("| outcome | meaning |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `([a-z-]+)` \|", table, flags=re.MULTILINE))
    assert documented == {outcome.value for outcome in Outcome}
