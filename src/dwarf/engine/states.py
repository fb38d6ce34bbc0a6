"""Where a step's input state is kept: whole, or as the output of the step before it.

Most steps continue a chain: their input is their predecessor's output, which is the predecessor's input
with its changes, then its appended items, applied (``reducers.apply_output``). Writing that state whole
at every step makes a state that grows a little per step cost a little more per step and fill the
database quadratically. So a lone successor's state is stored as a reference instead (``state`` = '',
``state_base`` = the predecessor), and rebuilt when something needs it from the nearest whole state
along the references: a cold worker claiming the step, history, a step lookup, a fork. A worker that
runs the successor inline already holds the state in memory and rebuilds nothing.

A whole state (a *snapshot*) is written again when the references would grow past ``MAX_DELTA_DEPTH``
or when the changes they carry add up to more than the snapshot itself: a rebuild then reads at most
about twice the state's size, and a state growing without end is stored in a few times its final size
(snapshot sizes double). States smaller than ``DELTA_MIN_STATE_BYTES`` are always stored whole: for them
a copy costs less than the references would save. See docs/design.md#state-storage.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dwarf.engine.flowinfo import dumps
from dwarf.errors import StoreError
from dwarf.store.base import Row, Store, Tx
from dwarf.store.encoded import encoded_value_error
from dwarf.store.rows import StepRow
from dwarf.workflow.reducers import apply_output

__all__ = [
    "DELTA_MIN_STATE_BYTES",
    "MAX_DELTA_DEPTH",
    "UNBOUNDED",
    "StoredState",
    "load_state",
    "load_state_in",
    "output_of",
    "replay",
]

DELTA_MIN_STATE_BYTES = 8192
"""States estimated smaller than this are stored whole at every step."""

MAX_DELTA_DEPTH = 200
"""The most references from a step back to the nearest whole state."""

UNBOUNDED = sys.maxsize
"""``StoredState.after``'s ``whole_above`` when the engine has no size guard."""


@dataclass(frozen=True, slots=True)
class StoredState:
    """How one step's input state is written: the columns of 008_state_deltas.sql."""

    text: str
    """The state as JSON text; '' for a reference to ``base``'s output."""
    base: int = 0
    depth: int = 0
    delta_bytes: int = 0
    snapshot_bytes: int = 0

    @classmethod
    def whole(cls, state: Mapping[str, Any]) -> StoredState:
        """The state written out in full."""
        text = dumps(state)
        return cls(text, snapshot_bytes=len(text))

    @classmethod
    def after(
        cls, step: StepRow, output: Mapping[str, Any], output_bytes: int, whole_above: int = UNBOUNDED
    ) -> StoredState:
        """The input of ``step``'s lone successor: ``output``, the state after ``step``, which the step
        reached by writing ``output_bytes`` of changes and appends. A reference to ``step`` unless a
        snapshot is due (or the state is small).

        ``whole_above`` is the engine's size guard (``max_state_size``): the snapshot plus the changes
        since bound the state's size from above, and once that bound passes the guard the state is
        written whole, where the guard measures it exactly. A state over the guard is never stored as a
        reference."""
        delta_bytes = step.delta_bytes + output_bytes
        if (
            step.snapshot_bytes + delta_bytes < DELTA_MIN_STATE_BYTES
            or step.delta_depth >= MAX_DELTA_DEPTH
            or delta_bytes > step.snapshot_bytes
            or step.snapshot_bytes + delta_bytes > whole_above
        ):
            return cls.whole(output)
        return cls("", step.step_id, step.delta_depth + 1, delta_bytes, step.snapshot_bytes)

    def columns(self) -> dict[str, Any]:
        """The statement parameters that write it (insert_step, finish_and_continue, set_step_state)."""
        return {
            "state": self.text,
            "state_base": self.base,
            "delta_depth": self.depth,
            "delta_bytes": self.delta_bytes,
            "snapshot_bytes": self.snapshot_bytes,
        }


def output_of(step: StepRow) -> dict[str, Any]:
    """The state after ``step``, whose input state is loaded: its changes, then its appends, applied."""
    assert step.state is not None, "the step's state is not loaded"
    return apply_output(step.state, step.changes, step.appends)


def replay(chain: Sequence[Row]) -> dict[str, Any]:
    """The input state of the last row of ``chain`` (the ``state_chain`` statement's answer: the nearest
    whole state first, each later row's input being the output of the row before it)."""
    if not chain or not chain[0]["state"]:
        step_id = chain[-1]["step_id"] if chain else "?"
        raise StoreError(
            f"the state of step {step_id} cannot be rebuilt: it refers to a step that no longer exists",
            transient=False,
        )
    try:
        state: dict[str, Any] = json.loads(chain[0]["state"])
        for row in chain[:-1]:
            state = apply_output(state, json.loads(row["changes"]), json.loads(row["appends"]))
    except ValueError:
        # Most likely a value encoded by codecs this engine cannot undo: say which (a CodecError).
        for row in chain:
            for text in (row["state"], row["changes"], row["appends"]):
                failure = encoded_value_error(text) if text else None
                if failure is not None:
                    raise failure from None
        raise
    return state


async def load_state(store: Store, step: StepRow) -> StepRow:
    """``step`` with its input state loaded (the same row when it was already)."""
    if step.state is not None:
        return step
    return dataclasses.replace(step, state=replay(await store.read("state_chain", step_id=step.step_id)))


async def load_state_in(tx: Tx, step: StepRow) -> StepRow:
    """``load_state`` inside a transaction."""
    if step.state is not None:
        return step
    return dataclasses.replace(step, state=replay(await tx.fetch_all("state_chain", step_id=step.step_id)))
