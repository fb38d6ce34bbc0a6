"""Committing a step's outcome: everything that follows a task run happens in one transaction here.

A worker that ran a task calls one of the ``commit_*`` functions with an open transaction. They record the
step's outcome (guarded by the worker's lease: a worker that lost it commits nothing), create the next
steps, count fan-in arrivals, and stop the flow when it is done. What the caller must do once the
transaction committed (ring doorbells, wake waiters) is collected in ``Effects``.

Cohort bookkeeping. A step whose route fans out becomes a *spawn*: its row holds the cohort's
size and arrival count, and each branch step carries ``lineage_id`` = the spawn's id and its fan-out
position in ``fan_out_ordinal``. A branch's chain of steps keeps both. Each member step carries the
*carry*: the composition of the changes its chain made since the fan-out, which is exactly what the
member contributes at the join. Trunk steps (lineage 0) carry nothing. When a member routes into a
fan-in node (or END, or nowhere), it *arrives* on its own row only (``finish_and_arrive``), so wide
fan-outs commit side by side without contending for the spawn row. After the commit, whoever sees the
cohort complete claims its join (``claim_cohort_join``: exactly one transaction flips the flag), folds
the arrivals into the spawn's counts, merges the members' carries in fan-out order with the graph's
reducers and starts the fan-in step, or, when the cohort ended at END, stops the flow (or arrives, in
turn, at the enclosing cohort). See docs/design.md#cohorts-and-fan-in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dwarf.engine.creation import insert_flow
from dwarf.engine.flowinfo import FlowInfo, dumps
from dwarf.engine.keys import new_token
from dwarf.engine.states import UNBOUNDED, StoredState, load_state_in, output_of
from dwarf.engine.transitions import Branch, Route
from dwarf.errors import StateTooLargeError
from dwarf.store.base import Row, Store, Tx
from dwarf.store.encoded import encoded_value_error
from dwarf.store.rows import StepRow
from dwarf.workflow.graph import END, Graph
from dwarf.workflow.reducers import Reducer, ReducerError, merge_fan_in
from dwarf.workflow.status import Status

__all__ = ["Effects", "LeaseLostError", "StepCommit"]


# The ``arrived`` column of a cohort member's last step: it reached the join, or ended nowhere (a dead
# end, which fails the flow once the cohort settles).
ARRIVED = 1
ABANDONED = 2
# A member that arrived on its own row only (finish_and_arrive), not yet counted on its spawn; the join
# folds these into the spawn's counts (3 -> 1, 4 -> 2).
ARRIVED_UNCOUNTED = 3
ABANDONED_UNCOUNTED = 4


class LeaseLostError(Exception):
    """The worker's lease on the step is gone (expired and re-claimed, or the flow was cancelled)."""


@dataclass
class Effects:
    """What to do after the transaction committed."""

    new_work: bool = False
    stopped: Status | None = None
    # The final state of a flow this transaction completed (handed to local waiters).
    final_state: dict[str, Any] | None = None
    # Other flows of the tree whose waiters must wake (ancestors an interrupt surfaced on).
    woken: list[int] = field(default_factory=list)
    created: list[FlowInfo] = field(default_factory=list)
    # Seconds until delayed steps created here come due (sleeps, retries): the claimer sets timers.
    due_in: list[float] = field(default_factory=list)
    # Seconds until timers set here fall due (a timed interrupt or signal wait): see engine/timers.py.
    timers: list[float] = field(default_factory=list)
    # A successor inserted already leased to this worker, to run next without a claim.
    inline_step: StepRow | None = None
    # Cohorts whose branches were merged at their join (for telemetry).
    merges: int = 0
    # A cohort this commit completed, to be joined in a transaction of its own (see join_cohort).
    pending_join: int = 0
    # Cohorts this transaction joined (claimed with claim_cohort_join).
    joins: int = 0
    # Steps of the flow were cancelled: a child flow one of them was parked on must be cancelled too,
    # right after the commit (tree_writes.cancel_orphans).
    orphans: bool = False

    def absorb(self, later: Effects) -> None:
        """Add the effects of a later transaction of the same step (its deferred cohort join)."""
        self.new_work = self.new_work or later.new_work
        self.stopped = later.stopped or self.stopped
        self.final_state = later.final_state or self.final_state
        self.woken.extend(later.woken)
        self.created.extend(later.created)
        self.due_in.extend(later.due_in)
        self.timers.extend(later.timers)
        self.merges += later.merges
        self.joins += later.joins
        self.orphans = self.orphans or later.orphans


