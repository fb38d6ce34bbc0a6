"""Tests of the ``when``/``switch`` expression language: tables of cases plus property tests.

The property tests generate expression trees, render them as text and compare the engine's verdict with
the small evaluator below, which reads the tree directly and shares no code with the module under test.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwarf.errors import InvalidGraphError
from dwarf.workflow.expressions import MAX_NESTING, Expression, compile_expression, parse_expression
from dwarf.workflow.graph import END, Graph
from dwarf.workflow.regexps import (
    MAX_AMBIGUITY,
    MAX_PATTERN_LENGTH,
    MAX_SUBJECT_LENGTH,
    Refusal,
    Regexp,
    compile_regexp,
)

STATE: dict[str, Any] = {
    "foo": "bar",
    "num": 5.0,
    "level": 5,
    "zero": 0,
    "zeroFloat": 0.0,
    "negative": -2,
    "empty": "",
    "nothing": None,
    "yes": True,
    "no": False,
    "copyright": "(c)",
    "roles": ["admin", "manager", 100, 2.5, True, None, {"x": 1}, 1e7, -3],
    "emptyList": [],
    "emptyObject": {},
    "list": [1, 2],
    "otherList": [1, 2],
    "object": {"a": 1},
    "nested": {"a": 1, "b": "one", "deeper": {"tier": "gold", "n": 2}},
    "order": {"customer": {"tier": "gold"}},
    "2fa": {"on": True},
    "pattern": "^b.r$",
    "badPattern": "(",
    "digits": "12345",
    "big": 10**20,
}


def check(expression: str, state: dict[str, Any] | None = None) -> bool:
    return parse_expression(expression).evaluate(STATE if state is None else state)


TRUE_CASES = [
    # constants, case-insensitive, parenthesized
    "true",
    "TRUE",
    "True",
    "(tRuE)",
    "( ( true )) ",
    "!false",
    "!!true",
    "!! !false",
    "!FALSE",
    # || and &&
    "true || false",
    "false || true",
    "true && true",
    "(true) && ((true))",
    "false || false || true",
    "true && true && true",
    # precedence: && binds tighter than ||
    "true || false && false",
    "false && false || true",
    "!(false && true) && true",
    # literals compared
    "1 == 1",
    "1 != 2",
    "1 == 1.0",
    "-1 < 0",
    "+2 == 2",
    ".5 == 0.5",
    "5. == 5",
    "1e3 == 1000",
    "1E3 == 1000",
    "2.5e-1 == 0.25",
    "-1.5e+2 == -150",
    "\"x\" == 'x'",
    "`x` == 'x'",
    "'x' != ' x'",
    "'a' < 'b'",
    "'B' < 'a'",
    "'ab' > 'a'",
    "true == true",
    "false == FALSE",
    "true != 1",
    # bare literals are truthiness tests
    "'x'",
    '"0"',
    "1",
    "1.0",
    "-1",
    "!0",
    "!0.0",
    "!''",
    '!""',
    "!``",
    # fields and dot paths
    "foo",
    "foo == 'bar'",
    "foo != 'baz'",
    "foo != bar",
    "foo <= 'bar'",
    "foo >= 'bar'",
    "foo < 'baz'",
    "foo > 'bam'",
    "num == 5",
    "num == level",
    "level == 5.0",
    "num >= 5.0",
    "num > 4",
    "num != 4",
    "level <= 5",
    "negative < zero",
    "nested.a == 1",
    "nested.b == `one`",
    "nested.deeper.tier == 'gold'",
    "order.customer.tier == 'gold'",
    "nested.deeper.n > nested.a",
    "2fa.on",
    "big > 1e19",
    "big == 100000000000000000000",
    # missing, null and paths through non-objects
    "!missing",
    "!nothing",
    "missing == null",
    "nothing == null",
    "missing == nothing",
    "null <= null",
    "null >= missing",
    "!foo.nothing",
    "foo.nothing == null",
    "!nested.c",
    "!num.x",
    "!yes.x",
    "!nothing.x",
    "!missing.x.y.z",
    # truthiness of other values
    "yes",
    "!no",
    "!zero",
    "!zeroFloat",
    "!empty",
    "emptyList",
    "emptyObject",
    "list",
    "object",
    "negative",
    # type mismatches: == false, != true
    "zero != false",
    "zero != null",
    "empty != null",
    "empty != false",
    "yes != 1",
    "no != 0",
    "'1' != 1",
    "!(yes == 1)",
    "!(no == 0)",
    "!('1' == 1)",
    "!(zero < 'a')",
    "!(yes > no)",
    "!(no < yes)",
    "yes <= true",
    "no >= false",
    "!(nothing < null)",
    # arrays and objects equal nothing, not even themselves
    "!(list == list)",
    "list != list",
    "list != otherList",
    "!(object == object)",
    "!(emptyList <= emptyList)",
    "!(list < otherList)",
    # array membership
    "roles.admin",
    "roles.manager",
    "roles.100",
    "roles.2.5",
    "roles.true",
    "roles.admin == true",
    "!roles.guest",
    "roles.guest == null",
    "!roles.10000000",
    "!roles.3",
    "!roles.x",
    # regexp: search semantics, literal and from state
    "foo =~ 'bar'",
    "foo =~ 'a'",
    "foo =~ '^b'",
    "foo =~ '(bar|not)'",
    "foo =~ ''",
    "foo !~ 'baz'",
    "foo !~ '....'",
    "foo =~ pattern",
    "digits =~ '^\\d+$'",
    "digits =~ `^\\d+$`",
    "digits =~ '^[0-9]{5}$'",
    "'a.c' =~ 'a\\.c'",
    "!('abc' =~ 'a\\.c')",
    "roles.guest || foo =~ 'b'",
    "!(num =~ '5')",
    "!(num !~ '5')",
    "!(foo =~ 5)",
    "!(foo !~ 5)",
    "!(foo !~ missing)",
    "!(missing =~ 'x')",
    "!(missing !~ 'x')",
    # quoting: operators inside strings are text
    "'a && b' == `a && b`",
    "'a || b' =~ '\\|\\|'",
    "copyright == '(c)'",
    "copyright != '(r)'",
    "'(' != ')'",
    "'it\\'s' == \"it's\"",
    '"say \\"hi\\"" == `say "hi"`',
    "'back\\\\slash' == `back\\slash`",
    "'\\d' == `\\d`",
    "'\\\"' == `\"`",
    "\"\\'\" == `'`",
    # a parenthesized expression is a bool operand
    "(num > 1) == true",
    "(foo == 'x' || no) == false",
    "true == (yes)",
    # whitespace
    "\tfoo\n==\r'bar' ",
    "foo=='bar'&&num>4||no",
]

FALSE_CASES = [
    "false",
    "FALSE",
    "( ( false )) ",
    "!true",
    "!!false",
    "! ! ! true",
    "false || false",
    "false && true",
    "true && false",
    "(false) && ((false))",
    "(true || false) && false",
    "1 == 2",
    "1 != 1",
    "'x' != 'x'",
    "'x' == 'y'",
    "'x' == ' x'",
    "!'x'",
    "!1",
    "''",
    "``",
    "0",
    "0.0",
    "-0.0",
    "true == false",
    "true < false",
    "false < true",
    "true > false",
    "true == 1",
    "false == 0",
    "1 == '1'",
    "foo == bar",
    "foo == 'baz'",
    "foo != 'bar'",
    "!foo",
    "num != 5",
    "num < 5",
    "num > 5.0",
    "level != 5.0",
    "num != level",
    "missing",
    "nothing",
    "missing != null",
    "null < null",
    "null > null",
    "foo.nothing",
    "nested.c",
    "nested.a != 1",
    "nested.b != `one`",
    "no",
    "zero",
    "zeroFloat",
    "empty",
    "zero == false",
    "zero == null",
    "empty == false",
    "empty == null",
    "nothing == false",
    "list == list",
    "object == object",
    "emptyList == emptyList",
    "roles.user",
    "roles.20",
    "roles.null",
    "roles.None",
    "roles.x",
    "foo !~ 'bar'",
    "foo !~ '(bar|not)'",
    "foo =~ 'baz'",
    "foo =~ '....'",
    "foo =~ '^ar'",
    "foo !~ pattern",
    "roles.admin && foo =~ 'x'",
    "num =~ '5'",
    "foo =~ num",
    "foo =~ missing",
    "foo =~ (true)",
    "'a && b' == 'a'",
    "'it\\'s' == 'it'",
]


@pytest.mark.parametrize("expression", TRUE_CASES)
def test_true_cases(expression: str) -> None:
    assert check(expression) is True


@pytest.mark.parametrize("expression", FALSE_CASES)
def test_false_cases(expression: str) -> None:
    assert check(expression) is False


SYNTAX_ERRORS = [
    ("", "the expression is empty"),
    ("   ", "the expression is empty"),
    ("(", "at position 1: expected a value"),
    (")", "at position 0: expected a value, a field, '(' or '!', found ')'"),
    ("()", "found ')'"),
    ("(true))", "at position 6: ')' has no matching '('"),
    ("(true && (false) && (true)", "at position 0: '(' is never closed"),
    ("a )(", "')' has no matching '('"),
    (")(", "at position 0"),
    ("!", "found the end of the expression"),
    ("a &&", "at position 4: expected a value"),
    ("&& a", "found '&&'"),
    ("a || || b", "at position 5"),
    ("a b", "at position 2: expected '&&', '||', ')' or a comparison operator, found 'b'"),
    ("a (b)", "found '('"),
    ("a !b", "found '!'"),
    ("'x' 'y'", "found \"'y'\""),
    ("a & b", "unexpected character '&' (use '&&')"),
    ("a | b", "unexpected character '|' (use '||')"),
    ("a = b", "unexpected character '=' (use '==' to compare)"),
    ("a => b", "unexpected character '='"),
    ("a || b.", "at position 6: unexpected character '.'"),
    ("a..b", "unexpected character '.'"),
    (".a", "unexpected character '.'"),
    ("a-b", "unexpected character '-'"),
    ("- 1 == x", "unexpected character '-'"),
    ("aa++bb || false", "unexpected character '+'"),
    ("x == 'caf\u00e9' && caf\u00e9", "unexpected character '\u00e9'"),
    ("a # b", "unexpected character '#'"),
    ("valid ==", "at position 8: expected a value"),
    ("== ==", "at position 0"),
    ("a > > b", "at position 4"),
    ("a < b < c", "at position 6: comparisons cannot be chained"),
    ("(a < b) < c", None),  # a parenthesized comparison is an operand: allowed
    ("a == b == c", "comparisons cannot be chained"),
    ("!a == b", "at position 0: '!' before a comparison is ambiguous"),
    ("!!a == b", "at position 0: '!' before a comparison is ambiguous"),
    ("!(a) == b", "'!' before a comparison is ambiguous"),
    ("a == !b", "at position 5: a comparison operand cannot be negated"),
    ("a == (!b)", None),
    ("'abc", "at position 0: unterminated string"),
    ('x == "abc', "at position 5: unterminated string"),
    ("x == `abc", "unterminated string"),
    ("x == 'abc\\'", "unterminated string"),
    ("a =~ '[invalid'", "at position 5: invalid regular expression (unterminated character set)"),
    ("a !~ '('", "invalid regular expression"),
    ("a =~ `a{99999999999}`", "invalid regular expression"),
    ("a =~ '" + "(" * 499 + ")" * 499 + "'", "invalid regular expression"),
    ("a =~ '" + "(" * 1200 + ")" * 1200 + "'", "2400 characters long, more than the 1000 allowed"),
    ("1e999 == x", "number 1e999 is out of range"),
    ("x == -1e400", "out of range"),
    ("x == " + "9" * 5000, "number has too many digits"),
]


@pytest.mark.parametrize(("expression", "fragment"), SYNTAX_ERRORS)
def test_syntax_errors(expression: str, fragment: str | None) -> None:
    if fragment is None:
        parse_expression(expression)
        return
    with pytest.raises(InvalidGraphError) as caught:
        parse_expression(expression)
    message = str(caught.value)
    assert fragment in message
    assert message.startswith("invalid expression ")


def test_error_message_quotes_a_long_expression_shortened() -> None:
    expression = "a && " * 100 + "("
    with pytest.raises(InvalidGraphError) as caught:
        parse_expression(expression)
    message = str(caught.value)
    assert "..." in message
    assert len(message) < 250


def test_literal_regexp_compiles_at_parse_even_when_unused() -> None:
    # The left side is a missing field, so evaluation would never reach the pattern: parse must catch it.
    with pytest.raises(InvalidGraphError, match="invalid regular expression"):
        parse_expression("missing =~ '('")


def test_regexp_read_from_state_is_checked_at_evaluation() -> None:
    expression = parse_expression("foo =~ badPattern")
    with pytest.raises(
        InvalidGraphError, match=r"field 'badPattern' holds an invalid regular expression '\('"
    ):
        expression.evaluate(STATE)
    with pytest.raises(InvalidGraphError, match="invalid regular expression"):
        parse_expression("foo !~ nested.p").evaluate({"foo": "x", "nested": {"p": "x{2,1}"}})
    long_pattern = "(" + "x" * 100
    with pytest.raises(InvalidGraphError, match=r"\.\.\."):
        expression.evaluate({"foo": "x", "badPattern": long_pattern})
    # Only two strings are ever matched: a non-string subject never reaches the invalid pattern.
    assert expression.evaluate({"foo": 1, "badPattern": "("}) is False
    # Short circuit: the pattern is not consulted when the other side of || already decided.
    assert parse_expression("true || foo =~ badPattern").evaluate(STATE) is True
    assert parse_expression("false && foo =~ badPattern").evaluate(STATE) is False


# ------------------------------------------------------------------------- runaway backtracking (=~, !~)

# Each pattern, handed to Python's re, backtracks for seconds to forever on a short string it fails to
# match: (a+)+$ takes about a second on 25 a's and a b, doubling with every further a.
EXPONENTIAL = [
    r"(a+)+$",
    r"(a*)*$",
    r"(a|aa)+$",
    r"^(\w+\s?)*$",
    r"(x+x+)+y",
    r"(a*b*)*c",
    r"(.*a){20}",
    r"(?=(a+)+)b",
]
POLYNOMIAL = [r".*a.*b", r"(.*a){3}", r"a*a*$", r"\s*\s*\s*x", r"(?i)k+\u212a+$"]
AMBIGUOUS = [r"(?:a|a){10}b", r"(?:a?a?){8}b"]


def test_catastrophic_pattern_from_state_is_refused_instead_of_run() -> None:
    state = {"subject": "a" * 40 + "b", "pattern": "(a+)+$"}
    expression = parse_expression("subject =~ pattern")
    with pytest.raises(InvalidGraphError) as caught:
        expression.evaluate(state)
    message = str(caught.value)
    assert "field 'pattern' holds a refused regular expression '(a+)+$'" in message
    assert "backtrack exponentially" in message


@pytest.mark.parametrize("pattern", EXPONENTIAL)
def test_exponential_patterns_are_refused(pattern: str) -> None:
    refusal = compile_regexp(pattern)
    assert isinstance(refusal, Refusal) and not refusal.invalid
    assert "backtrack exponentially" in refusal.reason


@pytest.mark.parametrize("pattern", POLYNOMIAL)
def test_patterns_slower_than_quadratic_are_refused(pattern: str) -> None:
    refusal = compile_regexp(pattern)
    assert isinstance(refusal, Refusal) and not refusal.invalid
    assert "can grow as the power" in refusal.reason


@pytest.mark.parametrize("pattern", AMBIGUOUS)
def test_patterns_with_too_many_ways_to_read_a_text_are_refused(pattern: str) -> None:
    refusal = compile_regexp(pattern)
    assert isinstance(refusal, Refusal)
    assert f"more than {MAX_AMBIGUITY} ways" in refusal.reason


def test_literal_catastrophic_pattern_fails_graph_validation() -> None:
    graph = Graph("Screen")
    graph.add_task("Screen", "screen")
    graph.add_transition_when("Screen", END, "name =~ '(a+)+$'")
    with pytest.raises(
        InvalidGraphError, match=r"regular expression '\(a\+\)\+\$' is refused: it can backtrack"
    ):
        graph.validate()


@pytest.mark.parametrize(
    ("pattern", "subject"),
    [
        (r"^\d{3}-\d{4}$", "555-1234"),
        (r"\d{3}-\d{4}", "call 555-12"),
        (r"(ab)+", "xxababx"),
        (r"[a-z]+@[a-z]+\.com", "mail bob@example.com now"),
        (r"[a-z]+@[a-z]+\.com", "bob@example.org"),
        (r"^[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}$", "first.last+tag@mail.example.co"),
        (r"^(\d{1,3}\.){3}\d{1,3}$", "192.168.0.1"),
        (r"^([a-z]+\.)+[a-z]+$", "www.example.org"),
        (r"^\w+(\.\w+)*$", "a.b.c."),
        (r"(foo|bar)+", "a foobar"),
        (r"(?:foo|bar|baz|qux){5}", "foobarbazquxfoo"),
        (r"(a|ab)+c", "ababac"),
        (r"foo.*bar", "foo and bar"),
        (r"^.*foo.*bar$", "a foo and a bar"),
        (r"order #\d+", "re: order #1234"),
        (r"\bcat\b", "concatenate"),
        (r"(?i)^hello", "HELLO there"),
        (r'^"(?:[^"\\]|\\.)*"$', '"say \\"hi\\""'),
        (r"^(?:yes|no|maybe)$", "maybe"),
        (r"(x)?(?(1)a|b)", "xa"),
        (r"(?>a*)b|a*+c", "aac"),
        (r"(a)\1", "baab"),
        (r"(?<=\$)\d+", "cost $42"),
        (r"^\s+$", "   "),
        (r"\s+$", "trailing  "),
        (r".{0,16}x", "0123456789x"),
        (r"", "anything"),
    ],
)
def test_ordinary_patterns_work_as_re_does(pattern: str, subject: str) -> None:
    compiled = compile_regexp(pattern)
    assert isinstance(compiled, Regexp), compiled
    expected = re.search(pattern, subject) is not None
    state = {"s": subject, "p": pattern}
    assert parse_expression("s =~ p").evaluate(state) is expected
    assert parse_expression("s !~ p").evaluate(state) is not expected
    assert parse_expression(f"s =~ `{pattern}`").evaluate(state) is expected


def test_pattern_longer_than_the_cap_is_refused() -> None:
    assert isinstance(compile_regexp("a" * MAX_PATTERN_LENGTH), Regexp)
    with pytest.raises(InvalidGraphError, match=f"1001 characters long, more than the {MAX_PATTERN_LENGTH}"):
        parse_expression("s =~ '" + "a" * (MAX_PATTERN_LENGTH + 1) + "'")
    with pytest.raises(InvalidGraphError, match="field 'p' holds a refused regular expression 'aaa"):
        parse_expression("s =~ p").evaluate({"s": "a", "p": "a" * (MAX_PATTERN_LENGTH + 1)})


def test_string_longer_than_the_cap_is_refused() -> None:
    expression = parse_expression("s =~ 'needle'")
    assert expression.evaluate({"s": "x" * (MAX_SUBJECT_LENGTH - 6) + "needle"}) is True
    with pytest.raises(InvalidGraphError, match=f"has {MAX_SUBJECT_LENGTH + 1} characters, more than the"):
        expression.evaluate({"s": "x" * (MAX_SUBJECT_LENGTH + 1)})


def test_quadratic_pattern_searches_shorter_strings() -> None:
    # \s+$ searched anywhere re-runs the repetition from every start: quadratic in the length.
    compiled = compile_regexp(r"\s+$")
    assert isinstance(compiled, Regexp)
    assert 1_000 <= compiled.max_subject < MAX_SUBJECT_LENGTH
    expression = parse_expression(r"s =~ '\s+$'")
    assert expression.evaluate({"s": " " * (compiled.max_subject - 1) + "x"}) is False
    with pytest.raises(
        InvalidGraphError, match=f"more than the {compiled.max_subject} this pattern may search"
    ):
        expression.evaluate({"s": " " * compiled.max_subject + "x"})
    # Anchored, the same repetition runs once: linear, and the full cap applies.
    anchored = compile_regexp(r"^\s+$")
    assert isinstance(anchored, Regexp) and anchored.max_subject == MAX_SUBJECT_LENGTH


def test_typical_email_pattern_searches_any_email_address() -> None:
    compiled = compile_regexp(r"[a-z]+@[a-z]+\.com")
    assert isinstance(compiled, Regexp) and compiled.max_subject >= 320


def test_pattern_too_complex_to_check_is_refused() -> None:
    refusal = compile_regexp("(?:(?:a{16}){16}){16}")
    assert isinstance(refusal, Refusal) and "too complex" in refusal.reason


def test_pattern_whose_check_would_take_too_long_is_refused() -> None:
    # The check runs on the event loop as well: it gives up rather than examine too much.
    refusal = compile_regexp("(?:(?:(?:a?){16}){16}){2,}")
    assert isinstance(refusal, Refusal) and "too complex" in refusal.reason


@pytest.mark.parametrize(
    ("pattern", "accepted"),
    [
        # A class with a huge range is not listed: it is assumed to share characters with \w, as it does.
        (r"(?:[\u0100-\u0fff]a|\w)+$", False),
        (r"(?:[^0-9]a|\db)+$", True),
        (r"(?:[^\n]x|\ny)+$", True),
        ("[^a]+b", True),
        ("x{0}y", True),
        (r"(?:\Sa|\sb)+$", True),
        (r"(?:\Da|\d)+$", True),
        (r"(?:\Wa|!\w)+$", False),
        # Alternatives that begin alike but part at their second character are read one way only.
        (r"(?:[\u0100-\u0fffx]a|[\u0100-\u0fffy]b){9}", True),
    ],
)
def test_character_classes_overlap_as_re_reads_them(pattern: str, accepted: bool) -> None:
    assert isinstance(compile_regexp(pattern), Regexp) is accepted


def test_checked_patterns_are_cached() -> None:
    assert compile_regexp(r"^[a-z]+\d*$") is compile_regexp(r"^[a-z]+\d*$")
    assert compile_regexp("(a+)+") is compile_regexp("(a+)+")


def test_case_insensitive_and_ascii_flags_are_taken_into_account() -> None:
    # k and the Kelvin sign are one letter under (?i), so the two repetitions overlap...
    assert isinstance(compile_regexp("(?i)(?:k|\u212a)+$"), Regexp)
    assert isinstance(compile_regexp("(?i)(?:k+\u212a)+"), Refusal)
    assert isinstance(compile_regexp("(?:k+\u212a)+"), Regexp)
    # ...and under re.ASCII, \W includes letters such as é that \w no longer does.
    assert isinstance(compile_regexp("(?a)(?:\\W+\u00e9)+"), Refusal)
    assert isinstance(compile_regexp("(?:\\W+\u00e9)+"), Regexp)


def test_character_stand_ins_cover_every_category_combination() -> None:
    """The overlap test relies on one stand-in per combination of re's categories a character can have."""
    from dwarf.workflow import regexps

    def combination(char: str) -> tuple[bool, ...]:
        return tuple(test(char) for pair in regexps._CATEGORIES.values() for test in pair)

    covered = {combination(char) for group in regexps._WITNESS_GROUPS for char in group}
    missing = {combination(chr(code)) for code in range(0x110000)} - covered
    assert not missing


