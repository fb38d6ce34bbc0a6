"""Reading flows in bulk: list pages with their cursors, purge marks, fingerprints and shard probes.

``list`` pages through one total order across shards (created_at descending, then shard ascending, then
flow id descending). Each shard pages by the same order in SQL, and the cursor is the position of the
page's last flow in it, so every flow that existed when paging began is listed exactly once however flows
are created meanwhile (on PostgreSQL ids and creation times disagree under concurrent inserts: neither
alone is a usable order).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

from dwarf.engine.clock import optional_utc, utc
from dwarf.engine.keys import MAX_ID, format_key
from dwarf.engine.runtime import Runtime
from dwarf.engine.telemetry import trace_id_of
from dwarf.errors import BadRequestError, NotFoundError
from dwarf.store.base import Row, Store
from dwarf.workflow.durations import to_seconds
from dwarf.workflow.records import FlowSummary, Query, ShardSummary
from dwarf.workflow.status import Status

__all__ = [
    "DEFAULT_LIST_LIMIT",
    "MAX_CURSOR_LENGTH",
    "MAX_LIST_LIMIT",
    "PURGE_LIMIT",
    "SHARD_PROBE_TIMEOUT",
    "fingerprint",
    "list_flows",
    "mark_for_purge",
    "probe_shards",
]

DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
PURGE_LIMIT = 4096
"""Root flows one purge call marks at most."""
SHARD_PROBE_TIMEOUT = 5.0
"""Seconds shard_info waits for one shard before reporting it unreachable."""
MAX_CURSOR_LENGTH = 200
"""The longest cursor list accepts (the ones it writes are at most about 105 characters)."""


def _checked(query: object) -> Query:
    if not isinstance(query, Query):
        raise BadRequestError("query must be a Query")
    query.check()
    return query


def _shards_of(rt: Runtime, query: Query) -> list[Store]:
    """The stores a query's ``shard`` filter selects (all of them without one)."""
    if not query.shard:
        return rt.stores
    if query.shard > len(rt.stores):
        raise BadRequestError(f"there is no shard {query.shard}")
    return [rt.stores[query.shard - 1]]


async def list_flows(rt: Runtime, query: Query | None) -> tuple[list[FlowSummary], str]:
    """A page of flows in list's order and the cursor of the next page; see ``Engine.list``."""
    query = _checked(query if query is not None else Query())
    limit = min(query.limit or DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)
    after = _decode_cursor(query.cursor, len(rt.stores))
    stores, params = await _filter(rt, query, _shards_of(rt, query))
    params["limit"] = limit + 1
    candidates: list[tuple[int, Row]] = []
    for store in stores:
        before_created, through_id = _page_bound(after, store.shard)
        rows = await store.read("list_flows", before_created=before_created, through_id=through_id, **params)
        candidates.extend((store.shard, row) for row in rows)
    candidates.sort(key=lambda item: _list_order(*item))
    page = candidates[:limit]
    # Each shard gave up to limit + 1 rows: more than limit in all means some shard has more.
    cursor = ""
    if len(candidates) > limit:
        shard, last = page[-1]
        cursor = _encode_cursor(_ListPosition(float(last["created_at"]), shard, int(last["flow_id"])))
    return [_summary(shard, row) for shard, row in page], cursor


async def mark_for_purge(rt: Runtime, query: Query) -> int:
    """Mark up to PURGE_LIMIT matching stopped root flows for the reaper; see ``Engine.purge``."""
    query = _checked(query)
    stores, params = await _filter(rt, query, _shards_of(rt, query))
    remaining = PURGE_LIMIT
    marked = 0
    for store in stores:
        if remaining <= 0:
            break
        rows = await store.write("mark_for_purge", limit=remaining, **params)
        roots = sum(1 for row in rows if int(row["parent_flow_id"]) == 0)
        for row in rows:
            rt.flow_cache.discard(store.shard, int(row["flow_id"]))
        marked += roots
        remaining -= roots
        if rows:
            rt.reaper.start(store)
    return marked


async def _filter(rt: Runtime, query: Query, stores: list[Store]) -> tuple[list[Store], dict[str, Any]]:
    """The statement parameters of a Query's filters, and the shards it can match on."""
    thread_id, thread_token = 0, ""
    if query.thread_key:
        try:
            thread_store, member = await rt.resolve(query.thread_key, "thread")
        except NotFoundError:
            return [], {}
        thread_id, thread_token = member.thread_id, member.thread_token
        stores = [s for s in stores if s is thread_store]
    params = {
        "include_subgraphs": 1 if query.include_subgraphs else 0,
        "status": query.status,
        "workflow_url": query.workflow_url,
        "workflow_name": query.workflow_name,
        "thread_id": thread_id,
        "thread_token": thread_token,
        "fairness_key": query.fairness_key,
        "priority": query.priority,
        "older_than": to_seconds(query.older_than) if query.older_than is not None else -1.0,
        "newer_than": to_seconds(query.newer_than) if query.newer_than is not None else -1.0,
        "task_name": query.task_name,
        "search": query.search,
        "pattern": "%" + _like_escape(query.search) + "%",
    }
    return stores, params


