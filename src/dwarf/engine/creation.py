"""Inserting a flow and its entry step: shared by create, continue_thread, subgraph spawns and fork."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dwarf.engine.flowinfo import FlowInfo, dumps
from dwarf.engine.keys import new_token
from dwarf.store.base import Tx
from dwarf.store.statements import StatementName
from dwarf.workflow.graph import Graph

__all__ = ["FlowPolicy", "KeyHeld", "insert_flow"]


class KeyHeld(Exception):
    """``insert_flow`` with an idempotency key inserted nothing: another flow of the workflow URL holds
    the key (see operations._create_keyed)."""


@dataclass(frozen=True)
class FlowPolicy:
    """How a flow is scheduled and treated when it stops; children and continuations inherit it."""

    priority: int
    fairness_key: str
    fairness_weight: float
    time_budget_ms: int
    notify_on_stop: bool = False
    delete_on_completion: bool = False
    baggage: Any = None
    # Seconds a root flow is kept once it failed or was cancelled (None: for ever), and once it completed
    # (the grace window of delete_on_completion, or retain_for): see 014_retention.sql. Child flows keep
    # none of their own: they go with their root's tree.
    retain_for: float | None = None
    retain_completed_for: float | None = None


async def insert_flow(
    tx: Tx,
    shard: int,
    graph: Graph,
    workflow_url: str,
    state: Mapping[str, Any],
    policy: FlowPolicy,
    *,
    parent_flow_id: int = 0,
    parent_step_id: int = 0,
    root_flow_id: int = 0,
    thread_id: int = 0,
    thread_token: str = "",
    forked_from_step_id: int = 0,
    with_entry_step: bool = True,
    trace_parent: str = "",
    idempotency_key: str = "",
    deadline_in: float | None = None,
) -> FlowInfo:
    """Insert a running flow (and, unless told otherwise, its pending entry step); return its FlowInfo.

    With an ``idempotency_key`` (a root flow with its entry step only) KeyHeld is raised, and nothing
    inserted, when another flow of ``workflow_url`` holds the key. ``deadline_in`` (a root flow with its
    entry step only) is the seconds from now until the flow's deadline.
    """
    token = new_token()
    flow_fields: dict[str, Any] = {
        "flow_token": token,
        "workflow_url": workflow_url,
        "workflow_name": graph.name,
        "graph": graph.to_json(),
        "baggage": dumps(policy.baggage),
        "parent_flow_id": parent_flow_id,
        "parent_step_id": parent_step_id,
        "root_flow_id": root_flow_id,
        "thread_id": thread_id,
        "thread_token": thread_token,
        "forked_from_step_id": forked_from_step_id,
        "notify_on_stop": 1 if policy.notify_on_stop else 0,
        "delete_on_completion": 1 if policy.delete_on_completion else 0,
        "priority": policy.priority,
        "fairness_key": policy.fairness_key,
        "fairness_weight": policy.fairness_weight,
        "time_budget_ms": policy.time_budget_ms,
        "trace_parent": trace_parent,
        "retain_for": None if parent_flow_id else policy.retain_for,
        "retain_completed_for": None if parent_flow_id else policy.retain_completed_for,
    }
    if with_entry_step:
        # One statement inserts the flow, fixes its lineage and inserts the entry step.
        entry = graph.entry_point
        state_text = dumps(state)
        statement: StatementName = "create_flow"
        if idempotency_key:
            statement = "create_keyed_flow"
            flow_fields["idempotency_key"] = idempotency_key
        row = await tx.fetch_one(
            statement,
            **flow_fields,
            step_token=new_token(),
            task_name=entry,
            task_url=graph.url_of(entry),
            state=state_text,
            snapshot_bytes=len(state_text),
            deadline_in=deadline_in,
        )
        if row is None and idempotency_key:
            raise KeyHeld(idempotency_key)
        assert row is not None
        flow_id = int(row["flow_id"])
    else:
        row = await tx.fetch_one("insert_flow", **flow_fields)
        assert row is not None
        flow_id = int(row["flow_id"])
        await tx.execute("set_flow_lineage", flow_id=flow_id)
    return FlowInfo(
        shard=shard,
        flow_id=flow_id,
        token=token,
        workflow_url=workflow_url,
        workflow_name=graph.name,
        graph=graph,
        baggage=json.loads(dumps(policy.baggage)),
        created_at=float(row["created_at"]),
        parent_flow_id=parent_flow_id,
        parent_step_id=parent_step_id,
        root_flow_id=root_flow_id or flow_id,
        notify_on_stop=policy.notify_on_stop,
        delete_on_completion=policy.delete_on_completion,
        priority=policy.priority,
        fairness_key=policy.fairness_key,
        fairness_weight=policy.fairness_weight,
        time_budget_ms=policy.time_budget_ms,
        trace_parent=trace_parent,
        retain_for=None if parent_flow_id else policy.retain_for,
        retain_completed_for=None if parent_flow_id else policy.retain_completed_for,
    )
