"""Task errors, onError routing, retries with backoff and the time budget
(docs/graphs.md#onerror-routing-a-failure, docs/tasks.md#retry-with-backoff, docs/design.md#leases)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dwarf import END, ConflictError, Flow, FlowOptions, Status
from tests.engine.graphs import WAIT, chain, failing, graph_of, proxy_with, setter, steps_named, tracer


def _on_error_graph() -> Any:
    graph = graph_of("OnError", "A", "B", "Handler")
    graph.add_transition("A", "B")
    graph.add_transition_on_error("A", "Handler")
    graph.add_transition("B", END)
    graph.add_transition("Handler", END)
    return graph


# --- failures ---


async def test_task_exception_without_on_error_fails_the_flow_with_its_message(make_engine: Any) -> None:
    calls: list[str] = []
    engine = await make_engine(
        proxy_with("boom", chain("Boom", "A", "B"), A=failing("card declined"), B=tracer(calls, "B"))
    )
    key, outcome = await engine.run("boom", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert outcome.error == "card declined"
    assert calls == []
    [step] = await engine.history(key)
    assert (step.status, step.error) == (Status.FAILED, "card declined")


async def test_on_error_routes_to_the_handler_with_the_error_in_on_err(make_engine: Any) -> None:
    calls: list[str] = []
    seen: list[Any] = []

    async def handler(flow: Flow) -> None:
        seen.append(flow.get("onErr"))
        calls.append("Handler")

    engine = await make_engine(
        proxy_with(
            "onerror", _on_error_graph(), A=failing("card declined"), B=tracer(calls, "B"), Handler=handler
        )
    )
    _, outcome = await engine.run("onerror", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert calls == ["Handler"]
    assert seen[0]["error"] == "card declined"
    assert outcome.state["onErr"]["error"] == "card declined"


async def test_on_err_carries_the_status_code_of_an_exception_that_has_one(make_engine: Any) -> None:
    async def conflict(flow: Flow) -> None:
        raise ConflictError("already booked")

    engine = await make_engine(
        proxy_with("onerror", _on_error_graph(), A=conflict, B=setter(), Handler=setter(handled=True))
    )
    _, outcome = await engine.run("onerror", timeout=WAIT)
    assert outcome.state["onErr"] == {"error": "already booked", "statusCode": 409}


async def test_failed_step_routed_by_on_error_is_recorded_completed_with_its_changes(
    make_engine: Any,
) -> None:
    async def partial(flow: Flow) -> None:
        flow.set("reserved", 3)
        raise RuntimeError("payment failed")

    engine = await make_engine(
        proxy_with("onerror", _on_error_graph(), A=partial, B=setter(), Handler=setter(handled=True))
    )
    key, outcome = await engine.run("onerror", timeout=WAIT)
    [step] = await steps_named(engine, key, "A")
    assert step.status == Status.COMPLETED
    assert step.changes == {"reserved": 3}
    assert outcome.state["reserved"] == 3
    assert outcome.state["handled"] is True


async def test_handler_failure_fails_the_flow_with_the_handlers_error(make_engine: Any) -> None:
    engine = await make_engine(
        proxy_with("onerror", _on_error_graph(), A=failing("first"), B=setter(), Handler=failing("second"))
    )
    _, outcome = await engine.run("onerror", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert outcome.error == "second"


# --- retry ---


async def test_retry_runs_the_task_again_with_an_incremented_attempt(make_engine: Any) -> None:
    attempts: list[int] = []

    async def flaky(flow: Flow) -> None:
        attempts.append(flow.attempt)
        if flow.attempt < 2 and flow.retry(0.01, 2.0, 0, 0):
            return
        flow.set("succeededOn", flow.attempt)

    engine = await make_engine(proxy_with("flaky", chain("Flaky", "A"), A=flaky))
    key, outcome = await engine.run("flaky", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert attempts == [0, 1, 2]
    assert outcome.state == {"succeededOn": 2}
    [step] = await engine.history(key)
    assert step.attempt == 2


async def test_retry_attempt_sees_the_changes_of_the_previous_attempt(make_engine: Any) -> None:
    seen: list[Any] = []

    async def flaky(flow: Flow) -> None:
        seen.append(flow.get("tries"))
        flow.set("tries", [*flow.get("tries", []), flow.attempt])
        if flow.attempt < 2:
            assert flow.retry(0, 1.0, 0, 0)

    engine = await make_engine(proxy_with("flaky", chain("Flaky", "A"), A=flaky))
    _, outcome = await engine.run("flaky", timeout=WAIT)
    assert seen == [None, [0], [0, 1]]
    assert outcome.state == {"tries": [0, 1, 2]}


async def test_retry_backs_off_exponentially(make_engine: Any) -> None:
    starts: list[float] = []

    async def flaky(flow: Flow) -> None:
        starts.append(time.monotonic())
        if flow.attempt < 2:
            assert flow.retry(0.15, 2.0, 0, 0)

    engine = await make_engine(proxy_with("flaky", chain("Flaky", "A"), A=flaky))
    _, outcome = await engine.run("flaky", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    first_gap, second_gap = starts[1] - starts[0], starts[2] - starts[1]
    assert first_gap >= 0.15 - 0.01
    assert second_gap >= 0.30 - 0.01


async def test_retry_delay_is_capped_by_max_delay(make_engine: Any) -> None:
    starts: list[float] = []

    async def flaky(flow: Flow) -> None:
        starts.append(time.monotonic())
        if flow.attempt < 2:
            # Uncapped, the second delay would be 0.1 * 20 = 2 s.
            assert flow.retry(0.1, 20.0, 0.2, 0)

    engine = await make_engine(proxy_with("flaky", chain("Flaky", "A"), A=flaky))
    await engine.run("flaky", timeout=WAIT)
    second_gap = starts[2] - starts[1]
    assert 0.2 - 0.01 <= second_gap < 1.5


async def test_retry_gives_up_after_the_horizon_and_the_flow_fails(make_engine: Any) -> None:
    attempts: list[int] = []

    async def flaky(flow: Flow) -> None:
        attempts.append(flow.attempt)
        if flow.retry(0.1, 1.0, 0, 0.35):
            return
        raise RuntimeError("still unavailable")

    engine = await make_engine(proxy_with("flaky", chain("Flaky", "A"), A=flaky))
    key, outcome = await engine.run("flaky", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert outcome.error == "still unavailable"
    assert 2 <= len(attempts) <= 5
    assert attempts == list(range(len(attempts)))
    [step] = await engine.history(key)
    assert step.status == Status.FAILED


async def test_retry_that_gives_up_routes_via_on_error(make_engine: Any) -> None:
    async def flaky(flow: Flow) -> None:
        if flow.retry(0.05, 1.0, 0, 0.12):
            return
        raise RuntimeError("gave up")

    engine = await make_engine(
        proxy_with("onerror", _on_error_graph(), A=flaky, B=setter(), Handler=setter(handled=True))
    )
    _, outcome = await engine.run("onerror", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["onErr"]["error"] == "gave up"


# --- time budget ---


async def _slow(flow: Flow) -> None:
    await asyncio.sleep(5)


async def test_async_task_exceeding_its_time_budget_fails_the_flow(make_engine: Any) -> None:
    engine = await make_engine(proxy_with("slow", chain("Slow", "A"), A=_slow))
    started = time.monotonic()
    _, outcome = await engine.run("slow", options=FlowOptions(time_budget=0.3), timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "time budget" in outcome.error
    assert time.monotonic() - started < 4


async def test_time_budget_overrun_routes_via_on_error(make_engine: Any) -> None:
    engine = await make_engine(
        proxy_with("onerror", _on_error_graph(), A=_slow, B=setter(), Handler=setter(handled=True))
    )
    _, outcome = await engine.run("onerror", options=FlowOptions(time_budget=0.3), timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert "time budget" in outcome.state["onErr"]["error"]


async def test_task_within_its_time_budget_completes(make_engine: Any) -> None:
    async def brief(flow: Flow) -> None:
        await asyncio.sleep(0.05)
        flow.set("done", True)

    engine = await make_engine(proxy_with("brief", chain("Brief", "A"), A=brief))
    _, outcome = await engine.run("brief", options=FlowOptions(time_budget=2), timeout=WAIT)
    assert outcome.state == {"done": True}
