"""Idempotent create (docs/flows.md#idempotent-create): a create with an idempotency key starts at most one
flow per workflow URL and key, however many engines race with it; what a second create does is the
policy's choice; keyed creates go to the shard their key hashes to, and an unkeyed create costs what it
always cost."""

from __future__ import annotations

import asyncio
import collections
import random
import string
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pytest

from dwarf import (
    BadRequestError,
    ConflictError,
    Flow,
    FlowExistsError,
    FlowOptions,
    IdempotencyPolicy,
    Query,
    Status,
    StoreError,
)
from dwarf.engine import Engine, TestProxy
from dwarf.engine.operations import idempotency_shard
from dwarf.store.base import Store
from tests.engine.graphs import WAIT, Replicas, chain, incrementer, proxy_with, wait_until

RACERS = 20


def _proxy() -> TestProxy:
    """``count`` (two increments), ``other`` (the same graph at another URL) and ``ask`` (interrupts)."""
    proxy = proxy_with("count", chain("count", "A", "B"), A=incrementer(), B=incrementer())
    proxy.handle_graph("other", chain("other", "A", "B"))

    async def ask(flow: Flow) -> None:
        flow.set("answer", flow.interrupt({"question": "go on?"}).get("answer", ""))

    proxy.handle_graph("ask", chain("ask", "Ask"))
    proxy.handle_task("Ask", ask)
    return proxy


def _keyed(key: str, policy: IdempotencyPolicy = "return_existing", **options: Any) -> FlowOptions:
    return FlowOptions(idempotency_key=key, idempotency_policy=policy, **options)


async def _flows(engine: Engine, workflow_url: str) -> list[str]:
    page, _ = await engine.list(Query(workflow_url=workflow_url, limit=1000))
    return sorted(summary.flow_key for summary in page)


