"""The runtime: what a started engine's parts share, behind public methods.

The engine builds one ``Runtime`` at startup and hands it to the scheduler, the step executor, the wedge
sweep and the operations. It holds the shards, the host (its optional hooks resolved once), logging,
telemetry, the flow-info cache, the local waiters, the per-shard doorbells, the cohort arrivals awaiting
a join, the reaper of purged flows and the retention passes that mark them. None of those parts sees
the ``Engine`` itself: configuration and lifecycle stay there, and the runtime is all they need to run
steps and operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from dwarf.engine.completion import Effects
from dwarf.engine.flowinfo import FlowInfo, FlowInfoCache, FlowReads, parse_graph
from dwarf.engine.history import load_outcome
from dwarf.engine.host import Host, HostHooks
from dwarf.engine.keys import ParsedKey, correlation_id, parse_key, tokens_match
from dwarf.engine.limits import LimitsCache
from dwarf.engine.reaper import Reaper
from dwarf.engine.retention import Retention
from dwarf.engine.schedule_hints import ScheduleHints
from dwarf.engine.signals import (
    DOORBELL,
    FLOW_STOPPED,
    SCHEDULES,
    FlowWaiters,
    Signal,
    encode_signal,
    sending_engine,
)
from dwarf.engine.states import UNBOUNDED
from dwarf.engine.telemetry import TaskRun, Telemetry
from dwarf.engine.tree_writes import cancel_orphans, run_tree_write
from dwarf.errors import EngineStateError, InvalidGraphError, NotFoundError
from dwarf.store.base import Store
from dwarf.store.rows import FlowRow
from dwarf.workflow.baggage import baggage_scope
from dwarf.workflow.flow import Flow
from dwarf.workflow.graph import Graph
from dwarf.workflow.records import FlowOutcome
from dwarf.workflow.status import Status

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = ["FROZEN_GRAPHS", "CohortArrivals", "Doorbells", "LocalTimers", "Runtime"]

FROZEN_GRAPHS = 256
"""How many frozen graphs (distinct graph texts) an engine keeps for reuse by later creates."""


class Doorbells:
    """One event per shard, set when the shard may have new due work; its claimer waits on it."""

    def __init__(self, shards: list[int]) -> None:
        self._events = {shard: asyncio.Event() for shard in shards}

    def event(self, shard: int) -> asyncio.Event:
        """The doorbell of ``shard``."""
        return self._events[shard]

    def ring(self, shard: int) -> None:
        """Wake the claimer of ``shard`` (an unknown shard is ignored: a peer may run more shards)."""
        event = self._events.get(shard)
        if event is not None:
            event.set()

    def ring_all(self) -> None:
        """Wake every claimer (shutdown, new tuning)."""
        for event in self._events.values():
            event.set()

    def ring_later(self, shard: int, delay: float) -> None:
        """Ring ``shard`` once ``delay`` seconds have passed (a local step comes due then)."""
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, delay) + 0.001, self.ring, shard)


class LocalTimers:
    """Per shard, the earliest timer this engine knows of (engine/timers.py): it rings the shard's
    doorbell when the timer falls due, and the claimer then fires the due timers (``take_due``).

    Only the earliest time is kept, with one scheduled call: however many flows wait, an engine holds a
    float and a handle per shard. Later timers are found again from the database after each firing.
    """

    def __init__(self, doorbells: Doorbells) -> None:
        self._doorbells = doorbells
        self._earliest: dict[int, float] = {}
        self._calls: dict[int, asyncio.TimerHandle] = {}

    def note(self, shard: int, delay: float) -> None:
        """A timer of ``shard`` falls due ``delay`` seconds from now (a known earlier one stays)."""
        delay = max(0.0, delay)
        at = time.monotonic() + delay
        earliest = self._earliest.get(shard)
        if earliest is not None and earliest <= at:
            return
        self._earliest[shard] = at
        call = self._calls.pop(shard, None)
        if call is not None:
            call.cancel()
        loop = asyncio.get_running_loop()
        self._calls[shard] = loop.call_later(delay + 0.001, self._doorbells.ring, shard)

    def take_due(self, shard: int) -> bool:
        """True (once) when the earliest known timer of ``shard`` is due: the caller fires timers now."""
        earliest = self._earliest.get(shard)
        if earliest is None or earliest > time.monotonic():
            return False
        del self._earliest[shard]
        call = self._calls.pop(shard, None)
        if call is not None:
            call.cancel()
        return True

    def close(self) -> None:
        """Cancel the scheduled rings (the engine stops)."""
        for call in self._calls.values():
            call.cancel()
        self._calls.clear()
        self._earliest.clear()


class CohortArrivals:
    """Per shard, the cohorts that members arrived at since the shard's claimer last looked.

    A member's arrival commits without knowing whether it was the last one; the claimer checks the noted
    cohorts in one query per round (see ``Scheduler``), which halves the statements of a wide fan-out.
    """

    def __init__(self, doorbells: Doorbells, shards: list[int]) -> None:
        self._doorbells = doorbells
        self._pending: dict[int, dict[int, FlowInfo]] = {shard: {} for shard in shards}

    def note(self, shard: int, info: FlowInfo, spawn_id: int) -> None:
        """A committed arrival at cohort ``spawn_id`` of ``info``'s flow: have the claimer check it."""
        self._pending[shard][spawn_id] = info
        self._doorbells.ring(shard)

    def take(self, shard: int) -> dict[int, FlowInfo]:
        """The noted cohorts of ``shard`` (spawn id to flow), forgetting them."""
        pending = self._pending[shard]
        self._pending[shard] = {}
        return pending

    def put_back(self, shard: int, pending: dict[int, FlowInfo]) -> None:
        """Note again cohorts whose check failed, to look at them next round."""
        for spawn_id, info in pending.items():
            self._pending[shard].setdefault(spawn_id, info)


