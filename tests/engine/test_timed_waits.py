"""Deadlines and timed waits (docs/waits.md), on both databases: FlowOptions.deadline cancels a tree with
its reason, a timed interrupt resumes with {"timedOut": true} that a graph branches on, and
wait_for_signal parks a step until Engine.signal, keeping signals sent early. Every race between a timer
and an answer has exactly one winner, on one engine or on replicas, and every timer survives a restart.

Timeouts are a few tenths of a second so that the file stays quick.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from dwarf import (
    DEADLINE_REASON,
    END,
    TIMED_OUT,
    BadRequestError,
    ConflictError,
    Flow,
    FlowOptions,
    FlowOutcome,
    Graph,
    NotFoundError,
    Query,
    Status,
    TestProxy,
    WaitReason,
)
from dwarf.codecs import ZlibCodec
from dwarf.engine import Engine
from tests.engine.graphs import WAIT, Gate, Replicas, chain, wait_until

SHORT = 0.3
"""The timeout or deadline of most flows here: long enough to act before it, short enough to wait for."""


def timed_graph(name: str, waiting: str, answered: str) -> Graph:
    """``waiting`` (a timed wait) -> Expired when it timed out, else ``answered``."""
    graph = Graph(name)
    for node in (waiting, "Expired", answered):
        graph.add_task(node, node)
    graph.add_transition_switch(waiting, "Expired", "timedOut")
    graph.add_transition_switch(waiting, answered, "true")
    graph.add_transition("Expired", END)
    graph.add_transition(answered, END)
    return graph


class Answers:
    """Counts what the parked steps got when they ran again, per flow key."""

    def __init__(self) -> None:
        self.by_flow: dict[str, list[dict[str, Any]]] = {}

    def record(self, flow: Flow, answer: dict[str, Any]) -> None:
        self.by_flow.setdefault(flow.flow_key, []).append(answer)
        flow.set("answer", answer)
        flow.set("timedOut", answer.get(TIMED_OUT, False))


def timeout_of(flow: Flow) -> float | None:
    return flow.get_float("timeout") if flow.has("timeout") else None


def waits_host(answers: Answers, gate: Gate | None = None, pay_gate: Gate | None = None) -> TestProxy:
    """The approval and payment graphs, chains around them for child flows, and a slow chain whose
    first task waits at ``gate``; the payment task waits at ``pay_gate`` before it waits for its signal."""
    host = TestProxy()
    host.handle_graph("approval", timed_graph("Approval", "Ask", "Approved"))  # a timed interrupt
    host.handle_graph("payment", timed_graph("Payment", "Pay", "Ship"))  # waits for signal "paid"

    async def ask(flow: Flow) -> None:
        answers.record(flow, flow.interrupt({"question": "approve?"}, timeout=timeout_of(flow)))

    async def pay(flow: Flow) -> None:
        if pay_gate is not None:
            await pay_gate.pass_through()
        answers.record(flow, flow.wait_for_signal("paid", timeout=timeout_of(flow)))

    async def slow(flow: Flow) -> None:
        assert gate is not None
        await gate.pass_through()

    def calls(child: str) -> Any:
        async def handler(flow: Flow) -> None:
            flow.set("child", flow.subgraph(child, {"timeout": flow.get("timeout")}))

        return handler

    host.handle_task("Ask", ask)
    host.handle_task("Pay", pay)
    host.handle_task("Slow", slow)
    for node in ("Expired", "Approved", "Ship", "Done"):
        host.handle_task(node, _marker(node))
    host.handle_graph("slow", chain("SlowChain", "Slow", "Done"))
    host.handle_graph("parent-of-slow", chain("ParentOfSlow", "CallSlow", "Done"))
    host.handle_task("CallSlow", calls("slow"))
    host.handle_graph("parent-of-approval", chain("ParentOfApproval", "CallApproval", "Done"))
    host.handle_task("CallApproval", calls("approval"))
    host.handle_graph("parent-of-payment", chain("ParentOfPayment", "CallPayment", "Done"))
    host.handle_task("CallPayment", calls("payment"))
    return host


def _marker(node: str) -> Any:
    async def handler(flow: Flow) -> None:
        flow.set("end", [*flow.get("end", []), node])

    return handler


async def stopped(engine: Engine, key: str, status: Status, timeout: float = WAIT) -> FlowOutcome:
    """The outcome once the flow has ``status`` (``wait`` returns at an interrupt already)."""
    found: list[FlowOutcome] = []

    async def reached() -> bool:
        found[:] = [await engine.snapshot(key)]
        return found[0].status == status

    await wait_until(reached, timeout)
    return found[0]


async def waiting_for(engine: Engine, key: str, reason: WaitReason) -> None:
    async def parked() -> bool:
        return any(wait.reason == reason for wait in await engine.why(key))

    await wait_until(parked)


# --- deadlines ---


async def test_a_deadline_cancels_a_running_flow_and_its_child_flows_with_the_reason(
    make_engine: Any,
) -> None:
    gate = Gate()
    engine = await make_engine(waits_host(Answers(), gate))
    started = time.monotonic()
    key = await engine.create("parent-of-slow", options=FlowOptions(deadline=SHORT))
    await gate.wait_entered()
    outcome = await engine.wait(key, WAIT)
    took = time.monotonic() - started
    gate.open()
    assert outcome.status == Status.CANCELLED and outcome.cancel_reason == DEADLINE_REASON
    assert SHORT - 0.05 <= took < SHORT + 2
    (call,) = await engine.history(key)
    child = await engine.snapshot(call.sub_flow_key)
    assert child.status == Status.CANCELLED and child.cancel_reason == DEADLINE_REASON
    assert [step.status for step in call.sub_history] == [Status.CANCELLED]


async def test_a_deadline_cancels_an_interrupted_flow(make_engine: Any) -> None:
    engine = await make_engine(waits_host(Answers()))
    key = await engine.create("approval", options=FlowOptions(deadline=timedelta(seconds=SHORT)))
    assert (await engine.wait(key, WAIT)).status == Status.INTERRUPTED
    outcome = await stopped(engine, key, Status.CANCELLED)
    assert outcome.cancel_reason == DEADLINE_REASON
    with pytest.raises(ConflictError):
        await engine.resume(key, {})


async def test_a_deadline_given_as_an_aware_datetime_cancels_at_that_moment(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(waits_host(Answers(), gate))
    deadline = datetime.now(UTC) + timedelta(seconds=SHORT)
    key = await engine.create("slow", options=FlowOptions(deadline=deadline))
    outcome = await engine.wait(key, WAIT)
    gate.open()
    assert outcome.status == Status.CANCELLED and outcome.cancel_reason == DEADLINE_REASON
    assert datetime.now(UTC) >= deadline


async def test_a_flow_that_ends_before_its_deadline_keeps_its_outcome(make_engine: Any) -> None:
    engine = await make_engine(waits_host(Answers()))
    key, outcome = await engine.run(
        "payment", {"timeout": 0}, options=FlowOptions(deadline=SHORT, notify_on_stop=True), timeout=WAIT
    )
    assert outcome.status == Status.COMPLETED
    await asyncio.sleep(SHORT + 0.2)
    assert (await engine.snapshot(key)).status == Status.COMPLETED
    (timers,) = await engine.runtime.stores[0].read("next_timer")
    assert timers["next_deadline"] is None and timers["next_wakeup"] is None


@pytest.mark.parametrize(
    "deadline", [0, -1, datetime(2030, 1, 1), datetime(2000, 1, 1, tzinfo=UTC), "soon", 1e12]
)
async def test_a_deadline_that_cannot_be_met_is_refused_and_creates_nothing(
    make_engine: Any, deadline: Any
) -> None:
    engine = await make_engine(waits_host(Answers()))
    with pytest.raises(BadRequestError, match="deadline"):
        await engine.create("approval", options=FlowOptions(deadline=deadline))
    assert (await engine.list(Query()))[0] == []


async def test_replicas_cancel_each_flow_for_its_deadline_once(make_engine: Any) -> None:
    gate = Gate()
    host = waits_host(Answers(), gate)
    notified: Counter[str] = Counter()
    host.on_flow_stopped(lambda key, outcome: notified.update([f"{key} {outcome.cancel_reason}"]))
    first = await make_engine(host)
    second = await make_engine(host)
    options = FlowOptions(deadline=SHORT, notify_on_stop=True)
    keys = [await (first if n % 2 else second).create("slow", options=options) for n in range(8)]
    for key in keys:
        assert (await first.wait(key, WAIT)).cancel_reason == DEADLINE_REASON
    gate.open()
    await asyncio.sleep(0.2)  # a second cancel, were there one, would notify by now
    assert notified == Counter(f"{key} {DEADLINE_REASON}" for key in keys)


# --- timed interrupts ---


async def test_an_interrupt_nobody_answers_in_time_resumes_timed_out_and_the_graph_branches(
    make_engine: Any,
) -> None:
    answers = Answers()
    engine = await make_engine(waits_host(answers))
    key = await engine.create("approval", {"timeout": SHORT})
    assert (await engine.wait(key, WAIT)).status == Status.INTERRUPTED
    (wait,) = await engine.why(key)
    assert wait.reason == WaitReason.INTERRUPTED and wait.until is not None
    assert "until" in wait.describe()
    outcome = await stopped(engine, key, Status.COMPLETED)
    assert outcome.state["answer"] == {"timedOut": True}
    assert outcome.state["end"] == ["Expired"]
    assert answers.by_flow[key] == [{"timedOut": True}]
    ask = (await engine.history(key))[0]
    assert ask.timeout_at == wait.until and ask.status == Status.COMPLETED


async def test_a_resume_before_the_timeout_wins_and_a_resume_after_it_is_a_conflict(make_engine: Any) -> None:
    answers = Answers()
    engine = await make_engine(waits_host(answers))
    early = await engine.create("approval", {"timeout": SHORT})
    late = await engine.create("approval", {"timeout": SHORT})
    await engine.wait(early, WAIT)
    await engine.resume(early, {"approved": True})
    assert (await engine.wait(early, WAIT)).state["end"] == ["Approved"]
    await stopped(engine, late, Status.COMPLETED)
    with pytest.raises(ConflictError, match="not interrupted"):
        await engine.resume(late, {"approved": True})
    await asyncio.sleep(0.2)
    assert answers.by_flow == {early: [{"approved": True}], late: [{"timedOut": True}]}


async def test_a_timeout_racing_resumes_answers_each_interrupt_once(make_engine: Any) -> None:
    answers = Answers()
    engine = await make_engine(waits_host(answers))
    keys = [await engine.create("approval", {"timeout": SHORT}) for _ in range(10)]
    for key in keys:
        await engine.wait(key, WAIT)
    await asyncio.sleep(SHORT - 0.05)

    async def resume(key: str) -> bool:
        try:
            await engine.resume(key, {"approved": True})
        except ConflictError:
            return False
        return True

    resumed = await asyncio.gather(*(resume(key) for key in keys))
    for key, won in zip(keys, resumed, strict=True):
        outcome = await stopped(engine, key, Status.COMPLETED)
        expected = {"approved": True} if won else {"timedOut": True}
        assert answers.by_flow[key] == [expected] and outcome.state["answer"] == expected


async def test_a_timed_interrupt_in_a_child_flow_times_out_and_the_parent_goes_on(make_engine: Any) -> None:
    engine = await make_engine(waits_host(Answers()))
    key = await engine.create("parent-of-approval", {"timeout": SHORT})
    assert (await engine.wait(key, WAIT)).interrupt_payload == {"question": "approve?"}
    outcome = await stopped(engine, key, Status.COMPLETED)
    assert outcome.state["child"]["end"] == ["Expired"]
    assert outcome.state["end"] == ["Done"]


# --- signals ---


async def test_a_signal_wakes_the_waiting_step_with_its_data(make_engine: Any) -> None:
    answers = Answers()
    engine = await make_engine(waits_host(answers))
    key = await engine.create("payment", {"timeout": 60})
    await waiting_for(engine, key, WaitReason.SIGNAL)
    (wait,) = await engine.why(key)
    assert wait.signal_name == "paid" and wait.until is not None
    assert "waiting for signal 'paid' until" in wait.describe()
    (pay,) = await engine.history(key)
    assert pay.parked and pay.waited_signal == "paid" and pay.timeout_at == wait.until
    assert "signal paid" in await engine.history_mermaid(key)
    assert (await engine.snapshot(key)).status == Status.RUNNING
    await engine.signal(key, "paid", {"amount": 12})
    outcome = await engine.wait(key, WAIT)
    assert outcome.state["answer"] == {"amount": 12} and outcome.state["end"] == ["Ship"]
    assert answers.by_flow[key] == [{"amount": 12}]


async def test_signals_sent_before_the_wait_are_kept_and_taken_oldest_first(make_engine: Any) -> None:
    gate = Gate()
    answers = Answers()
    engine = await make_engine(waits_host(answers, pay_gate=gate))
    first = await engine.create("payment")
    second = await engine.create("payment")
    await engine.signal(first, "paid", {"n": 1})
    await engine.signal(first, "paid", {"n": 2})
    await engine.signal(first, "shipped", {"n": 3})
    gate.open()
    assert (await engine.wait(first, WAIT)).state["answer"] == {"n": 1}
    # The other kept signals belong to the first flow's tree only.
    await waiting_for(engine, second, WaitReason.SIGNAL)
    await engine.signal(second, "paid", {"n": 4})
    assert (await engine.wait(second, WAIT)).state["answer"] == {"n": 4}


async def test_a_signal_wait_times_out_and_a_late_signal_is_kept(make_engine: Any) -> None:
    answers = Answers()
    engine = await make_engine(waits_host(answers))
    key = await engine.create("payment", {"timeout": SHORT})
    outcome = await engine.wait(key, WAIT)
    assert outcome.state["answer"] == {"timedOut": True} and outcome.state["end"] == ["Expired"]
    with pytest.raises(ConflictError, match="completed"):
        await engine.signal(key, "paid", {})


async def test_a_timeout_racing_signals_answers_each_wait_once(make_engine: Any) -> None:
    answers = Answers()
    engine = await make_engine(waits_host(answers))
    keys = [await engine.create("payment", {"timeout": SHORT}) for _ in range(10)]
    for key in keys:
        await waiting_for(engine, key, WaitReason.SIGNAL)
    await asyncio.sleep(SHORT - 0.1)
    sent = await asyncio.gather(
        *(engine.signal(key, "paid", {"paid": True}) for key in keys), return_exceptions=True
    )
    for key, result in zip(keys, sent, strict=True):
        outcome = await engine.wait(key, WAIT)
        assert result is None or isinstance(result, ConflictError)
        assert answers.by_flow[key] in ([{"paid": True}], [{"timedOut": True}])
        assert outcome.state["answer"] == answers.by_flow[key][0]


async def test_a_signal_reaches_a_step_waiting_in_a_child_flow(make_engine: Any) -> None:
    engine = await make_engine(waits_host(Answers()))
    key = await engine.create("parent-of-payment")

    async def child_waits() -> bool:
        (call,) = await engine.history(key)
        return bool(call.sub_history) and call.sub_history[0].waited_signal == "paid"

    await wait_until(child_waits)
    await engine.signal(key, "paid", {"amount": 5})
    outcome = await engine.wait(key, WAIT)
    assert outcome.state["child"]["answer"] == {"amount": 5}


async def test_signals_the_engine_cannot_deliver_are_refused(make_engine: Any) -> None:
    engine = await make_engine(waits_host(Answers()))
    key = await engine.create("parent-of-payment")
    shard, flow_id, token = key.split("-", 2)
    with pytest.raises(NotFoundError):
        await engine.signal(f"{shard}-{flow_id}-{'A' * 16 if token != 'A' * 16 else 'B' * 16}", "paid")
    for name in ("", "x" * 256, 7):
        with pytest.raises(BadRequestError, match="signal name"):
            await engine.signal(key, name, {})  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match="signal data"):
        await engine.signal(key, "paid", {"when": datetime.now(UTC)})

    async def child_started() -> bool:
        return bool((await engine.history(key))[0].sub_flow_key)

    await wait_until(child_started)
    child = (await engine.history(key))[0].sub_flow_key
    with pytest.raises(BadRequestError, match="root flow"):
        await engine.signal(child, "paid", {})
    await engine.cancel(key)
    with pytest.raises(ConflictError, match="cancelled"):
        await engine.signal(key, "paid", {})


async def test_timers_and_signals_work_on_every_shard(make_engine: Any) -> None:
    answers = Answers()
    engine = await make_engine(waits_host(answers), num_shards=2)
    asked = [await engine.create("approval", {"timeout": SHORT}) for _ in range(6)]
    paying = [await engine.create("payment") for _ in range(6)]
    shards = {key.split("-")[0] for key in [*asked, *paying]}
    assert shards == {"1", "2"}, "every flow landed on one shard: the test proves nothing (rerun)"
    for key in paying:
        await engine.signal(key, "paid", {"shard": key.split("-")[0]})
    for key in paying:
        assert (await engine.wait(key, WAIT)).state["answer"] == {"shard": key.split("-")[0]}
    for key in asked:
        assert (await stopped(engine, key, Status.COMPLETED)).state["end"] == ["Expired"]


async def test_a_flow_without_timers_runs_none_of_their_statements(make_engine: Any) -> None:
    engine = await make_engine(waits_host(Answers()))
    await asyncio.sleep(0.2)  # past the engine's one look for timers at startup
    store = engine.runtime.stores[0]
    names: list[str] = []
    read, write, run = store.read, store.write, store.run

    async def spied_read(query: Any, **params: Any) -> Any:
        names.append(query)
        return await read(query, **params)

    async def spied_write(query: Any, **params: Any) -> Any:
        names.append(query)
        return await write(query, **params)

    async def spied_run(work: Any, **options: Any) -> Any:
        class SpyTx:
            def __init__(self, tx: Any) -> None:
                self._tx = tx

            async def fetch_all(self, query: Any, **params: Any) -> Any:
                names.append(query)
                return await self._tx.fetch_all(query, **params)

            async def execute(self, query: Any, **params: Any) -> Any:
                names.append(query)
                return await self._tx.execute(query, **params)

            async def fetch_one(self, query: Any, **params: Any) -> Any:
                names.append(query)
                return await self._tx.fetch_one(query, **params)

            async def fetch_value(self, query: Any, **params: Any) -> Any:
                names.append(query)
                return await self._tx.fetch_value(query, **params)

        return await run(lambda tx: work(SpyTx(tx)), **options)

    store.read, store.write, store.run = spied_read, spied_write, spied_run  # type: ignore[method-assign]
    for _ in range(3):
        key, outcome = await engine.run("approval", timeout=WAIT)
        assert outcome.status == Status.INTERRUPTED
        await engine.resume(key, {"approved": True})
        assert (await engine.wait(key, WAIT)).state["end"] == ["Approved"]
    timer_statements = {
        "due_deadlines",
        "due_wakeups",
        "next_timer",
        "set_step_wake_at",
        "park_for_signal",
        "wake_signal_waiter",
        "tree_signal_waiter",
        "store_signal",
        "take_stored_signal",
    }
    print(names)
    assert names and not timer_statements & set(names), names


# --- restarts: timers are rows, fired by whichever engine runs next ---


async def test_timers_that_passed_while_no_engine_ran_fire_when_the_next_one_starts(fresh_dsn: str) -> None:
    gate = Gate()
    answers = Answers()
    host = waits_host(answers, gate)
    async with Replicas(host, fresh_dsn) as replicas:
        first = await replicas.start()
        doomed = await first.create("slow", options=FlowOptions(deadline=SHORT))
        asked = await first.create("approval", {"timeout": SHORT})
        paying = await first.create("payment", {"timeout": SHORT})
        waiting = await first.create("payment")
        await first.wait(asked, WAIT)
        await waiting_for(first, paying, WaitReason.SIGNAL)
        await waiting_for(first, waiting, WaitReason.SIGNAL)
        await first.shutdown(drain_timeout=0)
        await asyncio.sleep(SHORT + 0.1)

        second = await replicas.start()
        started = time.monotonic()
        assert (await second.wait(doomed, WAIT)).cancel_reason == DEADLINE_REASON
        assert (await stopped(second, asked, Status.COMPLETED)).state["end"] == ["Expired"]
        assert (await second.wait(paying, WAIT)).state["end"] == ["Expired"]
        assert time.monotonic() - started < 1.0, "the timers waited for a poll instead of firing at start"
        gate.open()
        await second.signal(waiting, "paid", {"late": False})
        assert (await second.wait(waiting, WAIT)).state["answer"] == {"late": False}
    assert answers.by_flow[asked] == answers.by_flow[paying] == [{"timedOut": True}]


async def test_kept_signals_go_with_their_flow(fresh_dsn: str) -> None:
    engine = Engine(host=waits_host(Answers()), dsn=fresh_dsn)
    async with engine:
        deleted = await engine.create("payment")
        purged = await engine.create("payment")
        for key in (deleted, purged):
            await engine.signal(key, "other", {"kept": True})
            await engine.cancel(key)
        assert _kept_signals(fresh_dsn) == 2
        await engine.delete(deleted)
        assert _kept_signals(fresh_dsn) == 1
        assert await engine.purge(Query(status="cancelled")) == 1

        async def reaped() -> bool:
            return _kept_signals(fresh_dsn) == 0

        await wait_until(reaped)


async def test_kept_signals_are_stored_through_the_codecs_and_reencoded(fresh_dsn: str) -> None:
    gate = Gate()
    host = waits_host(Answers(), pay_gate=gate)
    data = {"note": "x" * 200}
    async with Replicas(host, fresh_dsn) as replicas:
        plain = await replicas.start()
        early = await plain.create("payment")
        await plain.signal(early, "paid", data)
        await gate.wait_entered()
        await plain.shutdown(drain_timeout=0)  # Pay waits at its gate: handed back, not drained
    assert _raw_signals(fresh_dsn) == [json.dumps(data, separators=(",", ":"))]
    async with Engine(host=host, dsn=fresh_dsn, codec=ZlibCodec(min_bytes=10)) as coded:
        report = await coded.reencode()
        assert report.rows >= 1
        (stored,) = _raw_signals(fresh_dsn)
        assert stored.startswith("dwarf:zlib:")
        later = await coded.create("payment")
        await coded.signal(later, "paid", data)
        assert all(text.startswith("dwarf:zlib:") for text in _raw_signals(fresh_dsn))
        gate.open()
        for key in (early, later):
            assert (await coded.wait(key, WAIT)).state["answer"] == data


def _kept_signals(dsn: str) -> int:
    """Rows in dwarf_signals, read past the engine."""
    return len(_raw_signals(dsn))


def _raw_signals(dsn: str) -> list[str]:
    """The data of the kept signals as stored, read past the engine."""
    query = "SELECT resume_data FROM dwarf_signals ORDER BY signal_id"
    if dsn.startswith("sqlite"):
        with sqlite3.connect(urlsplit(dsn).path) as conn:
            return [str(row[0]) for row in conn.execute(query)]
    import psycopg

    with psycopg.connect(dsn) as conn:
        return [str(row[0]) for row in conn.execute(query)]
