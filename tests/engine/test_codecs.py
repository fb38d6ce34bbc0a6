"""Values at rest through codecs (docs/codecs.md), on both databases: every kind of stored value round
trips through compression, encryption and both; the database holds no plaintext of a secret; keys
rotate; plaintext and encoded rows mix; a missing key is a clear error, never garbage; the size guard
refuses large values without changing anything; large values go to a blob store."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from typing import Any

import pytest

from dwarf import (
    END,
    AESGCMCodec,
    Codec,
    CodecError,
    Flow,
    FlowOptions,
    Graph,
    Query,
    Reducer,
    SchedulerTuning,
    StateTooLargeError,
    Status,
    ZlibCodec,
)
from dwarf.engine import Engine, TestProxy
from dwarf.store.encoded import EncodedStore
from tests.engine.graphs import WAIT, chain, graph_of, proxy_with, wait_until

SECRET = "SSN-123-45-6789"
KEY1 = bytes(range(32))
KEY2 = bytes(range(100, 132))
BIG = "lorem ipsum dolor " * 800  # compresses well; makes states large enough to be stored as references

STACKS: dict[str, Any] = {
    "zlib": lambda: [ZlibCodec()],
    "aes": lambda: [AESGCMCodec({"k1": KEY1})],
    "zlib+aes": lambda: [ZlibCodec(), AESGCMCodec({"k1": KEY1})],
}


async def raw_rows(engine: Engine, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` as stored, codecs not undone (straight from the driver)."""
    store = engine.runtime.stores[0]
    inner = store.inner if isinstance(store, EncodedStore) else store

    async def work(tx: Any) -> list[dict[str, Any]]:
        if inner.dialect == "sqlite":
            cursor = tx._conn.execute(f"SELECT * FROM {table}")
            names = [column[0] for column in cursor.description]
            return [row if isinstance(row, dict) else dict(zip(names, row, strict=True)) for row in cursor]
        cursor = await tx._conn.execute(f"SELECT * FROM {table}")
        return list(await cursor.fetchall())

    return await inner.run(work, write=False)


async def raw_text(engine: Engine) -> str:
    """All stored rows of both tables as one text, for 'the secret is not in there' checks."""
    rows = await raw_rows(engine, "dwarf_flows") + await raw_rows(engine, "dwarf_steps")
    return "\n".join(str(value) for row in rows for value in row.values())


def rich_host() -> TestProxy:
    """A flow that stores every kind of value: baggage, a forEach fan-out and its join (carries, the
    append reducer), an interrupt payload and resume data, a child flow's input and result, and a state
    large enough to be stored as references along a chain."""
    graph = graph_of("Rich", "Start", "Work", "Join", "Ask", "Call", "Tail")
    graph.add_transition_for_each("Start", "Work", "items", "item")
    graph.add_transition("Work", "Join")
    graph.set_fan_in("Join")
    graph.set_reducer("results", Reducer.APPEND)
    graph.add_transition_chain("Join", "Ask", "Call", "Tail", END)
    child = graph_of("Child", "Echo")
    child.add_transition("Echo", END)
    host = TestProxy()
    host.handle_graph("rich", graph)
    host.handle_graph("child", child)

    @host.task("Start")
    def start(flow: Flow) -> None:
        flow.set("items", [1, 2, 3])
        flow.set("big", BIG)

    @host.task("Work")
    def work(flow: Flow) -> None:
        flow.set("results", [f"{SECRET}/{flow.get('item')}"])

    @host.task("Join")
    def join(flow: Flow) -> None:
        flow.set("joined", len(flow.get("results")))

    @host.task("Ask")
    def ask(flow: Flow) -> None:
        answer = flow.interrupt({"question": f"confirm {SECRET}"})
        flow.set("answer", answer["answer"])

    @host.task("Call")
    def call(flow: Flow) -> None:
        flow.set("child", flow.subgraph("child", {"secret": SECRET}))

    @host.task("Tail")
    def tail(flow: Flow) -> None:
        flow.append("log", f"tail saw {SECRET}")

    @host.task("Echo")
    def echo(flow: Flow) -> None:
        flow.set("echoed", flow.get("secret"))

    return host


