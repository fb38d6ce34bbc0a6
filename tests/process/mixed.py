"""The mixed workload of the chaos tests: five kinds of flow whose exact final state follows from the input.

Kinds: a linear ``chain`` adding known increments, a forEach ``fan`` whose fan-in sums known per-item
values with reducers, a ``subgraph`` call to a child chain, a ``retry`` that fails its first attempts
deterministically (and, for some inputs, gives up: the expected failure), and a durable ``sleep``.

Every task appends ``<node>#<attempt>`` to a list in state (the trunk's ``trail``, or a fan-out branch's
``parts`` delta) and adds a known amount to a total, so that any step whose changes were persisted
twice, or any duplicated step, shows in the final state or the history. Each execution also appends a
line to a per-process file in the marker directory: that side effect is outside the database and may
legitimately repeat (at-least-once); repeats count the re-executions the crashes caused.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from dwarf import (
    END,
    Engine,
    Flow,
    FlowOptions,
    FlowOutcome,
    FlowStep,
    Graph,
    Query,
    Reducer,
    Status,
    TestProxy,
)

KINDS = ("chain", "fan", "subgraph", "retry", "sleep")
CHAIN_LENGTH = 5
CHILD_LENGTH = 3
RETRY_GIVE_UP = 3
"""The retry task gives up (fails the flow) when its attempt number reaches this."""
TASK_SECONDS = (0.005, 0.05)
"""Each task takes this long (uniformly random), so that kills land while steps run."""
SLEEP_TOLERANCE = timedelta(milliseconds=10)
"""Clock resolution slack when checking that a durable sleep was honoured (SQLite keeps milliseconds)."""


def _graph(name: str, *nodes: str) -> Graph:
    graph = Graph(name)
    for node in nodes:
        graph.add_task(node, f"mixed/{node.lower()}")
    return graph


def mixed_graphs() -> dict[str, Graph]:
    chain = _graph("Chain", *(f"C{k}" for k in range(1, CHAIN_LENGTH + 1)))
    chain.add_transition_chain(*(f"C{k}" for k in range(1, CHAIN_LENGTH + 1)), END)

    child = _graph("Child", *(f"C{k}" for k in range(1, CHILD_LENGTH + 1)))
    child.add_transition_chain(*(f"C{k}" for k in range(1, CHILD_LENGTH + 1)), END)

    fan = _graph("Fan", "Split", "Work", "Join")
    fan.add_transition_for_each("Split", "Work", "items", "item")
    fan.add_transition("Work", "Join")
    fan.set_fan_in("Join")
    fan.add_transition("Join", END)
    fan.set_reducer("sum", Reducer.ADD)
    fan.set_reducer("parts", Reducer.APPEND)

    parent = _graph("Parent", "Prep", "Call", "Finish")
    parent.add_transition_chain("Prep", "Call", "Finish", END)

    retry = _graph("Retry", "Flaky", "Done")
    retry.add_transition_chain("Flaky", "Done", END)

    sleep = _graph("Sleep", "Nap", "Wake")
    sleep.add_transition_chain("Nap", "Wake", END)

    return {
        "mixed-chain": chain,
        "mixed-child": child,
        "mixed-fan": fan,
        "mixed-parent": parent,
        "mixed-retry": retry,
        "mixed-sleep": sleep,
    }


def _record_execution(markers: Path, flow: Flow, node: str) -> None:
    with open(markers / f"executions-{os.getpid()}.log", "a") as log:
        log.write(f"{flow.step_key} {flow.attempt} {node}\n")


async def _work() -> None:
    await asyncio.sleep(random.uniform(*TASK_SECONDS))


def _mark(flow: Flow, node: str) -> None:
    flow.set("trail", [*flow.get("trail", []), f"{node}#{flow.attempt}"])


def mixed_host(markers: Path) -> TestProxy:
    """The host of a replica running the mixed workload (also serves the graphs to a test's engine)."""
    host = TestProxy()
    for url, graph in mixed_graphs().items():
        host.handle_graph(url, graph)

    def adder(k: int) -> Any:
        async def add(flow: Flow) -> None:
            _record_execution(markers, flow, f"C{k}")
            await _work()
            flow.set("total", flow.get_int("total") + k * flow.get_int("unit"))
            _mark(flow, f"C{k}")

        return add

    for k in range(1, CHAIN_LENGTH + 1):
        host.handle_task(f"mixed/c{k}", adder(k))

    @host.task("mixed/split")
    async def split(flow: Flow) -> None:
        _record_execution(markers, flow, "Split")
        await _work()
        flow.set("sum", 1000)  # the value before the fan-out takes part in the fan-in's sum
        _mark(flow, "Split")

    @host.task("mixed/work")
    def work(flow: Flow) -> None:  # sync on purpose: it runs in the proxy's thread pool
        _record_execution(markers, flow, "Work")
        time.sleep(random.uniform(*TASK_SECONDS))
        item = flow.get_int("item")
        flow.set("sum", item * item)  # a delta: this branch's contribution
        flow.set("parts", [f"W{flow.get_int('itemIndex')}#{flow.attempt}"])

    @host.task("mixed/join")
    async def join(flow: Flow) -> None:
        _record_execution(markers, flow, "Join")
        await _work()
        flow.set("joined", len(flow.get("parts", [])))
        _mark(flow, "Join")

    @host.task("mixed/prep")
    async def prep(flow: Flow) -> None:
        _record_execution(markers, flow, "Prep")
        await _work()
        _mark(flow, "Prep")

    @host.task("mixed/call")
    async def call(flow: Flow) -> None:
        # The first run parks, and the engine runs the task again once the child ended: only that second
        # run is recorded, so that the expected repeat does not count as a crash's re-execution.
        result = flow.subgraph("mixed-child", {"unit": flow.get_int("unit")})
        _record_execution(markers, flow, "Call")
        await _work()
        flow.set("childTotal", result["total"])
        flow.set("childTrail", result["trail"])
        _mark(flow, "Call")

    @host.task("mixed/finish")
    async def finish(flow: Flow) -> None:
        _record_execution(markers, flow, "Finish")
        await _work()
        _mark(flow, "Finish")

    @host.task("mixed/flaky")
    async def flaky(flow: Flow) -> None:
        _record_execution(markers, flow, "Flaky")
        await _work()
        flow.set("tries", [*flow.get("tries", []), flow.attempt])
        if flow.attempt < flow.get_int("failures"):
            if flow.attempt < RETRY_GIVE_UP and flow.retry(0.05, 2.0, 0.2, 0):
                return
            raise RuntimeError(f"still failing at attempt {flow.attempt}")
        _mark(flow, "Flaky")

    @host.task("mixed/done")
    async def done(flow: Flow) -> None:
        _record_execution(markers, flow, "Done")
        await _work()
        _mark(flow, "Done")

    @host.task("mixed/nap")
    async def nap(flow: Flow) -> None:
        _record_execution(markers, flow, "Nap")
        await _work()
        _mark(flow, "Nap")
        flow.sleep(flow.get_float("delay"))

    @host.task("mixed/wake")
    async def wake(flow: Flow) -> None:
        _record_execution(markers, flow, "Wake")
        await _work()
        _mark(flow, "Wake")

    return host


@dataclass
class FlowPlan:
    """One flow to run and exactly how it must end."""

    kind: str
    url: str
    state: dict[str, Any]
    status: Status
    final_state: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    steps: Counter[tuple[str, Status, int]] = field(default_factory=Counter)
    """The history as a multiset of (task name, status, attempt): duplicates would show."""


def _chain_trail(length: int) -> list[str]:
    return [f"C{k}#0" for k in range(1, length + 1)]


def _completed(*names: str, attempts: dict[str, int] | None = None) -> Counter[tuple[str, Status, int]]:
    return Counter((name, Status.COMPLETED, (attempts or {}).get(name, 0)) for name in names)


def plan_flow(index: int, rng: random.Random) -> FlowPlan:
    """The ``index``-th flow of the workload: kinds rotate, inputs come from ``rng``."""
    kind = KINDS[index % len(KINDS)]
    unit = rng.randint(1, 99)
    if kind == "chain":
        nodes = [f"C{k}" for k in range(1, CHAIN_LENGTH + 1)]
        total = unit * sum(range(1, CHAIN_LENGTH + 1))
        final = {"unit": unit, "total": total, "trail": _chain_trail(CHAIN_LENGTH)}
        return FlowPlan(
            kind, "mixed-chain", {"unit": unit}, Status.COMPLETED, final, steps=_completed(*nodes)
        )
    if kind == "fan":
        items = [rng.randint(1, 50) for _ in range(rng.randint(5, 10))]
        final = {
            "items": items,
            "sum": 1000 + sum(item * item for item in items),
            "parts": [f"W{position}#0" for position in range(len(items))],
            "joined": len(items),
            "trail": ["Split#0", "Join#0"],
        }
        steps = _completed("Split", "Join") + Counter({("Work", Status.COMPLETED, 0): len(items)})
        return FlowPlan(kind, "mixed-fan", {"items": items}, Status.COMPLETED, final, steps=steps)
    if kind == "subgraph":
        child_total = unit * sum(range(1, CHILD_LENGTH + 1))
        final = {
            "unit": unit,
            "childTotal": child_total,
            "childTrail": _chain_trail(CHILD_LENGTH),
            "trail": ["Prep#0", "Call#0", "Finish#0"],
        }
        steps = _completed("Prep", "Call", "Finish")
        return FlowPlan(kind, "mixed-parent", {"unit": unit}, Status.COMPLETED, final, steps=steps)
    if kind == "retry":
        gives_up = index % (len(KINDS) * 4) == 3  # one retry flow in four exhausts its attempts
        failures = 99 if gives_up else rng.randint(1, RETRY_GIVE_UP)
        if gives_up:
            steps = Counter({("Flaky", Status.FAILED, RETRY_GIVE_UP): 1})
            error = f"still failing at attempt {RETRY_GIVE_UP}"
            # A failed flow's state includes what the failing attempt wrote (docs/flows.md).
            final = {"failures": failures, "tries": list(range(RETRY_GIVE_UP + 1))}
            state = {"failures": failures}
            return FlowPlan(kind, "mixed-retry", state, Status.FAILED, final, error=error, steps=steps)
        final = {
            "failures": failures,
            "tries": list(range(failures + 1)),
            "trail": [f"Flaky#{failures}", "Done#0"],
        }
        steps = _completed("Flaky", "Done", attempts={"Flaky": failures})
        return FlowPlan(kind, "mixed-retry", {"failures": failures}, Status.COMPLETED, final, steps=steps)
    delay = round(rng.uniform(0.2, 1.0), 2)
    final = {"delay": delay, "trail": ["Nap#0", "Wake#0"]}
    return FlowPlan(
        kind, "mixed-sleep", {"delay": delay}, Status.COMPLETED, final, steps=_completed("Nap", "Wake")
    )


def plan_flows(count: int, seed: int) -> list[FlowPlan]:
    rng = random.Random(seed)
    return [plan_flow(index, rng) for index in range(count)]


def check_flow(plan: FlowPlan, outcome: FlowOutcome, history: list[FlowStep]) -> list[str]:
    """What is wrong with a finished flow (an empty list when it ended exactly as planned)."""
    problems: list[str] = []
    if outcome.status != plan.status:
        return [f"status {outcome.status} ({outcome.error or 'no error'}), expected {plan.status}"]
    if outcome.state != plan.final_state:
        problems.append(f"final state {outcome.state}, expected {plan.final_state}")
    if outcome.error != plan.error:
        problems.append(f"error {outcome.error!r}, expected {plan.error!r}")
    steps = Counter((step.task_name, step.status, step.attempt) for step in history)
    if steps != plan.steps:
        problems.append(f"history {sorted(steps.items())}, expected {sorted(plan.steps.items())}")
    if plan.kind == "subgraph":
        calls = [step for step in history if step.task_name == "Call"]
        children = [(s.task_name, s.status, s.attempt) for call in calls for s in call.sub_history]
        expected = [(f"C{k}", Status.COMPLETED, 0) for k in range(1, CHILD_LENGTH + 1)]
        if children != expected:
            problems.append(f"child history {children}, expected {expected}")
    if plan.kind == "sleep" and plan.status == Status.COMPLETED:
        naps = [step for step in history if step.task_name == "Nap"]
        wakes = [step for step in history if step.task_name == "Wake"]
        if len(naps) == len(wakes) == 1:  # else the history check above already complained
            slept = (wakes[0].started_at or naps[0].updated_at) - naps[0].updated_at
            if slept < timedelta(seconds=plan.state["delay"]) - SLEEP_TOLERANCE:
                problems.append(
                    f"Wake started {slept} after Nap, before the {plan.state['delay']}s sleep ended"
                )
    return problems


def count_reexecutions(markers: Path) -> int:
    """Executions of a (step, attempt) beyond the first, over every process's execution log."""
    runs: Counter[str] = Counter()
    for path in markers.glob("executions-*.log"):
        for line in path.read_text().splitlines():
            step_key, attempt, _ = line.split(" ")
            runs[f"{step_key}/{attempt}"] += 1
    return sum(count - 1 for count in runs.values())


async def create_flows(engine: Engine, plans: list[FlowPlan], time_budget: float) -> list[str]:
    """Start every planned flow; return their keys in plan order."""
    options = FlowOptions(time_budget=time_budget)
    return [await engine.create(plan.url, plan.state, options) for plan in plans]


async def count_stopped(engine: Engine) -> int:
    """How many root flows have ended (completed or failed; the workload cancels nothing)."""
    stopped = 0
    for status in (Status.COMPLETED, Status.FAILED):
        page, _ = await engine.list(Query(status=status, limit=1000))
        stopped += len(page)
    return stopped


async def wait_for_stopped(engine: Engine, target: int, deadline: float) -> int:
    """Wait until ``target`` root flows have ended, polling through database outages (a restart).

    ``deadline`` is a ``time.monotonic()`` instant; TimeoutError (saying how far it got) past it.
    """
    stopped = 0
    while True:
        try:
            stopped = await count_stopped(engine)
        except Exception:  # the server is restarting: ask again shortly
            stopped = -1
        if stopped >= target:
            return stopped
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {stopped} of {target} flows ended in time; {await _stuck(engine)}")
        await asyncio.sleep(0.2)


async def _stuck(engine: Engine) -> str:
    """Some flows still running and the task each is at, for a timeout message."""
    try:
        page, _ = await engine.list(Query(status=Status.RUNNING, limit=10))
    except Exception as error:
        return f"(listing running flows failed: {error})"
    return "still running: " + ", ".join(f"{flow.flow_key} at {flow.task_name}" for flow in page)


async def check_flows(engine: Engine, keys: list[str], plans: list[FlowPlan]) -> list[str]:
    """Every deviation from the plans, one line per flow that went wrong."""
    problems: list[str] = []
    for key, plan in zip(keys, plans, strict=True):
        found = check_flow(plan, await engine.snapshot(key), await engine.history(key))
        problems.extend(f"{plan.kind} flow {key}: {problem}" for problem in found)
    return problems
