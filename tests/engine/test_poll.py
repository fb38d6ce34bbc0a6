"""Engine.poll (docs/flows.md#polling-a-flow): a flow's outcome once it stopped, RUNNING before, never a
TimeoutError; the same NotFoundError as every operation for a bad key."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from dwarf import Flow, NotFoundError, Status
from dwarf.engine import TestProxy
from tests.engine.graphs import WAIT, Gate, failing
from tests.engine.graphs_parallel import single


def _proxy(gate: Gate) -> TestProxy:
    """``blocked`` (waits for the gate, then sets done), ``ask`` (interrupts), ``fails``."""
    proxy = TestProxy()
    proxy.handle_graph("blocked", single("Blocked", "B"))
    proxy.handle_graph("ask", single("Ask", "Q"))
    proxy.handle_graph("fails", single("Fails", "F"))

    async def blocked(flow: Flow) -> None:
        await gate.pass_through()
        flow.set("done", True)

    async def ask(flow: Flow) -> None:
        flow.interrupt({"question": "?"})

    proxy.handle_task("B", blocked)
    proxy.handle_task("Q", ask)
    proxy.handle_task("F", failing("boom"))
    return proxy


async def test_poll_answers_running_at_once_while_the_flow_runs(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(_proxy(gate))
    key = await engine.create("blocked", {"x": 1})
    await gate.wait_entered()
    try:
        started = time.monotonic()
        outcome = await engine.poll(key)
        assert time.monotonic() - started < 1.0
        assert outcome.status == Status.RUNNING and outcome.state == {}
        # With a timeout it waits that long for a stop, then answers the same way.
        started = time.monotonic()
        assert (await engine.poll(key, timeout=0.2)).status == Status.RUNNING
        assert 0.2 <= time.monotonic() - started < 2.0
    finally:
        gate.open()
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED


async def test_poll_returns_the_outcome_of_a_stopped_flow(make_engine: Any) -> None:
    gate = Gate()
    gate.open()
    engine = await make_engine(_proxy(gate))
    done, _ = await engine.run("blocked", {"x": 1}, timeout=WAIT)
    failed, _ = await engine.run("fails", timeout=WAIT)
    asked, _ = await engine.run("ask", timeout=WAIT)
    completed = await engine.poll(done)
    assert completed.status == Status.COMPLETED and completed.state == {"x": 1, "done": True}
    assert completed == await engine.wait(done, timeout=WAIT)
    failure = await engine.poll(failed)
    assert failure.status == Status.FAILED and failure.error == "boom"
    interrupted = await engine.poll(asked)
    assert interrupted.status == Status.INTERRUPTED and interrupted.interrupt_payload == {"question": "?"}


async def test_poll_with_a_timeout_returns_as_soon_as_the_flow_stops(make_engine: Any) -> None:
    gate = Gate()
    engine = await make_engine(_proxy(gate))
    key = await engine.create("blocked")
    await gate.wait_entered()
    polling = asyncio.ensure_future(engine.poll(key, timeout=WAIT))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    gate.open()
    outcome = await polling
    assert outcome.status == Status.COMPLETED and outcome.state == {"done": True}
    assert time.monotonic() - started < WAIT / 2


async def test_poll_of_an_unknown_key_is_not_found(make_engine: Any) -> None:
    gate = Gate()
    gate.open()
    engine = await make_engine(_proxy(gate))
    key, _ = await engine.run("blocked", timeout=WAIT)
    shard, flow_id, token = key.split("-", 2)
    other = "A" * 16 if token != "A" * 16 else "B" * 16
    for bad in (f"{shard}-{flow_id}-{other}", f"{shard}-99999-{token}", "?", ""):
        with pytest.raises(NotFoundError, match="flow not found"):
            await engine.poll(bad)
    await engine.delete(key)
    with pytest.raises(NotFoundError, match="flow not found"):
        await engine.poll(key, timeout=0.1)
