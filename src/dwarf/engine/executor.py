"""Running one claimed step: build the flow carrier, call the host's task under its deadline, commit.

The task runs outside any transaction. Its outcome (changes, control signals, exception) is then routed
and committed in one transaction by ``completion.StepCommit``, guarded by the lease the claim took.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dwarf.engine.clock import utc
from dwarf.engine.completion import Effects, LeaseLostError, StepCommit
from dwarf.engine.flowinfo import FlowInfo
from dwarf.engine.keys import correlation_id, format_key, redact_keys
from dwarf.engine.limits import LimitsCache
from dwarf.engine.states import load_state
from dwarf.engine.telemetry import COMPLETED, FAILED, INTERRUPTED, LOST_LEASE, PARKED, RETRIED, TaskRun
from dwarf.engine.transitions import RoutingError, route_after_success
from dwarf.engine.tuning import SchedulerTuning
from dwarf.errors import BadRequestError, DwarfError, StateTooLargeError, StoreError
from dwarf.store.base import SingleStatementTx, Store, Tx
from dwarf.store.rows import StepRow
from dwarf.workflow.baggage import baggage_scope
from dwarf.workflow.flow import Flow, Park
from dwarf.workflow.graph import Graph
from dwarf.workflow.jsonvalue import check_json, storable_text
from dwarf.workflow.reducers import apply_output

if TYPE_CHECKING:
    from dwarf.engine.runtime import Runtime

__all__ = ["Attempt", "Lease", "UnstorableOutcomeError", "WorkerLostError", "error_text", "run_claimed_step"]


class WorkerLostError(DwarfError):
    """The step lost its worker too many times in a row; it failed instead of being claimed again."""

    status_code = 500


class UnstorableOutcomeError(DwarfError):
    """A task's outcome holds values the database refuses; the step failed instead of re-running."""

    status_code = 500


def error_text(error: BaseException) -> str:
    """The message a failed task leaves in the flow: the exception's text, or its type when it has none."""
    text = str(error)
    # Whatever the exception says must fit a text column (PostgreSQL refuses NUL), or the failure itself
    # could never be recorded. Every task error the engine stores (step and flow error, onErr) or exports
    # (the task span's status) is made here, so keys are redacted here too: a task endpoint echoing its
    # request, or an exception quoting flow.flow_key, must not leak a bearer token.
    return redact_keys(storable_text(text)) if text else type(error).__name__


def error_object(error: BaseException) -> dict[str, Any]:
    """The ``onErr`` state field: the message, plus a status code where the exception has one."""
    value: dict[str, Any] = {"error": error_text(error)}
    code = getattr(error, "status_code", None)
    if isinstance(code, int) and not isinstance(code, bool):
        value["statusCode"] = code
    return value


class Lease:
    """A worker's hold on a claimed step, shared with the heartbeat that keeps it alive.

    The scheduler renews the lease while the task runs; when a renewal finds the lease gone (the flow was
    cancelled, or another replica took the step after this one stalled) it calls ``lose``, which stops the
    task at once: whatever it did next could not be committed anyway.
    """

    __slots__ = ("lost", "task", "token")

    def __init__(self, token: str) -> None:
        self.token = token
        self.lost = False
        self.task: asyncio.Future[Any] | None = None

    def lose(self) -> None:
        """The lease is gone: cancel the running task, if any."""
        self.lost = True
        if self.task is not None:
            self.task.cancel()