async def run_rich(engine: Engine, state: dict[str, Any] | None = None) -> str:
    """Run a rich flow to its end (answering its interrupt); return its key."""
    options = FlowOptions(baggage={"user": SECRET})
    key = await engine.create("rich", {"owner": SECRET, **(state or {})}, options)
    asked = await engine.wait(key, timeout=WAIT)
    assert asked.status == Status.INTERRUPTED, asked.error
    assert asked.interrupt_payload == {"question": f"confirm {SECRET}"}
    await engine.resume(key, {"answer": f"yes {SECRET}"})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    return key


def check_rich_state(state: dict[str, Any]) -> None:
    assert state["results"] == [f"{SECRET}/{n}" for n in (1, 2, 3)]
    assert state["answer"] == f"yes {SECRET}" and state["child"]["echoed"] == SECRET
    assert state["big"] == BIG and state["log"] == [f"tail saw {SECRET}"] and state["owner"] == SECRET


@pytest.mark.parametrize("stack", STACKS)
async def test_every_operation_reads_what_a_codec_stack_wrote(make_engine: Any, stack: str) -> None:
    codecs: Sequence[Codec] = STACKS[stack]()
    engine = await make_engine(rich_host(), codec=codecs)
    key = await run_rich(engine)
    outcome = await engine.snapshot(key)
    check_rich_state(outcome.state)

    history = await engine.history(key)
    names = [step.task_name for step in history]
    assert names == ["Start", "Work", "Work", "Work", "Join", "Ask", "Call", "Tail"]
    assert history[-1].state["answer"] == f"yes {SECRET}"
    call = next(step for step in history if step.task_name == "Call")
    assert call.sub_history[0].state == {"secret": SECRET}
    assert (await engine.step(call.step_key)).changes["child"]["echoed"] == SECRET
    assert [summary.flow_key for summary in (await engine.list(Query(search="rich")))[0]] == [key]

    # A fork re-runs Ask with an override, and reads the copied (encoded) rows before it.
    ask = next(step for step in history if step.task_name == "Ask")
    forked = await engine.fork(ask.step_key, {"extra": SECRET})
    assert (await engine.wait(forked, timeout=WAIT)).status == Status.INTERRUPTED
    await engine.resume(forked, {"answer": "again"})
    forked_outcome = await engine.wait(forked, timeout=WAIT)
    assert forked_outcome.status == Status.COMPLETED, forked_outcome.error
    assert forked_outcome.state["extra"] == SECRET and forked_outcome.state["answer"] == "again"
    assert len(await engine.history(forked)) == len(history)

    # A thread continues from the (encoded) final state.
    continued = await engine.continue_thread(key, {"more": SECRET})
    assert (await engine.wait(continued, timeout=WAIT)).status == Status.INTERRUPTED
    await engine.resume(continued, {"answer": "more"})
    next_outcome = await engine.wait(continued, timeout=WAIT)
    assert next_outcome.status == Status.COMPLETED, next_outcome.error
    assert next_outcome.state["more"] == SECRET and next_outcome.state["owner"] == SECRET

    stored = await raw_text(engine)
    assert BIG[:200] not in stored, "the large state is stored uncompressed"
    if "aes" in stack:
        assert SECRET not in stored, "a secret field is stored in plaintext"
        assert "dwarf:zlib+aesgcm.k1:" in stored if stack == "zlib+aes" else "dwarf:aesgcm.k1:" in stored
    else:
        assert "dwarf:zlib:" in stored


