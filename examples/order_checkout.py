"""Order checkout: parallel checks with reducers, then a saga whose failures are compensated.

Run it with ``make demo`` or ``python -m examples.order_checkout [--dsn URL]``. It uses the embedded
SQLite default (``dwarf.db`` in the working directory) unless ``--dsn`` or ``DWARF_DSN`` says otherwise.

What it shows:

- a static fan-out (three checks run in parallel) meeting at a fan-in, where reducers combine what the
  checks wrote (``APPEND`` the findings, ``ADD`` the risk scores, ``AND`` the verdicts);
- a ``switch`` that routes the order to fulfilment or rejection;
- a saga: stock is reserved, payment captured, shipment booked. When a step raises, an onError
  transition routes the flow to compensation tasks that undo what was done before it: a declined card
  releases the stock; a carrier failure refunds the payment and then releases the stock. The flow
  still *completes* (the failure was handled) and its state says what was undone.

Four orders go through: one ships, one is rejected by the checks, two are compensated. The warehouse,
payment gateway and carrier are in-memory stand-ins for real services.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from dwarf import END, Engine, Flow, Graph, Reducer
from dwarf.hosts.local import LocalHost
from examples.common import add_dsn_option, chosen_dsn, print_history, print_outcome

host = LocalHost(max_threads=16)


@host.workflow("checkout")
def checkout_graph() -> Graph:
    """Receive -> checks -> Decide -> Reserve -> Capture -> Book -> Confirm, with compensations."""
    graph = Graph("Checkout")
    graph.add_task("Receive", "orders/receive")
    graph.add_task("FraudCheck", "orders/fraud")
    graph.add_task("StockCheck", "orders/stock")
    graph.add_task("CreditCheck", "orders/credit")
    graph.add_task("Decide", "orders/decide")
    graph.add_task("Reject", "orders/reject")
    graph.add_task("ReserveStock", "warehouse/reserve")
    graph.add_task("CapturePayment", "payments/capture")
    graph.add_task("BookShipment", "carrier/book")
    graph.add_task("Confirm", "orders/confirm")
    graph.add_task("RefundPayment", "payments/refund")
    graph.add_task("ReleaseStock", "warehouse/release")
    graph.add_task("CancelOrder", "orders/cancel")

    graph.add_transition_fan_out("Receive", "FraudCheck", "StockCheck", "CreditCheck")
    for check in ("FraudCheck", "StockCheck", "CreditCheck"):
        graph.add_transition(check, "Decide")
    graph.set_fan_in("Decide")
    # Each check writes its own share; the fan-in combines the shares, in fan-out order.
    graph.set_reducer("findings", Reducer.APPEND)
    graph.set_reducer("riskScore", Reducer.ADD)
    graph.set_reducer("allPassed", Reducer.AND)
    graph.add_transition_switch("Decide", "ReserveStock", "allPassed && riskScore < 50")
    graph.add_transition_switch("Decide", "Reject", "true")
    graph.add_transition("Reject", END)

    # The happy path of the saga.
    graph.add_transition_chain("ReserveStock", "CapturePayment", "BookShipment", "Confirm", END)
    # Compensation runs in reverse order of what succeeded: a failed capture has nothing to refund.
    graph.add_transition_on_error("CapturePayment", "ReleaseStock")
    graph.add_transition_on_error("BookShipment", "RefundPayment")
    graph.add_transition_chain("RefundPayment", "ReleaseStock", "CancelOrder", END)
    return graph


# --- stand-ins for the services the tasks call --------------------------------------------------------


class PaymentDeclined(Exception):
    """The card issuer said no."""


class CarrierUnavailable(Exception):
    """No carrier could take the parcel."""


STOCK: dict[str, int] = {"mug": 20, "tea": 50, "kettle": 3}
RESERVED: dict[str, dict[str, int]] = {}  # order id -> sku -> quantity held for it
LEDGER: list[tuple[str, float]] = []  # (payment id, amount): captures positive, refunds negative
SERVED_COUNTRIES = {"US", "CA", "GB", "DE"}


# --- the checks (run in parallel) ----------------------------------------------------------------------


@host.task("orders/receive")
async def receive(flow: Flow) -> None:
    items: list[dict[str, Any]] = flow.get("items", [])
    flow.set("total", sum(item["price"] * item["qty"] for item in items))
    # Starting values for the reducer fields; each branch then writes only its delta.
    flow.set("riskScore", 0)
    flow.set("allPassed", True)


@host.task("orders/fraud")
async def fraud_check(flow: Flow) -> None:
    risky = flow.get_str("country") not in SERVED_COUNTRIES
    flow.set("riskScore", 40 if risky else 5)
    flow.set("findings", [f"fraud: {'foreign card' if risky else 'ok'}"])
    flow.set("allPassed", True)


@host.task("orders/stock")
async def stock_check(flow: Flow) -> None:
    short = [item["sku"] for item in flow.get("items", []) if item["qty"] > STOCK.get(item["sku"], 0)]
    flow.set("findings", [f"stock: {'short on ' + ', '.join(short) if short else 'ok'}"])
    flow.set("allPassed", not short)
    flow.set("riskScore", 0)


@host.task("orders/credit")
def credit_check(flow: Flow) -> None:  # a sync handler: LocalHost runs it in a worker thread
    over = flow.get_float("total") > flow.get_float("creditLimit")
    flow.set("findings", [f"credit: {'over limit' if over else 'ok'}"])
    flow.set("allPassed", not over)
    flow.set("riskScore", 30 if over else 0)


@host.task("orders/decide")
async def decide(flow: Flow) -> None:
    flow.set("checksSeen", len(flow.get("findings", [])))


@host.task("orders/reject")
async def reject(flow: Flow) -> None:
    flow.set("result", "rejected")


# --- the saga and its compensations ---------------------------------------------------------------------
# A step runs at least once: if a worker dies mid-task, the step runs again. So every service call is
# keyed by the order or payment id and doing it twice has the effect of doing it once.


@host.task("warehouse/reserve")
async def reserve_stock(flow: Flow) -> None:
    order_id = flow.get_str("orderId")
    if order_id not in RESERVED:
        held = {item["sku"]: item["qty"] for item in flow.get("items", [])}
        for sku, qty in held.items():
            STOCK[sku] -= qty
        RESERVED[order_id] = held
    flow.set("reserved", True)


@host.task("payments/capture")
async def capture_payment(flow: Flow) -> None:
    if flow.get_str("card").endswith("0002"):
        raise PaymentDeclined("card declined by issuer")
    payment_id = f"pay-{flow.get_str('orderId')}"
    if (payment_id, flow.get_float("total")) not in LEDGER:
        LEDGER.append((payment_id, flow.get_float("total")))
    flow.set("paymentId", payment_id)


@host.task("carrier/book")
async def book_shipment(flow: Flow) -> None:
    destination = flow.get_str("shipTo")
    if destination not in SERVED_COUNTRIES:
        raise CarrierUnavailable(f"no carrier delivers to {destination}")
    flow.set("trackingNumber", f"TRK-{flow.get_str('orderId')}")


@host.task("orders/confirm")
async def confirm(flow: Flow) -> None:
    RESERVED.pop(flow.get_str("orderId"), None)  # the goods left the building
    flow.set("result", "shipped")


@host.task("payments/refund")
async def refund_payment(flow: Flow) -> None:
    payment_id = flow.get_str("paymentId")
    if (payment_id, -flow.get_float("total")) not in LEDGER:
        LEDGER.append((payment_id, -flow.get_float("total")))
    flow.set("compensations", [*flow.get("compensations", []), f"refunded {payment_id}"])


@host.task("warehouse/release")
async def release_stock(flow: Flow) -> None:
    for sku, qty in RESERVED.pop(flow.get_str("orderId"), {}).items():
        STOCK[sku] += qty
    flow.set("compensations", [*flow.get("compensations", []), "released stock"])


@host.task("orders/cancel")
async def cancel_order(flow: Flow) -> None:
    # onErr is the error that sent the flow down the compensation path.
    flow.set("result", f"cancelled: {flow.get('onErr', {}).get('error', 'unknown error')}")


# --- the program ----------------------------------------------------------------------------------------

GOOD_CARD = "4242-4242-4242-4242"
DECLINED_CARD = "4000-0000-0000-0002"


def new_order(
    order_id: str, items: dict[str, int], *, country: str = "US", ship_to: str = "US", card: str = GOOD_CARD
) -> dict[str, Any]:
    """An order as the checkout's initial state; ``items`` maps SKU to quantity."""
    prices = {"mug": 12.5, "tea": 8.0, "kettle": 40.0}
    return {
        "orderId": order_id,
        "country": country,
        "shipTo": ship_to,
        "card": card,
        "creditLimit": 500,
        "items": [{"sku": sku, "price": prices[sku], "qty": qty} for sku, qty in items.items()],
    }