@dataclass
class Attempt:
    """What one run of a task produced, frozen at the moment the engine took it.

    The carrier itself is not used after that moment: a task that ignores its deadline may go on writing
    to it, and those late writes must not reach the commit.
    """

    changes: dict[str, Any]
    appends: dict[str, list[Any]] = field(default_factory=dict)
    park: Park | None = None
    error: BaseException | None = None
    retry_delay: float | None = None
    goto_target: str | None = None
    sleep_seconds: float = 0.0
    interrupt_payload: dict[str, Any] | None = None
    signal_wait: str | None = None
    park_timeout: float | None = None
    subgraph_request: tuple[str, dict[str, Any]] | None = None
    # The loaded graph of the requested child flow and its trace parent (set before the commit).
    child_graph: Graph | None = None
    child_trace_parent: str = ""
    # False when the error must fail the flow without onError routing (see _record_attempt).
    routable: bool = True

    @classmethod
    def of(cls, carrier: Flow, park: Park | None, error: BaseException | None) -> Attempt:
        """The attempt as the task left it when it returned or raised."""
        return cls(
            changes=carrier.changes,
            appends=carrier.appends,
            park=park,
            error=error,
            retry_delay=carrier.retry_delay,
            goto_target=carrier.goto_target,
            sleep_seconds=carrier.sleep_seconds,
            interrupt_payload=carrier.interrupt_payload,
            signal_wait=carrier.signal_wait,
            park_timeout=carrier.park_timeout,
            subgraph_request=carrier.subgraph_request,
        )


ABANDON_GRACE = 1.0
"""Seconds a task that was cancelled at its deadline gets to end before the engine stops waiting for it."""


async def run_claimed_step(
    rt: Runtime,
    store: Store,
    step: StepRow,
    lease: Lease,
    inline_lease_margin: float | None = None,
    max_recoveries: int = SchedulerTuning.max_recoveries,
) -> StepRow | None:
    """Execute a leased step and commit its outcome; a lost lease means nothing is committed.

    The task gets the step's time budget and not a moment more: at the deadline it is cancelled and the
    attempt fails with a timeout, whether or not the task honours the cancellation (one that swallows it
    is left to finish on its own, its late writes discarded). With ``inline_lease_margin`` set, a lone
    successor is inserted already leased to this worker and returned, for the caller to run next without
    a claim round trip.
    """
    info = await rt.flow_info(store, step.flow_id)
    if info is None:
        # The flow was deleted under the step (delete, purge): nothing to run.
        return None
    damaged: StoreError | None = None
    try:
        step = await load_state(store, step)
    except StoreError as error:
        if error.transient:
            raise
        # A reference to a step that is gone (a hand-edited database): the step cannot run, and claiming
        # it again would meet the same gap for ever. It fails, routed like any task error.
        damaged, step = error, dataclasses.replace(step, state={})
    carrier = _build_carrier(info, step)
    budget = step.time_budget_ms / 1000.0
    run = rt.telemetry.start_task(info, step)  # None when telemetry is off
    recoveries = step.recoveries
    try:
        if damaged is not None:
            attempt: Attempt | None = Attempt(changes={}, error=damaged)
        elif recoveries >= max_recoveries:
            attempt = Attempt(
                changes={},
                error=WorkerLostError(
                    f"task {step.task_name!r} lost its worker {recoveries} times in a row (a crash, a "
                    "kill or a stall while it ran); it is not run again"
                ),
            )
        else:
            attempt = await _run_within_budget(rt, info, step, carrier, budget, run, lease)
    except asyncio.CancelledError:
        if run is not None:
            rt.telemetry.end_task(run, "the engine stopped while the task ran")
        raise
    if attempt is None:
        _log_lost_lease(rt, info, step)
        if run is not None:
            rt.telemetry.step_committed(run, step, LOST_LEASE)
        return None
    try:
        return await _commit_outcome(rt, store, info, step, lease.token, attempt, inline_lease_margin, run)
    except BaseException:
        if run is not None:
            rt.telemetry.end_task(run, "the step's outcome could not be committed")
        raise


async def _call_task(
    rt: Runtime, step: StepRow, carrier: Flow, run: TaskRun | None, finished: asyncio.Future[None]
) -> Park | None:
    # Park is a BaseException: returned, not raised, so that it never escapes the asyncio Task as one.
    try:
        await rt.execute_task(step.task_url, carrier, run)
    except Park as parked:
        return parked
    finally:
        # Wakes the waiting worker at once; the task's own done callbacks would take one more loop turn.
        # The task is done by the time the worker runs: nothing is left to do here but return.
        _wake(finished)
    return None