class Runtime:
    """The shared parts of a started engine (see the module docstring).

    ``owner`` is the engine the runtime belongs to; it is used only to name the sender of a peer signal
    (``sending_engine``) and is never called.
    """

    def __init__(
        self,
        *,
        owner: Engine,
        stores: list[Store],
        host: Host | None,
        hooks: HostHooks,
        log: logging.Logger,
        telemetry: Telemetry,
        max_state_size: int = 0,
    ) -> None:
        self.owner = owner
        # The size guard (docs/codecs.md#the-size-guard) for states stored as references; the codec layer
        # (store/encoded.py) checks every value written whole.
        self.whole_state_above = max_state_size or UNBOUNDED
        self.stores = stores
        self.host = host
        self.hooks = hooks
        self.log = log
        self.telemetry = telemetry
        self.flow_cache = FlowInfoCache()
        self._flow_reads = FlowReads(self.flow_cache)
        # Frozen copies of the graphs flows start with, by their JSON text: parsing the text back at every
        # create cost a quarter of a short flow's CPU. Oldest first out.
        self._frozen_graphs: dict[str, Graph] = {}
        self.waiters = FlowWaiters()
        shards = [store.shard for store in stores]
        self.doorbells = Doorbells(shards)
        self.arrivals = CohortArrivals(self.doorbells, shards)
        # Set when a schedule changed (here, or at a peer that signalled it): the schedule ticker looks again.
        self.schedule_bell = asyncio.Event()
        self.schedule_hints = ScheduleHints(self.schedule_bell)
        self.timers = LocalTimers(self.doorbells)
        # What this engine knows of each shard's limits (docs/limits.md).
        self.limits = LimitsCache()
        self.running = True
        self._background: set[asyncio.Task[Any]] = set()
        self.reaper = Reaper(self)
        self.retention = Retention(self)

    def require_running(self) -> None:
        """EngineStateError once the engine began to stop (an operation in progress ends with it)."""
        if not self.running:
            raise EngineStateError("the engine is stopped")

    async def close(self) -> None:
        """Stop the background work and wake every waiter; the stores are closed by the engine."""
        self.running = False
        self.timers.close()
        for task in list(self._background):
            task.cancel()
        for task in list(self._background):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.waiters.wake_all()

    # --- shards and keys ---

    def store(self, shard: int, what: str = "flow") -> Store:
        """The store of ``shard``; NotFoundError (about ``what``) for a shard this engine does not have."""
        if not 1 <= shard <= len(self.stores):
            raise NotFoundError(f"{what} not found")
        return self.stores[shard - 1]

    def pick_shard(self) -> Store:
        """A uniformly random shard among those that answered their last health check
        (docs/design.md#shards-and-placement)."""
        healthy = [store for store in self.stores if store.healthy]
        return random.choice(healthy or self.stores)

    async def resolve(self, key: str, what: str = "flow") -> tuple[Store, FlowRow]:
        """The store and flow row a flow key (or, with ``what="thread"``, a thread key) names.

        NotFoundError for every way the key can be wrong. For a thread, the row is a flow of the thread:
        its ``thread_id``/``thread_token`` identify the thread (its first flow's id and token).
        """
        parsed = parse_key(key, what)
        store = self.store(parsed.shard, what)
        return store, await self.flow_by_key(store, parsed, what)

    @staticmethod
    async def flow_by_key(store: Store, parsed: ParsedKey, what: str) -> FlowRow:
        """The flow row a parsed key names on ``store``; NotFoundError unless its token matches."""
        # The token is part of the lookup: a wrong token on an existing id costs what an unknown id costs
        # (one query, no row). The constant-time check after it is a second line of defence.
        rows = await store.read("get_flow_by_key", flow_id=parsed.id, flow_token=parsed.token)
        if not rows or not tokens_match(parsed.token, rows[0]["flow_token"]):
            raise NotFoundError(f"{what} not found")
        return FlowRow.of(rows[0])

    async def flow_info(self, store: Store, flow_id: int) -> FlowInfo | None:
        """What steps of the flow need to know of it (cached); None when the flow is gone."""
        info = self.flow_cache.get(store.shard, flow_id)
        if info is not None:
            return info
        return await self._flow_reads.load(store, flow_id)

    # --- the host ---

    async def load_graph(self, workflow_url: str, baggage: Any) -> Graph:
        """The validated graph at ``workflow_url``, frozen as a copy the host can no longer change."""
        if self.host is None:
            raise EngineStateError("this engine has no host to load graphs from")
        with baggage_scope(baggage):
            graph = await self.host.load_graph(workflow_url)
        if graph is None:
            raise NotFoundError(f"workflow {workflow_url!r} not found")
        if not isinstance(graph, Graph):
            raise InvalidGraphError(
                f"the host returned a {type(graph).__name__} for {workflow_url!r}, not a Graph"
            )
        text = graph.to_json()
        frozen = self._frozen_graphs.get(text)
        if frozen is not None:
            # The same text was validated and checked before: the same graph. Flows share the copy,
            # which nothing in the engine changes.
            return frozen
        graph.validate()
        self._check_served(workflow_url, graph)
        frozen = parse_graph(text)
        if len(self._frozen_graphs) >= FROZEN_GRAPHS:
            del self._frozen_graphs[next(iter(self._frozen_graphs))]
        self._frozen_graphs[text] = frozen
        return frozen

    def _check_served(self, workflow_url: str, graph: Graph) -> None:
        """InvalidGraphError naming every node whose task URL the host says it does not serve."""
        serves = self.hooks.serves
        if serves is None:
            return
        unserved = [node for node in graph.nodes if serves(node.url) is False]
        if unserved:
            listed = ", ".join(f"{node.name!r} ({node.url!r})" for node in unserved)
            raise InvalidGraphError(
                f"workflow {workflow_url!r}: the host serves no task for node(s) {listed}; register them "
                "on the host (@host.task / add_task) or fix the URLs"
            )

    async def execute_task(self, task_url: str, flow: Flow, run: TaskRun | None = None) -> None:
        """Have the host run a task on the flow carrier (inside the task's span when tracing)."""
        if self.host is None:
            raise EngineStateError("this engine has no host to run tasks on")
        if run is None:
            await self.host.execute_task(task_url, flow)
            return
        with run.running():
            await self.host.execute_task(task_url, flow)

    # --- after a commit ---

    async def after_commit(self, info: FlowInfo, effects: Effects) -> None:
        """Act on what a committed transaction of ``info``'s flow changed: wake claimers, waiters, peers."""
        self.telemetry.fan_in_merged(effects.merges)
        for child in effects.created:
            self.flow_cache.put(child)
        if effects.new_work:
            self.ring(info.shard)
        for delay in effects.due_in:
            self.doorbells.ring_later(info.shard, delay)
        for delay in effects.timers:
            self.timers.note(info.shard, delay)
        for flow_id in effects.woken:
            self.wake(info.shard, flow_id)
        if effects.stopped is not None:
            await self.flow_stopped(info, effects.stopped, effects.final_state)
        if effects.orphans:
            self.spawn(self.cancel_orphans(info.shard, info.root_flow_id))

    async def cancel_orphans(self, shard: int, root_flow_id: int) -> int:
        """Cancel the child flows of a tree whose calling step ended without them (see
        ``tree_writes.cancel_orphans``); return how many. A failure is logged, not raised: the wedge
        sweep finds the orphans it left."""
        store = self.store(shard)
        flow = correlation_id(shard, root_flow_id)
        try:
            count = await run_tree_write(
                store, lambda tx: cancel_orphans(tx, root_flow_id), "cancelling orphaned child flows"
            )
        except Exception as error:
            what = "flow %s: its orphaned child flows are not cancelled yet: %s"
            self.log.warning(what, flow, error, extra={"flow": flow})
            return 0
        if count:
            self.log.debug("flow %s: %d orphaned child flows cancelled", flow, count, extra={"flow": flow})
            if self.limits.active(shard):
                self.ring(shard)  # their running steps gave their slots back (docs/limits.md)
        return count

    def ring(self, shard: int) -> None:
        """New due work on ``shard``: wake its claimer here and tell the peers."""
        self.doorbells.ring(shard)
        self.signal(Signal(DOORBELL, shard))

    def limits_changed(self, shard: int) -> None:
        """The limits of ``shard`` changed here: wake its claimer, and have the peers read them again."""
        self.doorbells.ring(shard)
        self.signal(Signal(DOORBELL, shard, limits=True))

    def schedules_changed(self) -> None:
        """A schedule was created, changed, paused, resumed or deleted: wake the ticker here and at the
        peers (the schedules live on shard 1)."""
        self.schedule_bell.set()
        self.signal(Signal(SCHEDULES, 1))

    def wake(self, shard: int, flow_id: int, outcome: FlowOutcome | None = None) -> None:
        """A flow stopped: return the waits on it, here (with ``outcome`` when known) and at the peers."""
        self.waiters.wake(shard, flow_id, outcome)
        self.signal(Signal(FLOW_STOPPED, shard, flow_id))

    def signal(self, signal: Signal) -> None:
        """Hand a signal to the host for the other replicas (in the background; a no-op without a relay)."""
        send = self.hooks.signal_peers
        if send is None:
            return
        self.telemetry.signal_sent(signal.op)
        self.spawn(self._send_signal(send, signal))

    async def _send_signal(self, send: Any, signal: Signal) -> None:
        token = sending_engine().set(self.owner)
        try:
            await send(signal.op, encode_signal(signal))
        except Exception as error:
            flow = correlation_id(signal.shard, signal.flow_id) if signal.flow_id else ""
            self.log.warning("signal_peers failed: %s", error, extra={"flow": flow})
        finally:
            sending_engine().reset(token)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run ``coroutine`` in the background until it ends or the engine stops."""
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def flow_stopped(
        self, info: FlowInfo, status: Status, final_state: dict[str, Any] | None = None
    ) -> None:
        """A flow stopped: record it, run the host's hook, wake its waiters and, when the flow is to be
        purged (its retention, or delete_on_completion's grace window), the retention pass.

        ``final_state`` is the state a completion committed, when the caller has it: local waiters then
        return without reading the flow back (one round trip less for every create-and-wait).
        """
        self.telemetry.flow_stopped(info, status)
        self.log.debug("flow %s %s", info.correlation_id, status.value, extra={"flow": info.correlation_id})
        retained = info.retained_for(status)
        if retained is not None and not info.parent_flow_id:
            self.retention.note(info.shard, retained)
        notify = self.hooks.flow_stopped
        outcome: FlowOutcome | None = None
        if info.notify_on_stop and notify is not None:
            try:
                outcome = await load_outcome(self.store(info.shard), info.flow_id)
            except NotFoundError:  # deleted or purged meanwhile (a retention of 0)
                outcome = FlowOutcome(status=status, state={})
        completed = None
        if status == Status.COMPLETED and final_state is not None:
            completed = FlowOutcome(status=status, state=final_state)
        self.wake(info.shard, info.flow_id, completed)
        if outcome is not None and notify is not None:
            try:
                with baggage_scope(info.baggage):
                    await notify(info.key, outcome)
            except Exception as error:
                self.log.warning(
                    "flow_stopped hook failed for flow %s: %s",
                    info.correlation_id,
                    error,
                    extra={"flow": info.correlation_id},
                )
