"""Every ```python block of the user documentation (docs/*.md and README.md) runs and exits with status 0.

Each block is a complete program: it is written to a file in a fresh temporary directory (so SQLite files
land there) and executed with this interpreter in a subprocess with a timeout. Two conventions:

- a block whose first line is exactly ``# not run`` is a fragment (a signature listing) and is skipped;
- a block whose first line is ``# test_<name>.py`` is a pytest module: it is saved under that name and run
  with ``python -m pytest`` (that is how docs/testing.md shows tests of workflows).

Examples print or assert their results, so a block that runs but computes the wrong thing fails too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
TIMEOUT_SECONDS = 30
SKIP_MARKER = "# not run"
PYTEST_MODULE = re.compile(r"# (test_[A-Za-z0-9_]+\.py)")
FENCE_OPEN = re.compile(r"```python\s*")
FENCE_CLOSE = "```"


@dataclass(frozen=True)
class Example:
    """One fenced python block: where it is and its code."""

    path: Path
    line: int  # 1-based line of the opening fence
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.code.split("\n", 1)[0].strip()


def extract_examples(path: Path) -> list[Example]:
    """The ```python blocks of a Markdown file; an unclosed block is an error, not a silent skip."""
    examples: list[Example] = []
    opened_at = 0
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if opened_at:
            if line.strip() == FENCE_CLOSE:
                examples.append(Example(path, opened_at, "\n".join(body) + "\n"))
                opened_at, body = 0, []
            else:
                body.append(line)
        elif FENCE_OPEN.fullmatch(line):
            opened_at = number
    if opened_at:
        raise AssertionError(f"{path.name}:{opened_at}: unclosed ```python block")
    return examples


ALL_EXAMPLES = [example for path in DOC_FILES for example in extract_examples(path)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # Examples use SQLite only; a PostgreSQL test server configured for the engine's own suite must not
    # turn the set_in_test examples into PostgreSQL runs.
    env.pop("DWARF_TEST_DSN", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.mark.parametrize("example", ALL_EXAMPLES, ids=lambda example: example.id)
def test_example_runs(example: Example, tmp_path: Path) -> None:
    if example.first_line == SKIP_MARKER:
        pytest.skip("marked '# not run' (a fragment)")
    module = PYTEST_MODULE.fullmatch(example.first_line)
    script = tmp_path / (module.group(1) if module else "example.py")
    script.write_text(example.code, encoding="utf-8")
    if module:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            script.name,
        ]
    else:
        command = [sys.executable, script.name]
    try:
        result = subprocess.run(
            command,
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{example.id} did not finish in {TIMEOUT_SECONDS}s; output so far:\n{error.stdout}")
    assert result.returncode == 0, (
        f"{example.id} exited with {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def test_every_guide_has_runnable_examples() -> None:
    guides = {
        "index.md",
        "graphs.md",
        "tasks.md",
        "flows.md",
        "fan-out-and-subgraphs.md",
        "operations.md",
        "testing.md",
        "observability.md",
    }
    present = {path.name for path in DOC_FILES if path.parent.name == "docs"}
    assert guides <= present, f"missing guides: {sorted(guides - present)}"
    # cli.md documents shell commands (tests/cli runs them); index.md is a table of contents.
    for path in DOC_FILES:
        if path.name in ("index.md", "cli.md"):
            continue
        runnable = [e for e in extract_examples(path) if e.first_line != SKIP_MARKER]
        assert runnable, f"{path.name} has no runnable python example"


def test_skipped_fragments_are_rare() -> None:
    skipped = [example.id for example in ALL_EXAMPLES if example.first_line == SKIP_MARKER]
    assert len(skipped) * 10 <= len(ALL_EXAMPLES), f"too many '# not run' blocks: {skipped}"


def _anchors(path: Path) -> set[str]:
    """The anchors GitHub derives from a Markdown file's headings (outside code blocks)."""
    anchors: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_links_between_docs_resolve() -> None:
    link = re.compile(r"\]\(([^)#:\s]*)(?:#([^)\s]+))?\)")
    for path in DOC_FILES:
        for target, anchor in link.findall(path.read_text(encoding="utf-8")):
            linked = (path.parent / target).resolve() if target else path
            assert linked.exists(), f"{path.name} links to missing {target}"
            if anchor and linked.suffix == ".md":
                assert anchor in _anchors(linked), f"{path.name} links to missing #{anchor} in {linked.name}"