def _wake(finished: asyncio.Future[None], *_: object) -> None:
    if not finished.done():
        finished.set_result(None)


async def _run_within_budget(
    rt: Runtime,
    info: FlowInfo,
    step: StepRow,
    carrier: Flow,
    budget: float,
    run: TaskRun | None,
    lease: Lease,
) -> Attempt | None:
    """Run the task as a Task of its own and take its outcome by the deadline; None when the lease was lost.

    Waiting on a separate Task (not ``asyncio.timeout`` around the call) is what bounds the wait: a
    timeout cancels the awaiting code and then still waits for the task to end, for ever if it swallows
    the cancellation. The wait is one bare future, woken by the task's end or by the deadline's timer:
    ``asyncio.wait`` does the same with a set, a waiter, callbacks and an extra loop turn, which measured
    as a few percent of a short step's cost.
    """
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    with baggage_scope(info.baggage):
        task = asyncio.ensure_future(_call_task(rt, step, carrier, run, finished))
    # A backstop: a task cancelled before its first step never runs _call_task's finally.
    task.add_done_callback(functools.partial(_wake, finished))
    deadline = loop.call_later(budget, _wake, finished) if budget > 0 else None
    lease.task = task
    try:
        await finished
    except asyncio.CancelledError:
        _abandon(rt, info, step, task)
        raise
    finally:
        lease.task = None
        if deadline is not None:
            deadline.cancel()
    if lease.lost:
        _abandon(rt, info, step, task)
        return None
    if task.done():
        try:
            park = task.result()
        except asyncio.CancelledError:
            # The task cancelled itself (not the rt): a task error like any other.
            return Attempt.of(carrier, None, asyncio.CancelledError("the task was cancelled"))
        except Exception as error:
            return Attempt.of(carrier, None, error)
        return Attempt.of(carrier, park, None)
    # The deadline passed. What the task wrote until now is kept (as with any failing task); anything it
    # writes while it winds down is not.
    changes, appends = carrier.changes, carrier.appends
    _abandon(rt, info, step, task)
    timeout = TimeoutError(f"task {step.task_name!r} exceeded its time budget of {budget:g}s")
    return Attempt(changes=changes, appends=appends, error=timeout)


def _abandon(rt: Runtime, info: FlowInfo, step: StepRow, task: asyncio.Future[Any]) -> None:
    """Cancel the task and stop waiting for it; say so if it has not ended after a grace period."""
    task.add_done_callback(_consume_outcome)
    if task.done():
        return
    task.cancel()

    def check() -> None:
        if not task.done():
            rt.log.warning(
                "task %r of step %s of flow %s ignored its cancellation and is still running; its outcome "
                "will be discarded",
                step.task_name,
                correlation_id(info.shard, step.step_id),
                info.correlation_id,
                extra={"flow": info.correlation_id},
            )

    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop().call_later(ABANDON_GRACE, check)


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    # Retrieve the exception of an abandoned task so asyncio does not report it as never retrieved.
    if not task.cancelled():
        task.exception()


def _log_lost_lease(rt: Runtime, info: FlowInfo, step: StepRow) -> None:
    rt.log.info(
        "step %s of flow %s lost its lease; its outcome was discarded",
        correlation_id(info.shard, step.step_id),
        info.correlation_id,
        extra={"flow": info.correlation_id},
    )


def _build_carrier(info: FlowInfo, step: StepRow) -> Flow:
    # A step that runs again after parking (resumed, or woken by its child flow) sees the changes its
    # earlier run recorded, as the reference does, but not the items it appended: the task runs from the
    # start again and appends them again.
    assert step.state is not None
    return Flow(
        flow_key=info.key,
        step_key=format_key(info.shard, step.step_id, step.step_token),
        attempt=step.attempt,
        created_at=utc(info.created_at),
        updated_at=utc(step.updated_at),
        step_created_at=utc(step.created_at),
        state=step.state,
        changes=step.changes or None,
        resume_data=step.resume_data,
        subgraph_result=step.subgraph_result,
        subgraph_error=step.subgraph_error or "",
        waited_signal=step.wait_signal or "",
        share_state=True,
    )


