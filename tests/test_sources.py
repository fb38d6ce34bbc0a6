"""The repository is self-contained: comments, docstrings and docs cite only pages of ``docs/``.

Design notes that live outside the repository (a specification, an API or a design document kept
elsewhere) are not shipped, so a comment pointing at one points at nothing for every reader of the code.
What the code relies on is written down in ``docs/`` (``docs/design.md`` for the engine's guarantees), and
citations name a page and section there, like ``docs/design.md#leases``. These tests keep it that way:
no citation of an outside document, and every ``docs/<page>.md#<section>`` citation names a heading that
exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED_DIRS = ("src", "tests", "bench", "examples", "docs")
SCANNED_FILES = ("README.md",)
# Vendored third-party files (the dashboard's bundled Mermaid) are not ours to cite from.
SKIPPED_PARTS = frozenset({"static", "__pycache__", "node_modules"})
THIS_FILE = Path(__file__).resolve()

OUTSIDE_CITATION = re.compile(r"SPEC §|SPEC\.md|API\.md|DESIGN\.md")
# ``docs/design.md#keys`` in code and tests; ``](design.md#keys)`` or ``](docs/design.md#keys)`` in Markdown.
DOCS_CITATION = re.compile(r"(?:\bdocs/|\]\((?:\.\./)?(?:docs/)?)([A-Za-z0-9_-]+\.md)#([A-Za-z0-9_-]+)")
HEADING = re.compile(r"#{1,6} +(.*?)\s*#*\s*$")


def _text_files() -> Iterator[tuple[Path, str]]:
    """Every readable text file of the scanned parts of the repository, except this test."""
    paths = [ROOT / name for name in SCANNED_FILES]
    for directory in SCANNED_DIRS:
        if (ROOT / directory).is_dir():
            paths.extend(path for path in sorted((ROOT / directory).rglob("*")) if path.is_file())
    for path in paths:
        if path.resolve() == THIS_FILE or SKIPPED_PARTS.intersection(path.relative_to(ROOT).parts):
            continue
        try:
            yield path, path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary files (images) cite nothing


def _slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    """The section anchors of a docs page (headings inside fenced code blocks are code, not sections)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        match = None if in_fence else HEADING.fullmatch(line)
        if match:
            slug = _slug(match[1])
            repeats = seen.get(slug, 0)
            seen[slug] = repeats + 1
            anchors.add(slug if repeats == 0 else f"{slug}-{repeats}")
    return anchors


def _lines_matching(pattern: re.Pattern[str]) -> list[tuple[str, re.Match[str]]]:
    """Each match of ``pattern`` in the scanned files, with its ``path:line``."""
    found = []
    for path, text in _text_files():
        for number, line in enumerate(text.splitlines(), start=1):
            for match in pattern.finditer(line):
                found.append((f"{path.relative_to(ROOT)}:{number}", match))
    return found


def test_no_file_cites_a_document_outside_the_repository() -> None:
    offenders = [f"{where}: {match.string.strip()}" for where, match in _lines_matching(OUTSIDE_CITATION)]
    assert not offenders, "cite docs/ instead of outside documents:\n" + "\n".join(offenders)


def test_every_cited_docs_section_exists() -> None:
    pages = {page.name: _anchors(page) for page in (ROOT / "docs").glob("*.md")}
    broken = [
        f"{where}: {match[1]}#{match[2]}"
        for where, match in _lines_matching(DOCS_CITATION)
        if match[2] not in pages.get(match[1], set())
    ]
    assert not broken, "citations of docs sections that do not exist:\n" + "\n".join(broken)


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Cohorts and fan-in", "cohorts-and-fan-in"),
        ("A flow's life", "a-flows-life"),
        ("Without pytest: `set_in_test`", "without-pytest-set_in_test"),
        ("Retention: delete and purge", "retention-delete-and-purge"),
    ],
)
def test_section_anchors_are_made_the_way_github_makes_them(heading: str, anchor: str) -> None:
    assert _slug(heading) == anchor