def test_nesting_limit() -> None:
    deepest = "(" * MAX_NESTING + "x" + ")" * MAX_NESTING
    assert parse_expression(deepest).evaluate({"x": 1}) is True
    assert parse_expression("!(" * MAX_NESTING + "x" + ")" * MAX_NESTING).evaluate({"x": 1}) is True
    with pytest.raises(InvalidGraphError, match=f"deeper than {MAX_NESTING}"):
        parse_expression("(" * (MAX_NESTING + 1) + "x" + ")" * (MAX_NESTING + 1))
    # Far past the limit: still a clean error, never a RecursionError.
    with pytest.raises(InvalidGraphError):
        parse_expression("(" * 20_000)
    # Sequential parentheses do not accumulate depth.
    assert parse_expression(" && ".join(["(x)"] * (3 * MAX_NESTING))).evaluate({"x": True}) is True


def test_long_inputs_do_not_recurse() -> None:
    # Each is far past Python's recursion limit (1000) for a parser or evaluator that recursed per token.
    assert parse_expression("!" * 20_001 + "x").evaluate({"x": 1}) is False
    assert parse_expression("!" * 20_000 + "x").evaluate({"x": 1}) is True
    assert parse_expression(" || ".join(["x"] * 5_000)).evaluate({"x": 0}) is False
    assert parse_expression(" && ".join(["x"] * 5_000)).evaluate({"x": 1}) is True
    mixed = " || ".join(" && ".join(["x"] * 20) for _ in range(200))
    assert parse_expression(mixed).evaluate({"x": 1}) is True


