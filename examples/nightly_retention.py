"""Nightly retention: count flows per status, purge what the policy says may go, show what remains.

Run it with ``python -m examples.nightly_retention [--dsn URL] [--keep-completed SECONDS]`` (default
database: ``dwarf.db`` in the working directory, or ``$DWARF_DSN``).

The engine keeps every flow until you remove it (a stopped flow can still be forked, continued or read),
so an application runs a clean-up job. This one applies a typical policy:

- completed flows go once they are older than ``--keep-completed``;
- cancelled flows go at once: nobody needs them;
- failed flows stay for ``--keep-failed`` (a week by default), so that someone can look at them;
- interrupted flows stay: they wait for a person, and removing them would lose that work.

To have flows of different ages without waiting days, the program first creates an "older" batch of
flows in every status, waits a little longer than the default ``--keep-completed`` (1.5 seconds here,
where a real deployment would say 30 days), then creates a "fresh" batch; ``--no-seed`` skips this and
only cleans up, which is how the job would run against a real database. Ages are measured from a
flow's creation.

It lists flows page by page (``engine.list`` with a cursor) to count them, purges with ``Query`` filters
(``status``, ``older_than``, ``workflow_url``) until nothing more matches, and then runs the same pass
again to show that it is idempotent: a second pass, or a second night, removes only what has become
old since. Drop the ``workflow_url`` filter to apply the policy to every workflow in the database.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

from dwarf import END, Engine, Flow, FlowSummary, Graph, Query, Status
from dwarf.hosts.local import LocalHost
from examples.common import add_dsn_option, chosen_dsn, print_history

WORKFLOW = "reports/nightly"
WEEK = timedelta(days=7).total_seconds()
OLDER_BATCH_AGE = 1.7  # seconds between the two batches: past the default --keep-completed of 1.5

host = LocalHost(max_threads=4)


@host.workflow(WORKFLOW)
def report_graph() -> Graph:
    """One task whose outcome the initial state decides: complete, fail, or wait for a person."""
    graph = Graph("NightlyReport")
    graph.add_task("Build", "reports/build")
    graph.add_transition("Build", END)
    return graph


@host.task("reports/build")
async def build(flow: Flow) -> None:
    if flow.get_str("outcome") == "fail":
        raise RuntimeError(f"report {flow.get_int('n')}: the data source was empty")
    if flow.get_str("outcome") == "wait":
        flow.interrupt({"question": f"Publish report {flow.get_int('n')}?"})
    flow.set("rows", 100 + flow.get_int("n"))


# --- making flows to clean up -----------------------------------------------------------------------------


async def make_flows(engine: Engine, batch: str, counts: dict[str, int]) -> None:
    """Create finished flows: ``counts`` maps an intended status to how many flows should end in it."""

    async def one(n: int, status: str) -> None:
        outcome = {"failed": "fail", "interrupted": "wait", "cancelled": "wait"}.get(status, "ok")
        key, _ = await engine.run(WORKFLOW, {"n": n, "batch": batch, "outcome": outcome}, timeout=30)
        if status == "cancelled":
            await engine.cancel(key, "superseded by a newer report")

    plan = [status for status, count in counts.items() for _ in range(count)]
    await asyncio.gather(*(one(n, status) for n, status in enumerate(plan)))


# --- the retention job ------------------------------------------------------------------------------------


async def all_flows(engine: Engine) -> list[FlowSummary]:
    """Every flow of the workflow, read page by page as a job over a big table must."""
    flows: list[FlowSummary] = []
    cursor = ""
    while True:
        page, cursor = await engine.list(Query(workflow_url=WORKFLOW, limit=10, cursor=cursor))
        flows += page
        if not cursor:
            return flows


async def print_counts(engine: Engine, title: str) -> Counter[str]:
    """Print how many flows are in each status, and their age range; return the counts."""
    flows = await all_flows(engine)
    counts = Counter(str(summary.status) for summary in flows)
    now = datetime.now(UTC)
    print(f"{title}: {len(flows)} flows")
    for status in sorted(counts):
        ages = [(now - s.created_at).total_seconds() for s in flows if s.status == status]
        print(f"  {status:12} {counts[status]:3}   aged {min(ages):.1f}s to {max(ages):.1f}s")
    return counts


async def purge_all(engine: Engine, query: Query) -> int:
    """Purge everything ``query`` matches: one call marks at most 4096 flows, so repeat until none."""
    total = 0
    while marked := await engine.purge(query):
        total += marked
    return total


async def retention_pass(engine: Engine, keep_completed: float, keep_failed: float) -> dict[str, int]:
    """Apply the policy once; return how many flows of each status were purged."""
    return {
        "completed": await purge_all(
            engine, Query(workflow_url=WORKFLOW, status=Status.COMPLETED, older_than=keep_completed)
        ),
        "cancelled": await purge_all(engine, Query(workflow_url=WORKFLOW, status=Status.CANCELLED)),
        "failed": await purge_all(
            engine, Query(workflow_url=WORKFLOW, status=Status.FAILED, older_than=keep_failed)
        ),
    }


# --- the program ------------------------------------------------------------------------------------------


async def main(dsn: str, keep_completed: float, keep_failed: float, seed: bool) -> int:
    """Make flows to clean up (unless ``seed`` is off), apply the policy twice, check that it held."""
    async with Engine(host=host, dsn=dsn) as engine:
        if seed:
            await make_flows(engine, "older", {"completed": 6, "failed": 2, "cancelled": 2, "interrupted": 1})
            await asyncio.sleep(OLDER_BATCH_AGE)
            await make_flows(engine, "fresh", {"completed": 3, "failed": 1, "cancelled": 1, "interrupted": 1})

        await print_counts(engine, "Before the retention pass")
        cutoff = datetime.now(UTC) - timedelta(seconds=keep_completed)
        purged = await retention_pass(engine, keep_completed, keep_failed)
        print(f"Purged: {purged}")
        remaining = await print_counts(engine, "After it")
        again = await retention_pass(engine, keep_completed, keep_failed)
        print(f"A second pass purged: {again}")

        flows = await all_flows(engine)
        failed = [summary for summary in flows if summary.status == Status.FAILED]
        if failed:
            print(f"\nKept for inspection: flow {failed[0].flow_key} failed with {failed[0].error!r}")
            await print_history(engine, failed[0].flow_key)

    # The policy holds: nothing cancelled is left, no completed flow older than the limit, and running
    # the job again changed nothing.
    stale = [s.flow_key for s in flows if s.status == Status.COMPLETED and s.created_at < cutoff]
    return 0 if not remaining["cancelled"] and not stale and not any(again.values()) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_dsn_option(parser)
    parser.add_argument("--keep-completed", type=float, default=1.5, help="seconds (default 1.5)")
    parser.add_argument("--keep-failed", type=float, default=WEEK, help="seconds (default a week)")
    parser.add_argument("--no-seed", action="store_true", help="only clean up: create no flows first")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(chosen_dsn(args.dsn), args.keep_completed, args.keep_failed, not args.no_seed)))
