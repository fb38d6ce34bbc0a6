"""The statement names code may use (``StatementName``) are exactly the statements the .sql files define,
for both dialects, and each of them is used somewhere: a statement nobody runs is dead SQL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from dwarf.store.base import load_queries
from dwarf.store.statements import StatementName

SOURCES = Path(__file__).resolve().parents[2] / "src" / "dwarf"


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_statement_names_are_the_statements_of_each_dialect(dialect: str) -> None:
    assert set(get_args(StatementName)) == set(load_queries(dialect, "now()"))


def test_every_statement_is_used_by_the_code() -> None:
    code = "\n".join(
        path.read_text(encoding="utf-8") for path in SOURCES.rglob("*.py") if path.name != "statements.py"
    )
    used = set(re.findall(r'"([a-z][a-z0-9_]*)"', code))
    unused = sorted(set(get_args(StatementName)) - used)
    assert unused == [], f"statements no code runs: {unused}"