def test_evaluate_tolerates_odd_states() -> None:
    expression = parse_expression("a.b == 1 || a || a =~ 'x' || a < 2")
    for state in ({}, {"a": None}, {"a": [None, [1], {"b": 1}]}, {"a": {"b": 2.5}}, {"a": object()}):
        assert isinstance(expression.evaluate(state), bool)
    assert parse_expression("a.b").evaluate({"a": {"b": {1, 2}}}) is True  # not JSON: just truthy
    assert parse_expression("a.1e400").evaluate({"a": [10**400]}) is False
    assert parse_expression("x").evaluate([]) is False  # type: ignore[arg-type]
    assert parse_expression("x.y").evaluate({"x": ("y",)}) is True


def test_ints_and_floats_compare_exactly() -> None:
    assert check("x == 9007199254740993", {"x": 9007199254740993}) is True
    assert check("x == 9007199254740992.0", {"x": 9007199254740993}) is False
    assert check("x > 9007199254740992.0", {"x": 9007199254740993}) is True


def test_bool_is_not_a_number() -> None:
    for expression in ("x == 1", "x >= 1", "x <= 1", "x > 0", "x < 2"):
        assert check(expression, {"x": True}) is False
    assert check("x != 1", {"x": True}) is True
    assert check("x == 0", {"x": False}) is False


