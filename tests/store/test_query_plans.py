"""No statement of the engine reads a whole table: each one's cost must not grow with the rows kept
(finished flows, their steps). A full scan on a small test table is cheap and invisible in a timing, so
the plans themselves are checked: SQLite's for every statement, PostgreSQL's (generic plans, as a prepared
statement gets after a few runs, with sequential scans priced out) for the statements that look rows up
by a value only known at run time."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from dwarf import Engine, TestProxy
from dwarf.store.base import load_queries, split_statements

# Statements that read a whole table or index on purpose.
WHOLE_TABLE_ON_PURPOSE = {
    "count_rows": "shard_info's row counts",
    "count_due_steps": "the pending-steps gauge counts every due step (the due index only)",
    "list_limits": "every limit (a handful of rows), when someone lists them",
    "note_limits_changed": "counts the limits (a handful of rows) when one is set or cleared",
    "list_schedules": "lists every schedule: the application's own handful, not a history that grows",
}

# Partial indexes whose rows are few at any time, whatever the history: reading one whole is fine.
SMALL_PARTIAL_INDEXES = {"idx_dwarf_steps_open_cohorts", "idx_dwarf_steps_parked", "idx_dwarf_flows_purge"}

# Every flow of one status: all the running flows are the backlog (100,000 queued flows are all running),
# so a statement that reads them grows with it. stranded_cohorts did once a second; the wedge sweep reads
# them in windows of flow ids (flows_window, then the window's own range).
UNBOUNDED_STATUS_SEARCH = re.compile(
    r"SEARCH \w+ USING (?:COVERING )?INDEX idx_dwarf_flows_status \(status=\?\)$"
)

PARAMETER = re.compile(r"(?<!:):([a-z_]+)")

# PostgreSQL: the statements whose WHERE names a row by a parameter and must reach it through an index
# even in a generic plan (partial indexes serve those only when the WHERE implies their predicate).
POSTGRES_LOOKUPS = [
    "arrived_members",
    "link_members_to_fan_in",
    "fold_cohort_arrivals",
    "mark_arrivals_counted",
    "cohorts_ready",
    "next_wake_time",
    "stranded_cohorts",
    "wedged_subgraph_parks",
    "state_chain",
    "flow_steps",
    "latest_step",
    "get_step",
    "flow_holding_idempotency_key",
    "claim_limited_steps",
    "limits_of_step",
    "list_limits",
    "mark_limit_slots",
    "next_timer",
    "due_deadlines",
    "due_wakeups",
    "tree_signal_waiter",
    "take_stored_signal",
    "retention_due",
    "mark_retention_due",
]


async def _migrated(dsn: str) -> None:
    async with Engine(host=TestProxy(), dsn=dsn):
        pass


async def test_no_sqlite_statement_scans_a_whole_table(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    await _migrated(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    conn.create_function("dwarf_random_gap", 0, lambda: 1.0)
    scans: list[str] = []
    for name, sql in sorted(load_queries("sqlite", "0.0").items()):
        if name in WHOLE_TABLE_ON_PURPOSE:
            continue
        for statement in split_statements(sql):
            params = dict.fromkeys(PARAMETER.findall(statement), 1)
            for row in conn.execute("EXPLAIN QUERY PLAN " + statement, params):
                detail = row[3]
                # "SCAN t" alone reads the table; "SCAN t USING INDEX i" reads a whole index. A scan of a
                # CTE or a subquery's result (state_chain's chain, any_marked's m) is not a table.
                if UNBOUNDED_STATUS_SEARCH.match(detail):
                    scans.append(f"{name}: {detail}")
                    continue
                match = re.match(r"SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?", detail)
                if match is None:
                    continue
                table, index = match.groups()
                if index in SMALL_PARTIAL_INDEXES:
                    continue
                if index is not None or _is_table_alias(statement, table):
                    scans.append(f"{name}: {detail}")
    conn.close()
    assert not scans, "\n".join(scans)


def _is_table_alias(statement: str, name: str) -> bool:
    """Whether ``name`` is one of the two tables, or an alias of one, in ``statement``."""
    if name in ("dwarf_steps", "dwarf_flows"):
        return True
    return re.search(rf"\b(dwarf_steps|dwarf_flows)\s+(AS\s+)?{name}\b", statement) is not None


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_lookups_use_an_index_in_generic_plans(fresh_dsn: str) -> None:
    import psycopg

    await _migrated(fresh_dsn)
    queries = load_queries("postgres", "0.0")
    problems: list[str] = []
    async with await psycopg.AsyncConnection.connect(fresh_dsn, autocommit=True) as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute("SET enable_seqscan = off")
        for number, name in enumerate(POSTGRES_LOOKUPS):
            statement = queries[name]
            names = list(dict.fromkeys(PARAMETER.findall(statement)))
            positional = PARAMETER.sub(lambda m, names=names: f"${names.index(m.group(1)) + 1}", statement)
            prepared = f"plan_{number}"
            await conn.execute(f"PREPARE {prepared} AS {positional}".encode())
            arguments = ", ".join("NULL" for _ in names)
            call = f"EXPLAIN EXECUTE {prepared}({arguments})" if names else f"EXPLAIN EXECUTE {prepared}"
            plan = "\n".join(str(row[0]) for row in await (await conn.execute(call.encode())).fetchall())
            if re.search(r"Seq Scan on dwarf_(steps|flows)", plan):
                problems.append(f"{name}:\n{plan}")
    assert not problems, "\n\n".join(problems)


async def test_the_retention_pass_reads_only_the_due_flows_on_sqlite(tmp_path: Path) -> None:
    # Not only "no scan": the due flows come from the purge_after index, not from every root flow
    # (idx_dwarf_flows_list) or every ended flow (idx_dwarf_flows_status).
    path = tmp_path / "plans.db"
    await _migrated(f"sqlite:///{path}")
    conn = sqlite3.connect(path)
    queries = load_queries("sqlite", "0.0")
    for name in ("retention_due", "mark_retention_due"):
        [statement] = split_statements(queries[name])
        params = dict.fromkeys(PARAMETER.findall(statement), 1)
        details = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + statement, params)]
        searches = [d for d in details if re.match(r"SEARCH (dwarf_flows|f) ", d)]
        assert any("idx_dwarf_flows_purge_after" in d for d in searches), (name, details)
        assert not any("idx_dwarf_flows_list" in d or "idx_dwarf_flows_status" in d for d in searches), (
            name,
            details,
        )
    conn.close()
