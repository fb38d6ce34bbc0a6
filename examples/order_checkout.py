"""An order checkout: three checks fan out in parallel, reducers merge them, a condition routes the order.

Run it with ``make demo`` (or ``python -m examples.order_checkout``). It uses the embedded SQLite
default (``dwarf.db`` in the working directory) and prints the outcome and the flow's Mermaid history.
"""

from __future__ import annotations

import asyncio
import sys

from dwarf import END, Engine, Flow, Graph, Reducer, TestProxy


def checkout_graph() -> Graph:
    """Receive -> (Fraud | Stock | Credit) -> Decide -> Ship | Reject -> END."""
    graph = Graph("checkout")
    graph.add_task("Receive", "orders/receive")
    graph.add_task("FraudCheck", "orders/fraud")
    graph.add_task("StockCheck", "orders/stock")
    graph.add_task("CreditCheck", "orders/credit")
    graph.add_task("Decide", "orders/decide")
    graph.add_task("Ship", "orders/ship")
    graph.add_task("Reject", "orders/reject")
    graph.add_transition_fan_out("Receive", "FraudCheck", "StockCheck", "CreditCheck")
    for check in ("FraudCheck", "StockCheck", "CreditCheck"):
        graph.add_transition(check, "Decide")
    graph.set_fan_in("Decide")
    # Each check adds its findings; at the fan-in the lists are concatenated and the scores summed.
    graph.set_reducer("findings", Reducer.APPEND)
    graph.set_reducer("riskScore", Reducer.ADD)
    graph.set_reducer("allPassed", Reducer.AND)
    graph.add_transition_switch("Decide", "Ship", "allPassed && riskScore < 50")
    graph.add_transition_switch("Decide", "Reject", "true")
    graph.add_transition("Ship", END)
    graph.add_transition("Reject", END)
    return graph


def build_host() -> TestProxy:
    """Register the graph and its tasks on an in-process host."""
    host = TestProxy()
    host.handle_graph("checkout", checkout_graph())

    @host.task("orders/receive")
    async def receive(flow: Flow) -> None:
        items = flow.get("items", [])
        flow.set("total", sum(item["price"] * item["qty"] for item in items))
        flow.set("riskScore", 0)
        flow.set("allPassed", True)

    @host.task("orders/fraud")
    async def fraud(flow: Flow) -> None:
        risky = flow.get_str("country") not in {"US", "CA", "GB"}
        flow.set("riskScore", 40 if risky else 5)
        flow.set("findings", [f"fraud: {'foreign card' if risky else 'ok'}"])
        flow.set("allPassed", True)

    @host.task("orders/stock")
    async def stock(flow: Flow) -> None:
        missing = [item["sku"] for item in flow.get("items", []) if item["qty"] > 5]
        flow.set("findings", [f"stock: {'short on ' + ', '.join(missing) if missing else 'ok'}"])
        flow.set("allPassed", not missing)
        flow.set("riskScore", 0)

    @host.task("orders/credit")
    def credit(flow: Flow) -> None:  # a sync handler: runs in a worker thread
        over = flow.get_float("total") > flow.get_float("creditLimit")
        flow.set("findings", [f"credit: {'over limit' if over else 'ok'}"])
        flow.set("allPassed", not over)
        flow.set("riskScore", 30 if over else 0)

    @host.task("orders/decide")
    async def decide(flow: Flow) -> None:
        flow.set("decidedWith", len(flow.get("findings", [])))

    @host.task("orders/ship")
    async def ship(flow: Flow) -> None:
        flow.set("status", "shipped")

    @host.task("orders/reject")
    async def reject(flow: Flow) -> None:
        flow.set("status", "rejected")

    return host


async def main() -> int:
    """Run one order through the checkout on the embedded SQLite database and print what happened."""
    host = build_host()
    order = {
        "orderId": "A-1001",
        "country": "US",
        "creditLimit": 500,
        "items": [{"sku": "mug", "price": 12.5, "qty": 2}, {"sku": "tea", "price": 8, "qty": 3}],
    }
    async with Engine(host=host) as engine:
        graph = checkout_graph()
        graph.validate()
        print("The checkout graph:\n")
        print(graph.mermaid())
        key, outcome = await engine.run("checkout", order, timeout=30)
        print(f"Flow {key} finished: {outcome.status}")
        for name in ("status", "total", "riskScore", "allPassed", "findings"):
            print(f"  {name}: {outcome.state.get(name)}")
        print("\nWhat ran (Mermaid):\n")
        print(await engine.history_mermaid(key))
    return 0 if outcome.status == "completed" and outcome.state.get("status") == "shipped" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