def test_literal_keywords_are_case_insensitive_but_not_in_paths() -> None:
    assert check("TrUe == true", {}) is True
    assert check("true.x", {"true": {"x": 1}}) is True
    assert check("t", {}) is False  # unlike Go's ParseBool, "t" is just a field name


def test_numeric_looking_paths() -> None:
    assert check("1.5.2 == 'v'", {"1": {"5": {"2": "v"}}}) is True
    assert check("1e5x", {"1e5x": 1}) is True
    assert check("a.0 == 'zero'", {"a": {"0": "zero"}}) is True
    assert check("1.5 == 1.5", {"1": {"5": 0}}) is True  # a number is a number, not a path


def test_expression_object() -> None:
    expression = parse_expression("a  ==  1")
    assert expression.source == "a  ==  1"
    assert str(expression) == "a  ==  1"
    assert repr(expression) == "Expression(source='a  ==  1')"
    assert expression == parse_expression("a  ==  1")
    assert hash(expression) == hash(parse_expression("a  ==  1"))
    assert expression != parse_expression("a == 1")
    with pytest.raises(AttributeError):
        expression.source = "b"  # type: ignore[misc]
    assert isinstance(expression, Expression)


def test_compile_expression_caches() -> None:
    first = compile_expression("cached == 'yes'")
    assert compile_expression("cached == 'yes'") is first
    assert first.evaluate({"cached": "yes"}) is True
    with pytest.raises(InvalidGraphError):
        compile_expression("cached ==")


