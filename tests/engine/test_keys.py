"""``dwarf.engine.keys`` (docs/design.md#keys): format, parse and tokens, and every operation taking a key
refusing out-of-bounds keys with the same NotFoundError on both backends."""

from __future__ import annotations

import os
import string
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from dwarf import END, FlowOptions, Graph, NotFoundError, Query
from dwarf.engine import Engine, TestProxy
from dwarf.engine.keys import (
    TOKEN_LENGTH,
    ParsedKey,
    correlation_id,
    format_key,
    new_token,
    parse_key,
    tokens_match,
)

URL_SAFE = set(string.ascii_letters + string.digits + "-_")
TOKEN = "AbCdEfGh-_123456"


def test_new_token_is_16_url_safe_characters() -> None:
    token = new_token()
    assert len(token) == TOKEN_LENGTH == 16
    assert set(token) <= URL_SAFE


def test_new_tokens_differ() -> None:
    assert len({new_token() for _ in range(200)}) == 200


def test_tokens_differ_across_many_calls_past_the_random_pool() -> None:
    # 100,000 tokens take the pool's 4 KiB over and over; no refill may repeat a token.
    tokens = {new_token() for _ in range(100_000)}
    assert len(tokens) == 100_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_hand_out_its_parents_tokens() -> None:
    new_token()  # the pool holds unused bytes now
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, new_token().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    child_token = os.read(read, 64).decode()
    os.close(read)
    assert len(child_token) == 16 and child_token != new_token()


def test_format_key_is_shard_id_token() -> None:
    assert format_key(2, 345, TOKEN) == f"2-345-{TOKEN}"


def test_correlation_id_is_the_key_without_its_token() -> None:
    assert correlation_id(2, 345) == "2-345"


def test_parse_key_reverses_format_key() -> None:
    assert parse_key(format_key(3, 99, TOKEN)) == ParsedKey(3, 99, TOKEN)


def test_parse_key_keeps_dashes_inside_the_token() -> None:
    token = "--------________"
    assert parse_key(f"1-2-{token}") == ParsedKey(1, 2, token)


def test_parse_key_round_trips_fresh_tokens() -> None:
    for _ in range(100):
        token = new_token()
        assert parse_key(format_key(1, 7, token)).token == token


def test_parse_key_accepts_the_largest_63_bit_id() -> None:
    assert parse_key(f"1-{2**63 - 1}-{TOKEN}").id == 2**63 - 1


MALFORMED = {
    "empty": "",
    "no dashes": "garbage",
    "two parts": "1-2",
    "missing token": "1-2-",
    "missing id": f"1--{TOKEN}",
    "missing shard": f"-2-{TOKEN}",
    "non-numeric shard": f"a-2-{TOKEN}",
    "non-numeric id": f"1-b-{TOKEN}",
    "negative-looking id": f"1--2-{TOKEN}",
    "plus sign": f"+1-2-{TOKEN}",
    "spaces": f" 1-2-{TOKEN}",
    "non-ascii digits": f"\u0661-2-{TOKEN}",
    "fullwidth digits": f"1-\uff12-{TOKEN}",
    "shard zero": f"0-2-{TOKEN}",
    "id zero": f"1-0-{TOKEN}",
    "id beyond 63 bits": f"1-{2**63}-{TOKEN}",
    "short token": f"1-2-{TOKEN[:-1]}",
    "long token": f"1-2-{TOKEN}x",
    "token with a bad character": f"1-2-{TOKEN[:-1]}*",
    "token with a space": f"1-2-{TOKEN[:-1]} ",
    "token with non-ascii": f"1-2-{TOKEN[:-1]}\u00e9",
    "trailing newline": f"1-2-{TOKEN}\n",
}


@pytest.mark.parametrize("key", list(MALFORMED.values()), ids=list(MALFORMED))
def test_parse_key_refuses_a_malformed_key_with_not_found(key: str) -> None:
    with pytest.raises(NotFoundError):
        parse_key(key)


@pytest.mark.parametrize("key", [None, 12, b"1-2-AbCdEfGh-_123456", ["1", "2", TOKEN]], ids=repr)
def test_parse_key_refuses_a_non_string_with_not_found(key: object) -> None:
    with pytest.raises(NotFoundError):
        parse_key(key)


