"""The schedule ticker: an engine with workers starts the flows of the schedules' due ticks.

One task per engine. It asks shard 1 which unpaused schedules tick within the poll interval (one indexed
query), then sleeps until the earliest of those ticks, until a schedule changes here or at a peer
(``Runtime.schedule_bell``), or until the next tick the claimers saw (``Runtime.schedule_hints``). While
the claimers poll, their reads stand for the ticker's own once per ``SchedulerTuning.schedule_poll``, so an
engine without schedules adds no statement to its idle poll.
For a due schedule it

1. claims the tick (``claim_schedule``: a lease on the database clock that only this ticker may renew),
   so that of the engines waking at the same tick one does the work;
2. creates the tick's flow with the idempotency key ``schedule:NAME@TIME`` (policy return_existing);
3. moves the schedule on to its next tick (``advance_schedule``, a compare-and-set on the tick and claim).

An engine that dies between 2 and 3 leaves its claim to lapse; the engine that takes the tick over creates
the same key and is handed the same flow. So each tick has exactly one flow, whichever engine dies where
(docs/schedules.md#exactly-one-flow-per-tick). Nothing here runs per step or per claim of a step.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from dwarf.engine.keys import new_token, redact_keys
from dwarf.engine.operations import CreateDefaults, create_flow
from dwarf.engine.runtime import Runtime
from dwarf.engine.scheduler import RELEASE_TIMEOUT, failure_level, reraise_swallowed_cancel
from dwarf.engine.schedules import schedule_store
from dwarf.engine.tuning import SchedulerTuning
from dwarf.errors import DwarfError, EngineStateError, StoreError
from dwarf.store.base import Row, Store
from dwarf.workflow.jsonvalue import storable_text
from dwarf.workflow.schedules import (
    ScheduleTiming,
    check_catch_up,
    options_from_document,
    plan_ticks,
    tick_key,
    tick_text,
)

__all__ = ["DUE_BATCH", "ScheduleTicker"]

DUE_BATCH = 64
"""Schedules one poll reads at most (the earliest due); the rest come with the next poll, at once."""

_WAKE_MARGIN = 0.002
"""Seconds slept past a tick: the database's clock and the event loop's may differ by a little, and a
ticker that wakes a hair early only polls again."""


class ScheduleTicker:
    """Starts the flows of due schedule ticks (see the module docstring).

    ``tuning`` and ``defaults`` are read at each poll: the engine's live settings (poll interval, lease
    period; default priority and time budget of the flows created).
    """

    def __init__(
        self,
        runtime: Runtime,
        tuning: Callable[[], SchedulerTuning],
        defaults: Callable[[], CreateDefaults],
    ) -> None:
        self._runtime = runtime
        self._tuning = tuning
        self._defaults = defaults
        self._log = runtime.log
        # One claim token per ticker: it renews its own claims (a catch-up of many ticks, a retry after a
        # failed create) while other engines wait for them to lapse.
        self._token = new_token()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="dwarf-schedule-ticker")

    async def stop(self) -> None:
        """Stop ticking; a tick in progress is abandoned (its claim lapses, and any engine redoes it)."""
        task, self._task = self._task, None
        if task is None:
            return
        # The flag too: a driver may swallow the cancellation (see reraise_swallowed_cancel), and the loop
        # must end all the same.
        self._stopping = True
        self._runtime.schedule_bell.set()
        task.cancel()
        # A database call that ignores the cancel must not hold the shutdown.
        await asyncio.wait([task], timeout=RELEASE_TIMEOUT)

    async def _loop(self) -> None:
        bell = self._runtime.schedule_bell
        hints = self._runtime.schedule_hints
        loop = asyncio.get_running_loop()
        look = True
        while not self._stopping:
            bell.clear()
            poll = self._tuning().schedule_poll
            if look:
                hints.looked()
                try:
                    delay = await self.run_due_ticks()
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    reraise_swallowed_cancel()
                    self._report(error, "polling the schedules failed")
                    delay = self._tuning().error_backoff
            else:
                delay = poll
            delay = hints.sleep_for(delay, _WAKE_MARGIN)
            asleep_at = loop.time()
            rang = True
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await bell.wait()
                except TimeoutError:
                    rang = False
            # Woken by a bell, or at a tick: look. At the end of a plain poll interval a claimer's read of
            # the next tick since then stands for this ticker's own (engine/schedule_hints.py).
            look = rang or delay < poll or not hints.read_since(asleep_at)

    async def run_due_ticks(self) -> float:
        """Run the ticks due now; return how many seconds to sleep before looking again."""
        tuning = self._tuning()
        poll = tuning.schedule_poll
        store = schedule_store(self._runtime)
        rows = await store.read("due_schedules", ahead_ms=round(poll * 1000), limit=DUE_BATCH)
        if not rows:
            return poll
        now_ms = round(float(rows[0]["now"]) * 1000)
        delay = poll
        acted = False
        for row in rows:
            due_ms = int(row["next_tick_ms"])
            if due_ms > now_ms:
                delay = min(delay, (due_ms - now_ms) / 1000 + _WAKE_MARGIN)
                continue
            claimed_until = float(row["claimed_until"])
            if row["claim_token"] not in ("", self._token) and claimed_until * 1000 > now_ms:
                # Another engine is on it: look again when its claim would lapse (it advances the schedule
                # long before, unless it died).
                delay = min(delay, claimed_until - now_ms / 1000 + _WAKE_MARGIN)
                continue
            acted = True
            try:
                await self._run_schedule(store, row, now_ms, tuning)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # The claim lapses and the tick is tried again (here or elsewhere); other schedules go on.
                reraise_swallowed_cancel()
                self._report(error, "schedule %r: its tick at %s failed", row["name"], tick_text(due_ms))
        # After acting, look again at once: the schedules moved on (or another engine holds them).
        return 0.0 if acted else max(0.0, delay)

    async def _run_schedule(self, store: Store, row: Row, now_ms: int, tuning: SchedulerTuning) -> None:
        """Claim a due schedule, start the flows of its due ticks as its catch-up policy says, advance it."""
        schedule_id, name, due_ms = int(row["schedule_id"]), str(row["name"]), int(row["next_tick_ms"])
        claimed = await store.run(
            lambda tx: tx.execute(
                "claim_schedule",
                schedule_id=schedule_id,
                next_tick_ms=due_ms,
                claim_token=self._token,
                lease_seconds=tuning.lease_period,
            )
        )
        if not claimed:
            return  # another engine took it, or it changed meanwhile
        catch_up = check_catch_up(row["catch_up"])
        timing = ScheduleTiming(str(row["cron"]), int(row["every_ms"]), str(row["timezone"]))
        plan = plan_ticks(timing, due_ms, now_ms, catch_up)
        if plan.passed_over:
            self._log.info(
                "schedule %r: due ticks from %s on passed over (catch_up=%s)",
                name,
                tick_text(due_ms),
                catch_up,
                extra={"flow": ""},
            )
        expected = due_ms
        if not plan.fire:
            await self._advance(store, schedule_id, expected, plan.next_ms, 0, "", "", tuning, release=True)
            return
        for index, tick in enumerate(plan.fire):
            flow_key, error = await self._start_flow(row, tick)
            last = index == len(plan.fire) - 1
            following = plan.next_ms if last else plan.fire[index + 1]
            if not await self._advance(
                store, schedule_id, expected, following, tick, flow_key, error, tuning, release=last
            ):
                return  # the claim lapsed and another engine took over, or the schedule changed
            expected = following

    async def _start_flow(self, row: Row, tick: int) -> tuple[str, str]:
        """Create the flow of one tick; return its key and "", or "" and why the engine refused it.

        A refusal (an unknown workflow, an invalid graph, a state the graph's host rejects) costs this tick
        its flow, recorded as the schedule's last error; an outage is raised, and the tick tried again.
        """
        name = str(row["name"])
        options = options_from_document(json.loads(row["options"]))
        options.idempotency_key = tick_key(name, tick)
        state: dict[str, Any] = json.loads(row["state"])
        state["scheduleName"] = name
        state["scheduledAt"] = tick_text(tick)
        try:
            flow_key = await create_flow(
                self._runtime, str(row["workflow_url"]), state, options, self._defaults()
            )
        except EngineStateError:
            raise
        except DwarfError as error:
            reraise_swallowed_cancel()  # a cancelled query is no refusal
            if isinstance(error, StoreError) and error.transient:
                raise
            return "", self._refused(name, tick, error)
        self._log.debug("schedule %r: tick %s started its flow", name, tick_text(tick), extra={"flow": ""})
        return flow_key, ""

    def _refused(self, name: str, tick: int, error: DwarfError) -> str:
        message = storable_text(redact_keys(str(error)))
        self._log.warning(
            "schedule %r: the tick at %s started no flow: %s",
            name,
            tick_text(tick),
            message,
            extra={"flow": ""},
        )
        return message

    async def _advance(
        self,
        store: Store,
        schedule_id: int,
        expected: int,
        next_ms: int,
        fired_ms: int,
        flow_key: str,
        error: str,
        tuning: SchedulerTuning,
        *,
        release: bool,
    ) -> bool:
        """Move the schedule from tick ``expected`` to ``next_ms`` if this ticker still holds it."""
        moved = await store.run(
            lambda tx: tx.execute(
                "advance_schedule",
                schedule_id=schedule_id,
                expected_ms=expected,
                next_tick_ms=next_ms,
                fired_ms=fired_ms,
                flow_key=flow_key,
                error=error,
                claim_token=self._token,
                release=1 if release else 0,
                lease_seconds=tuning.lease_period,
            )
        )
        return bool(moved)

    def _report(self, error: BaseException, message: str, *args: object) -> None:
        self._log.log(failure_level(error), f"{message}: %s", *args, error, extra={"flow": ""})