def _is_unstorable(error: BaseException) -> bool:
    """True when a commit failed because the database refuses the values themselves (a retry would fail
    the same way), as opposed to an outage or a lock, which a later attempt may get past."""
    if isinstance(error, StoreError):
        return not error.transient
    if isinstance(error, StateTooLargeError):
        return True
    if isinstance(error, DwarfError | LeaseLostError):
        return False
    # Raised while encoding the outcome, or by a driver binding it, before any store wrapped them.
    return isinstance(error, ValueError | TypeError | RecursionError | OverflowError | UnicodeError)


async def _commit_outcome(
    rt: Runtime,
    store: Store,
    info: FlowInfo,
    step: StepRow,
    lease_token: str,
    attempt: Attempt,
    inline_lease_margin: float | None,
    run: TaskRun | None,
) -> StepRow | None:
    child_span = None
    if attempt.park is not None and attempt.park.kind == "subgraph":
        url, _ = attempt.subgraph_request or ("", {})
        try:
            attempt.child_graph = await rt.load_graph(url, info.baggage)
        except Exception as error:
            # Whatever stops the child's graph from loading (unknown, invalid, its host failing) is this
            # task's error: routed by onError or failing the flow, never an engine failure that would
            # re-run the step for ever.
            attempt.park, attempt.error = None, error
        if attempt.child_graph is not None and run is not None:
            # Minted before the transaction (a unit of work may only await its Tx); the child's span
            # nests under this task's span.
            child_span, attempt.child_trace_parent = rt.telemetry.open_flow_span(url, run.span)
    target = _CommitTarget(
        store, info, step, lease_token, inline_lease_margin, rt.whole_state_above, rt.limits
    )
    try:
        effects, attempt = await _record_attempt(target, attempt)
    except LeaseLostError:
        _log_lost_lease(rt, info, step)
        if run is not None:
            rt.telemetry.step_committed(run, step, LOST_LEASE)
        return None
    if step.limit_slot or rt.limits.holds_back(store.shard, step.fairness_key, step.task_url):
        # The step gave its slot back (one it took when its claim leased it, or when a limit of its key
        # was set while it ran): steps held back by the limit may start now, here or at a peer.
        effects.new_work = True
    outcome = _outcome_name(attempt)
    node = step.task_name
    if rt.log.isEnabledFor(logging.DEBUG):
        rt.log.debug(
            "step %s (%s) of flow %s: %s",
            correlation_id(info.shard, step.step_id),
            node,
            info.correlation_id,
            outcome,
            extra={"flow": info.correlation_id},
        )
    if run is not None:
        telemetry = rt.telemetry
        for child in effects.created:
            telemetry.flow_created(child, child_span)
        telemetry.step_committed(
            run,
            step,
            outcome,
            slept=attempt.sleep_seconds > 0 and outcome == COMPLETED,
            error=error_text(attempt.error) if attempt.error is not None else "",
        )
    await rt.after_commit(info, effects)
    if effects.pending_join:
        # Arrivals are checked for completing their cohort after they committed, in batches: see
        # CohortArrivals.
        rt.arrivals.note(store.shard, info, effects.pending_join)
    return effects.inline_step


@dataclass(frozen=True)
class _CommitTarget:
    """What an attempt is committed against: the leased step, its flow, and its input state."""

    store: Store
    info: FlowInfo
    step: StepRow
    lease_token: str
    inline_lease_margin: float | None
    whole_state_above: int
    # What the engine knows of the shards' limits: a lone successor under a limit is queued for a claim,
    # never run inline past its limit.
    limits: LimitsCache


