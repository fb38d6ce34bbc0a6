"""The operations that start or steer flows: create, resume, cancel, continue a thread, fork, delete.

Each takes the engine's ``Runtime`` and checks its input before it touches the database, so a refused
call changes nothing. Resume, cancel and delete act on a whole tree and only through its root flow
(``resolve_root``).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dwarf.engine.completion import Effects, surface_interrupt
from dwarf.engine.creation import FlowPolicy, KeyHeld, insert_flow
from dwarf.engine.flowinfo import FlowInfo, dumps, policy_of_row
from dwarf.engine.fork import fork_chain
from dwarf.engine.keys import correlation_id, format_key, parse_key, tokens_match
from dwarf.engine.runtime import Runtime
from dwarf.engine.tree_writes import cancel_tree, delete_tree, run_tree_write
from dwarf.errors import BadRequestError, ConflictError, FlowExistsError, NotFoundError, StoreError
from dwarf.store.base import Row, SingleStatementTx, Store, Tx
from dwarf.store.rows import FlowRow, parse_json
from dwarf.workflow.durations import to_seconds
from dwarf.workflow.flow import check_signal_name
from dwarf.workflow.graph import Graph
from dwarf.workflow.jsonvalue import check_json, check_text, checked_json_object
from dwarf.workflow.records import MAX_KEYED_URL_BYTES, FlowOptions, IdempotencyPolicy, retention_seconds
from dwarf.workflow.reducers import ReducerError, apply_with_reducers
from dwarf.workflow.status import TERMINAL_STATUSES, Status

__all__ = [
    "CreateDefaults",
    "cancel_flow",
    "continue_thread",
    "create_flow",
    "delete_flow",
    "fork_flow",
    "idempotency_shard",
    "resolve_root",
    "resume_flow",
    "resume_parked_step",
    "signal_flow",
]


@dataclass(frozen=True, slots=True)
class CreateDefaults:
    """The engine-wide defaults a create freezes onto a flow that does not set its own."""

    priority: int
    time_budget: float
    # Seconds a root flow is kept once it ended (None: for ever), and the grace window of a flow created
    # with delete_on_completion.
    retain_for: float | None = None
    deletion_grace: float = 0.0

    def retention(self, options: FlowOptions) -> tuple[float | None, float | None]:
        """(retain_for, retain_completed_for) of a flow created with ``options``, in seconds; None keeps
        the flow for ever (docs/operations.md#retention)."""
        chosen = retention_seconds(options.retain_for)
        retain = self.retain_for if chosen is None else chosen
        if retain == math.inf:
            retain = None
        return retain, (self.deletion_grace if options.delete_on_completion else retain)


async def resolve_root(rt: Runtime, flow_key: str, verb: str) -> tuple[Store, int]:
    """The store and id of the root flow ``flow_key`` names; BadRequestError for a child flow (the
    operation ``verb`` acts on a whole tree, which only its root stands for)."""
    store, row = await rt.resolve(flow_key)
    if row.parent_flow_id:
        raise BadRequestError(f"{verb} the root flow, not a child flow")
    return store, row.flow_id


async def create_flow(
    rt: Runtime,
    workflow_url: str,
    initial_state: Mapping[str, Any] | None,
    options: FlowOptions | None,
    defaults: CreateDefaults,
) -> str:
    """Start a flow of the graph at ``workflow_url``; see ``Engine.create``."""
    if not isinstance(workflow_url, str) or not workflow_url:
        raise BadRequestError("the workflow URL must be a non-empty string")
    check_text(workflow_url, "the workflow URL")
    options = options if options is not None else FlowOptions()
    if not isinstance(options, FlowOptions):
        raise BadRequestError("options must be a FlowOptions")
    options.check()
    if options.idempotency_key and len(workflow_url.encode()) > MAX_KEYED_URL_BYTES:
        raise BadRequestError(
            f"with an idempotency key, the workflow URL must be at most {MAX_KEYED_URL_BYTES} bytes"
        )
    state = checked_json_object(initial_state, "initial state")
    check_json(options.baggage, "baggage")
    thread: tuple[Store, FlowRow] | None = None
    if options.thread_key:
        thread = await rt.resolve(options.thread_key, "thread")
    graph = await rt.load_graph(workflow_url, options.baggage)
    # Measured after the graph loaded (a host may take a while): an aware datetime is as near as can be.
    deadline_in = options.deadline_in()
    idempotency_key = options.idempotency_key
    if idempotency_key:
        # Every create with this key must meet the others in one database (its unique index decides):
        # never another shard, not even while this one is down (docs/design.md#shards-and-placement).
        store = rt.stores[idempotency_shard(workflow_url, idempotency_key, len(rt.stores)) - 1]
    else:
        store = thread[0] if thread is not None else rt.pick_shard()
    time_budget = to_seconds(options.time_budget) if options.time_budget is not None else 0.0
    thread_row = thread[1] if thread is not None else None
    retain_for, retain_completed_for = defaults.retention(options)
    policy = FlowPolicy(
        priority=options.priority or defaults.priority,
        fairness_key=options.fairness_key,
        fairness_weight=float(options.fairness_weight or 1.0),
        time_budget_ms=max(1, round((time_budget if time_budget > 0 else defaults.time_budget) * 1000)),
        notify_on_stop=options.notify_on_stop,
        delete_on_completion=options.delete_on_completion,
        baggage=options.baggage,
        retain_for=retain_for,
        retain_completed_for=retain_completed_for,
    )
    insert = functools.partial(
        _insert_flow, rt, store, graph, workflow_url, state, policy, deadline_in=deadline_in
    )
    try:
        if idempotency_key:
            policy_name = options.idempotency_policy
            key = await _create_keyed(rt, store, workflow_url, insert, idempotency_key, policy_name)
        else:
            info = await insert(
                thread_id=thread_row.thread_id if thread_row else 0,
                thread_token=thread_row.thread_token if thread_row else "",
            )
            rt.ring(store.shard)
            key = info.key
    except StoreError as error:
        # The shard did not take the flow: place the next ones elsewhere until it answers again. This one
        # is not retried on another shard, because a lost answer may hide a committed insert. A value the
        # database refused says nothing about the shard's health.
        if error.transient:
            store.healthy = False
        raise
    if deadline_in is not None:
        # This engine's claimer fires it on time; the others find it on their polls.
        rt.timers.note(store.shard, deadline_in)
    return key


def idempotency_shard(workflow_url: str, idempotency_key: str, num_shards: int) -> int:
    """The shard (numbered from 1) of every flow created with ``idempotency_key`` for ``workflow_url``.

    A hash that every process and every version computes alike (SHA-256, not Python's salted ``hash``)
    of both texts, which cannot contain the NUL that separates them.
    """
    if num_shards == 1:
        return 1
    digest = hashlib.sha256(f"{workflow_url}\0{idempotency_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards + 1


KEYED_CREATE_ATTEMPTS = 8
"""How often a keyed create goes round (insert, read the holder, release it) before it gives up. Each
round that fails lost a race to another create, a delete or a purge of that key; more than a couple in a
row would take a storm of them."""


async def _create_keyed(
    rt: Runtime,
    store: Store,
    workflow_url: str,
    insert: Callable[..., Awaitable[FlowInfo]],
    idempotency_key: str,
    on_conflict: IdempotencyPolicy,
) -> str:
    """Create a flow holding ``idempotency_key``, or act on the flow that holds it, as the policy says
    (docs/flows.md#idempotent-create). The unique index decides between racing creates, on any number of
    engines: the insert does nothing when the key is held, and only then is the holder read. A holder
    that may give the key up (a purged one; an ended one under "start_new_if_ended") does so in the
    transaction that inserts its successor, so the key is never free for a moment, nor held twice.
    ``insert`` is ``_insert_flow`` bound to the flow's graph, state and policy."""
    when_ended = 1 if on_conflict == "start_new_if_ended" else 0
    insert = functools.partial(insert, idempotency_key=idempotency_key)
    for _ in range(KEYED_CREATE_ATTEMPTS):
        try:
            info = await insert()
        except KeyHeld:
            pass
        else:
            rt.ring(store.shard)
            return info.key
        rows = await store.read(
            "flow_holding_idempotency_key", workflow_url=workflow_url, idempotency_key=idempotency_key
        )
        if not rows:
            continue  # deleted (or given up to another create) since the insert: try again
        holder = rows[0]
        holder_id = int(holder["flow_id"])
        ended = Status(holder["status"]) in TERMINAL_STATUSES
        if int(holder["purge_marked"]) or (when_ended and ended):
            try:
                info = await insert(release=(holder_id, when_ended))
            except KeyHeld:
                continue  # another create released it first and holds it now
            rt.ring(store.shard)
            return info.key
        if on_conflict == "fail":
            holder_name = correlation_id(store.shard, holder_id)
            raise FlowExistsError(
                f"flow {holder_name} of this workflow URL holds the idempotency key",
                format_key(store.shard, holder_id, holder["flow_token"]),
            )
        return format_key(store.shard, holder_id, holder["flow_token"])
    raise ConflictError("the idempotency key changed hands too often during this create; try again")


async def _insert_flow(
    rt: Runtime,
    store: Store,
    graph: Graph,
    workflow_url: str,
    state: Mapping[str, Any],
    policy: FlowPolicy,
    *,
    thread_id: int = 0,
    thread_token: str = "",
    idempotency_key: str = "",
    release: tuple[int, int] | None = None,
    deadline_in: float | None = None,
) -> FlowInfo:
    """Insert a root flow and its entry step, with its telemetry; see _insert_keyed for ``idempotency_key``
    and ``release``, insert_flow for ``deadline_in``."""
    span, trace_parent = rt.telemetry.open_flow_span(workflow_url)
    if idempotency_key:
        info = await _insert_keyed(
            store,
            graph,
            workflow_url,
            state,
            policy,
            trace_parent,
            span,
            idempotency_key,
            release,
            deadline_in,
        )
    else:
        # Creating a root flow is one statement (see insert_flow): no surrounding transaction needed.
        info = await insert_flow(
            SingleStatementTx(store),
            store.shard,
            graph,
            workflow_url,
            state,
            policy,
            thread_id=thread_id,
            thread_token=thread_token,
            trace_parent=trace_parent,
            deadline_in=deadline_in,
        )
    rt.flow_cache.put(info)
    rt.telemetry.flow_created(info, span)
    rt.log.debug(
        "flow %s created (%s)", info.correlation_id, workflow_url, extra={"flow": info.correlation_id}
    )
    return info


async def _insert_keyed(
    store: Store,
    graph: Graph,
    workflow_url: str,
    state: Mapping[str, Any],
    policy: FlowPolicy,
    trace_parent: str,
    span: Any,
    idempotency_key: str,
    release: tuple[int, int] | None,
    deadline_in: float | None,
) -> FlowInfo:
    """Insert a root flow holding ``idempotency_key``; KeyHeld, with nothing written, when another flow
    holds it. ``release`` = (flow id, when ended) first takes the key from that flow in the same
    transaction (see release_idempotency_key; KeyHeld if it no longer holds it or may not give it up)."""

    async def insert(tx: Tx) -> FlowInfo:
        return await insert_flow(
            tx,
            store.shard,
            graph,
            workflow_url,
            state,
            policy,
            trace_parent=trace_parent,
            idempotency_key=idempotency_key,
            deadline_in=deadline_in,
        )

    async def release_and_insert(tx: Tx) -> FlowInfo:
        assert release is not None
        released = await tx.execute(
            "release_idempotency_key",
            flow_id=release[0],
            idempotency_key=idempotency_key,
            when_ended=release[1],
        )
        if not released:
            raise KeyHeld(idempotency_key)
        return await insert(tx)

    try:
        if release is None:
            return await insert(SingleStatementTx(store))  # one statement, as an unkeyed create
        return await store.run(release_and_insert)
    except KeyHeld:
        if span is not None:
            # No flow of its own: the create answers with the holder's key (docs/observability.md#traces).
            span.set_attribute("dwarf.flow.existed", True)
            span.end()
        raise


async def resume_flow(rt: Runtime, flow_key: str, resume_data: Mapping[str, Any] | None) -> None:
    """Re-run the interrupted step of an interrupted root flow; see ``Engine.resume``."""
    data = checked_json_object(resume_data, "resume data")
    store, flow_id = await resolve_root(rt, flow_key, "resume")
    effects = Effects()

    async def work(tx: Tx) -> None:
        locked = await tx.fetch_one("get_flow_for_update", flow_id=flow_id)
        if locked is None:
            raise NotFoundError("flow not found")
        if locked["status"] != Status.INTERRUPTED.value:
            raise ConflictError(f"the flow is {locked['status']}, not interrupted")
        parked = await tx.fetch_all("tree_interrupted_steps", root_flow_id=flow_id)
        if not parked:
            raise ConflictError("the flow has no interrupted step")
        # Resume the interrupt the caller was shown (its payload is the flow's), else the oldest.
        surfaced = int(locked["surfaced_step_id"])
        chosen = next((p for p in parked if int(p["step_id"]) == surfaced), parked[0])
        await resume_parked_step(tx, flow_id, parked, chosen, data, effects)

    await store.run(work)
    resumed = correlation_id(store.shard, flow_id)
    rt.log.debug("flow %s resumed", resumed, extra={"flow": resumed})
    rt.ring(store.shard)
    for woken in effects.woken:
        rt.wake(store.shard, woken)


async def resume_parked_step(
    tx: Tx, root_flow_id: int, parked: list[Row], chosen: Row, data: Mapping[str, Any], effects: Effects
) -> None:
    """Resume ``chosen``, one of the tree's ``parked`` interrupts (tree_interrupted_steps, read under the
    root's lock), with ``data``: the tree's flows run again, and another parked interrupt, if any, is
    surfaced at once (one interrupt at a time). Shared by resume and an interrupt's timeout."""
    await tx.execute("resume_step", step_id=chosen["step_id"], resume_data=dumps(data))
    await tx.execute("resume_interrupted_flows_of_tree", root_flow_id=root_flow_id)
    rest = [p for p in parked if p is not chosen]
    if rest:
        following = rest[0]
        await surface_interrupt(
            tx,
            int(following["flow_id"]),
            parse_json(following["interrupt_payload"]),
            int(following["step_id"]),
            effects,
        )


async def signal_flow(rt: Runtime, flow_key: str, name: str, data: Mapping[str, Any] | None) -> None:
    """Deliver signal ``name`` to a running or interrupted tree; see ``Engine.signal``."""
    check_signal_name(name)
    payload = dumps(checked_json_object(data, "signal data"))
    store, flow_id = await resolve_root(rt, flow_key, "signal")

    async def work(tx: Tx) -> bool:
        # The root's lock orders this against a step parking for the signal (commit_signal_wait).
        locked = await tx.fetch_one("get_flow_for_update", flow_id=flow_id)
        if locked is None:
            raise NotFoundError("flow not found")
        if Status(locked["status"]) in TERMINAL_STATUSES:
            raise ConflictError(f"the flow is {locked['status']}: it takes no more signals")
        waiter = await tx.fetch_one("tree_signal_waiter", root_flow_id=flow_id, name=name)
        # Under the root's lock no timeout can end the wait in between; the count is a second guard.
        if waiter is not None:
            woken = await tx.execute("wake_signal_waiter", step_id=waiter["step_id"], resume_data=payload)
            if woken:
                return True
        await tx.execute("store_signal", root_flow_id=flow_id, name=name, resume_data=payload)
        return False

    woke = await store.run(work)
    flow = correlation_id(store.shard, flow_id)
    what = "woke a step" if woke else "kept for a later wait"
    rt.log.debug("flow %s: signal %r %s", flow, name, what, extra={"flow": flow})
    if woke:
        rt.ring(store.shard)


async def cancel_flow(rt: Runtime, flow_key: str, reason: str) -> None:
    """Cancel a running or interrupted root flow and its whole tree; see ``Engine.cancel``."""
    if not isinstance(reason, str):
        raise BadRequestError("the reason must be a string")
    check_text(reason, "the reason")
    store, flow_id = await resolve_root(rt, flow_key, "cancel")
    # Atomic over the whole tree even while its steps commit (a child flow being created, say): see
    # tree_writes for the lock order and why the write is retried.
    await run_tree_write(store, lambda tx: cancel_tree(tx, flow_id, reason), "cancel")
    if rt.limits.active(store.shard):
        rt.ring(store.shard)  # cancelled running steps gave their slots back (docs/limits.md)
    info = await rt.flow_info(store, flow_id)
    if info is not None:
        await rt.flow_stopped(info, Status.CANCELLED)


async def delete_flow(rt: Runtime, flow_key: str) -> None:
    """Delete a stopped root flow and its whole tree; see ``Engine.delete``."""
    store, flow_id = await resolve_root(rt, flow_key, "delete")
    await run_tree_write(store, lambda tx: delete_tree(tx, flow_id), "delete")
    rt.flow_cache.discard(store.shard, flow_id)


async def continue_thread(rt: Runtime, thread_key: str, additional_state: Mapping[str, Any] | None) -> str:
    """Start the next flow of a thread from its latest completed flow; see ``Engine.continue_thread``."""
    extra = checked_json_object(additional_state, "additional state")
    store, first = await rt.resolve(thread_key, "thread")
    rows = await store.read("latest_completed_in_thread", thread_id=first.thread_id)
    if not rows:
        raise NotFoundError("the thread has no completed flow")
    latest = FlowRow.of(rows[0])
    graph = await rt.load_graph(latest.workflow_url, latest.baggage)
    try:
        state = apply_with_reducers(latest.final_state, extra, graph.reducers)
    except ReducerError as error:
        raise BadRequestError(str(error)) from error
    info = await _insert_flow(
        rt,
        store,
        graph,
        latest.workflow_url,
        state,
        policy_of_row(latest),
        thread_id=latest.thread_id,
        thread_token=latest.thread_token,
    )
    rt.ring(store.shard)
    return info.key


async def fork_flow(rt: Runtime, step_key: str, state_overrides: Mapping[str, Any] | None) -> str:
    """Replay a stopped flow up to a step and re-run that step with overrides; see ``Engine.fork``."""
    overrides = checked_json_object(state_overrides, "state overrides")
    parsed = parse_key(step_key, "step")
    store = rt.store(parsed.shard, "step")
    # The token is part of the lookup (see Runtime.flow_by_key).
    rows = await store.read("get_step_with_flow_by_key", step_id=parsed.id, step_token=parsed.token)
    if not rows or int(rows[0]["purge_marked"]) or not tokens_match(parsed.token, rows[0]["step_token"]):
        raise NotFoundError("step not found")
    target = rows[0]
    chain: list[Row] = []
    flow_id = int(target["flow_id"])
    while flow_id:
        found = await store.read("get_flow", flow_id=flow_id)
        if not found:
            raise NotFoundError("step not found")
        chain.append(found[0])
        flow_id = int(found[0]["parent_flow_id"])
    chain.reverse()
    root = FlowRow.of(chain[0])
    if Status(root.status) not in TERMINAL_STATUSES:
        raise ConflictError(f"only a stopped flow can be forked; this one is {root.status}")
    base = policy_of_row(root)
    # Not the stop flags (notify, delete_on_completion and its grace window); the retention, yes.
    policy = FlowPolicy(
        priority=base.priority,
        fairness_key=base.fairness_key,
        fairness_weight=base.fairness_weight,
        time_budget_ms=base.time_budget_ms,
        baggage=base.baggage,
        retain_for=base.retain_for,
        retain_completed_for=base.retain_for,
    )
    opened = rt.telemetry.open_fork_spans([flow["workflow_url"] for flow in chain])
    trace_parents = [trace_parent for _, trace_parent in opened]
    created = await store.run(
        lambda tx: fork_chain(tx, store.shard, chain, target, overrides, policy, trace_parents)
    )
    for info, (span, _) in zip(created, opened, strict=True):
        rt.flow_cache.put(info)
        rt.telemetry.flow_created(info, span)
    rt.ring(store.shard)
    return created[0].key