# Each order, and the result we expect for it.
ORDERS: list[tuple[dict[str, Any], str]] = [
    (new_order("A-1001", {"mug": 2, "tea": 3}), "shipped"),
    (new_order("A-1002", {"kettle": 9}), "rejected"),  # only 3 kettles in stock
    (
        new_order("A-1003", {"kettle": 1}, country="GB", ship_to="GB", card=DECLINED_CARD),
        "cancelled: card declined by issuer",
    ),
    (
        new_order("A-1004", {"mug": 4}, country="CA", ship_to="Atlantis"),
        "cancelled: no carrier delivers to Atlantis",
    ),
]


async def main(dsn: str) -> int:
    """Run every order through the checkout, print what happened, and check it was what we expected."""
    print("The checkout graph:\n")
    print(checkout_graph().mermaid())
    stock_before = dict(STOCK)
    surprises = 0
    async with Engine(host=host, dsn=dsn) as engine:
        keys = [await engine.create("checkout", order) for order, _ in ORDERS]
        for key, (order, expected) in zip(keys, ORDERS, strict=True):
            outcome = await engine.wait(key, timeout=30)
            print_outcome(
                f"Order {order['orderId']}",
                key,
                outcome,
                ["result", "total", "riskScore", "findings", "paymentId", "trackingNumber", "compensations"],
            )
            await print_history(engine, key)
            if outcome.status != "completed" or outcome.state.get("result") != expected:
                print(f"  !! expected {expected!r}")
                surprises += 1

    # Only the shipped order's goods are gone and only its money is kept: the rest was undone.
    print(f"Stock before: {stock_before}\nStock after:  {STOCK}")
    print(f"Money kept: {sum(amount for _, amount in LEDGER):.2f} over {len(LEDGER)} ledger entries")
    return 1 if surprises else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_dsn_option(parser)
    sys.exit(asyncio.run(main(chosen_dsn(parser.parse_args().dsn))))