async def test_a_rotated_key_reads_old_rows_and_writes_new_ones(make_engine: Any) -> None:
    host = rich_host()
    old = await make_engine(host, codec=[ZlibCodec(), AESGCMCodec({"k1": KEY1})])
    finished = await run_rich(old)
    waiting = await old.create("rich", {"owner": SECRET}, FlowOptions(baggage={"user": SECRET}))
    assert (await old.wait(waiting, timeout=WAIT)).status == Status.INTERRUPTED
    rotated = await make_engine(
        host, codec=[ZlibCodec(), AESGCMCodec({"k1": KEY1, "k2": KEY2}, current="k2")]
    )
    await old.shutdown()

    check_rich_state((await rotated.snapshot(finished)).state)
    assert len(await rotated.history(finished)) == 8
    await rotated.resume(waiting, {"answer": f"yes {SECRET}"})
    outcome = await rotated.wait(waiting, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    check_rich_state(outcome.state)
    stored = await raw_text(rotated)
    assert "aesgcm.k1:" in stored and "aesgcm.k2:" in stored and SECRET not in stored

    # Re-encoding retires the old key: afterwards an engine holding only k2 reads everything.
    counts = await rotated.reencode()
    assert counts.values > 0 and counts.rows > 0
    assert "aesgcm.k1:" not in await raw_text(rotated)
    assert await rotated.reencode() == type(counts)(rows=0, values=0)
    only_new = await make_engine(host, codec=[ZlibCodec(), AESGCMCodec({"k2": KEY2})], workers=0)
    for key in (finished, waiting):
        check_rich_state((await only_new.snapshot(key)).state)
        assert len(await only_new.history(key)) == 8


async def test_a_missing_key_or_codec_is_a_clear_error_never_garbage(make_engine: Any) -> None:
    host = rich_host()
    writer = await make_engine(host, codec=[AESGCMCodec({"k1": KEY1})])
    key = await run_rich(writer)
    wrong_key = await make_engine(host, codec=[AESGCMCodec({"k2": KEY2})], workers=0)
    plain = await make_engine(host, workers=0)
    for reader, codec_id in ((wrong_key, "aesgcm.k1"), (plain, "aesgcm.k1")):
        for read in (reader.snapshot, reader.history, reader.wait):
            with pytest.raises(CodecError) as caught:
                await read(key)
            assert caught.value.codec_id == codec_id
            message = str(caught.value)
            assert SECRET not in message and KEY1.hex() not in message and KEY2.hex() not in message
    # The listing reads no encoded column: it works without the key.
    assert [summary.flow_key for summary in (await plain.list())[0]] == [key]


async def test_plaintext_rows_still_read_after_a_codec_is_switched_on(make_engine: Any) -> None:
    host = rich_host()
    plain = await make_engine(host)
    finished = await run_rich(plain)
    waiting = await plain.create("rich", {"owner": SECRET}, FlowOptions(baggage={"user": SECRET}))
    assert (await plain.wait(waiting, timeout=WAIT)).status == Status.INTERRUPTED
    encoded = await make_engine(host, codec=[ZlibCodec(), AESGCMCodec({"k1": KEY1})])
    await plain.shutdown()

    check_rich_state((await encoded.snapshot(finished)).state)
    await encoded.resume(waiting, {"answer": f"yes {SECRET}"})
    outcome = await encoded.wait(waiting, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    check_rich_state(outcome.state)
    assert len(await encoded.history(waiting)) == 8
    steps = await raw_rows(encoded, "dwarf_steps")
    assert any(str(row["changes"]).startswith("dwarf:") for row in steps)
    assert any(SECRET in str(row["changes"]) for row in steps)  # the plaintext rows of before


async def test_a_claimed_step_this_engine_cannot_read_is_left_to_a_replica_that_can(
    make_engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[str] = []

    async def work(flow: Flow) -> None:
        runs.append(flow.get_str("owner"))

    host = proxy_with("line", chain("Line", "W"), W=work)
    tuning = SchedulerTuning(lease_period=0.6, idle_poll=0.05)
    creator = await make_engine(host, workers=0, codec=[AESGCMCodec({"k1": KEY1})])
    logger = logging.getLogger("dwarf.test.codec.blind")
    blind = await make_engine(host, scheduler_tuning=tuning, logger=logger)
    with caplog.at_level(logging.ERROR, logger=logger.name):
        key = await creator.create("line", {"owner": SECRET})
        await wait_until(lambda: _logged(caplog, "cannot be read by this engine"))
    assert runs == []
    await blind.shutdown(drain_timeout=0)
    sighted = await make_engine(host, codec=[AESGCMCodec({"k1": KEY1})], scheduler_tuning=tuning)
    outcome = await sighted.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert runs == [SECRET]
    assert all(SECRET not in record.getMessage() for record in caplog.records)


async def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


# --- the size guard ---


async def test_a_create_over_the_size_guard_is_refused_and_creates_nothing(make_engine: Any) -> None:
    engine = await make_engine(rich_host(), max_state_size=1000)
    with pytest.raises(StateTooLargeError) as caught:
        await engine.create("rich", {"blob": "x" * 1000})
    assert caught.value.what == "state" and caught.value.limit == 1000 and caught.value.status_code == 413
    with pytest.raises(StateTooLargeError, match="baggage"):
        await engine.create("rich", {}, FlowOptions(baggage={"blob": "x" * 1000}))
    assert (await engine.list())[0] == []


async def test_a_task_writing_past_the_size_guard_fails_its_step_once(make_engine: Any) -> None:
    runs: list[int] = []

    async def bloat(flow: Flow) -> None:
        runs.append(1)
        flow.set("blob", "x" * 5000)

    engine = await make_engine(proxy_with("bloat", chain("Bloat", "B"), B=bloat), max_state_size=2000)
    _, outcome = await engine.run("bloat", {"keep": 1}, timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "max_state_size" in outcome.error and "could not be stored" in outcome.error
    assert runs == [1]


def _bloat_routed_on_error(name: str) -> Graph:
    """``Bloat`` (see ``_bloat``) routes its errors to ``Handle``; both then END."""
    graph = graph_of(name, "Bloat", "Handle")
    graph.add_transition("Bloat", END)
    graph.add_transition_on_error("Bloat", "Handle")
    graph.add_transition("Handle", END)
    return graph


async def _bloat(flow: Flow) -> None:
    """A task whose change alone is about 5 KB."""
    flow.set("blob", "x" * 5000)


async def test_an_oversized_outcome_is_routed_by_on_error_with_its_status_code(make_engine: Any) -> None:
    graph = _bloat_routed_on_error("Routed")

    async def handle(flow: Flow) -> None:
        flow.set("handled", flow.get("onErr"))

    engine = await make_engine(proxy_with("routed", graph, Bloat=_bloat, Handle=handle), max_state_size=2000)
    _, outcome = await engine.run("routed", {}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED, outcome.error
    assert outcome.state["handled"]["statusCode"] == 413 and "blob" not in outcome.state


async def test_an_error_route_that_itself_exceeds_the_guard_fails_the_flow(make_engine: Any) -> None:
    graph = _bloat_routed_on_error("Tight")

    host = proxy_with("tight", graph, Bloat=_bloat, Handle=_bloat)
    # The input fits; the input plus onErr (its message is long) does not.
    engine = await make_engine(host, max_state_size=200)
    _, outcome = await engine.run("tight", {"pad": "p" * 150}, timeout=WAIT)
    assert outcome.status == Status.FAILED and "max_state_size" in outcome.error


async def test_resume_data_over_the_guard_is_refused_and_the_flow_stays_resumable(make_engine: Any) -> None:
    engine = await make_engine(rich_host(), max_state_size=50_000)
    key = await engine.create("rich", {"owner": "x"})
    assert (await engine.wait(key, timeout=WAIT)).status == Status.INTERRUPTED
    with pytest.raises(StateTooLargeError, match="resume data"):
        await engine.resume(key, {"answer": "y" * 60_000})
    assert (await engine.snapshot(key)).status == Status.INTERRUPTED
    await engine.resume(key, {"answer": "fine"})
    assert (await engine.wait(key, timeout=WAIT)).status == Status.COMPLETED


async def test_a_state_growing_by_small_changes_is_stopped_at_the_guard_exactly(make_engine: Any) -> None:
    """Along a chain the state is stored as references (changes only); the guard still measures it."""
    graph = Graph("Grow")
    graph.add_task("Turn", "Turn")
    graph.add_transition_goto("Turn", "Turn")
    graph.add_transition("Turn", END)

    async def turn(flow: Flow) -> None:
        flow.append("items", "i" * 500)
        flow.goto("Turn")

    limit = 30_000
    engine = await make_engine(proxy_with("grow", graph, Turn=turn), max_state_size=limit)
    key, outcome = await engine.run("grow", {}, timeout=WAIT)
    assert outcome.status == Status.FAILED and "max_state_size" in outcome.error
    history = await engine.history(key)
    sizes = [len(json.dumps(step.state, separators=(",", ":"))) for step in history]
    assert max(sizes) <= limit
    # The last input plus one more item would have passed the guard: it stopped at the first state over.
    assert sizes[-1] + 504 > limit
    stored = await raw_rows(engine, "dwarf_steps")
    assert sum(1 for row in stored if row["state"] == "") > len(stored) // 2, "the chain used no references"


async def test_a_fan_in_merge_over_the_guard_fails_the_flow(make_engine: Any) -> None:
    graph = graph_of("Merge", "Split", "Work", "Join")
    graph.add_transition_for_each("Split", "Work", "items", "item")
    graph.add_transition("Work", "Join")
    graph.set_fan_in("Join")
    graph.add_transition("Join", END)
    graph.set_reducer("parts", Reducer.APPEND)

    async def split(flow: Flow) -> None:
        flow.set("items", list(range(6)))

    async def work(flow: Flow) -> None:
        flow.set("parts", ["p" * 400])

    async def join(flow: Flow) -> None:
        raise AssertionError("the join must not run")

    host = proxy_with("merge", graph, Split=split, Work=work, Join=join)
    engine = await make_engine(host, max_state_size=2000)
    _, outcome = await engine.run("merge", {}, timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "merging the branches" in outcome.error and "max_state_size" in outcome.error


# --- offloading ---


class MemoryBlobs:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> str:
        self.blobs[key] = data
        return f"mem:{key}"

    def get(self, ref: str) -> bytes:
        return self.blobs[ref.removeprefix("mem:")]


async def test_large_values_go_to_the_blob_store_and_rows_keep_references(make_engine: Any) -> None:
    blobs = MemoryBlobs()
    codecs = [ZlibCodec(), AESGCMCodec({"k1": KEY1})]
    host = rich_host()
    engine = await make_engine(host, codec=codecs, blob_store=blobs, offload_above=2048)
    # Random text does not compress: the encoded state stays above the threshold.
    noise = random.Random(3).randbytes(3000).hex()
    key = await run_rich(engine, {"noise": noise})
    check_rich_state((await engine.snapshot(key)).state)
    assert len(await engine.history(key)) == 8
    stored = await raw_text(engine)
    assert ":@mem:" in stored and noise[:100] not in stored and SECRET not in stored
    assert blobs.blobs and all(hashlib.sha256(data).hexdigest() == k for k, data in blobs.blobs.items())
    assert all(noise[:100].encode() not in data for data in blobs.blobs.values())
    # Without the blob store, an offloaded value is a clear error.
    blind = await make_engine(host, codec=codecs, workers=0)
    with pytest.raises(CodecError, match="blob store"):
        await blind.history(key)


async def test_an_engine_without_value_settings_has_no_codec_layer(make_engine: Any) -> None:
    plain = await make_engine(rich_host())
    assert not any(isinstance(store, EncodedStore) for store in plain.runtime.stores)
    guarded = await make_engine(rich_host(), max_state_size=10_000)
    assert all(isinstance(store, EncodedStore) for store in guarded.runtime.stores)
