"""The documentation stays inside the repository: every link in README.md and docs/*.md resolves to
a file of this checkout (no link leaves it), the science page is linked from the README, and the
README's quick start is exactly the two make commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def links(path: Path) -> list[str]:
    """Every link and image target of a Markdown file, as a CommonMark parser sees them."""
    found: list[str] = []

    def walk(tokens: list) -> None:  # type: ignore[type-arg]
        for token in tokens:
            if token.type == "link_open":
                found.append(str(token.attrGet("href")))
            elif token.type == "image":
                found.append(str(token.attrGet("src")))
            if token.children:
                walk(token.children)

    walk(MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")))
    return found


def _slugs(path: Path) -> set[str]:
    """GitHub-style anchors of a Markdown file's headings."""
    slugs = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            slugs.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return slugs


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves_inside_the_repository(doc: Path) -> None:
    for target in links(doc):
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE), f"{doc.name}: {target} leaves the repository"
        file_part, _, anchor = target.partition("#")
        resolved = (doc.parent / file_part).resolve() if file_part else doc
        assert resolved.is_relative_to(ROOT), f"{doc.name}: {target} points outside the repository"
        assert resolved.exists(), f"{doc.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in _slugs(resolved), f"{doc.name}: {target}: no heading #{anchor}"


def test_no_reference_to_files_outside_the_repository() -> None:
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text and "SCIENCE.md" not in text, doc.name


def test_readme_links_the_science_page_and_it_covers_every_probe() -> None:
    assert "docs/science.md" in links(ROOT / "README.md")
    science = (ROOT / "docs" / "science.md").read_text(encoding="utf-8")
    for heading in ("## Probe `match`", "## Probe `perturb`", "## Probe `lipschitz`", "Paper preset"):
        assert heading in science
    for family in ("random", "top", "match", "grad", "null", "off_top"):
        assert f"- `{family}`:" in science


def test_quick_start_is_exactly_the_two_make_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"\n\n((?:    .*\n)+)", section)
    assert block is not None, "no command block in the quick start"
    assert [line.strip() for line in block.group(1).splitlines()] == ["make demo", "make test"]
