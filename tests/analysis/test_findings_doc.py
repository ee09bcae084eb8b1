"""docs/findings.md states, for each claim, what would make it `not_supported` (issue 22), and no
longer calls a zero null-space estimate support."""

from __future__ import annotations

from pathlib import Path

from analysis.claims import CLAIMS

FINDINGS = Path(__file__).resolve().parents[2] / "docs" / "findings.md"


def test_each_claim_says_what_makes_it_not_supported() -> None:
    text = FINDINGS.read_text(encoding="utf-8")
    section = text.split("### What makes each claim `not_supported`")[1].split("\n## ")[0]
    for claim in CLAIMS:
        line = next((ln for ln in section.splitlines() if ln.startswith(f"- **{claim}**")), None)
        assert line is not None and "not_supported when" in line, claim
    assert "strong support" not in text and "percentile bootstrap interval over" not in text
    assert "zero by construction" in text or "fact of linear algebra" in text