def test_non_string_input() -> None:
    with pytest.raises(InvalidGraphError, match="must be a string"):
        parse_expression(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidGraphError, match="must be a string"):
        compile_expression(["a"])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- property tests
#
# An independent model: an expression tree, its rendering as text, and a direct evaluator of the tree.

KEYS = ["a", "b", "c", "x_1"]


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Field:
    segments: tuple[str, ...]


@dataclass(frozen=True)
class Truth:
    operand: Any  # Lit | Field | a boolean node used as a parenthesized operand


@dataclass(frozen=True)
class Not:
    node: Any


@dataclass(frozen=True)
class Compare:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True)
class Both:
    left: Any
    right: Any


@dataclass(frozen=True)
class Either:
    left: Any
    right: Any


@dataclass(frozen=True)
class Group:
    node: Any  # a boolean node used as an operand


def model_kind(value: Any) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "bool"
    if type(value) in (int, float):
        return "number"
    if type(value) is str:
        return "string"
    return "container"


def model_lookup(state: Any, segments: tuple[str, ...]) -> Any:
    node = state
    for position, segment in enumerate(segments):
        if type(node) is dict:
            node = node.get(segment)
            continue
        if type(node) is list:
            wanted = ".".join(segments[position:])
            for element in node:
                if type(element) is str and element == wanted:
                    return True
                if (element is True and wanted == "true") or (element is False and wanted == "false"):
                    return True
                if type(element) in (int, float) and not (element is True or element is False):
                    # Go's %v for a float64: fixed notation for exponents -4..5, else with an exponent.
                    if element == 0 and math.copysign(1, element) > 0:
                        text = "0"
                    elif element > 0 and 1e-4 <= element < 1e6:
                        text = repr(float(element)).removesuffix(".0")
                    else:
                        continue
                    if text == wanted:
                        return True
            return None
        return None
    return node


