"""The claim loop: leasing due steps from each shard and running them on a bounded set of workers.

One claimer task per shard leases as many due steps as there are idle workers, in one statement, and
starts a task per step. It sleeps until a doorbell rings (new work created here or signalled by a peer),
until the earliest not-before time, lease expiry or timer it knows of, or at most ``idle_poll`` seconds:
the poll is the fallback that makes progress when every signal was lost. It also fires the shard's due
timers (deadlines, timed waits: see ``timers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass

from dwarf.engine.completion import join_ready_cohorts
from dwarf.engine.executor import Lease, run_claimed_step
from dwarf.engine.flowinfo import FlowInfo
from dwarf.engine.keys import correlation_id, new_token
from dwarf.engine.limits import claim_under_limits
from dwarf.engine.runtime import Runtime
from dwarf.engine.timers import fire_due_timers, timer_delay
from dwarf.engine.tuning import SchedulerTuning
from dwarf.engine.wedge import sweep_wedges
from dwarf.errors import CodecError, StoreError
from dwarf.store.base import Row, Store
from dwarf.store.rows import StepRow

__all__ = ["RELEASE_TIMEOUT", "Scheduler", "failure_level", "reraise_swallowed_cancel"]

RELEASE_TIMEOUT = 2.0
"""Seconds shutdown spends handing unfinished steps back (at once, in parallel) before it gives up and
lets their leases lapse instead: a database that does not answer must not hold the shutdown."""


@dataclass
class _InFlight:
    store: Store
    step: StepRow
    lease: Lease


def reraise_swallowed_cancel() -> None:
    """Re-raise a cancellation that a driver turned into an ordinary error.

    psycopg answers a cancelled query with QueryCanceled (an Exception), consuming the CancelledError;
    the task's pending cancel count still tells that the task was asked to stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def failure_level(error: BaseException) -> int:
    """How loudly a failed background statement is logged: a database outage is reported once, by the
    store (one WARNING when it starts, one INFO when it ends), so the retries during it stay at DEBUG."""
    if isinstance(error, StoreError) and error.transient:
        return logging.DEBUG
    return logging.WARNING


