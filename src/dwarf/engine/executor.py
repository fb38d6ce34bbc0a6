"""Running one claimed step: build the flow carrier, call the host's task under its deadline, commit.

The task runs outside any transaction. Its outcome (changes, control signals, exception) is then routed
and committed in one transaction by ``completion.StepCommit``, guarded by the lease the claim took.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from dwarf.engine.completion import Effects, LeaseLostError, StepCommit
from dwarf.engine.flowinfo import FlowInfo
from dwarf.engine.keys import format_key
from dwarf.engine.transitions import RoutingError, route_after_success
from dwarf.errors import BadRequestError, InvalidGraphError, NotFoundError
from dwarf.store.base import Row, Store, Tx
from dwarf.workflow.baggage import baggage_scope
from dwarf.workflow.flow import Flow, Park
from dwarf.workflow.graph import Graph
from dwarf.workflow.jsonvalue import check_json
from dwarf.workflow.reducers import apply_changes

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = ["error_text", "run_claimed_step"]


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def error_text(error: BaseException) -> str:
    """The message a failed task leaves in the flow: the exception's text, or its type when it has none."""
    text = str(error)
    return text if text else type(error).__name__


def error_object(error: BaseException) -> dict[str, Any]:
    """The ``onErr`` state field: the message, plus a status code where the exception has one."""
    value: dict[str, Any] = {"error": error_text(error)}
    code = getattr(error, "status_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        value["statusCode"] = code
    return value


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


async def run_claimed_step(
    engine: Engine, store: Store, step: Row, lease_token: str, inline_lease_margin: float | None = None
) -> Row | None:
    """Execute a leased step and commit its outcome; a lost lease means nothing is committed.

    With ``inline_lease_margin`` set, a lone successor is inserted already leased to this worker and
    returned, for the caller to run next without a claim round trip.
    """
    info = await engine._flow_info(store, int(step["flow_id"]))
    if info is None:
        # The flow was deleted under the step (delete, purge): nothing to run.
        return None
    carrier = _build_carrier(info, step)
    budget = int(step["time_budget_ms"]) / 1000.0
    task_error: BaseException | None = None
    park: Park | None = None
    try:
        with baggage_scope(info.baggage):
            async with asyncio.timeout(budget if budget > 0 else None) as deadline:
                await engine._host_execute_task(step["task_url"], carrier)
    except Park as parked:
        park = parked
    except TimeoutError as error:
        if deadline.expired():
            task_error = TimeoutError(f"task {step['task_name']!r} exceeded its time budget of {budget:g}s")
        else:
            task_error = error
    except asyncio.CancelledError:
        raise
    except Exception as error:
        task_error = error

    return await _commit_outcome(
        engine, store, info, step, lease_token, carrier, park, task_error, inline_lease_margin
    )


def _build_carrier(info: FlowInfo, step: Row) -> Flow:
    changes = _loads(step["changes"]) or {}
    return Flow(
        flow_key=info.key,
        step_key=format_key(info.shard, int(step["step_id"]), step["step_token"]),
        attempt=int(step["attempt"]),
        created_at=_utc(info.created_at),
        updated_at=_utc(float(step["updated_at"])),
        step_created_at=_utc(float(step["created_at"])),
        state=json.loads(step["state"]),
        changes=changes or None,
        resume_data=_loads(step["resume_data"]),
        subgraph_result=_loads(step["subgraph_result"]),
        subgraph_error=step["subgraph_error"] or "",
    )


async def _commit_outcome(
    engine: Engine,
    store: Store,
    info: FlowInfo,
    step: Row,
    lease_token: str,
    carrier: Flow,
    park: Park | None,
    task_error: BaseException | None,
    inline_lease_margin: float | None,
) -> Row | None:
    changes = carrier.changes
    child_graph: Graph | None = None
    if park is not None and park.kind == "subgraph":
        url, _ = carrier.subgraph_request or ("", {})
        try:
            child_graph = await engine._load_graph(url, info.baggage)
        except (NotFoundError, InvalidGraphError) as error:
            park, task_error = None, error
    state = json.loads(step["state"])
    merged = apply_changes(state, changes)
    graph = info.graph
    node = step["task_name"]
    route = None
    if park is None and carrier.retry_delay is None and task_error is None:
        try:
            route = route_after_success(graph, node, merged, carrier.goto_target)
        except RoutingError as error:
            task_error = error

    async def record(tx: Tx) -> Effects:
        commit = StepCommit(tx, info, step, lease_token, inline_lease_margin)
        if park is not None and park.kind == "interrupt":
            await commit.commit_interrupt(changes, carrier.interrupt_payload or {})
        elif park is not None and child_graph is not None and carrier.subgraph_request is not None:
            url, child_input = carrier.subgraph_request
            await commit.commit_subgraph(changes, url, child_input, child_graph)
        elif carrier.retry_delay is not None:
            await commit.commit_retry(
                merged, carrier.retry_delay, error_text(task_error) if task_error else ""
            )
        elif task_error is not None:
            await _commit_error(commit, graph, node, changes, merged, task_error)
        else:
            assert route is not None
            await commit.commit_success(changes, merged, route, carrier.sleep_seconds)
        return commit.effects

    try:
        effects = await store.run(record)
    except LeaseLostError:
        engine._log.info("step %s-%s lost its lease; its outcome was discarded", info.shard, step["step_id"])
        return None
    await engine._after_commit(info, effects)
    return effects.inline_step


async def _commit_error(
    commit: StepCommit,
    graph: Any,
    node: str,
    changes: dict[str, Any],
    merged: dict[str, Any],
    error: BaseException,
) -> None:
    handler = graph.on_error_target(node)
    message = error_text(error)
    if handler is None:
        await commit.commit_failure(changes, message)
        return
    on_err = error_object(error)
    try:
        check_json(on_err, "onErr")
    except BadRequestError:
        on_err = {"error": message}
    routed = dict(merged)
    routed["onErr"] = on_err
    await commit.commit_error_route(changes, routed, message, handler)
