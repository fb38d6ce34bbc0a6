"""Typed rows: whole-table rows of either dialect become the same records, with the same Python types."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dwarf import FlowOptions, Status
from dwarf.store.rows import FlowRow, StepRow
from tests.engine.graphs import WAIT, chain, proxy_with


def _interrupting(flow: Any) -> None:
    flow.set("seen", {"nested": [1, 2.5, "three"]})
    flow.interrupt({"question": "ok?"})


async def test_a_flow_and_its_steps_read_back_as_typed_records(make_engine: Any) -> None:
    proxy = proxy_with("ask", chain("Ask", "A"), A=_interrupting)
    engine = await make_engine(proxy)
    options = FlowOptions(baggage={"tenant": "t1"}, fairness_key="k", fairness_weight=2.5, priority=7)
    key, outcome = await engine.run("ask", {"start": 1}, options, timeout=WAIT)
    assert outcome.status == Status.INTERRUPTED
    store, flow = await engine.runtime.resolve(key)

    assert isinstance(flow, FlowRow)
    assert (flow.priority, flow.fairness_key, flow.fairness_weight) == (7, "k", 2.5)
    assert flow.baggage == {"tenant": "t1"}
    assert flow.interrupt_payload == {"question": "ok?"}
    assert flow.status == "interrupted" and flow.final_state == {}
    assert flow.root_flow_id == flow.flow_id and not flow.parent_flow_id
    assert isinstance(flow.created_at, float) and isinstance(flow.started_at, float)
    assert flow.notify_on_stop is False and flow.purge_marked is False

    [raw] = await store.read("flow_steps", flow_id=flow.flow_id)
    step = StepRow.of(raw)
    assert step.flow_id == flow.flow_id and step.task_name == "A"
    assert step.state == {"start": 1}
    assert step.changes == {"seen": {"nested": [1, 2.5, "three"]}}
    assert step.interrupt_payload == {"question": "ok?"}
    assert step.resume_data is None and step.subgraph_result is None
    assert step.parked is False and step.recoveries == 0
    for field in dataclasses.fields(step):
        value = getattr(step, field.name)
        if field.type in ("int", "float"):
            # Each dialect's driver hands back its own numeric types; the record has exactly one.
            assert type(value).__name__ == field.type, (field.name, value)


async def test_a_resumed_step_carries_its_decoded_resume_data(make_engine: Any) -> None:
    proxy = proxy_with("ask", chain("Ask", "A"), A=_interrupting)
    engine = await make_engine(proxy)
    key, _ = await engine.run("ask", timeout=WAIT)
    await engine.resume(key, {"answer": [True, None]})
    store, flow = await engine.runtime.resolve(key)
    [raw] = await store.read("flow_steps", flow_id=flow.flow_id)
    assert StepRow.of(raw).resume_data == {"answer": [True, None]}


def test_a_row_missing_a_column_is_refused_rather_than_guessed() -> None:
    with pytest.raises(KeyError):
        FlowRow.of({"flow_id": 1})
