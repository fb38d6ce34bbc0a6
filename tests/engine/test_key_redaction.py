"""``redact_keys``: the tokens of flow and step keys never survive into a text the engine stores or exports.

A key is ``{shard}-{id}-{token}`` with a token of exactly 16 characters of ``[A-Za-z0-9_-]``; redaction
keeps the token-free correlation id ``{shard}-{id}`` and marks where the token was.
"""

from __future__ import annotations

import pytest

from dwarf.engine.keys import format_key, new_token, redact_keys

TOKEN = "AbCdEfGh-_123456"
KEY = f"1-42-{TOKEN}"
MASKED = "1-42-[redacted]"


def test_a_bare_key_keeps_its_correlation_id_and_loses_its_token() -> None:
    assert redact_keys(KEY) == MASKED


def test_fresh_keys_are_redacted() -> None:
    for _ in range(200):
        token = new_token()
        assert redact_keys(format_key(7, 123456789, token)) == "7-123456789-[redacted]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f'{{"flowKey":"{KEY}","stepKey":"3-9-{TOKEN}"}}',
            f'{{"flowKey":"{MASKED}","stepKey":"3-9-[redacted]"}}',
        ),
        (f"GET /flows/{KEY}?x=1", f"GET /flows/{MASKED}?x=1"),
        (f"https://h/flows/{KEY}/steps", f"https://h/flows/{MASKED}/steps"),
        (f"'{KEY}'", f"'{MASKED}'"),
        (f"key={KEY}&other", f"key={MASKED}&other"),
        (f"flow {KEY}: failed", f"flow {MASKED}: failed"),
        (f"{KEY}\n{KEY}", f"{MASKED}\n{MASKED}"),
        (f"({KEY})", f"({MASKED})"),
        (f"{KEY}é", f"{MASKED}é"),
    ],
)
def test_keys_inside_json_urls_quotes_and_prose_are_redacted(text: str, expected: str) -> None:
    assert redact_keys(text) == expected


def test_a_key_glued_to_letters_on_its_left_is_still_redacted() -> None:
    # Redaction errs towards masking: nothing is required before the shard.
    assert redact_keys(f"flow{KEY}") == f"flow{MASKED}"
    assert redact_keys(f"x-{KEY}") == f"x-{MASKED}"


def test_a_token_of_a_dashed_alphabet_is_redacted_whole() -> None:
    # "-" and digits belong to the token alphabet: the token is not cut at its first dash.
    assert redact_keys("12-34-----------------") == "12-34-[redacted]"
    assert redact_keys("5-6-1-2-3-4-5-6-7-8-") == "5-6-[redacted]"


@pytest.mark.parametrize(
    "text",
    [
        f"1-42-{TOKEN}x",  # 17 token characters: some other identifier
        f"1-42-{TOKEN}-",
        f"1-42-{TOKEN}_",
        f"1-42-{TOKEN[:-1]}",  # 15
        f"-42-{TOKEN}",  # no shard
        f"a-42-{TOKEN}",
        f"1-b-{TOKEN}",
        f"1-42{TOKEN}",
        "2024-01-15T10:30:00Z",
        "550e8400-e29b-41d4-a716-446655440000",
        "1-42",
        "",
        "no dashes at all",
    ],
)
def test_texts_that_hold_no_key_are_left_alone(text: str) -> None:
    assert redact_keys(text) == text


def test_the_shard_and_id_may_be_long() -> None:
    big = 2**63 - 1
    assert redact_keys(f"{big}-{big}-{TOKEN}") == f"{big}-{big}-[redacted]"


def test_a_text_without_a_dash_is_returned_as_is() -> None:
    text = "x" * 1000
    assert redact_keys(text) is text


def test_long_runs_of_digits_and_dashes_are_scanned() -> None:
    # Inputs that make a naive pattern backtrack at every position; a key at the end is still found.
    assert redact_keys("1-" * 50_000 + "x") == "1-" * 50_000 + "x"
    digits = "9" * 20_000
    assert redact_keys(f"{digits}-{digits}-{TOKEN}") == f"{digits}-{digits}-[redacted]"
    assert redact_keys(f"{digits}-{digits}- {KEY}") == f"{digits}-{digits}- {MASKED}"
