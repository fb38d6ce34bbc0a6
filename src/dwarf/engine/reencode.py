"""Writing stored values again with the engine's current codecs (``Engine.reencode``).

After a key rotation, old rows stay encrypted with the old key, which every replica must keep until they
are gone; plaintext rows written before a codec was switched on stay plaintext. ``reencode_values``
walks every step, flow and kept signal (013_timed_waits.sql) of every shard in pages by primary key,
decodes each JSON column with the engine's codecs and writes it again when its fresh stored form would
name other codecs or keys (or none: a plaintext row that the codecs now encode). Each row is written with
a compare-and-set on the text it was read with, so a row a live engine changed meanwhile is left alone
(it was written with the current codecs anyway). Values this engine cannot decode are counted and left
as they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dwarf.store.base import Row, Store, Tx
from dwarf.store.encoded import PREFIX, Undecodable, ValueCoder
from dwarf.store.statements import StatementName

__all__ = ["ReencodeReport", "reencode_values"]

_STEP_COLUMNS = (
    "state",
    "changes",
    "appends",
    "carry",
    "interrupt_payload",
    "resume_data",
    "subgraph_result",
)
_FLOW_COLUMNS = ("baggage", "final_state", "interrupt_payload")
_TABLES: tuple[tuple[StatementName, StatementName, str, tuple[str, ...]], ...] = (
    ("reencode_steps_page", "reencode_step", "step_id", _STEP_COLUMNS),
    ("reencode_flows_page", "reencode_flow", "flow_id", _FLOW_COLUMNS),
    ("reencode_signals_page", "reencode_signal", "signal_id", ("resume_data",)),
)
_PLAIN = frozenset({"", "{}", "null"})


@dataclass(frozen=True)
class ReencodeReport:
    """What ``Engine.reencode`` did."""

    rows: int = 0
    """Rows (steps and flows) written again."""
    values: int = 0
    """Values whose stored form changed."""
    unreadable: int = 0
    """Values this engine cannot decode (a codec or key it lacks), left as they are."""


@dataclass
class _Rewrite:
    row_id: int
    old: dict[str, Any]
    new: dict[str, Any]
    values: int


def _form(text: str | None) -> str:
    """What a stored value's form says about how it was written: its codec chain, and whether it sits in
    the blob store ('' for plain JSON)."""
    if text is None or not text.startswith(PREFIX):
        return ""
    chain, _, payload = text[len(PREFIX) :].partition(":")
    return f"{chain}@" if payload.startswith("@") else f"{chain}:"


def _rewrite(coder: ValueCoder, text: str, column: str) -> str | Undecodable | None:
    """The value's new stored form, None when it would be stored as it is (blocking: blob calls)."""
    row = {column: text}
    coder.fetch(coder.decode_rows([row]))
    plain = row[column]
    if isinstance(plain, Undecodable):
        return plain
    fresh = {column: plain}
    pending = coder.encode_params(fresh)
    if pending:
        if f"{pending[0].chain}@" == _form(text):
            return None  # offloaded again by the same codecs: not worth a new blob
        coder.offload(pending)
    return None if _form(fresh[column]) == _form(text) else fresh[column]


def _rewrite_page(
    coder: ValueCoder, rows: Sequence[Row], id_column: str, columns: tuple[str, ...]
) -> tuple[list[_Rewrite], int]:
    """The rows of a page that change, and how many values could not be decoded."""
    rewrites: list[_Rewrite] = []
    unreadable = 0
    for row in rows:
        old = {column: row[column] for column in columns}
        new = dict(old)
        values = 0
        for column, text in old.items():
            if text is None or text in _PLAIN:
                continue
            fresh = _rewrite(coder, text, column)
            if isinstance(fresh, Undecodable):
                unreadable += 1
            elif fresh is not None:
                new[column] = fresh
                values += 1
        if values:
            rewrites.append(_Rewrite(int(row[id_column]), old, new, values))
    return rewrites, unreadable


async def reencode_values(stores: Sequence[Store], coder: ValueCoder, batch: int) -> ReencodeReport:
    """Re-encode every stored value of ``stores`` (plain stores, not seen through codecs) with ``coder``."""
    rows = values = unreadable = 0
    for store in stores:
        for page, update, id_column, columns in _TABLES:
            after = 0
            while found := await store.read(page, after=after, limit=batch):
                after = int(found[-1][id_column])
                rewrites, missed = await asyncio.to_thread(_rewrite_page, coder, found, id_column, columns)
                unreadable += missed
                if not rewrites:
                    continue

                async def write(
                    tx: Tx,
                    rewrites: list[_Rewrite] = rewrites,
                    update: StatementName = update,
                    key: str = id_column,
                ) -> tuple[int, int]:
                    written = changed = 0
                    for item in rewrites:
                        params = {f"old_{name}": value for name, value in item.old.items()}
                        params.update({f"new_{name}": value for name, value in item.new.items()})
                        if await tx.execute(update, **{key: item.row_id}, **params):
                            written += 1
                            changed += item.values
                    return written, changed

                written, changed = await store.run(write)
                rows += written
                values += changed
    return ReencodeReport(rows=rows, values=values, unreadable=unreadable)