def model_value(operand: Any, state: Any) -> Any:
    if isinstance(operand, Lit):
        return operand.value
    if isinstance(operand, Field):
        return model_lookup(state, operand.segments)
    return model_eval(operand.node, state)


def model_truth(value: Any) -> bool:
    return value not in (None, False, "", 0) or model_kind(value) == "container"


def model_compare(op: str, left: Any, right: Any) -> bool:
    kinds = {model_kind(left), model_kind(right)}
    same = len(kinds) == 1 and "container" not in kinds
    equal = same and left == right
    ordered = same and kinds <= {"number", "string"}
    if op == "==":
        return equal
    if op == "!=":
        return not equal
    if op == "<":
        return ordered and left < right
    if op == ">":
        return ordered and left > right
    if op == "<=":
        return equal or (ordered and left < right)
    if op == ">=":
        return equal or (ordered and left > right)
    if kinds != {"string"}:
        return False
    found = re.search(right, left) is not None
    return found if op == "=~" else not found


def model_eval(node: Any, state: Any) -> bool:
    if isinstance(node, Truth):
        return model_truth(model_value(node.operand, state))
    if isinstance(node, Not):
        return not model_eval(node.node, state)
    if isinstance(node, Compare):
        return model_compare(node.op, model_value(node.left, state), model_value(node.right, state))
    if isinstance(node, Both):
        return model_eval(node.left, state) and model_eval(node.right, state)
    assert isinstance(node, Either)
    return model_eval(node.left, state) or model_eval(node.right, state)


