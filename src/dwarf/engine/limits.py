"""Concurrency and rate limits per fairness key or task URL (docs/limits.md): setting them, the claim
that obeys them, and what each engine knows of them.

Where a limit lives. In the shard's database (dwarf_limits, 012_limits.sql), so that every replica's
claim obeys it. A claim under limits first takes a lock that serializes such claims across replicas
(``lock_limits``), then leases steps with ``claim_limited_steps``, which offers a key only as many steps
as its limit has room for, and charges the rate tokens it used (``take_rate_tokens``), all in one
transaction. Room is counted, not kept: a step leased under a limit holds a slot (``limit_slot``) while
it runs, and a partial index counts a key's running slot holders, so a slot comes back by itself when the
step stops running, its lease lapsing included: no count can leak when a process dies.

What an engine knows. Whether a shard has limits at all, which fairness keys and task URLs they name,
and the version of that knowledge (``LimitsCache``). A shard without limits is claimed exactly as
before limits existed (``claim_due_steps``: no lock, no extra statement). The claim row says how many
limits exist, and the claim for a shard without limits claims nothing while there are some, so an
engine that has not heard of a new limit yet starts nothing past it; it learns of it from the peer
signal a change sends, from its next idle poll (``next_wake_time``), or from its next claim under limits.

Wake-ups. A step held back by a concurrency limit becomes claimable when a step holding a slot of its
key stops: the worker that committed that stop rings the doorbell (here and at the peers), and a lapsed
lease is queued again by a claimer that rings it too. A step held back by a rate becomes claimable when
the bucket has a token again: the claim that took the last one sets a timer for then. The idle poll is
the fallback when a signal is lost.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dwarf.store.base import Row, Store, Tx
from dwarf.workflow.limits import Limit, LimitScope, LimitSpec

if TYPE_CHECKING:
    from dwarf.engine.runtime import Runtime

__all__ = ["LimitsCache", "apply_limit", "claim_under_limits", "clear_limit", "list_limits"]


@dataclass
class _ShardLimits:
    """What an engine knows of one shard's limits."""

    count: int = 0
    version: int = -1  # not read yet
    fairness_keys: frozenset[str] = frozenset()
    task_urls: frozenset[str] = frozenset()


@dataclass
class LimitsCache:
    """Per shard: whether limits exist and which keys they name (see the module docstring)."""

    shards: dict[int, _ShardLimits] = field(default_factory=dict)
    _refreshing: set[int] = field(default_factory=set)

    def known(self, shard: int) -> bool:
        """Whether this engine has read the shard's limits (it does before its first claim there)."""
        known = self.shards.get(shard)
        return known is not None and known.version >= 0

    def active(self, shard: int) -> bool:
        """Whether claims on ``shard`` must obey limits."""
        known = self.shards.get(shard)
        return known is not None and known.count > 0

    def holds_back(self, shard: int, fairness_key: str, task_url: str) -> bool:
        """Whether a limit names the fairness key or the task URL of a step about to be created: such a
        step must go through a claim (it is never run inline, past the limit)."""
        known = self.shards.get(shard)
        if known is None or not known.count:
            return False
        return fairness_key in known.fairness_keys or task_url in known.task_urls

    def stale(self, shard: int, count: int, version: int) -> bool:
        """Whether the shard's limits changed since this engine read them (a claim or a poll saw
        ``count`` limits at ``version``). A new count applies at once, whatever the keys turn out to be."""
        known = self.shards.setdefault(shard, _ShardLimits())
        if known.version == version:
            return False
        known.count = count
        return True

    async def load(self, store: Store) -> None:
        """Read the shard's limits (at startup, and when they changed)."""
        # The version first: a change between the two reads leaves an older version with newer limits,
        # which the next claim or poll reads again.
        state = await store.read("limit_state")
        rows = await store.read("list_limits")
        self._apply(store.shard, rows, int(state[0]["limit_version"]) if state else 0)

    def _apply(self, shard: int, rows: list[Row], version: int) -> None:
        self.shards[shard] = _ShardLimits(
            count=len(rows),
            version=version,
            fairness_keys=frozenset(
                str(row["limit_key"]) for row in rows if row["scope"] == LimitScope.FAIRNESS_KEY
            ),
            task_urls=frozenset(str(row["limit_key"]) for row in rows if row["scope"] == LimitScope.TASK_URL),
        )

    def refresh(self, rt: Runtime, store: Store) -> None:
        """Read the shard's limits again in the background (one read at a time per shard)."""
        if store.shard in self._refreshing:
            return
        self._refreshing.add(store.shard)

        async def reload() -> None:
            try:
                await self.load(store)
            except Exception as error:
                rt.log.log(
                    logging.DEBUG,
                    "reading the limits of shard %d failed (read again at the next poll): %s",
                    store.shard,
                    error,
                    extra={"flow": ""},
                )
                known = self.shards.get(store.shard)
                if known is not None:
                    known.version = -1
            finally:
                self._refreshing.discard(store.shard)
            rt.doorbells.ring(store.shard)

        rt.spawn(reload())

    def observe(self, rt: Runtime, store: Store, count: Any, version: Any) -> None:
        """A claim or a poll read the shard's limit count and version: read the limits again if they
        changed."""
        if count is None or version is None:
            return
        if self.stale(store.shard, int(count), int(version)):
            self.refresh(rt, store)