async def test_a_second_create_with_the_key_returns_the_first_flow(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    first = await engine.create("count", {"count": 10}, _keyed("order-17"))
    again = await engine.create("count", {"count": 500}, _keyed("order-17", priority=3))
    assert again == first
    # The second call's state and options play no part: the first flow runs as it was created.
    assert (await engine.wait(first, timeout=WAIT)).state == {"count": 12}
    assert await engine.create("count", {}, _keyed("order-17")) == first  # ended: still the same flow
    assert await _flows(engine, "count") == [first]


async def test_the_key_is_scoped_to_the_workflow_url(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    count = await engine.create("count", {}, _keyed("same"))
    other = await engine.create("other", {}, _keyed("same"))
    different = await engine.create("count", {}, _keyed("different"))
    unkeyed = [await engine.create("count") for _ in range(2)]
    assert len({count, other, different, *unkeyed}) == 5
    assert await engine.create("other", {}, _keyed("same")) == other
    assert len(await _flows(engine, "count")) == 4


async def test_fail_policy_raises_a_conflict_naming_the_existing_flow(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    first = await engine.create("ask", {}, _keyed("once", "fail"))
    with pytest.raises(FlowExistsError) as raised:
        await engine.create("ask", {}, _keyed("once", "fail"))
    assert isinstance(raised.value, ConflictError) and raised.value.status_code == 409
    assert raised.value.flow_key == first
    shard, flow_id, token = first.split("-", 2)
    assert f"{shard}-{flow_id}" in str(raised.value) and token not in str(raised.value)
    # The policy is the caller's, per create: another caller may still be handed the flow.
    assert await engine.create("ask", {}, _keyed("once")) == first
    assert await _flows(engine, "ask") == [first]


async def test_start_new_if_ended_waits_for_the_flow_to_end(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    first = await engine.create("ask", {}, _keyed("thread-9", "start_new_if_ended"))
    assert (await engine.wait(first, timeout=WAIT)).status == Status.INTERRUPTED
    # Interrupted is a pause, not an end: the flow keeps its key.
    assert await engine.create("ask", {}, _keyed("thread-9", "start_new_if_ended")) == first
    await engine.resume(first, {"answer": "yes"})
    assert (await engine.wait(first, timeout=WAIT)).status == Status.COMPLETED
    # return_existing and fail still see the ended flow as the key's.
    assert await engine.create("ask", {}, _keyed("thread-9")) == first
    with pytest.raises(FlowExistsError):
        await engine.create("ask", {}, _keyed("thread-9", "fail"))
    second = await engine.create("ask", {}, _keyed("thread-9", "start_new_if_ended"))
    assert second != first
    assert await engine.create("ask", {}, _keyed("thread-9")) == second
    # The ended flow is untouched, and a cancelled flow has ended too.
    assert (await engine.snapshot(first)).state == {"answer": "yes"}
    await engine.wait(second, timeout=WAIT)
    await engine.cancel(second, "superseded")
    third = await engine.create("ask", {}, _keyed("thread-9", "start_new_if_ended"))
    assert len({first, second, third}) == 3
    assert await _flows(engine, "ask") == sorted([first, second, third])
    # The flows that gave the key up keep a record of it.
    store = engine.runtime.stores[0]
    for key, (held, released) in {
        first: ("", "thread-9"),
        second: ("", "thread-9"),
        third: ("thread-9", ""),
    }.items():
        (row,) = await store.read("get_flow", flow_id=int(key.split("-")[1]))
        assert (row["idempotency_key"], row["released_idempotency_key"]) == (held, released)


async def test_a_deleted_or_purged_flow_holds_its_key_no_more(make_engine: Any) -> None:
    engine = await make_engine(_proxy(), deletion_grace=0.1)
    first = await engine.create("count", {}, _keyed("k"))
    await engine.wait(first, timeout=WAIT)
    await engine.delete(first)
    second = await engine.create("count", {}, _keyed("k", "fail"))
    assert second != first
    await engine.wait(second, timeout=WAIT)
    assert await engine.purge(Query(workflow_url="count")) == 1
    # Marked for purge and not reaped yet, or reaped: either way the key is free.
    third = await engine.create("count", {}, _keyed("k", "fail"))
    assert third not in (first, second)
    assert await engine.create("count", {}, _keyed("k")) == third
    # A flow deleted on completion frees its key once its grace window is over.
    brief = await engine.create("count", {}, _keyed("brief", delete_on_completion=True))
    await engine.wait(brief, timeout=WAIT)

    async def deleted() -> bool:
        return brief not in await _flows(engine, "count")

    await wait_until(deleted)
    assert await engine.create("count", {}, _keyed("brief")) != brief


async def test_forks_continuations_and_children_do_not_take_the_key(make_engine: Any) -> None:
    proxy = _proxy()

    async def parent(flow: Flow) -> None:
        flow.set("child", flow.subgraph("count", {"count": 0})["count"])

    proxy.handle_graph("parent", chain("parent", "Parent"))
    proxy.handle_task("Parent", parent)
    engine = await make_engine(proxy)
    first = await engine.create("parent", {}, _keyed("p"))
    assert (await engine.wait(first, timeout=WAIT)).state == {"child": 2}
    forked = await engine.fork((await engine.history(first))[0].step_key)
    await engine.wait(forked, timeout=WAIT)
    (summary,) = [s for s in (await engine.list(Query(workflow_url="parent")))[0] if s.flow_key == first]
    continued = await engine.continue_thread(summary.thread_key)
    await engine.wait(continued, timeout=WAIT)
    assert await engine.create("parent", {}, _keyed("p")) == first
    new = await engine.create("parent", {}, _keyed("p", "start_new_if_ended"))
    assert new not in (first, forked, continued)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (_keyed("x" * 256), "at most 255 characters"),
        (_keyed("a\0b"), "idempotency_key"),
        (_keyed("lone \ud800"), "idempotency_key"),
        (FlowOptions(idempotency_key=7), "idempotency_key must be a string"),  # type: ignore[arg-type]
        (FlowOptions(idempotency_key=None), "idempotency_key must be a string"),  # type: ignore[arg-type]
        (_keyed("k", "replace"), "idempotency_policy must be one of"),  # type: ignore[arg-type]
        (_keyed("k", ["fail"]), "idempotency_policy must be one of"),  # type: ignore[arg-type]
        (FlowOptions(idempotency_policy="nope"), "idempotency_policy"),  # type: ignore[arg-type]
    ],
)
async def test_bad_keys_and_policies_are_refused_before_anything_is_written(
    make_engine: Any, options: FlowOptions, message: str
) -> None:
    engine = await make_engine(_proxy())
    with pytest.raises(BadRequestError, match=message):
        await engine.create("count", {}, options)
    assert await _flows(engine, "count") == []


async def test_a_key_cannot_join_a_thread(make_engine: Any) -> None:
    engine = await make_engine(_proxy())
    first = await engine.create("count")
    await engine.wait(first, timeout=WAIT)
    (summary,) = (await engine.list(Query(workflow_url="count")))[0]
    with pytest.raises(BadRequestError, match="thread_key"):
        await engine.create("count", {}, _keyed("k", thread_key=summary.thread_key))
    assert await _flows(engine, "count") == [first]


async def test_the_longest_key_and_url_fit_the_unique_index(make_engine: Any) -> None:
    # Random characters, which PostgreSQL cannot compress below its index entry limit.
    rng = random.Random(5)
    url = "u/" + "".join(rng.choice(string.ascii_letters) for _ in range(1022))
    key = "".join(chr(rng.randrange(0x10000, 0x10FFFF)) for _ in range(255))
    proxy = _proxy()
    proxy.handle_graph(url, chain("long", "A", "B"))
    proxy.handle_graph(url + "x", chain("long", "A", "B"))
    engine = await make_engine(proxy)
    first = await engine.create(url, {}, _keyed(key))
    assert await engine.create(url, {}, _keyed(key)) == first
    with pytest.raises(BadRequestError, match="at most 1024 bytes"):
        await engine.create(url + "x", {}, _keyed(key))
    await engine.create(url + "x")  # without a key, as long as ever


async def _race(creates: list[Callable[[], Awaitable[str]]]) -> collections.Counter[str]:
    results = await asyncio.gather(*(create() for create in creates))
    return collections.Counter(results)


@pytest.mark.parametrize("policy", ["return_existing", "start_new_if_ended"])
async def test_replicas_racing_with_one_key_start_one_flow(
    make_engine: Any, policy: IdempotencyPolicy
) -> None:
    proxy = _proxy()
    replicas: list[Engine] = [await make_engine(proxy), await make_engine(proxy)]
    creates = [
        lambda engine=engine, n=n: engine.create("ask", {"n": n}, _keyed("race", policy))
        for n in range(RACERS)
        for engine in replicas
    ]
    keys = await _race(creates)
    assert len(keys) == 1 and sum(keys.values()) == 2 * RACERS
    assert await _flows(replicas[0], "ask") == list(keys)


async def test_racing_creates_replace_an_ended_flow_once(make_engine: Any) -> None:
    proxy = _proxy()
    replicas: list[Engine] = [await make_engine(proxy), await make_engine(proxy)]
    old = await replicas[0].create("ask", {}, _keyed("again"))
    assert (await replicas[0].wait(old, timeout=WAIT)).status == Status.INTERRUPTED
    await replicas[0].cancel(old, "replaced")
    # The replacement interrupts and so never ends during the race: a create that found it ended
    # would rightly start yet another flow (as one did when the replacement completed mid-race).
    creates = [
        lambda engine=engine: engine.create("ask", {}, _keyed("again", "start_new_if_ended"))
        for _ in range(RACERS)
        for engine in replicas
    ]
    keys = await _race(creates)
    assert len(keys) == 1 and old not in keys
    assert await _flows(replicas[1], "ask") == sorted([old, *keys])


async def test_engines_with_their_own_connections_race_on_one_database(fresh_dsn: str) -> None:
    # make_engine's replicas share one store object per process (one SQLite connection); these have
    # their own, so on SQLite too the races are between connections, settled by the database's lock.
    async with Replicas(_proxy(), fresh_dsn) as replicas:
        engines = [await replicas.start(), await replicas.start()]
        for round_ in range(3):
            creates = [
                lambda engine=engine, n=n: engine.create("count", {}, _keyed(f"key-{n}"))
                for n in range(RACERS)
                for engine in engines
            ]
            keys = await _race(creates)
            assert len(keys) == RACERS and set(keys.values()) == {2}, round_
        assert len(await _flows(engines[0], "count")) == RACERS


async def test_a_sharded_engine_places_a_key_on_the_shard_of_its_hash(make_engine: Any) -> None:
    shards = 3
    proxy = _proxy()
    engines: list[Engine] = [await make_engine(proxy, num_shards=shards) for _ in range(2)]
    placed: dict[str, str] = {}
    for n in range(30):
        key = f"order-{n}"
        flow_key = await engines[n % 2].create("count", {}, _keyed(key))
        assert int(flow_key.split("-", 1)[0]) == idempotency_shard("count", key, shards)
        placed[key] = flow_key
    assert len({int(key.split("-", 1)[0]) for key in placed.values()}) == shards
    for key, flow_key in placed.items():
        assert await engines[1].create("count", {}, _keyed(key)) == flow_key
        assert await engines[0].create("count", {}, _keyed(key)) == flow_key
    creates = [
        lambda engine=engine: engine.create("count", {}, _keyed("sharded-race"))
        for _ in range(RACERS)
        for engine in engines
    ]
    assert len(await _race(creates)) == 1
    assert len(await _flows(engines[0], "count")) == 31


def test_the_shard_hash_is_stable() -> None:
    # The same in every process and every release: changing it would duplicate keyed flows.
    assert [idempotency_shard("count", f"order-{n}", 3) for n in range(8)] == [2, 1, 1, 3, 2, 1, 2, 2]
    assert idempotency_shard("count", "anything", 1) == 1


async def test_a_keyed_create_fails_rather_than_leave_its_dead_shard(make_engine: Any, backend: str) -> None:
    if backend != "postgres":
        pytest.skip("killing one shard's database server-side needs PostgreSQL")
    import psycopg

    engine = await make_engine(_proxy(), num_shards=3)
    first, second = (urlsplit(store.dsn) for store in engine.runtime.stores[:2])  # type: ignore[attr-defined]
    admin = first._replace(path="/postgres").geturl()
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE "{second.path.lstrip("/")}" WITH (FORCE)'.encode())
    key = next(f"k{n}" for n in range(100) if idempotency_shard("count", f"k{n}", 3) == 2)
    with pytest.raises(StoreError) as raised:
        await engine.create("count", {}, _keyed(key))
    assert raised.value.transient
    # Unkeyed creates go on elsewhere, as before.
    assert {int((await engine.create("count")).split("-", 1)[0]) for _ in range(12)} <= {1, 3}


class _Calls:
    """Every statement or transaction an operation asks a store for (a read or write that the store
    carries out through its own ``run`` counts once)."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self._inside = False
        for method in ("read", "write"):
            original = getattr(store, method)

            async def counted(
                query: Any, _original: Any = original, _method: str = method, **params: Any
            ) -> Any:
                self.calls.append(f"{_method} {query}")
                self._inside = True
                try:
                    return await _original(query, **params)
                finally:
                    self._inside = False

            monkeypatch.setattr(store, method, counted)
        original_run = store.run

        async def counted_run(work: Any, **options: Any) -> Any:
            if not self._inside:
                self.calls.append("run")
            return await original_run(work, **options)

        monkeypatch.setattr(store, "run", counted_run)


async def test_statements_of_a_create(make_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = await make_engine(_proxy(), workers=0)
    calls = _Calls(engine.runtime.stores[0], monkeypatch).calls
    await engine.create("ask")
    assert calls == ["write create_flow"]  # an unkeyed create: one statement, as before keys existed
    calls.clear()
    await engine.create("ask", {}, _keyed("k"))
    assert calls == ["write create_keyed_flow"]
    calls.clear()
    first = await engine.create("ask", {}, _keyed("k"))
    assert calls == ["write create_keyed_flow", "read flow_holding_idempotency_key"]
    await engine.cancel(first)
    calls.clear()
    await engine.create("ask", {}, _keyed("k", "start_new_if_ended"))
    # The holder gives the key up in the transaction that inserts its successor.
    assert calls == ["write create_keyed_flow", "read flow_holding_idempotency_key", "run"]


async def test_a_create_that_finds_its_key_held_ends_its_span_without_a_flow(make_engine: Any) -> None:
    from tests.engine.test_telemetry import Sdk

    sdk = Sdk()
    try:
        engine = await make_engine(_proxy(), **sdk.settings())
        first = await engine.create("count", {}, _keyed("traced"))
        await engine.wait(first, timeout=WAIT)
        assert await engine.create("count", {}, _keyed("traced")) == first
        spans = sdk.spans_named("flow count")
        assert len(spans) == 2
        existed = [span for span in spans if (span.attributes or {}).get("dwarf.flow.existed")]
        assert len(existed) == 1 and "dwarf.flow" not in (existed[0].attributes or {})
        assert sdk.value("dwarf_flows_created", workflow="count") == 1
    finally:
        sdk.shutdown()