@dataclass
class StepCommit:
    """The transaction that records one claimed step's outcome."""

    tx: Tx
    info: FlowInfo
    step: StepRow
    lease_token: str
    # When set, a lone successor with no delay is inserted leased to this worker (see insert_leased_step).
    inline_lease_margin: float | None = None
    # The items the task appended (Flow.appends), recorded beside its changes; the ``merged`` state the
    # outcomes receive already holds them.
    appends: Mapping[str, list[Any]] = field(default_factory=dict)
    effects: Effects = field(default_factory=Effects)
    # The engine's size guard, for states stored as references (StoredState.after).
    whole_state_above: int = UNBOUNDED

    # --- building blocks ---

    async def _finish(
        self,
        status: Status,
        changes: Mapping[str, Any],
        *,
        error: str = "",
        interrupt_payload: Mapping[str, Any] | None = None,
        successor_id: int = 0,
        carry: Mapping[str, Any] | None = None,
        arrived: int = 0,
        cohort_size: int = 0,
        cohort_arrivals: int = 0,
        for_each_as: str = "",
        join_target: str = "",
        child_flow_id: int = 0,
        changes_text: str | None = None,
    ) -> None:
        count = await self.tx.execute(
            "finish_step",
            step_id=self.step.step_id,
            lease_token=self.lease_token,
            status=status.value,
            changes=dumps(changes) if changes_text is None else changes_text,
            appends=self._appends_text(),
            error=error,
            interrupt_payload=dumps(interrupt_payload or {}),
            successor_id=successor_id,
            carry=dumps(carry or {}),
            arrived=arrived,
            cohort_size=cohort_size,
            cohort_arrivals=cohort_arrivals,
            for_each_as=for_each_as,
            join_target=join_target,
            parked=1 if child_flow_id else 0,
            child_flow_id=child_flow_id,
        )
        if count != 1:
            raise LeaseLostError(f"step {self.step.step_id} is no longer leased by this worker")

    def _appends_text(self) -> str:
        return dumps(self.appends) if self.appends else "{}"

    def _next_state(self, output: Mapping[str, Any], changes_text: str) -> StoredState:
        """How the state after this step is stored as its lone successor's input (see engine/states)."""
        appended = len(self._appends_text()) if self.appends else 0
        return StoredState.after(self.step, output, len(changes_text) + appended, self.whole_state_above)

    async def _insert_step(
        self,
        node: str,
        state: StoredState,
        *,
        depth: int,
        predecessor_id: int,
        lineage_id: int,
        ordinal: int,
        delay: float = 0.0,
        carry: Mapping[str, Any] | None = None,
    ) -> int:
        info = self.info
        step_id = await self.tx.fetch_value(
            "insert_step",
            flow_id=info.flow_id,
            step_token=new_token(),
            step_depth=depth,
            task_name=node,
            task_url=info.graph.url_of(node),
            **state.columns(),
            changes="{}",
            carry=dumps(carry or {}),
            status=Status.PENDING.value,
            attempt=0,
            time_budget_ms=info.time_budget_ms,
            priority=info.priority,
            fairness_key=info.fairness_key,
            fairness_weight=info.fairness_weight,
            predecessor_id=predecessor_id,
            lineage_id=lineage_id,
            fan_out_ordinal=ordinal,
            delay=max(0.0, delay),
        )
        self.effects.new_work = True
        if delay > 0:
            self.effects.due_in.append(delay)
        return int(step_id)

    @staticmethod
    def is_single_statement(
        info: FlowInfo, step: StepRow, route: Route, sleep: float, inline_lease_margin: float | None
    ) -> bool:
        """True when ``commit_success`` of this route is exactly one statement: finish_and_continue,
        finish_and_arrive for a cohort member, or finish_last_step for the end of a root flow."""
        if route.is_fan_out:
            return False
        in_cohort = bool(step.lineage_id)
        if direct_fan_in(info.graph, step.task_name, route) is not None:
            return False
        if not route.branches:
            # finish_and_arrive (a member reaching END), or finish_last_step (a root flow ending).
            return in_cohort or not info.parent_flow_id
        if len(route.branches) != 1:
            return False
        if in_cohort and info.graph.is_fan_in(route.branches[0].node):
            return True  # finish_and_arrive
        return inline_lease_margin is not None and sleep <= 0

    async def _finish_and_continue(
        self,
        changes: Mapping[str, Any],
        carry: Mapping[str, Any],
        node: str,
        state: Mapping[str, Any],
        *,
        depth: int,
        lineage_id: int,
        ordinal: int,
        next_carry: Mapping[str, Any],
    ) -> None:
        """Complete this step and insert its lone successor leased to this worker, in one query.

        The successor's row carries its state as stored (often a reference to this step); the row handed
        back to run inline carries the state itself, which this worker already holds.
        """
        info = self.info
        assert self.inline_lease_margin is not None
        changes_text = dumps(changes)
        stored = self._next_state(state, changes_text)
        row = await self.tx.fetch_one(
            "finish_and_continue",
            step_id=self.step.step_id,
            changes=changes_text,
            appends=self._appends_text(),
            carry=dumps(carry),
            flow_id=info.flow_id,
            step_token=new_token(),
            step_depth=depth,
            task_name=node,
            task_url=info.graph.url_of(node),
            **stored.columns(),
            next_carry=dumps(next_carry),
            time_budget_ms=info.time_budget_ms,
            priority=info.priority,
            fairness_key=info.fairness_key,
            fairness_weight=info.fairness_weight,
            lineage_id=lineage_id,
            fan_out_ordinal=ordinal,
            lease_token=self.lease_token,
            lease_seconds=self.inline_lease_margin,
        )
        if row is None:
            raise LeaseLostError(f"step {self.step.step_id} is no longer leased by this worker")
        # Not parsed back from the row: this worker holds the state already.
        self.effects.inline_step = StepRow.of(row, dict(state))

    async def _stop_flow(
        self,
        status: Status,
        *,
        final_state: Mapping[str, Any] | None = None,
        error: str = "",
        interrupt_payload: Mapping[str, Any] | None = None,
    ) -> None:
        count = await self.tx.execute(
            "finish_flow",
            flow_id=self.info.flow_id,
            status=status.value,
            final_state=dumps(final_state or {}),
            error=error,
            interrupt_payload=dumps(interrupt_payload or {}),
            surfaced_step_id=self.step.step_id if status == Status.INTERRUPTED else 0,
        )
        if count != 1:
            return
        self.effects.stopped = status
        if status == Status.COMPLETED:
            self.effects.final_state = dict(final_state or {})
        info = self.info
        if not info.parent_flow_id:
            return
        # A child flow stopped: its parent learns in the same transaction, so no parent can stay parked
        # on a child that already ended.
        if status == Status.COMPLETED:
            await self._wake_parent(subgraph_result=final_state or {}, subgraph_error="")
        elif status == Status.FAILED:
            await self._wake_parent(subgraph_result=None, subgraph_error=error or "the child flow failed")
        elif status == Status.INTERRUPTED:
            await surface_interrupt(
                self.tx, info.parent_flow_id, interrupt_payload or {}, self.step.step_id, self.effects
            )

    async def _wake_parent(self, *, subgraph_result: Mapping[str, Any] | None, subgraph_error: str) -> None:
        count = await self.tx.execute(
            "wake_parent_step",
            step_id=self.info.parent_step_id,
            subgraph_result=None if subgraph_result is None else dumps(subgraph_result),
            subgraph_error=subgraph_error,
        )
        if count:
            self.effects.new_work = True

    async def _fail_flow(self, error: str) -> None:
        """Fail the flow and cancel everything else still pending in it."""
        cancelled = await self.tx.execute(
            "cancel_unfinished_steps", flow_id=self.info.flow_id, keep_step_id=self.step.step_id
        )
        self.effects.orphans = self.effects.orphans or cancelled > 0
        await self._stop_flow(Status.FAILED, error=error)

    # --- outcomes ---

    async def commit_retry(
        self, changes: Mapping[str, Any], merged: Mapping[str, Any], delay: float, error: str = ""
    ) -> None:
        """Schedule another attempt; this attempt's changes become part of the next attempt's input.

        Inside a cohort they also join the member's carry: a field only an early attempt wrote is still
        this branch's contribution at the fan-in, as the next attempt (and a plain chain) sees it.
        """
        whole = StoredState.whole(merged)
        count = await self.tx.execute(
            "retry_step",
            step_id=self.step.step_id,
            lease_token=self.lease_token,
            state=whole.text,
            snapshot_bytes=whole.snapshot_bytes,
            carry=dumps(self._carry(changes, merged)),
            error=error,
            delay=max(0.0, delay),
        )
        if count != 1:
            raise LeaseLostError(f"step {self.step.step_id} is no longer leased by this worker")
        self.effects.new_work = True
        if delay > 0:
            self.effects.due_in.append(delay)

    async def commit_interrupt(
        self, changes: Mapping[str, Any], payload: Mapping[str, Any], timeout: float | None = None
    ) -> None:
        """Park the step awaiting resume; the flow becomes interrupted unless it already is. With a
        ``timeout`` the step is resumed with ``{"timedOut": true}`` once it passed (engine/timers.py)."""
        await self._finish(
            Status.INTERRUPTED, changes, interrupt_payload=payload, carry=self._parked_carry(changes)
        )
        if timeout is not None:
            await self.tx.execute("set_step_wake_at", step_id=self.step.step_id, delay=timeout)
            self.effects.timers.append(timeout)
        await self._stop_flow(Status.INTERRUPTED, interrupt_payload=payload)

    async def commit_signal_wait(self, changes: Mapping[str, Any], name: str, timeout: float | None) -> None:
        """Park the step until signal ``name`` comes (or ``timeout`` seconds pass); the flow runs on.

        A signal sent before is taken at once, and the step runs again with its data. The root flow's row
        lock orders this against ``Engine.signal``, which takes it too: a signal committed before this
        transaction took the lock is found here, one sent after finds this step waiting. Locking the root
        after the step is the order every step commit locks in (tree_writes.py).
        """
        count = await self.tx.execute(
            "park_for_signal",
            step_id=self.step.step_id,
            lease_token=self.lease_token,
            name=name,
            timeout=timeout,
            changes=dumps(changes),
            appends=self._appends_text(),
            carry=dumps(self._parked_carry(changes)),
        )
        if count != 1:
            raise LeaseLostError(f"step {self.step.step_id} is no longer leased by this worker")
        root_flow_id = self.info.root_flow_id
        await self.tx.fetch_one("get_flow_for_update", flow_id=root_flow_id)
        kept = await self.tx.fetch_one("take_stored_signal", root_flow_id=root_flow_id, name=name)
        if kept is not None:
            await self.tx.execute(
                "wake_signal_waiter", step_id=self.step.step_id, resume_data=kept["resume_data"]
            )
            self.effects.new_work = True
        elif timeout is not None:
            self.effects.timers.append(timeout)

    async def commit_subgraph(
        self,
        changes: Mapping[str, Any],
        workflow_url: str,
        child_input: Mapping[str, Any],
        child_graph: Graph,
        trace_parent: str = "",
    ) -> None:
        """Park the step on a new child flow that starts with exactly ``child_input`` as its state.

        No lock on the root flow is needed against a concurrent cancel: the child joins the tree only
        together with the guarded finish of this step. A cancel that got to the step first leaves it
        cancelled, so ``_finish`` raises LeaseLostError and the child's rows roll back with it; a cancel
        that has to wait for this commit sees the child in its next pass (see ``tree_writes``).
        """
        info = self.info
        child = await insert_flow(
            self.tx,
            info.shard,
            child_graph,
            workflow_url,
            child_input,
            info.policy(),
            parent_flow_id=info.flow_id,
            parent_step_id=self.step.step_id,
            root_flow_id=info.root_flow_id,
            trace_parent=trace_parent,
        )
        self.effects.new_work = True
        self.effects.created.append(child)
        await self._finish(
            Status.CREATED, changes, carry=self._parked_carry(changes), child_flow_id=child.flow_id
        )

    async def commit_failure(self, changes: Mapping[str, Any], error: str) -> None:
        """The task failed and nothing routes the error: the flow fails, its other steps are cancelled."""
        await self._finish(Status.FAILED, changes, error=error)
        await self._fail_flow(error)

    async def commit_error_route(
        self, changes: Mapping[str, Any], merged: Mapping[str, Any], error: str, handler: str
    ) -> None:
        """The task failed and onError routes it: the step completes and the handler runs next.

        ``merged`` already holds the ``onErr`` field. Inside a cohort the failed branch's siblings are
        cancelled; they contribute nothing but count as arrived, and the handler continues the branch, so
        the cohort still joins (with this branch's changes and ``onErr``) when the handler's path arrives.
        """
        step = self.step
        lineage_id = step.lineage_id
        carry = self._carry(changes, merged)
        handler_carry = _compose(carry, {"onErr": merged.get("onErr")})
        if lineage_id:
            await self._cancel_cohort(lineage_id)
            await self._fold_arrivals(lineage_id)
            await self.tx.execute("settle_cancelled_siblings", spawn_id=lineage_id)
            if self.info.graph.is_fan_in(handler):
                await self._finish(
                    Status.COMPLETED, changes, error=error, carry=handler_carry, arrived=ARRIVED
                )
                await self._arrive(lineage_id, handler, abandoned=False)
                return
        successor_id = await self._insert_step(
            handler,
            StoredState.whole(merged),
            depth=step.step_depth + 1,
            predecessor_id=step.step_id,
            lineage_id=lineage_id,
            ordinal=step.fan_out_ordinal,
            carry=handler_carry if lineage_id else None,
        )
        await self._finish(Status.COMPLETED, changes, error=error, successor_id=successor_id, carry=carry)

    async def commit_success(
        self, changes: Mapping[str, Any], merged: Mapping[str, Any], route: Route, sleep: float
    ) -> None:
        """The task succeeded: start the successors the route names, arrive at a join, or complete."""
        step = self.step
        lineage_id = step.lineage_id
        carry = self._carry(changes, merged)
        depth = step.step_depth + 1
        graph = self.info.graph

        if route.is_fan_out:
            await self._spawn(changes, merged, route, sleep, carry)
            return

        fan_in = direct_fan_in(graph, step.task_name, route)
        if fan_in is not None:
            # An empty forEach: no cohort forms, and its fan-in runs at once on this step's merged state
            # (the reference's fireFanInDirect). The fan-in step continues this step's own chain.
            await self._finish_then(fan_in, changes, merged, carry, sleep)
            return

        if route.branches:
            node = route.branches[0].node
            if lineage_id and graph.is_fan_in(node):
                await self._finish_and_arrive(changes, carry, lineage_id, node, abandoned=False)
                return
            if self.inline_lease_margin is not None and sleep <= 0:
                await self._finish_and_continue(
                    changes,
                    carry,
                    node,
                    merged,
                    depth=depth,
                    lineage_id=lineage_id,
                    ordinal=step.fan_out_ordinal,
                    next_carry=carry if lineage_id else {},
                )
                return
            await self._finish_then(node, changes, merged, carry, sleep)
            return

        # END, or no transition matched.
        if lineage_id:
            await self._finish_and_arrive(changes, carry, lineage_id, END, abandoned=route.ends == 0)
            return
        if not self.info.parent_flow_id:
            await self._finish_last_step(changes, merged)
            return
        await self._finish(Status.COMPLETED, changes)
        await self._stop_flow(Status.COMPLETED, final_state=merged)

    async def _finish_then(
        self,
        node: str,
        changes: Mapping[str, Any],
        merged: Mapping[str, Any],
        carry: Mapping[str, Any],
        sleep: float,
    ) -> None:
        """Complete this step with one successor, ``node``, that continues its chain (and its cohort)."""
        step = self.step
        lineage_id = step.lineage_id
        changes_text = dumps(changes)
        successor_id = await self._insert_step(
            node,
            self._next_state(merged, changes_text),
            depth=step.step_depth + 1,
            predecessor_id=step.step_id,
            lineage_id=lineage_id,
            ordinal=step.fan_out_ordinal,
            delay=sleep,
            carry=carry if lineage_id else None,
        )
        await self._finish(
            Status.COMPLETED, changes, successor_id=successor_id, carry=carry, changes_text=changes_text
        )

    async def _finish_last_step(self, changes: Mapping[str, Any], merged: Mapping[str, Any]) -> None:
        """Complete a root flow's last step and the flow, in one query (see is_single_statement)."""
        row = await self.tx.fetch_one(
            "finish_last_step",
            step_id=self.step.step_id,
            lease_token=self.lease_token,
            version=self.step.version,
            changes=dumps(changes),
            appends=self._appends_text(),
            flow_id=self.info.flow_id,
            final_state=dumps(merged),
        )
        if row is None or not int(row["finished"]):
            raise LeaseLostError(f"step {self.step.step_id} is no longer leased by this worker")
        if int(row["stopped"]):
            self.effects.stopped = Status.COMPLETED
            self.effects.final_state = dict(merged)

    # --- fan-out and fan-in ---

    def _carry(self, changes: Mapping[str, Any], output: Mapping[str, Any]) -> dict[str, Any]:
        """The cohort member's contribution so far, this step's changes and appends included.

        Items appended to a field the graph merges with the ``append`` reducer are contributed as items
        (they extend what the branch contributed before), so that the join appends each item once; any
        other appended field contributes its whole value after the step, as a ``set`` would have.
        """
        if not self.step.lineage_id:
            return {}
        carry = _compose(self.step.carry, changes)
        reducers = self.info.graph.reducers
        for key, items in self.appends.items():
            if not items:
                continue
            earlier = carry.get(key)
            if reducers.get(key) is Reducer.APPEND:
                carry[key] = [*earlier, *items] if isinstance(earlier, list) else list(items)
            elif key in output:
                carry[key] = output[key]
        return carry

    def _parked_carry(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """The carry of a step that parks (an interrupt, a child flow): its changes only. The step runs
        again when it wakes, appending its items anew; counting this run's would count them twice."""
        if not self.step.lineage_id:
            return {}
        return _compose(self.step.carry, changes)

    async def _spawn(
        self,
        changes: Mapping[str, Any],
        merged: Mapping[str, Any],
        route: Route,
        sleep: float,
        carry: Mapping[str, Any],
    ) -> None:
        step = self.step
        step_id = step.step_id
        graph = self.info.graph
        # Branches straight into a fan-in node, and transitions straight into END, arrive at once: they
        # count towards the cohort and contribute no changes.
        immediate = route.ends
        join_target = ""
        runnable = []
        for ordinal, branch in enumerate(route.branches):
            if graph.is_fan_in(branch.node):
                immediate += 1
                join_target = branch.node
            else:
                runnable.append((ordinal, branch))
        size = len(route.branches) + route.ends
        for_each_as = (
            next((str(key) for key in route.branches[0].extra if route.for_each), "")
            if route.branches
            else ""
        )
        first_successor = 0
        if runnable:
            first_successor = await self._insert_branches(runnable, merged, sleep)
        await self._finish(
            Status.COMPLETED,
            changes,
            successor_id=first_successor,
            carry=carry,
            cohort_size=size,
            cohort_arrivals=immediate,
            for_each_as=for_each_as,
            join_target=join_target,
        )
        if immediate == size:
            spawn = await self.tx.fetch_one("get_step", step_id=step_id)
            assert spawn is not None
            await self._join(StepRow.of(spawn))

    async def _insert_branches(
        self, runnable: list[tuple[int, Branch]], merged: Mapping[str, Any], sleep: float
    ) -> int:
        """Insert the first step of every runnable branch in one statement; return the first one's id."""
        info = self.info
        branches = []
        for ordinal, branch in runnable:
            state = dict(merged)
            if branch.strip:
                state.pop(branch.strip, None)
            state.update(branch.extra)
            branches.append(
                {
                    "token": new_token(),
                    "task": branch.node,
                    "url": info.graph.url_of(branch.node),
                    # Text, not a nested object: the store copies it verbatim (SQLite's JSON functions
                    # would re-render numbers beyond 64 bits).
                    "state": dumps(state),
                    "ordinal": ordinal,
                }
            )
        step_id = self.step.step_id
        rows = await self.tx.fetch_all(
            "insert_branch_steps",
            branches=dumps(branches),
            flow_id=info.flow_id,
            step_depth=self.step.step_depth + 1,
            time_budget_ms=info.time_budget_ms,
            priority=info.priority,
            fairness_key=info.fairness_key,
            fairness_weight=info.fairness_weight,
            predecessor_id=step_id,
            lineage_id=step_id,
            delay=max(0.0, sleep),
        )
        self.effects.new_work = True
        if sleep > 0:
            self.effects.due_in.append(sleep)
        first = min(rows, key=lambda row: int(row["fan_out_ordinal"]))
        return int(first["step_id"])

    async def _finish_and_arrive(
        self,
        changes: Mapping[str, Any],
        carry: Mapping[str, Any],
        spawn_id: int,
        target: str,
        *,
        abandoned: bool,
    ) -> None:
        """Complete this cohort member and mark it arrived, in one query on its own row only.

        Nothing here touches the spawn row that every member of the cohort shares: the members of a wide
        fan-out commit side by side. Whether this arrival completed the cohort is asked after the commit
        (``Effects.pending_join``, see ``join_ready_cohorts``).
        """
        row = await self.tx.fetch_one(
            "finish_and_arrive",
            step_id=self.step.step_id,
            lease_token=self.lease_token,
            changes=dumps(changes),
            appends=self._appends_text(),
            error="",
            carry=dumps(carry),
            arrived=ABANDONED_UNCOUNTED if abandoned else ARRIVED_UNCOUNTED,
            target=target,
        )
        if row is None:
            raise LeaseLostError(f"step {self.step.step_id} is no longer leased by this worker")
        self.effects.pending_join = spawn_id

    async def join_cohort(self, spawn_id: int) -> None:
        """Join a complete cohort, unless another transaction already did (``claim_cohort_join``)."""
        if await self.tx.execute("claim_cohort_join", spawn_id=spawn_id) != 1:
            return
        await self._fold_arrivals(spawn_id)
        spawn = await self.tx.fetch_one("get_step", step_id=spawn_id)
        assert spawn is not None
        await self._join_claimed(StepRow.of(spawn))

    async def _fold_arrivals(self, spawn_id: int) -> None:
        """Count the members that arrived on their own rows into the spawn's counts."""
        await self.tx.execute("fold_cohort_arrivals", spawn_id=spawn_id)
        await self.tx.execute("mark_arrivals_counted", spawn_id=spawn_id)

    async def _arrive(self, spawn_id: int, target: str, *, abandoned: bool) -> None:
        """Count one member's arrival on the spawn; whether the cohort is complete is asked after commit."""
        await self.tx.execute(
            "count_arrival", spawn_id=spawn_id, target=target, abandoned=1 if abandoned else 0
        )
        self.effects.pending_join = spawn_id

    async def _join(self, spawn: StepRow) -> None:
        """Join a cohort that is complete at its creation (every branch went straight to the join)."""
        if await self.tx.execute("claim_cohort_join", spawn_id=spawn.step_id) == 1:
            await self._join_claimed(spawn)

    async def _join_claimed(self, spawn: StepRow) -> None:
        """Every member arrived (and this transaction claimed the join): merge the members' carries and
        continue after the cohort.

        A cohort that ended at END inside an enclosing cohort makes its spawn arrive there; whether that
        completes the enclosing cohort is asked after this transaction commits, so nesting is walked by
        a loop (``join_ready_cohorts``), never by recursion, and has no depth limit.
        """
        spawn_id = spawn.step_id
        self.effects.joins += 1
        if spawn.cohort_failures:
            target = spawn.join_target or "its fan-in"
            await self._fail_flow(
                f"a branch of the fan-out at {spawn.task_name!r} ended without reaching {target}"
            )
            return
        members = await self.tx.fetch_all("arrived_members", spawn_id=spawn_id)
        try:
            deltas = [json.loads(member["carry"]) for member in members]
        except ValueError:
            for member in members:
                failure = encoded_value_error(member["carry"])
                if failure is not None:
                    raise failure from None
            raise
        reducers = self.info.graph.reducers
        base = output_of(await load_state_in(self.tx, spawn))
        outer_lineage = spawn.lineage_id
        try:
            merged = merge_fan_in(base, deltas, reducers)
            outer_carry = merge_fan_in(spawn.carry, deltas, reducers) if outer_lineage else {}
        except ReducerError as error:
            await self._fail_flow(f"merging the branches of {spawn.task_name!r}: {error}")
            return
        as_ = spawn.for_each_as
        if as_:
            for key in (as_, f"{as_}Index", f"{as_}Count"):
                _restore(merged, base, key)
                _restore(outer_carry, spawn.carry, key)
        self.effects.merges += 1
        try:
            await self._continue_after_join(spawn, members, merged, outer_carry)
        except StateTooLargeError as error:
            # Raised before its statement ran (store/encoded.py): the transaction is intact.
            await self._fail_flow(f"merging the branches of {spawn.task_name!r}: {error}")

    async def _continue_after_join(
        self, spawn: StepRow, members: list[Row], merged: dict[str, Any], outer_carry: dict[str, Any]
    ) -> None:
        """Start the fan-in step on the merged state, or complete the flow, or arrive at the enclosing
        cohort (a cohort that ended at END inside another)."""
        spawn_id = spawn.step_id
        outer_lineage = spawn.lineage_id
        target = spawn.join_target or END
        if target != END:
            depth = max((int(m["step_depth"]) for m in members), default=spawn.step_depth) + 1
            predecessor = int(members[-1]["step_id"]) if members else spawn_id
            fan_in_id = await self._insert_step(
                target,
                StoredState.whole(merged),
                depth=depth,
                predecessor_id=predecessor,
                lineage_id=outer_lineage,
                ordinal=spawn.fan_out_ordinal,
                carry=outer_carry if outer_lineage else None,
            )
            await self.tx.execute("link_members_to_fan_in", spawn_id=spawn_id, fan_in_id=fan_in_id)
            await self.tx.execute("set_fan_in_step", spawn_id=spawn_id, fan_in_id=fan_in_id)
            return
        if not outer_lineage:
            await self._stop_flow(Status.COMPLETED, final_state=merged)
            return
        # The cohort ended at END inside an enclosing cohort: the spawn arrives there in its turn.
        await self.tx.execute("mark_arrived", step_id=spawn_id, carry=dumps(outer_carry))
        await self._arrive(outer_lineage, END, abandoned=False)

    async def _cancel_cohort(self, spawn_id: int) -> None:
        """Cancel every unfinished step descending from a spawn (its branches and their nested cohorts)."""
        flow_id = self.info.flow_id
        parents = {
            int(r["step_id"]): int(r["lineage_id"])
            for r in await self.tx.fetch_all("spawn_steps", flow_id=flow_id)
        }
        own = self.step.step_id
        for row in await self.tx.fetch_all("unfinished_steps", flow_id=flow_id):
            step_id = int(row["step_id"])
            if step_id == own:
                continue
            lineage = int(row["lineage_id"])
            while lineage and lineage != spawn_id:
                lineage = parents.get(lineage, 0)
            if lineage == spawn_id and await self.tx.execute("cancel_step", step_id=step_id):
                self.effects.orphans = True


async def surface_interrupt(
    tx: Tx, flow_id: int, payload: Mapping[str, Any], step_id: int, effects: Effects
) -> None:
    """Mark ``flow_id`` and its ancestors interrupted with ``payload`` of step ``step_id`` (an interrupt
    deep in a tree surfaces at the root). A loop, not recursion: trees may nest without limit."""
    text = dumps(payload)
    while flow_id:
        await tx.execute("mark_flow_interrupted", flow_id=flow_id, interrupt_payload=text, step_id=step_id)
        effects.woken.append(flow_id)
        parent = await tx.fetch_value("flow_parent", flow_id=flow_id)
        flow_id = int(parent or 0)


def direct_fan_in(graph: Graph, node: str, route: Route) -> str | None:
    """The fan-in to start at once when ``node``'s forEach found no element (and nothing else fired)."""
    if not route.for_each or route.branches or route.ends:
        return None
    return graph.fan_in_for(node)


def _compose(carry: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Compose a chain's changes: later writes replace earlier ones; deletions (None) are kept as markers."""
    composed = dict(carry)
    composed.update(changes)
    return composed


def _restore(target: dict[str, Any], original: Mapping[str, Any], key: str) -> None:
    """Undo a forEach bookkeeping key at the join: back to its pre-fan-out value, or absent."""
    if key in original:
        target[key] = original[key]
    else:
        target.pop(key, None)


async def join_ready_cohorts(
    store: Store, info: FlowInfo, step: StepRow, lease_token: str, spawn_id: int
) -> Effects:
    """After a commit that made members arrive at cohort ``spawn_id``: join it if it is now complete,
    then any enclosing cohort that join completed in turn, each in a transaction of its own.

    Runs in a fresh snapshot after the arrival committed, which is what makes the last of several
    members arriving at once see all the others (see the ``cohorts_ready`` query).
    """
    total = Effects()
    while spawn_id and await store.read("cohorts_ready", spawn_ids=json.dumps([spawn_id])):

        async def join(tx: Tx, spawn_id: int = spawn_id) -> Effects:
            commit = StepCommit(tx, info, step, lease_token)
            await commit.join_cohort(spawn_id)
            return commit.effects

        joined = await store.run(join)
        spawn_id = joined.pending_join
        total.absorb(joined)
    return total