def _summary(shard: int, row: Row) -> FlowSummary:
    return FlowSummary(
        flow_key=format_key(shard, int(row["flow_id"]), row["flow_token"]),
        thread_key=format_key(shard, int(row["thread_id"]), row["thread_token"]),
        workflow_url=row["workflow_url"],
        workflow_name=row["workflow_name"],
        status=Status(row["status"]),
        task_name=row["task_name"],
        error=row["error"],
        cancel_reason=row["cancel_reason"],
        created_at=utc(row["created_at"]),
        started_at=optional_utc(row["started_at"]),
        updated_at=utc(row["updated_at"]),
        priority=int(row["priority"]),
        fairness_key=row["fairness_key"],
        subgraph=int(row["parent_flow_id"]) != 0,
        trace_id=trace_id_of(row["trace_parent"]),
    )


async def fingerprint(rt: Runtime, flow_key: str) -> tuple[str, str]:
    """A token that changes whenever anything observable about the flow changes, and its status."""
    store, row = await rt.resolve(flow_key)
    rows = await store.read("flow_fingerprint", flow_id=row.flow_id)
    if not rows:
        raise NotFoundError("flow not found")
    data = rows[0]
    material = f"{data['status']}|{data['flow_version']}|{data['step_count']}|{data['step_versions']}"
    return hashlib.sha256(material.encode()).hexdigest()[:24], data["status"]


async def probe_shards(rt: Runtime) -> list[ShardSummary]:
    """Per shard, probed at once: ping latency and the number of flows and steps, or the error."""
    return list(await asyncio.gather(*(_probe_shard(store) for store in rt.stores)))


async def _probe_shard(store: Store) -> ShardSummary:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(SHARD_PROBE_TIMEOUT):
            started = loop.time()
            await store.read("ping")
            latency = loop.time() - started
            counts = (await store.read("count_rows"))[0]
    except Exception as error:
        store.healthy = False
        message = "no answer within the probe timeout" if isinstance(error, TimeoutError) else str(error)
        return ShardSummary(shard=store.shard, error=message or type(error).__name__)
    store.healthy = True
    return ShardSummary(
        shard=store.shard,
        latency_ms=round(latency * 1000),
        steps=int(counts["steps"]),
        flows=int(counts["flows"]),
    )


def _like_escape(text: str) -> str:
    """``text`` as a LIKE pattern (with ESCAPE '!') that matches itself literally."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


@dataclass(frozen=True, slots=True)
class _ListPosition:
    """Where a listing stopped: the last flow returned, by its place in list's total order."""

    created_at: float
    shard: int
    flow_id: int


def _list_order(shard: int, row: Row) -> tuple[float, int, int]:
    """The sort key of list's total order: created_at descending, shard ascending, flow id descending."""
    return (-float(row["created_at"]), shard, -int(row["flow_id"]))


def _page_bound(after: _ListPosition | None, shard: int) -> tuple[float, int]:
    """The (created_at, flow_id) bound, inclusive, of the rows of ``shard`` that come after ``after``.

    In list's order, a flow of a lower shard with the same created_at came before the position, one of a
    higher shard comes after it, and on the position's own shard only lower ids come after it. Ids are
    at least 1, so a bound id of 0 admits no flow of that exact created_at.
    """
    if after is None:
        return sys.float_info.max, MAX_ID
    if shard < after.shard:
        return after.created_at, 0
    if shard == after.shard:
        return after.created_at, after.flow_id - 1
    return after.created_at, MAX_ID


_CURSOR_FIELDS = frozenset({"c", "s", "i"})


def _encode_cursor(position: _ListPosition) -> str:
    """The opaque cursor of a position. JSON writes a float by its repr, which reads back exactly."""
    body = json.dumps(
        {"c": position.created_at, "s": position.shard, "i": position.flow_id}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _decode_cursor(cursor: object, num_shards: int) -> _ListPosition | None:
    """The position a cursor names (None for ""); BadRequestError for anything but a cursor list wrote.

    A cursor comes back from outside, so it is read defensively: its length is bounded before decoding,
    every error of decoding is caught (huge numbers, deep nesting, bad base64 or UTF-8), and its shape
    is checked field by field: a flat object of exactly c (a finite number), s (a shard of this engine)
    and i (a positive 64-bit id).
    """
    if isinstance(cursor, str) and not cursor:
        return None
    if not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_LENGTH or not cursor.isascii():
        raise BadRequestError("malformed cursor")
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        body = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    # binascii.Error and UnicodeDecodeError are ValueErrors.
    except (ValueError, TypeError, RecursionError, OverflowError) as error:
        raise BadRequestError("malformed cursor") from error
    if not isinstance(body, dict) or set(body) != _CURSOR_FIELDS:
        raise BadRequestError("malformed cursor")
    created_at, shard, flow_id = body["c"], body["s"], body["i"]
    if (
        not isinstance(created_at, float)
        or not math.isfinite(created_at)
        or type(shard) is not int
        or not 1 <= shard <= num_shards
        or type(flow_id) is not int
        or not 1 <= flow_id <= MAX_ID
    ):
        raise BadRequestError("malformed cursor")
    return _ListPosition(created_at, shard, flow_id)


def _refuse_constant(name: str) -> Any:
    """json.loads hook: NaN and Infinity are not JSON, and no cursor holds them."""
    raise ValueError(f"{name} in a cursor")
