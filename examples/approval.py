"""Expense approval: a flow that stops to ask a person, and is resumed later from the ``dwarf`` command.

Three ways to run it (each takes ``--dsn URL``; the default is ``dwarf.db`` in the working directory,
or ``$DWARF_DSN``):

``python -m examples.approval``
    Self-driving: submits three expenses, answers the approval requests in-process, prints the outcomes.

``python -m examples.approval start [--amount 120] [--requester ada]``
    Submits one expense and returns once the flow is waiting for approval, printing its key and the
    exact command that approves it, for example::

        dwarf resume 1-7-AbC... --data '{"approved": true, "by": "grace"}' --dsn sqlite:///dwarf.db

``python -m examples.approval worker [--timeout 30]``
    Runs the application's engine: it finishes the flows that were resumed (by the command above, from
    another process) and exits once no expense flow is waiting or running, or when the timeout passes.

What it shows: ``flow.interrupt`` parks the flow durably; no process has to stay up while a person
thinks. The resume can come from anywhere that reaches the database (here the ``dwarf`` CLI, whose
engine runs no tasks): the application's engine picks the flow up and runs it to the end. Resume data
is what ``interrupt`` returns; it is not merged into the state by itself. Small expenses skip the
question through a ``switch``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from typing import Any

from dwarf import END, Engine, Flow, Graph, Query, Status
from dwarf.hosts.local import LocalHost
from examples.common import add_dsn_option, chosen_dsn, print_history, print_outcome

WORKFLOW = "expenses/approval"
AUTO_APPROVE_UP_TO = 50

host = LocalHost(max_threads=4)


@host.workflow(WORKFLOW)
def approval_graph() -> Graph:
    """Submit -> (Pay | RequestApproval -> Pay | Decline) -> END."""
    graph = Graph("ExpenseApproval")
    graph.add_task("Submit", "expenses/submit")
    graph.add_task("RequestApproval", "expenses/request-approval")
    graph.add_task("Pay", "expenses/pay")
    graph.add_task("Decline", "expenses/decline")
    graph.add_transition_switch("Submit", "Pay", f"amount <= {AUTO_APPROVE_UP_TO}")
    graph.add_transition_switch("Submit", "RequestApproval", "true")
    graph.add_transition_switch("RequestApproval", "Pay", "approved")
    graph.add_transition_switch("RequestApproval", "Decline", "true")
    graph.add_transition("Pay", END)
    graph.add_transition("Decline", END)
    return graph


@host.task("expenses/submit")
async def submit(flow: Flow) -> None:
    if flow.get_float("amount") <= 0:
        raise ValueError("an expense needs a positive amount")
    if flow.get_float("amount") <= AUTO_APPROVE_UP_TO:
        flow.set("approver", "auto")


@host.task("expenses/request-approval")
async def request_approval(flow: Flow) -> None:
    # First run: interrupt() parks the flow and this task stops here. After a resume the task runs
    # again from the top and interrupt() returns the resume data instead.
    answer = flow.interrupt(
        {
            "question": f"Approve {flow.get_float('amount'):.2f} EUR for {flow.get_str('requester')}?",
            "reply": {"approved": "true or false", "by": "your name"},
        }
    )
    flow.set("approved", answer.get("approved") is True)
    flow.set("approver", str(answer.get("by", "someone")))


@host.task("expenses/pay")
async def pay(flow: Flow) -> None:
    flow.set("result", f"paid {flow.get_float('amount'):.2f} EUR to {flow.get_str('requester')}")


@host.task("expenses/decline")
async def decline(flow: Flow) -> None:
    flow.set("result", f"declined by {flow.get_str('approver')}")


FIELDS = ["result", "approver", "amount", "requester"]


def resume_command(dsn: str, key: str, answer: dict[str, Any]) -> str:
    """The shell command that resumes ``key`` with ``answer`` from any machine that reaches the database."""
    return f"dwarf resume {key} --data {shlex.quote(json.dumps(answer))} --dsn {shlex.quote(dsn)}"


async def flow_keys(engine: Engine, status: Status) -> list[str]:
    """The keys of every expense flow in ``status``, page by page."""
    keys: list[str] = []
    cursor = ""
    while True:
        page, cursor = await engine.list(Query(status=status, workflow_url=WORKFLOW, cursor=cursor))
        keys += [summary.flow_key for summary in page]
        if not cursor:
            return keys


# --- the three modes --------------------------------------------------------------------------------------


async def start(dsn: str, amount: float, requester: str) -> int:
    """Submit one expense and return when it waits for a person (or already finished)."""
    async with Engine(host=host, dsn=dsn) as engine:
        key, outcome = await engine.run(WORKFLOW, {"amount": amount, "requester": requester}, timeout=30)
        print_outcome("Expense", key, outcome, FIELDS)
    if outcome.status != Status.INTERRUPTED:
        return 0 if outcome.status == Status.COMPLETED else 1
    print(f"\nflow key: {key}")
    print("Approve it with:\n")
    print("  " + resume_command(dsn, key, {"approved": True, "by": "grace"}))
    print(f"\nthen run `python -m examples.approval worker --dsn {shlex.quote(dsn)}` to finish it.")
    return 0


async def worker(dsn: str, timeout: float) -> int:
    """Finish resumed expense flows; stop when none waits or runs any more, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    async with Engine(host=host, dsn=dsn) as engine:
        seen = set(await flow_keys(engine, Status.RUNNING)) | set(await flow_keys(engine, Status.INTERRUPTED))
        while True:
            running = await flow_keys(engine, Status.RUNNING)
            waiting = await flow_keys(engine, Status.INTERRUPTED)
            seen.update(running)
            if not running and not waiting:
                break
            if time.monotonic() > deadline:
                print(f"Stopping after {timeout:g}s; {len(waiting)} expense(s) still wait for approval:")
                for key in waiting:
                    print("  " + resume_command(dsn, key, {"approved": True, "by": "grace"}))
                break
            # Workers pick resumed flows up on their own (the CLI's resume only marks them due);
            # this loop merely decides when the program may exit.
            await asyncio.sleep(0.2)
        for key in sorted(seen):
            outcome = await engine.snapshot(key)
            if outcome.status != Status.INTERRUPTED:
                print_outcome("Expense", key, outcome, FIELDS)
                await print_history(engine, key)
    return 0