async def _record_attempt(target: _CommitTarget, attempt: Attempt) -> tuple[Effects, Attempt]:
    """Commit the attempt; if the database refuses its values, commit instead a failure of the step
    that keeps nothing the task wrote. Returns the effects and the attempt that was committed."""
    try:
        return await _commit_attempt(target, attempt), attempt
    except Exception as error:
        if not _is_unstorable(error):
            raise
        reason = error_text(error.__cause__ if isinstance(error, StoreError) and error.__cause__ else error)
        # Re-running the task would produce the same values and fail the same way, for ever: the step
        # fails once, routed like any task error (onError, or the flow fails).
        message = f"the outcome of task {target.step.task_name!r} could not be stored: {reason}"
        unstorable: DwarfError = UnstorableOutcomeError(message)
        if isinstance(error, StateTooLargeError):
            # The size guard's error keeps its type (and status code, in onErr) for the handler.
            unstorable = StateTooLargeError(message, what=error.what, size=error.size, limit=error.limit)
        failed = Attempt(changes={}, error=unstorable)
    try:
        return await _commit_attempt(target, failed), failed
    except StateTooLargeError:
        # Even the routed failure is over the size guard (the handler's input is this step's input
        # plus onErr): the step fails without routing, which stores no state at all.
        failed.routable = False
        return await _commit_attempt(target, failed), failed


async def _commit_attempt(target: _CommitTarget, attempt: Attempt) -> Effects:
    store, info, step, lease_token = target.store, target.info, target.step, target.lease_token
    inline_lease_margin = target.inline_lease_margin
    whole_above = target.whole_state_above
    state = step.state
    assert state is not None
    changes = attempt.changes
    merged = apply_output(state, changes, attempt.appends)
    graph = info.graph
    node = step.task_name
    park = attempt.park
    route = None
    if park is None and attempt.retry_delay is None and attempt.error is None:
        try:
            route = route_after_success(graph, node, merged, attempt.goto_target)
        except RoutingError as error:
            attempt.error = error
    task_error = attempt.error

    async def record(tx: Tx) -> Effects:
        commit = StepCommit(
            tx, info, step, lease_token, inline_lease_margin, attempt.appends, whole_state_above=whole_above
        )
        if park is not None and park.kind == "interrupt":
            await commit.commit_interrupt(changes, attempt.interrupt_payload or {}, attempt.park_timeout)
        elif park is not None and park.kind == "signal" and attempt.signal_wait is not None:
            await commit.commit_signal_wait(changes, attempt.signal_wait, attempt.park_timeout)
        elif park is not None and attempt.child_graph is not None and attempt.subgraph_request is not None:
            url, child_input = attempt.subgraph_request
            await commit.commit_subgraph(
                changes, url, child_input, attempt.child_graph, attempt.child_trace_parent
            )
        elif attempt.retry_delay is not None:
            await commit.commit_retry(
                changes, merged, attempt.retry_delay, error_text(task_error) if task_error else ""
            )
        elif task_error is not None:
            if attempt.routable:
                await _commit_error(commit, graph, node, changes, merged, task_error)
            else:
                await commit.commit_failure(changes, error_text(task_error))
        else:
            assert route is not None
            await commit.commit_success(changes, merged, route, attempt.sleep_seconds)
        return commit.effects

    if (
        inline_lease_margin is not None
        and route is not None
        and target.limits.active(store.shard)
        and len(route.branches) == 1
        and target.limits.holds_back(store.shard, info.fairness_key, graph.url_of(route.branches[0].node))
    ):
        inline_lease_margin = None
    if route is not None and StepCommit.is_single_statement(
        info, step, route, attempt.sleep_seconds, inline_lease_margin
    ):
        # The whole commit is one guarded statement: it needs no surrounding transaction (on
        # PostgreSQL that saves the BEGIN and COMMIT round trips).
        return await record(SingleStatementTx(store))
    return await store.run(record)


def _outcome_name(attempt: Attempt) -> str:
    """The telemetry outcome of a committed task run (the branches of ``_commit_attempt.record``)."""
    if attempt.park is not None:
        return INTERRUPTED if attempt.park.kind == "interrupt" else PARKED
    if attempt.retry_delay is not None:
        return RETRIED
    return FAILED if attempt.error is not None else COMPLETED


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
