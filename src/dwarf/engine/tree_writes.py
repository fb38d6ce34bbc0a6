"""Cancelling and deleting a whole tree of flows, atomically, while its steps keep committing.

A tree (a root flow, its child flows, theirs, and all their steps) changes under a cancel or a delete:
replicas commit its steps, and a step that calls ``flow.subgraph`` adds a child flow to it. Two traps:

- Membership. Under READ COMMITTED a statement does not see rows that a transaction still in flight
  inserted, so one ``UPDATE ... WHERE root_flow_id = ...`` misses a child flow whose creation commits
  right after the statement started: the child would run on under a cancelled root. What closes the gap
  is the parent step: a child (and any other new step of the tree) is only committed together with the
  guarded finish of an unfinished step of the tree (``finish_step`` under its lease). So the tree is
  changed in passes until a pass changes nothing: every pass that had to wait for such a commit sees its
  new rows in the next pass, and a creation that comes after a pass finds its parent step already
  cancelled (or deleted), loses its lease and inserts nothing.
- Lock order. Step commits lock bottom-up (their own step, then their flow, then the parent step or the
  ancestors' flows); a cancel locks top-down (the root flow, the tree's flows, its steps). Both orders
  are needed, so cycles can form. The tree write takes the root lock first, where waiting is harmless
  (it holds nothing yet), and every later lock with a short ``lock_timeout``: in a cycle the tree write
  is the one that gives up (well before PostgreSQL's deadlock detector, at one second by default, would
  pick a victim, possibly the worker's commit), rolls back and starts again. The step commits, the hot
  path, take no extra lock.

SQLite serializes writers (a unit of work runs whole on the store's thread): there a tree write is one
pass plus the pass that finds nothing left, and never conflicts.
"""

from __future__ import annotations

import asyncio
import random
from typing import TypeVar

from dwarf.errors import ConflictError, NotFoundError, StoreError
from dwarf.store.base import Row, Store, Tx, TxFunction
from dwarf.workflow.status import TERMINAL_STATUSES, Status

__all__ = ["ORPHAN_REASON", "cancel_orphans", "cancel_tree", "delete_tree", "run_tree_write"]

T = TypeVar("T")

LOCK_TIMEOUT = "50ms"
"""How long a tree write waits for a row lock once it holds the root (far below deadlock_timeout)."""
ATTEMPTS = 10
"""Attempts of a tree write that keeps losing lock conflicts before it gives up with a StoreError."""
BACKOFF = 0.01
"""Seconds of the first backoff between attempts (doubling, jittered, at most MAX_BACKOFF)."""
MAX_BACKOFF = 0.5
ORPHAN_REASON = "the step that called this flow ended without it (its flow failed, or a sibling branch did)"
"""The cancel reason of a child flow cancelled by ``cancel_orphans``."""
MAX_PASSES = 32
"""Passes after which a tree that still changes is treated as a lock conflict (and the write retried)."""

# SQLSTATEs of a transaction that lost a race for locks and may simply run again: deadlock_detected,
# serialization_failure, lock_not_available (our lock_timeout).
_CONFLICT_STATES = frozenset({"40P01", "40001", "55P03"})


class _TreeStillChanging(Exception):
    """The tree kept growing for MAX_PASSES passes (not expected: each pass cancels what could grow it)."""