def quote(text: str, quote_char: str) -> str:
    if quote_char == "`":
        return f"`{text}`"
    escaped = text.replace("\\", "\\\\").replace(quote_char, "\\" + quote_char)
    return f"{quote_char}{escaped}{quote_char}"


SPACES = st.sampled_from(["", "", " ", "  ", "\t", "\n "])


def render_literal(draw: st.DrawFn, value: Any) -> str:
    if value is True or value is False:
        word = "true" if value else "false"
        return "".join(c.upper() if draw(st.booleans()) else c for c in word)
    if isinstance(value, str):
        quote_chars = ["'", '"'] + ([] if "`" in value else ["`"])
        return quote(value, draw(st.sampled_from(quote_chars)))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render(draw: st.DrawFn, node: Any) -> str:
    def s() -> str:
        return draw(SPACES)

    if isinstance(node, Lit):
        return render_literal(draw, node.value)
    if isinstance(node, Field):
        return ".".join(node.segments)
    if isinstance(node, Group):
        return f"({s()}{render(draw, node.node)}{s()})"
    if isinstance(node, Truth):
        inner = render(draw, node.operand)
        return f"({s()}{inner}{s()})" if draw(st.booleans()) else inner
    if isinstance(node, Not):
        return f"!{s()}({s()}{render(draw, node.node)}{s()})"
    if isinstance(node, Compare):
        left, right = render(draw, node.left), render(draw, node.right)
        return f"({s()}{left}{s()}{node.op}{s()}{right}{s()})"
    joiner = "&&" if isinstance(node, Both) else "||"
    return f"({s()}{render(draw, node.left)}{s()}{joiner}{s()}{render(draw, node.right)}{s()})"


SMALL_TEXT = st.sampled_from(["", "a", "b", "ab", "ba", "A", "it's", 'say "x"', "a\\b", "(", "a && b", "`"])
SMALL_NUMBERS = st.sampled_from([0, 1, -1, 2, 0.0, -0.0, 1.5, 2.0, -2.5, 1e-5, 3e20, 10**18])
SCALARS = st.none() | st.booleans() | SMALL_NUMBERS | SMALL_TEXT
LITERALS = st.builds(Lit, st.booleans() | SMALL_NUMBERS | SMALL_TEXT)
PATTERNS = st.builds(Lit, st.sampled_from(["", "a", "^a", "b$", "a.", "^$", "[ab]+", "\\(", "&&|b"]))


def reads_as_a_path(segments: tuple[str, ...]) -> bool:
    text = ".".join(segments)
    try:
        float(text)
    except ValueError:
        return text.lower() not in ("true", "false")
    return False


FIELDS = st.builds(
    Field,
    st.lists(st.sampled_from([*KEYS, "1", "true", "2.0"]), min_size=1, max_size=3)
    .map(tuple)
    .filter(reads_as_a_path),
)


def boolean_nodes() -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        operands = LITERALS | FIELDS | st.builds(Group, children)
        return st.one_of(
            st.builds(Not, children),
            st.builds(Both, children, children),
            st.builds(Either, children, children),
            st.builds(Truth, st.builds(Group, children)),
            st.builds(Compare, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), operands, operands),
            st.builds(Compare, st.sampled_from(["=~", "!~"]), operands, PATTERNS),
        )

    leaves = st.one_of(
        st.builds(Truth, LITERALS | FIELDS),
        st.builds(
            Compare, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), LITERALS | FIELDS, LITERALS | FIELDS
        ),
        st.builds(Compare, st.sampled_from(["=~", "!~"]), LITERALS | FIELDS, PATTERNS),
    )
    return st.recursive(leaves, extend, max_leaves=12)


BOOLEAN_NODES = boolean_nodes()


JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
    ),
    max_leaves=10,
)
STATES = st.dictionaries(st.sampled_from([*KEYS, "1", "true"]), JSON_VALUES, max_size=5)


@st.composite
def rendered_trees(draw: st.DrawFn) -> tuple[Any, str]:
    node = draw(BOOLEAN_NODES)
    return node, f"{draw(SPACES)}{render(draw, node)}{draw(SPACES)}"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rendered_trees(), STATES)
def test_agrees_with_the_model(tree: tuple[Any, str], state: dict[str, Any]) -> None:
    node, text = tree
    assert parse_expression(text).evaluate(state) is model_eval(node, state)