# --- the claim ---


@dataclass
class LimitedClaim:
    """What a claim under limits leased, when a rate it drained has a token again (seconds), and the
    count and version of the shard's limits (read as the claim took its lock)."""

    rows: list[Row]
    next_token_in: float | None
    limit_count: int
    limit_version: int


async def claim_under_limits(
    store: Store, lease_token: str, lease_seconds: float, limit: int
) -> LimitedClaim:
    """Lease up to ``limit`` due steps that their limits let start, in one transaction (see the module
    docstring): the lock, the claim, the rate tokens it used."""

    async def work(tx: Tx) -> tuple[Row | None, list[Row], list[Row]]:
        state = await tx.fetch_one("lock_limits")
        rows = await tx.fetch_all(
            "claim_limited_steps", lease_token=lease_token, lease_seconds=lease_seconds, limit=limit
        )
        if not rows:
            return state, rows, []
        used: Counter[tuple[str, str]] = Counter()
        for row in rows:
            used[(LimitScope.FAIRNESS_KEY.value, row["fairness_key"])] += 1
            used[(LimitScope.TASK_URL.value, row["task_url"])] += 1
        payload = json.dumps([[scope, key, count] for (scope, key), count in used.items()])
        return state, rows, await tx.fetch_all("take_rate_tokens", used=payload)

    state, rows, buckets = await store.run(work)
    waits = [
        (1.0 - float(bucket["tokens"])) / float(bucket["rate"])
        for bucket in buckets
        if float(bucket["tokens"]) < 1.0 and float(bucket["rate"]) > 0
    ]
    count, version = (int(state["limit_count"]), int(state["limit_version"])) if state else (0, 0)
    return LimitedClaim(rows, min(waits) if waits else None, count, version)


# --- the operations ---


async def apply_limit(
    rt: Runtime, key: Any, scope: LimitScope | str | None, concurrency: Any, rate: Any, burst: Any
) -> None:
    """Set (or replace) the limit of a key on every shard; see ``Engine.limit``."""
    spec = LimitSpec.target(key, scope).allowing(concurrency, rate, burst)

    async def work(tx: Tx) -> Row | None:
        await tx.fetch_all("lock_limits")
        await tx.execute(
            "put_limit",
            scope=spec.scope.value,
            limit_key=spec.key,
            concurrency=spec.concurrency,
            rate=spec.rate,
            burst=spec.burst,
        )
        # Steps of the key running already (claimed before the limit, or by an engine that had not
        # heard of it) take their slots now.
        await tx.execute("mark_limit_slots", scope=spec.scope.value, limit_key=spec.key)
        return await tx.fetch_one("note_limits_changed")

    await _change_everywhere(rt, work)


async def clear_limit(rt: Runtime, key: Any, scope: LimitScope | str | None) -> bool:
    """Remove the limit of a key on every shard; True if some shard had one. See ``Engine.clear_limit``."""
    spec = LimitSpec.target(key, scope)
    removed = False

    async def work(tx: Tx) -> Row | None:
        nonlocal removed
        await tx.fetch_all("lock_limits")
        if not await tx.fetch_all("delete_limit", scope=spec.scope.value, limit_key=spec.key):
            return None
        removed = True
        return await tx.fetch_one("note_limits_changed")

    await _change_everywhere(rt, work)
    return removed


async def _change_everywhere(rt: Runtime, work: Callable[[Tx], Any]) -> None:
    """Run a change of limits on every shard, then tell this engine's claimers and the peers."""
    for store in rt.stores:
        changed = await store.run(work)
        if changed is None:
            continue
        await rt.limits.load(store)
        rt.limits_changed(store.shard)


async def list_limits(rt: Runtime) -> list[Limit]:
    """Every limit of every shard with its running steps and tokens now; see ``Engine.list_limits``."""
    found: list[Limit] = []
    for store in rt.stores:
        found.extend(Limit.of(row, store.shard) for row in await store.read("list_limits"))
    return found