def test_every_malformed_key_raises_the_same_message() -> None:
    messages = set()
    for key in MALFORMED.values():
        with pytest.raises(NotFoundError) as caught:
            parse_key(key, "flow")
        messages.add(str(caught.value))
    assert len(messages) == 1


def test_tokens_match_equal_tokens() -> None:
    assert tokens_match(TOKEN, TOKEN)


@pytest.mark.parametrize(
    "other",
    [TOKEN[:-1] + "7", TOKEN.lower(), TOKEN[:-1], TOKEN + "x", ""],
    ids=["char", "case", "short", "long", "empty"],
)
def test_tokens_match_refuses_different_tokens(other: str) -> None:
    assert not tokens_match(other, TOKEN)


def test_tokens_match_handles_non_ascii_input() -> None:
    assert not tokens_match("\u00e9" * 16, TOKEN)


# --- bounds: keys that int() would choke on or misread ---

OUT_OF_BOUNDS = {
    "5000-digit shard": f"{'9' * 5000}-2-{TOKEN}",
    "5000-digit id": f"1-{'9' * 5000}-{TOKEN}",
    "4301-digit id": f"1-{'1' * 4301}-{TOKEN}",
    "20-digit id": f"1-{10**19}-{TOKEN}",
    "shard beyond 63 bits": f"{2**63}-2-{TOKEN}",
    "arabic-indic id": f"1-\u0661\u0662-{TOKEN}",
    "underscore in the id": f"1-1_0-{TOKEN}",
    "underscore in the shard": f"1_0-2-{TOKEN}",
    "leading zero in the id": f"1-02-{TOKEN}",
    "leading zero in the shard": f"01-2-{TOKEN}",
    "plus sign on the id": f"1-+2-{TOKEN}",
    "space inside": f"1- 2-{TOKEN}",
    "tab before the token": f"1-2-\t{TOKEN[1:]}",
    "a million characters": f"1-2-{TOKEN}" + "A" * 1_000_000,
}


@pytest.mark.parametrize("key", list(OUT_OF_BOUNDS.values()), ids=list(OUT_OF_BOUNDS))
def test_parse_key_refuses_out_of_bounds_and_non_canonical_numbers_with_not_found(key: str) -> None:
    with pytest.raises(NotFoundError, match=r"^flow not found$"):
        parse_key(key)


def test_parse_key_accepts_the_largest_63_bit_shard() -> None:
    assert parse_key(f"{2**63 - 1}-1-{TOKEN}").shard == 2**63 - 1


# --- every operation that takes a key, on both backends ---


def _job() -> TestProxy:
    graph = Graph("Job")
    graph.add_task("Work", "work")
    graph.add_transition("Work", END)
    proxy = TestProxy()
    proxy.handle_graph("job", graph)
    proxy.handle_task("work", lambda flow: None)
    return proxy


def _bad_keys(good: str) -> dict[str, str]:
    """Keys that go wrong in the ways parse_key must bound, derived from a real key ``good``."""
    shard, row_id, token = good.split("-", 2)
    arabic = row_id.translate(
        str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
    )
    wrong = ("B" if token[0] != "B" else "C") + token[1:]
    return {
        "5000-digit shard": f"{'9' * 5000}-{row_id}-{token}",
        "5000-digit id": f"{shard}-{'9' * 5000}-{token}",
        "20-digit id": f"{shard}-{10**19}-{token}",
        "largest shard": f"{2**63 - 1}-{row_id}-{token}",
        "shard beyond 63 bits": f"{2**63}-{row_id}-{token}",
        "unicode digits": f"{shard}-{arabic}-{token}",
        "underscore": f"{shard}-{row_id[0]}_{row_id[1:] or '0'}-{token}",
        "leading zero": f"{shard}-0{row_id}-{token}",
        "plus sign": f"{shard}-+{row_id}-{token}",
        "whitespace": f"{shard}-{row_id} -{token}",
        "wrong token": f"{shard}-{row_id}-{wrong}",
        "a million characters": good + "A" * 1_000_000,
    }


