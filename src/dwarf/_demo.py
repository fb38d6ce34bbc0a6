"""The workflow `dwarf demo` runs: expense claims with parallel checks, an approval and a payment child flow.

It exists so that a new user has real flows to look at with the CLI and the dashboard: a small claim is
approved automatically and paid (completed), a large one waits for a person (interrupted) until someone
answers with ``dwarf resume KEY --data '{"approved": true}'``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dwarf.engine import Engine, TestProxy
from dwarf.workflow import END, Flow, FlowOutcome, Graph, Reducer

__all__ = [
    "CLAIMS",
    "DEMO_WORKFLOW",
    "DemoRun",
    "build_demo_host",
    "expense_graph",
    "payment_graph",
    "run_demo",
]

DEMO_WORKFLOW = "demo/expense"
PAYMENT_WORKFLOW = "demo/payment"
APPROVAL_LIMIT = 100.0
"""Claims up to this amount are approved without asking anyone."""

CLAIMS = (
    {"employee": "ada", "item": "train ticket", "amount": 42.0},
    {"employee": "grace", "item": "conference trip", "amount": 1200.0},
)


def expense_graph() -> Graph:
    """Submit -> (PolicyCheck | BudgetCheck) -> Review -> Pay | Reject -> END."""
    graph = Graph("expense")
    graph.add_task("Submit", "demo/submit")
    graph.add_task("PolicyCheck", "demo/policy")
    graph.add_task("BudgetCheck", "demo/budget")
    graph.add_task("Review", "demo/review")
    graph.add_task("Pay", "demo/pay")
    graph.add_task("Reject", "demo/reject")
    graph.add_transition_fan_out("Submit", "PolicyCheck", "BudgetCheck")
    graph.add_transition("PolicyCheck", "Review")
    graph.add_transition("BudgetCheck", "Review")
    graph.set_fan_in("Review")
    graph.set_reducer("notes", Reducer.APPEND)
    graph.set_reducer("checksPassed", Reducer.AND)
    graph.add_transition_switch("Review", "Pay", "approved")
    graph.add_transition_switch("Review", "Reject", "true")
    graph.add_transition("Pay", END)
    graph.add_transition("Reject", END)
    return graph


def payment_graph() -> Graph:
    """Charge -> Receipt -> END: the child flow that Pay runs."""
    graph = Graph("payment")
    graph.add_task("Charge", "demo/charge")
    graph.add_task("Receipt", "demo/receipt")
    graph.add_transition_chain("Charge", "Receipt", END)
    return graph


def build_demo_host() -> TestProxy:
    """An in-process host serving the demo's two graphs and their tasks."""
    host = TestProxy()
    host.handle_graph(DEMO_WORKFLOW, expense_graph())
    host.handle_graph(PAYMENT_WORKFLOW, payment_graph())

    @host.task("demo/submit")
    async def submit(flow: Flow) -> None:
        flow.set("submitted", True)

    @host.task("demo/policy")
    async def policy(flow: Flow) -> None:
        allowed = flow.get_str("item") != "yacht"
        flow.set("notes", [f"policy: {'ok' if allowed else 'item not allowed'}"])
        flow.set("checksPassed", allowed)

    @host.task("demo/budget")
    async def budget(flow: Flow) -> None:
        within = flow.get_float("amount") <= 5000
        flow.set("notes", [f"budget: {'ok' if within else 'over budget'}"])
        flow.set("checksPassed", within)

    @host.task("demo/review")
    async def review(flow: Flow) -> None:
        if not flow.get_bool("checksPassed"):
            flow.set("approved", False)
            return
        if flow.get_float("amount") <= APPROVAL_LIMIT:
            flow.set("approved", True)
            flow.set("approver", "automatic")
            return
        # Parks the flow until someone resumes it; the same call then returns their answer.
        answer = flow.interrupt(
            {"question": f"Approve {flow.get_float('amount')} EUR for {flow.get_str('item')}?"}
        )
        flow.set("approved", answer.get("approved") is True)
        flow.set("approver", str(answer.get("by", "someone")))

    @host.task("demo/pay")
    async def pay(flow: Flow) -> None:
        receipt = flow.subgraph(
            PAYMENT_WORKFLOW, {"employee": flow.get_str("employee"), "amount": flow.get_float("amount")}
        )
        flow.set("receipt", receipt.get("receipt", ""))
        flow.set("outcome", "paid")

    @host.task("demo/reject")
    async def reject(flow: Flow) -> None:
        flow.set("outcome", "rejected")

    @host.task("demo/charge")
    async def charge(flow: Flow) -> None:
        flow.set("charged", flow.get_float("amount"))

    @host.task("demo/receipt")
    async def receipt(flow: Flow) -> None:
        flow.set("receipt", f"R-{flow.get_str('employee')}-{flow.get_float('charged'):.2f}")

    return host


@dataclass
class DemoRun:
    """One claim the demo ran: its flow key, where it stopped, and its history as Mermaid."""

    claim: dict[str, object]
    flow_key: str
    outcome: FlowOutcome
    mermaid: str


async def run_demo(engine: Engine, timeout: float = 30.0) -> list[DemoRun]:
    """Run every demo claim to its stop (completed or interrupted) on a started engine with workers
    whose host is ``build_demo_host()``."""
    runs = []
    for claim in CLAIMS:
        key, outcome = await engine.run(DEMO_WORKFLOW, dict(claim), timeout=timeout)
        runs.append(DemoRun(dict(claim), key, outcome, await engine.history_mermaid(key)))
    return runs