TOKEN_SOUP = st.lists(
    st.sampled_from(
        [
            "(",
            ")",
            "&&",
            "||",
            "!",
            "==",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "=~",
            "!~",
            "a",
            "b.c",
            "1",
            "-2.5",
            "1e3",
            ".5",
            "'x'",
            '"y"',
            "`z`",
            "'('",
            "'['",
            "true",
            "FALSE",
            "=",
            "&",
            "|",
            "'",
            '"',
            "`",
            "\\",
            ".",
            "-",
            "+",
            " ",
            "1e999",
            "é",
        ]
    ),
    max_size=12,
).map("".join)


@settings(max_examples=250, deadline=None)
@given(st.text(max_size=40) | TOKEN_SOUP, STATES)
def test_arbitrary_text_only_raises_invalid_graph_error(text: str, state: dict[str, Any]) -> None:
    try:
        expression = parse_expression(text)
    except InvalidGraphError:
        return
    try:
        assert isinstance(expression.evaluate(state), bool)
    except InvalidGraphError:
        # Allowed only for a pattern read from the state; here the soup's only strings are literals.
        assert "=~" in text or "!~" in text


# Values no JSON document holds, which a caller could still pass in a Mapping.
ODD_VALUES = st.recursive(
    SCALARS
    | st.floats()
    | st.binary(max_size=3)
    | st.decimals()
    | st.fractions()
    | st.complex_numbers()
    | st.frozensets(st.integers(), max_size=2)
    | st.builds(object),
    lambda children: (
        st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(st.sampled_from(KEYS) | st.integers(), children, max_size=3)
    ),
    max_leaves=8,
)
ODD_STATES = st.dictionaries(st.sampled_from([*KEYS, "1"]), ODD_VALUES, max_size=5)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rendered_trees(), STATES | ODD_STATES)
def test_evaluation_never_raises(tree: tuple[Any, str], state: dict[str, Any]) -> None:
    assert isinstance(parse_expression(tree[1]).evaluate(state), bool)


# re warns about constructs whose meaning may change in a later Python ("[[" and the like).
@pytest.mark.filterwarnings("ignore::FutureWarning")
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.printable, max_size=30))
def test_literal_patterns_never_escape_as_other_errors(pattern: str) -> None:
    try:
        expression = parse_expression(f"x =~ `{pattern.replace('`', '')}`")
    except InvalidGraphError:
        return
    assert isinstance(expression.evaluate({"x": pattern}), bool)


# --- strict evaluation (docs/graphs.md#strict-graphs) ---

STRICT_CASES = [
    # (expression, state, verdict): every field the decision reads is there.
    ("a > 1", {"a": 2}, True),
    ("a == null", {}, True),
    ("null == a", {}, True),
    ("a != null", {}, False),
    ("a != null && a > 1", {}, False),  # the guard short-circuits the read
    ("a == null || a > 1", {}, True),
    ("a == null", {"a": None}, True),  # present as null: null, not missing
    ("a", {"a": None}, False),
    ("roles.admin", {"roles": ["user"]}, False),  # membership: never missing
    ("roles.admin", {"roles": ["admin"]}, True),
    ("order.tier == 'gold'", {"order": {"tier": "gold"}}, True),
    ("order.tier == null", {"order": {}}, True),
    ("true", {}, True),
    ("null", {}, False),
    ("null == 1", {"null": 1}, True),  # a field named null is read like any other
]


@pytest.mark.parametrize(("expression", "state", "verdict"), STRICT_CASES)
def test_strict_evaluation_agrees_when_every_field_is_there(
    expression: str, state: dict[str, Any], verdict: bool
) -> None:
    parsed = parse_expression(expression)
    assert parsed.evaluate_strict(state) is verdict
    assert parsed.evaluate(state) is verdict


STRICT_REFUSALS = [
    ("approved", {}, "approved"),
    ("!approved", {}, "approved"),
    ("a > 1", {}, "a"),
    ("1 < a", {}, "a"),
    ("a == 1", {}, "a"),
    ("a != 'x'", {}, "a"),
    ("a == b", {}, "a"),
    ("a =~ 'x'", {}, "a"),
    ("order.tier == 'gold'", {}, "order.tier"),
    ("order.tier == 'gold'", {"order": {}}, "order.tier"),
    ("order.tier == 'gold'", {"order": "gold"}, "order.tier"),  # through a string: names nothing
    ("order.tier == 'gold'", {"order": None}, "order.tier"),
    ("ok || missing", {"ok": False}, "missing"),
    ("(a == null) == b", {}, "b"),
]


@pytest.mark.parametrize(("expression", "state", "field"), STRICT_REFUSALS)
def test_strict_evaluation_refuses_a_decision_on_a_missing_field(
    expression: str, state: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidGraphError) as caught:
        parse_expression(expression).evaluate_strict(state)
    message = str(caught.value)
    assert f"reads field {field!r}, which the state does not have" in message
    assert f"'{field} == null'" in message


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rendered_trees(), STATES)
def test_strict_evaluation_agrees_with_the_lenient_one_or_refuses(
    tree: tuple[Any, str], state: dict[str, Any]
) -> None:
    _, text = tree
    parsed = parse_expression(text)
    try:
        verdict = parsed.evaluate_strict(state)
    except InvalidGraphError as error:
        assert "which the state does not have" in str(error) or "regular expression" in str(error)
        return
    assert verdict is parsed.evaluate(state)