async def _keys_of_a_flow(engine: Engine) -> tuple[str, str]:
    """A flow that has stopped (so every operation could act on it) and the key of its step."""
    flow_key, _ = await engine.run("job", timeout=10)
    [step] = await engine.history(flow_key)
    return flow_key, step.step_key


def _operations(engine: Engine) -> dict[str, Callable[[str], Awaitable[Any]]]:
    return {
        "snapshot": engine.snapshot,
        "wait": lambda key: engine.wait(key, timeout=1),
        "history": engine.history,
        "history_mermaid": engine.history_mermaid,
        "fingerprint": engine.fingerprint,
        "resume": lambda key: engine.resume(key, {}),
        "cancel": engine.cancel,
        "delete": engine.delete,
        "continue_thread": engine.continue_thread,
        "create with thread_key": lambda key: engine.create("job", options=FlowOptions(thread_key=key)),
    }


async def test_every_operation_refuses_every_out_of_bounds_flow_key_with_not_found(make_engine: Any) -> None:
    engine = await make_engine(_job())
    flow_key, _ = await _keys_of_a_flow(engine)
    wrong = []
    for operation, call in _operations(engine).items():
        for kind, bad in _bad_keys(flow_key).items():
            try:
                await call(bad)
            except NotFoundError:
                continue
            except Exception as error:
                wrong.append(f"{operation} with {kind}: {type(error).__name__}")
            else:
                wrong.append(f"{operation} with {kind}: no error")
    assert wrong == []
    page, _ = await engine.list()
    assert [summary.flow_key for summary in page] == [flow_key]


@pytest.mark.parametrize("operation", ["step", "fork"])
async def test_step_operations_refuse_every_out_of_bounds_step_key_with_not_found(
    make_engine: Any, operation: str
) -> None:
    engine = await make_engine(_job())
    flow_key, step_key = await _keys_of_a_flow(engine)
    call = getattr(engine, operation)
    wrong = []
    for kind, bad in _bad_keys(step_key).items():
        try:
            await call(bad)
        except NotFoundError:
            continue
        except Exception as error:
            wrong.append(f"{kind}: {type(error).__name__}")
        else:
            wrong.append(f"{kind}: no error")
    assert wrong == []
    page, _ = await engine.list()
    assert [summary.flow_key for summary in page] == [flow_key]


async def test_a_list_or_purge_by_an_out_of_bounds_thread_key_matches_nothing(make_engine: Any) -> None:
    engine = await make_engine(_job())
    flow_key, _ = await _keys_of_a_flow(engine)
    for bad in _bad_keys(flow_key).values():
        assert await engine.list(Query(thread_key=bad)) == ([], "")
        assert await engine.purge(Query(thread_key=bad)) == 0
    page, _ = await engine.list()
    assert [summary.flow_key for summary in page] == [flow_key]


def _recording_reads(engine: Engine) -> list[tuple[str, int]]:
    """Record (statement, rows returned) of every read of the engine's shard from now on."""
    store = engine.runtime.stores[0]
    reads: list[tuple[str, int]] = []
    original = store.read

    async def read(query: str, **params: Any) -> list[dict[str, Any]]:
        rows = await original(query, **params)
        reads.append((query, len(rows)))
        return rows

    store.read = read  # type: ignore[method-assign]
    return reads


async def test_a_wrong_token_takes_the_path_of_an_unknown_id(make_engine: Any) -> None:
    engine = await make_engine(_job())
    flow_key, step_key = await _keys_of_a_flow(engine)
    reads = _recording_reads(engine)
    paths = []
    for good in (flow_key, step_key):
        shard, row_id, token = good.split("-", 2)
        wrong = ("B" if token[0] != "B" else "C") + token[1:]
        call = engine.snapshot if good == flow_key else engine.step
        for bad in (f"{shard}-{row_id}-{wrong}", f"{shard}-{int(row_id) + 1000}-{token}"):
            reads.clear()
            with pytest.raises(NotFoundError):
                await call(bad)
            paths.append(list(reads))
    wrong_flow, unknown_flow, wrong_step, unknown_step = paths
    # One lookup by id and token, which finds no row: nothing about the existing row is read.
    assert wrong_flow == unknown_flow and [rows for _, rows in wrong_flow] == [0]
    assert wrong_step == unknown_step and [rows for _, rows in wrong_step] == [0]
