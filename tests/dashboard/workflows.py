"""The workflows the dashboard tests browse: an approval that interrupts, a chain, a failure, a child flow.

``dashboard_proxy()`` serves all of them; task URLs are the node names.
"""

from __future__ import annotations

from dwarf import END, Flow, Graph
from dwarf.engine import TestProxy
from tests.engine.graphs import chain, graph_of

EXPENSE = "expense"
"""Submit -> Approve (interrupts with a question; the answer decides) -> Pay -> END."""

DOUBLING = "doubling"
"""Start (sets ``a`` unless given) -> Double (sets ``b = 2 * a``) -> END: forking Double with ``a`` shows."""

FAILING = "failing"
"""Charge raises ``RuntimeError("card <declined>")``."""

PARENT = "parent"
"""Call runs the child workflow ``child`` (node Child sets ``done``) and stores its result."""

THUMBNAILS = "thumbnails"
"""A wide fan-out: Split makes ``items`` (``n`` of them, default 5,000), each runs Resize then Upload, and
Collect joins them. Resize of every 1,000th item (999, 1999, ...) backs off for an hour, so the flow stays
running with those branches waiting for their retry."""

RETRY_EVERY = 1000


def _expense() -> Graph:
    graph = graph_of("Expense", "Submit", "Approve", "Pay")
    graph.add_transition("Submit", "Approve")
    graph.add_transition_when("Approve", "Pay", "approved")
    graph.add_transition("Pay", END)
    return graph


def submit(flow: Flow) -> None:
    flow.set("submitted", True)


def approve(flow: Flow) -> None:
    answer = flow.interrupt({"question": f"Pay {flow.get_float('amount')} EUR?"})
    flow.set("approved", bool(answer.get("approved")))
    flow.set("approver", str(answer.get("by", "")))


def pay(flow: Flow) -> None:
    flow.set("paid", True)


def start(flow: Flow) -> None:
    if not flow.has("a"):
        flow.set("a", 1)


def double(flow: Flow) -> None:
    flow.set("b", 2 * flow.get_int("a"))


def charge(flow: Flow) -> None:
    raise RuntimeError("card <declined>")


def call_child(flow: Flow) -> None:
    flow.set("result", flow.subgraph("child", {"n": 1}))


def child(flow: Flow) -> None:
    flow.set("done", True)


def _thumbnails() -> Graph:
    graph = graph_of("Thumbnails", "Split", "Resize", "Upload", "Collect")
    graph.add_transition_for_each("Split", "Resize", "items", "item")
    graph.add_transition("Resize", "Upload")
    graph.add_transition("Upload", "Collect")
    graph.set_fan_in("Collect")
    graph.add_transition("Collect", END)
    return graph


def split(flow: Flow) -> None:
    flow.set("items", list(range(flow.get_int("n") or 5000)))


def resize(flow: Flow) -> None:
    if flow.get_int("item") % RETRY_EVERY == RETRY_EVERY - 1 and flow.retry(3600, 2.0, 0, 0):
        return
    flow.set("size", "256x256")


def upload(flow: Flow) -> None:
    flow.set("uploaded", True)


def dashboard_proxy() -> TestProxy:
    """A host serving every workflow of this module."""
    proxy = TestProxy()
    proxy.handle_graph(EXPENSE, _expense())
    proxy.handle_graph(DOUBLING, chain("Doubling", "Start", "Double"))
    proxy.handle_graph(FAILING, chain("Failing", "Charge"))
    proxy.handle_graph(PARENT, chain("Parent", "Call"))
    proxy.handle_graph("child", chain("ChildFlow", "Child"))
    proxy.handle_graph(THUMBNAILS, _thumbnails())
    for name, handler in {
        "Submit": submit,
        "Approve": approve,
        "Pay": pay,
        "Start": start,
        "Double": double,
        "Charge": charge,
        "Call": call_child,
        "Child": child,
        "Split": split,
        "Resize": resize,
        "Upload": upload,
        "Collect": pay,
    }.items():
        proxy.handle_task(name, handler)
    return proxy
