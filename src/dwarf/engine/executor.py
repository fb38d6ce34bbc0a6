"""Running one claimed step: build the flow carrier, call the host's task under its deadline, commit.

The task runs outside any transaction. Its outcome (changes, control signals, exception) is then routed
and committed in one transaction by ``completion.StepCommit``, guarded by the lease the claim took.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from dwarf.engine.clock import utc
from dwarf.engine.completion import Effects, LeaseLostError, StepCommit
from dwarf.engine.flowinfo import FlowInfo
from dwarf.engine.keys import correlation_id, format_key
from dwarf.engine.telemetry import COMPLETED, FAILED, INTERRUPTED, LOST_LEASE, PARKED, RETRIED, TaskRun
from dwarf.engine.transitions import RoutingError, route_after_success
from dwarf.errors import BadRequestError, InvalidGraphError, NotFoundError
from dwarf.store.base import Row, SingleStatementTx, Store, Tx
from dwarf.workflow.baggage import baggage_scope
from dwarf.workflow.flow import Flow, Park
from dwarf.workflow.graph import Graph
from dwarf.workflow.jsonvalue import check_json
from dwarf.workflow.reducers import apply_changes

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = ["error_text", "run_claimed_step"]


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
    run = engine._telemetry.start_task(info, step)  # None when telemetry is off
    try:
        with baggage_scope(info.baggage):
            async with asyncio.timeout(budget if budget > 0 else None) as deadline:
                await engine._host_execute_task(step["task_url"], carrier, run)
    except Park as parked:
        park = parked
    except TimeoutError as error:
        if deadline.expired():
            task_error = TimeoutError(f"task {step['task_name']!r} exceeded its time budget of {budget:g}s")
        else:
            task_error = error
    except asyncio.CancelledError:
        if run is not None:
            engine._telemetry.end_task(run, "the engine stopped while the task ran")
        raise
    except Exception as error:
        task_error = error

    try:
        return await _commit_outcome(
            engine, store, info, step, lease_token, carrier, park, task_error, inline_lease_margin, run
        )
    except BaseException:
        if run is not None:
            engine._telemetry.end_task(run, "the step's outcome could not be committed")
        raise


def _build_carrier(info: FlowInfo, step: Row) -> Flow:
    changes = _loads(step["changes"]) or {}
    return Flow(
        flow_key=info.key,
        step_key=format_key(info.shard, int(step["step_id"]), step["step_token"]),
        attempt=int(step["attempt"]),
        created_at=utc(info.created_at),
        updated_at=utc(float(step["updated_at"])),
        step_created_at=utc(float(step["created_at"])),
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
    run: TaskRun | None,
) -> Row | None:
    changes = carrier.changes
    child_graph: Graph | None = None
    child_span, child_trace_parent = None, ""
    if park is not None and park.kind == "subgraph":
        url, _ = carrier.subgraph_request or ("", {})
        try:
            child_graph = await engine._load_graph(url, info.baggage)
        except (NotFoundError, InvalidGraphError) as error:
            park, task_error = None, error
        if child_graph is not None and run is not None:
            # Minted before the transaction (a unit of work may only await its Tx); the child's span
            # nests under this task's span.
            child_span, child_trace_parent = engine._telemetry.open_flow_span(url, run.span)
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
            await commit.commit_subgraph(changes, url, child_input, child_graph, child_trace_parent)
        elif carrier.retry_delay is not None:
            await commit.commit_retry(
                changes, merged, carrier.retry_delay, error_text(task_error) if task_error else ""
            )
        elif task_error is not None:
            await _commit_error(commit, graph, node, changes, merged, task_error)
        else:
            assert route is not None
            await commit.commit_success(changes, merged, route, carrier.sleep_seconds)
        return commit.effects

    try:
        if route is not None and StepCommit.is_single_statement(
            info, step, route, carrier.sleep_seconds, inline_lease_margin
        ):
            # The whole commit is one guarded statement: it needs no surrounding transaction (on
            # PostgreSQL that saves the BEGIN and COMMIT round trips).
            effects = await record(SingleStatementTx(store))
        else:
            effects = await store.run(record)
    except LeaseLostError:
        engine._log.info(
            "step %s of flow %s lost its lease; its outcome was discarded",
            correlation_id(info.shard, int(step["step_id"])),
            info.correlation_id,
            extra={"flow": info.correlation_id},
        )
        if run is not None:
            engine._telemetry.step_committed(run, step, LOST_LEASE)
        return None
    outcome = _outcome_name(park, carrier, task_error)
    if engine._log.isEnabledFor(logging.DEBUG):
        engine._log.debug(
            "step %s (%s) of flow %s: %s",
            correlation_id(info.shard, int(step["step_id"])),
            node,
            info.correlation_id,
            outcome,
            extra={"flow": info.correlation_id},
        )
    if run is not None:
        telemetry = engine._telemetry
        for child in effects.created:
            telemetry.flow_created(child, child_span)
        telemetry.step_committed(
            run,
            step,
            outcome,
            slept=carrier.sleep_seconds > 0 and outcome == COMPLETED,
            error=error_text(task_error) if task_error is not None else "",
        )
    await engine._after_commit(info, effects)
    if effects.pending_join:
        # Arrivals are checked for completing their cohort after they committed, in batches: see
        # Scheduler.note_arrival.
        engine._note_arrival(store, info, effects.pending_join)
    return effects.inline_step


def _outcome_name(park: Park | None, carrier: Flow, task_error: BaseException | None) -> str:
    """The telemetry outcome of a committed task run (the branches of ``_commit_outcome.record``)."""
    if park is not None:
        return INTERRUPTED if park.kind == "interrupt" else PARKED
    if carrier.retry_delay is not None:
        return RETRIED
    return FAILED if task_error is not None else COMPLETED


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