async def self_driving(dsn: str) -> int:
    """Submit three expenses and play the approver in-process; check each ended as expected."""
    requests: list[tuple[dict[str, Any], dict[str, Any] | None, str]] = [
        # (the expense, the approver's answer or None when no one is asked, the expected result)
        ({"amount": 120.0, "requester": "ada"}, {"approved": True, "by": "grace"}, "paid 120.00 EUR to ada"),
        ({"amount": 900.0, "requester": "linus"}, {"approved": False, "by": "grace"}, "declined by grace"),
        ({"amount": 30.0, "requester": "ada"}, None, "paid 30.00 EUR to ada"),
    ]
    surprises = 0
    async with Engine(host=host, dsn=dsn) as engine:
        for expense, answer, expected in requests:
            key, outcome = await engine.run(WORKFLOW, expense, timeout=30)
            if outcome.status == Status.INTERRUPTED and answer is not None:
                print(f"Flow {key} asks: {outcome.interrupt_payload['question']}")
                print(f"  answering {answer} (the CLI would run: {resume_command(dsn, key, answer)})")
                await engine.resume(key, answer)
                outcome = await engine.wait(key, timeout=30)
            print_outcome("Expense", key, outcome, FIELDS)
            await print_history(engine, key)
            if outcome.status != Status.COMPLETED or outcome.state.get("result") != expected:
                print(f"  !! expected {expected!r}")
                surprises += 1
    return 1 if surprises else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_dsn_option(parser)
    modes = parser.add_subparsers(dest="mode")
    start_parser = modes.add_parser("start", help="submit one expense and stop when it waits for approval")
    start_parser.add_argument("--amount", type=float, default=120.0)
    start_parser.add_argument("--requester", default="ada")
    add_dsn_option(start_parser, subcommand=True)
    worker_parser = modes.add_parser("worker", help="finish resumed expenses, then exit")
    worker_parser.add_argument("--timeout", type=float, default=30.0, help="seconds before giving up")
    add_dsn_option(worker_parser, subcommand=True)
    args = parser.parse_args(argv)
    dsn = chosen_dsn(args.dsn)
    if args.mode == "start":
        return asyncio.run(start(dsn, args.amount, args.requester))
    if args.mode == "worker":
        return asyncio.run(worker(dsn, args.timeout))
    return asyncio.run(self_driving(dsn))


if __name__ == "__main__":
    sys.exit(main())