class Scheduler:
    """Claimers and workers of one engine."""

    def __init__(self, runtime: Runtime, workers: int, tuning: SchedulerTuning | None = None) -> None:
        tuning = tuning if tuning is not None else SchedulerTuning()
        self._runtime = runtime
        self._log = runtime.log
        self._telemetry = runtime.telemetry
        self._stores = runtime.stores
        self._workers = workers
        self._doorbells = runtime.doorbells
        self._slot_free = asyncio.Event()
        self._in_flight: dict[asyncio.Task[None], _InFlight] = {}
        self._claimers: list[asyncio.Task[None]] = []
        self._stopping = False
        self._abandoned = False
        self.tuning = tuning
        # Set when the tuning changes, so the heartbeat measures its wait again.
        self._retuned = asyncio.Event()

    def retune(self, tuning: SchedulerTuning) -> None:
        """Apply new timing knobs at once: sleeping claimers and the heartbeat measure their waits again."""
        self.tuning = tuning
        self._retuned.set()
        self._doorbells.ring_all()
        self._runtime.retention.retune(tuning.retention_poll)

    def _report(self, error: BaseException, message: str, *args: object, flow: str = "") -> None:
        """Log a failed background statement at the level ``failure_level`` gives, with its error."""
        self._log.log(failure_level(error), f"{message}: %s", *args, error, extra={"flow": flow})

    async def prime(self) -> None:
        """Read each shard's limits before the claimers start (startup's work rather than the first
        claim's: the claim keeps a lazy read for a shard whose database was down here)."""
        if self._workers == 0:
            return
        for store in self._stores:
            with contextlib.suppress(Exception):
                await self._runtime.limits.load(store)

    def start(self) -> None:
        if self._workers == 0:
            return  # an operations-only engine claims nothing
        for store in self._stores:
            task = asyncio.create_task(self._claim_loop(store), name=f"dwarf-claimer-{store.shard}")
            self._claimers.append(task)
        self._claimers.append(asyncio.create_task(self._sweep_loop(), name="dwarf-wedge-sweep"))
        self._claimers.append(asyncio.create_task(self._heartbeat_loop(), name="dwarf-lease-heartbeat"))
        for store in self._stores:
            passes = self._runtime.retention.run(store, lambda: self.tuning.retention_poll)
            self._claimers.append(asyncio.create_task(passes, name=f"dwarf-retention-{store.shard}"))

    @property
    def busy_workers(self) -> int:
        return len(self._in_flight)

    async def stop(self, drain_timeout: float) -> None:
        """Stop claiming, let running steps finish for up to ``drain_timeout``, hand back the rest."""
        self._stopping = True
        # Ring too: a driver may swallow the cancellation (see reraise_swallowed_cancel), and a claimer
        # that carries on must not then sleep a whole poll interval before it sees it is stopping.
        self._doorbells.ring_all()
        self._slot_free.set()
        for claimer in self._claimers:
            claimer.cancel()
        for claimer in self._claimers:
            with contextlib.suppress(asyncio.CancelledError):
                await claimer
        self._claimers.clear()
        running = list(self._in_flight)
        if running and drain_timeout > 0:
            await asyncio.wait(running, timeout=drain_timeout)
        unfinished = [(task, self._in_flight.get(task)) for task in running if not task.done()]
        for task, _ in unfinished:
            task.cancel()
        if unfinished:
            # A worker stuck in a database call that ignores the cancel must not hold the shutdown.
            await asyncio.wait([task for task, _ in unfinished], timeout=RELEASE_TIMEOUT)
        leases = [(f.store, f.step.step_id, f.lease.token) for _, f in unfinished if f is not None]
        await self._release(leases)

    @staticmethod
    async def _release(leases: list[tuple[Store, int, str]]) -> None:
        """Hand steps (store, step id, lease token) back at once, in parallel, so another replica need
        not wait for their leases to lapse; what RELEASE_TIMEOUT does not see done is left to lapse."""
        if not leases:
            return

        async def release(store: Store, step_id: int, lease_token: str) -> None:
            with contextlib.suppress(Exception):
                await store.write("release_lease", step_id=step_id, lease_token=lease_token)

        releases = [asyncio.ensure_future(release(*lease)) for lease in leases]
        _, late = await asyncio.wait(releases, timeout=RELEASE_TIMEOUT)
        for pending in late:
            pending.cancel()

    async def abandon(self) -> None:
        """Stop at once without releasing leases, as a crashed process would (for tests)."""
        self._stopping = True
        self._abandoned = True
        for task in [*self._claimers, *self._in_flight]:
            task.cancel()
        for task in [*self._claimers, *self._in_flight]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._claimers.clear()

    async def _join_arrivals(self, store: Store) -> None:
        """Join the cohorts that arrivals completed since the last round (see ``CohortArrivals``).

        The check must run after the arrival committed (of members arriving at once, the last to commit
        is the one that sees them all). Should the process die first, ``_join_stranded`` joins the cohort.
        """
        pending = self._runtime.arrivals.take(store.shard)
        if not pending:
            return
        try:
            ready = await store.read("cohorts_ready", spawn_ids=json.dumps(list(pending)))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reraise_swallowed_cancel()
            self._report(error, "checking cohorts on shard %d failed", store.shard)
            self._runtime.arrivals.put_back(store.shard, pending)  # look again next round
            return
        for row in ready:
            spawn_id = int(row["step_id"])
            self._runtime.spawn(self._join(store, pending[spawn_id], spawn_id))

    async def _join_stranded(self, store: Store) -> None:
        """Join the complete cohorts whose last arrival no claimer looked at (its replica died)."""
        for row in await store.read("stranded_cohorts"):
            info = await self._runtime.flow_info(store, int(row["flow_id"]))
            if info is not None:
                await self._join(store, info, int(row["step_id"]))

    async def _join(self, store: Store, info: FlowInfo, spawn_id: int) -> None:
        try:
            spawn = await store.read("get_step", step_id=spawn_id)
            if not spawn:
                return
            # The spawn stands in for the step of the commit: a join reads the cohort, not a leased step.
            effects = await join_ready_cohorts(store, info, StepRow.of(spawn[0]), "", spawn_id)
            await self._runtime.after_commit(info, effects)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reraise_swallowed_cancel()
            self._report(
                error,
                "joining cohort %s failed (the wedge sweep will retry)",
                correlation_id(store.shard, spawn_id),
                flow=info.correlation_id,
            )

    async def _claim_loop(self, store: Store) -> None:
        doorbell = self._doorbells.event(store.shard)
        telemetry = self._telemetry
        last_lease_check = time.monotonic()
        timers = self._runtime.timers
        # Timers that fell due while no engine ran (deadlines, timed waits) fire on the first round; an
        # error here (the database is not up yet) leaves them to the idle poll.
        with contextlib.suppress(Exception):
            await self._note_next_timer(store)
        while not self._stopping:
            await self._join_arrivals(store)
            if timers.take_due(store.shard):
                await self._fire_timers(store)
            if telemetry.wants_pending(store.shard):
                await self._count_pending(store)
            free = self._workers - len(self._in_flight)
            if free <= 0:
                self._slot_free.clear()
                # Bounded, so that a claimer whose workers are all busy still serves the pending gauge.
                await self._wait_for(self._slot_free, self.tuning.idle_poll)
                continue
            doorbell.clear()
            try:
                claimed = await self._claim(store, free)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                reraise_swallowed_cancel()
                store.healthy = False
                self._report(error, "claiming on shard %d failed", store.shard)
                await asyncio.sleep(self.tuning.error_backoff)
                continue
            if len(claimed) == free:
                # A busy claimer never reaches the idle poll below, where expired leases are found: check
                # them on the same cadence here, or a dead replica's steps would wait for the backlog.
                now = time.monotonic()
                if now - last_lease_check >= self.tuning.idle_poll:
                    last_lease_check = now
                    with contextlib.suppress(Exception):
                        await self._recover_expired(store)
                        await self._join_stranded(store)
                        # Timers a peer set (and may have died with) are found here while this is busy.
                        await self._note_next_timer(store)
                continue
            # Nothing more is due. Local work rings the doorbell (and delayed local work sets a timer);
            # after a quiet poll interval, ask the database what is coming (peers' sleeps, expired leases).
            if await self._wait_for(doorbell, self.tuning.idle_poll):
                continue
            try:
                delay = await self._idle_delay(store)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                reraise_swallowed_cancel()
                self._report(error, "polling shard %d failed", store.shard)
                delay = self.tuning.error_backoff
            if delay > 0:
                await self._wait_for(doorbell, delay)

    async def _sweep_loop(self) -> None:
        """Housekeeping on a slow fixed cadence: the wedge sweep (see wedge.py) and leftover purges."""
        while not self._stopping:
            await asyncio.sleep(self.tuning.wedge_sweep_interval)
            for store in self._stores:
                try:
                    await sweep_wedges(self._runtime, store, self.tuning.wedge_min_age)
                    # Flows purged by another process (the CLI, another replica that stopped before its
                    # reaper finished) are deleted here too.
                    await self._runtime.reaper.start_if_marked(store)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    reraise_swallowed_cancel()
                    self._report(error, "the wedge sweep of shard %d failed", store.shard)

    async def _heartbeat_loop(self) -> None:
        """Renew the leases of the steps this engine runs, and stop the runs whose lease is gone.

        A renewal that finds a step no longer leased to this worker (its flow was cancelled, or the
        worker was cut off long enough for another replica to take the step) stops that run at once:
        its outcome could not be committed, and two copies of one step must not run side by side. A
        renewal that fails (the database is unreachable) changes nothing: the run goes on, and its
        commit, guarded by the lease token, decides.
        """
        last = time.monotonic()
        while not self._stopping:
            self._retuned.clear()
            # A changed lease period or interval wakes the loop to measure its wait again.
            if await self._wait_for(self._retuned, self.tuning.heartbeat_every - (time.monotonic() - last)):
                continue
            last = time.monotonic()
            by_store: dict[int, list[_InFlight]] = {}
            for flight in list(self._in_flight.values()):
                by_store.setdefault(flight.store.shard, []).append(flight)
            for flights in by_store.values():
                try:
                    await self._renew(flights)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    reraise_swallowed_cancel()
                    self._report(error, "renewing leases on shard %d failed", flights[0].store.shard)

    async def _renew(self, flights: list[_InFlight]) -> None:
        store = flights[0].store
        rows = await store.write(
            "renew_leases",
            step_ids=json.dumps([flight.step.step_id for flight in flights]),
            lease_tokens=json.dumps(sorted({flight.lease.token for flight in flights})),
            lease_seconds=self.tuning.lease_period,
        )
        renewed = {int(row["step_id"]) for row in rows}
        for flight in flights:
            # A step that finished meanwhile is not renewed either; its run has no task left to stop.
            if flight.step.step_id not in renewed and flight.lease.task is not None:
                flow = correlation_id(store.shard, flight.step.flow_id)
                self._log.info(
                    "step %s of flow %s is no longer leased to this worker (cancelled, or taken over); "
                    "its task is stopped",
                    correlation_id(store.shard, flight.step.step_id),
                    flow,
                    extra={"flow": flow},
                )
                flight.lease.lose()

    async def _wait_for(self, doorbell: asyncio.Event, timeout: float) -> bool:
        """Wait for the doorbell up to ``timeout``; True when it rang (or the scheduler is stopping)."""
        if self._stopping:
            return True
        try:
            async with asyncio.timeout(timeout):
                await doorbell.wait()
        except TimeoutError:
            return False
        return True

    async def _count_pending(self, store: Store) -> None:
        """Count the shard's due steps for the pending-steps gauge (a metrics reader asked for it)."""
        try:
            rows = await store.read("count_due_steps")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reraise_swallowed_cancel()
            self._report(error, "counting pending steps on shard %d failed", store.shard)
            rows = []
        self._telemetry.set_pending(store.shard, rows)

    async def _claim(self, store: Store, limit: int) -> list[StepRow]:
        lease_token = new_token()
        started = time.perf_counter()
        limits = self._runtime.limits
        if not limits.known(store.shard):
            await limits.load(store)  # before the first claim: a failure is retried as the claim's
        if limits.active(store.shard):
            claiming = self._claim_under_limits(store, lease_token, limit)
        else:
            claiming = store.write(
                "claim_due_steps",
                lease_token=lease_token,
                lease_seconds=self.tuning.lease_period,
                limit=limit,
            )
        # Shielded: a shutdown that cancels this claimer while the claim is committing would otherwise
        # leave its steps leased to nobody until the leases lapse (the SQLite store commits a unit of
        # work whatever happens to its caller). The claim is waited for and its steps handed back.
        claim = asyncio.ensure_future(claiming)
        try:
            rows = await asyncio.shield(claim)
        except asyncio.CancelledError:
            await self._hand_back(store, claim, lease_token)
            raise
        self._telemetry.claimed(store.shard, started)
        store.healthy = True
        steps = []
        for row in rows:
            try:
                steps.append(StepRow.of(row))
            except CodecError as error:
                self._unreadable(store, row, error)
        steps.sort(key=lambda step: (step.priority, step.step_id))
        for step in steps:
            flight = _InFlight(store, step, Lease(lease_token))
            task = asyncio.create_task(self._run(flight))
            self._in_flight[task] = flight
        return steps

    async def _hand_back(self, store: Store, claim: asyncio.Future[list[Row]], lease_token: str) -> None:
        """Release the steps of a claim whose claimer was cancelled (the engine is stopping)."""
        if self._abandoned:
            return  # a simulated crash keeps every lease
        try:
            rows = await asyncio.wait_for(claim, RELEASE_TIMEOUT)
        except Exception:
            return  # left to lapse: a database that does not answer must not hold the stop
        await self._release([(store, int(row["step_id"]), lease_token) for row in rows])

    async def _claim_under_limits(self, store: Store, lease_token: str, limit: int) -> list[Row]:
        """Claim obeying the shard's limits (see engine/limits.py); set a timer for the next rate token a
        drained limit gets, and notice a change of the limits."""
        claim = await claim_under_limits(store, lease_token, self.tuning.lease_period, limit)
        rt = self._runtime
        if claim.next_token_in is not None:
            self._doorbells.ring_later(store.shard, claim.next_token_in)
        rt.limits.observe(rt, store, claim.limit_count, claim.limit_version)
        return claim.rows

    def _unreadable(self, store: Store, row: Row, error: CodecError) -> None:
        """A claimed step whose row this engine cannot decode (it lacks a codec or key that wrote it):
        it is not run, and its lease is left to expire, for a replica that can read it (or, after
        ``max_recoveries`` of these, to fail with WorkerLostError); the other claimed steps run."""
        flow = correlation_id(store.shard, int(row["flow_id"]))
        self._log.error(
            "step %s of flow %s cannot be read by this engine and is left to another replica: %s",
            correlation_id(store.shard, int(row["step_id"])),
            flow,
            error,
            extra={"flow": flow},
        )

    async def _idle_delay(self, store: Store) -> float:
        """Seconds until this shard may have work: the next not-before, the next lease expiry, or the poll."""
        row = (await store.read("next_wake_time"))[0]
        self._runtime.schedule_hints.saw(store.shard, row)
        self._runtime.limits.observe(self._runtime, store, row["limit_count"], row["limit_version"])
        if int(row["stranded"]):
            await self._join_stranded(store)
        now = float(row["now"])
        delay = self.tuning.idle_poll
        until_timer = timer_delay(row)
        if until_timer is not None:
            # Rings the doorbell when it falls due (at once if it is): the loop then fires it.
            self._runtime.timers.note(store.shard, until_timer)
            delay = min(delay, until_timer)
        if row["next_due"] is not None:
            delay = min(delay, float(row["next_due"]) - now)
        if row["next_expiry"] is not None:
            until_expiry = float(row["next_expiry"]) - now
            if until_expiry <= 0:
                if await self._recover_expired(store):
                    return 0.0
            else:
                delay = min(delay, until_expiry)
        return max(0.0, delay)

    async def _fire_timers(self, store: Store) -> None:
        """Fire the shard's due timers, then note when the next one falls due."""
        timers = self._runtime.timers
        try:
            fired, more = await fire_due_timers(self._runtime, store)
            if more:
                timers.note(store.shard, 0.0)
                return
            delay = await self._next_timer_delay(store)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reraise_swallowed_cancel()
            self._report(error, "firing timers on shard %d failed", store.shard)
            timers.note(store.shard, self.tuning.error_backoff)
            return
        if delay is None:
            return
        if delay <= 0 and not fired:
            # Due, yet nothing fired (another engine won each race, or a clock ahead of the database's):
            # look again after a poll interval rather than at once, lest the claimer spin.
            delay = self.tuning.idle_poll
        timers.note(store.shard, delay)

    async def _next_timer_delay(self, store: Store) -> float | None:
        """Seconds until the shard's earliest timer (0 or less when due); None when it has none. The read
        also brings the next schedule tick, for the ticker (engine/schedule_hints.py)."""
        row = (await store.read("next_timer"))[0]
        self._runtime.schedule_hints.saw(store.shard, row)
        return timer_delay(row)

    async def _note_next_timer(self, store: Store) -> None:
        """Read when the shard's earliest timer falls due and have the doorbell rung then."""
        delay = await self._next_timer_delay(store)
        if delay is not None:
            self._runtime.timers.note(store.shard, delay)

    async def _recover_expired(self, store: Store) -> int:
        """Queue again the steps whose worker's lease expired (it died or stalled); return how many."""
        recovered = await store.write("recover_expired_leases")
        if recovered:
            self._telemetry.leases_recovered(store.shard, len(recovered))
            for lost in recovered:
                flow = correlation_id(store.shard, int(lost["flow_id"]))
                self._log.info(
                    "step %s of flow %s: its worker's lease expired; queued again",
                    correlation_id(store.shard, int(lost["step_id"])),
                    flow,
                    extra={"flow": flow},
                )
            self._doorbells.ring(store.shard)
        return len(recovered)

    async def _run(self, claimed: _InFlight) -> None:
        """Run a claimed step, then each lone successor inserted leased to this worker (a new Lease each,
        under the claim's token), until there is none."""
        task = asyncio.current_task()
        store, lease = claimed.store, claimed.lease
        next_step: StepRow | None = claimed.step
        try:
            while next_step is not None:
                if next_step is not claimed.step:
                    lease = Lease(lease.token)
                    if task is not None:
                        self._in_flight[task] = _InFlight(store, next_step, lease)
                # Run a lone successor inline only while this engine has idle workers: then no queued step
                # is waiting for this worker, so skipping the queue cannot starve anything here.
                inline = (
                    self.tuning.lease_period
                    if not self._stopping and len(self._in_flight) < self._workers
                    else None
                )
                current, next_step = next_step, None
                try:
                    next_step = await run_claimed_step(
                        self._runtime, store, current, lease, inline, self.tuning.max_recoveries
                    )
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    # The engine itself failed (the database, most likely); the lease expires and the step
                    # runs again elsewhere. An outage was reported by the store already: no traceback.
                    flow = correlation_id(store.shard, current.flow_id)
                    level = failure_level(error)
                    self._log.log(
                        level,
                        "running step %s of flow %s failed: %s",
                        correlation_id(store.shard, current.step_id),
                        flow,
                        error,
                        exc_info=level >= logging.WARNING,
                        extra={"flow": flow},
                    )
        finally:
            if task is not None:
                self._in_flight.pop(task, None)
            self._slot_free.set()