def is_lock_conflict(error: BaseException) -> bool:
    """True when ``error`` (or what it wraps, e.g. a StoreError's cause) is a lost race for row locks."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _TreeStillChanging):
            return True
        if getattr(current, "sqlstate", None) in _CONFLICT_STATES:
            return True
        current = current.__cause__ or current.__context__
    return False


async def run_tree_write(store: Store, work: TxFunction[T], what: str) -> T:
    """Run a tree write (``cancel_tree``, ``delete_tree``), again while it loses lock conflicts.

    ``what`` names the operation in the StoreError raised when every attempt lost. Errors that are not
    lock conflicts (NotFoundError, ConflictError, an outage) propagate at once.
    """
    last: BaseException | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF, BACKOFF * 2**attempt)))
        try:
            return await store.run(work)
        except Exception as error:
            if not is_lock_conflict(error):
                raise
            last = error
    raise StoreError(
        f"{what} kept conflicting with work committing in the same flow tree ({store.description}); "
        "try again",
        transient=True,
    ) from last


async def _lock_root(tx: Tx, root_flow_id: int) -> Row:
    """Lock the root flow row (the first lock of every tree write), then bound every later lock wait."""
    root = await tx.fetch_one("get_flow_for_update", flow_id=root_flow_id)
    if root is None:
        raise NotFoundError("flow not found")
    await tx.fetch_all("set_lock_timeout", lock_timeout=LOCK_TIMEOUT)
    return root


async def cancel_tree(tx: Tx, root_flow_id: int, reason: str) -> None:
    """Cancel a running or interrupted root flow, every flow of its tree and every unfinished step.

    ConflictError when the root already ended; NotFoundError when it is gone.
    """
    root = await _lock_root(tx, root_flow_id)
    if Status(root["status"]) in TERMINAL_STATUSES:
        raise ConflictError(f"the flow is already {root['status']}")
    for _ in range(MAX_PASSES):
        # Flows first: a step commit that was waited for here shows its new child in the next pass.
        flows = await tx.execute("cancel_flow_tree", root_flow_id=root_flow_id, reason=reason)
        steps = await tx.execute("cancel_steps_of_tree", root_flow_id=root_flow_id)
        if not flows and not steps:
            return
    raise _TreeStillChanging(f"flow tree {root_flow_id} kept changing during cancel")


async def cancel_orphans(tx: Tx, root_flow_id: int) -> int:
    """Cancel the child flows of a tree whose calling step ended without them, with their own children
    and steps; return how many flows were cancelled (0 when the tree is gone).

    A step parked on a child flow is cancelled when its flow fails or a sibling branch fails it; the
    child then runs on (or waits for an answer) with nobody to read its result, and keeps its tree from
    being deleted. The commit that cancelled the step runs this right after, in a transaction of its own
    under the tree-write lock order (a step commit never locks downwards); the wedge sweep runs it for a
    tree whose follow-up was lost. Each pass cancels one more generation: a grandchild's calling step is
    cancelled with its flow in the pass before.
    """
    try:
        await _lock_root(tx, root_flow_id)
    except NotFoundError:
        return 0
    cancelled = 0
    for _ in range(MAX_PASSES):
        flows = await tx.execute("cancel_orphaned_flows", root_flow_id=root_flow_id, reason=ORPHAN_REASON)
        steps = await tx.execute("cancel_steps_of_cancelled_flows", root_flow_id=root_flow_id)
        cancelled += flows
        if not flows and not steps:
            return cancelled
    raise _TreeStillChanging(f"flow tree {root_flow_id} kept changing while its orphans were cancelled")


async def delete_tree(tx: Tx, root_flow_id: int) -> None:
    """Delete a stopped root flow and its whole tree, steps included.

    ConflictError while a flow of the tree is running; NotFoundError when the root is gone.
    """
    await _lock_root(tx, root_flow_id)
    for _ in range(MAX_PASSES):
        # Checked in every pass: a child committed while this pass waited would be running.
        running = await tx.fetch_value("running_flows_in_tree", root_flow_id=root_flow_id)
        if int(running or 0):
            raise ConflictError("the flow or one of its child flows is still running")
        # Steps before flows: delete_flow_steps finds the tree's steps through its flow rows.
        if not await tx.execute("delete_flow_steps", root_flow_id=root_flow_id):
            await tx.execute("delete_flow_rows", root_flow_id=root_flow_id)
            return
    raise _TreeStillChanging(f"flow tree {root_flow_id} kept changing during delete")
