"""Unit tests of ``dwarf.engine.keys`` (SPEC §10, DESIGN "Keys"): format, parse, tokens."""

from __future__ import annotations

import string

import pytest

from dwarf import NotFoundError
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
