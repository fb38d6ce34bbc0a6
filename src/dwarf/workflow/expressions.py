"""The boolean expression language of ``when`` and ``switch`` transitions
(docs/graphs.md#the-when-expression-language).

``parse_expression`` turns the text of a transition condition into an immutable ``Expression`` (raising
InvalidGraphError with a position on any syntax error), and ``Expression.evaluate`` decides it over a
flow's merged JSON state. ``compile_expression`` is the cached form the engine uses on every routing
decision, so a graph's conditions are parsed once per process rather than once per step.

Grammar (lowest precedence first)::

    expression := conjunction ( "||" conjunction )*
    conjunction := term ( "&&" term )*
    term       := "!"* operand                    a truthiness test, negated once per "!"
                | operand COMPARISON operand      the operands take no "!" and do not chain
    operand    := NUMBER | STRING | "true" | "false" | PATH | "(" expression ")"
    COMPARISON := "==" | "!=" | "<" | "<=" | ">" | ">=" | "=~" | "!~"

Semantics follow the reference design's expression library (boolexp), with a real tokenizer instead of its
text splitting. The choices below are either the reference's behaviour or, where it has none, ours:

- Paths are dot-separated runs of ASCII letters, digits and underscores (``order.customer.tier``; a
  segment may start with a digit when the whole word is not a number, as in the reference). A missing
  field, or a path that continues through a string, number, bool or null, is null.
- A path that meets an array tests membership, as the reference does: ``roles.admin`` is true when the
  array holds the element ``"admin"`` (numbers and bools by their text, so ``codes.100`` and
  ``ratios.2.5`` work) and null otherwise. Array elements cannot be indexed. Object keys that contain a
  dot are not reachable (the reference's flattening reaches them, but ambiguously).
- ``null`` is not a keyword: like any name absent from the state it reads as null, so ``x == null``
  tests for a missing or null field, exactly as in the reference.
- ``==`` holds only between two values of the same JSON type among number, string, bool and null; ints
  and floats are both numbers and compare exactly; a bool is never a number. Arrays and objects equal
  nothing, themselves included, as in the reference (whose equality knows no containers). ``!=`` is
  always the negation of ``==``.
- ``<`` and ``>`` order numbers numerically and strings by code point; for any other pair they are false.
  ``<=`` and ``>=`` mean "``==`` or strictly ordered", so ``true <= true`` and ``null >= null`` are true
  while ``false < true`` is false (the reference's definition).
- ``=~`` and ``!~`` search the left string with the right one as a Python ``re`` pattern (unanchored,
  like Go's ``MatchString``). When either side is not a string both are false, so ``!~`` is not the
  negation of ``=~`` (reference behaviour). Patterns go through ``dwarf.workflow.regexps``, which refuses
  those that could backtrack long enough to stall the event loop and caps the length of the string
  searched. A literal pattern is compiled and checked at parse time; a pattern read from the state is
  compiled at evaluation, and if it is invalid or refused, or the string is longer than the pattern's
  cap, ``evaluate`` raises InvalidGraphError, the one exception it raises, which the engine turns into a
  step failure.
- A parenthesized expression used as a comparison operand is its bool value: ``(a || b) == false``.
- ``!x == y`` is rejected rather than guessed at (C reads it as ``(!x) == y``, SQL as ``!(x == y)``),
  as is a chained ``a < b < c``; the reference rejects both too.
- Numbers are decimal: optional sign, digits, optional fraction and exponent (``-1``, ``.5``, ``2e-3``).
  A literal without a fraction or exponent stays an exact int. No ``Inf``, ``NaN`` or hex; a literal that
  overflows a float is an error.
- ``true`` and ``false`` are case-insensitive keywords. Strings are quoted with ``'``, ``"`` or a
  backtick. Inside ``'`` and ``"`` a backslash escapes a backslash or either quote character and is kept
  as is before anything else, so regexps such as ``'^\\d+$'`` read naturally; backtick strings are raw.
- Bare operands are truthiness tests: null, false, ``""`` and zero are false; everything else, empty
  arrays and objects included, is true.
- ``evaluate_strict`` (the evaluation of a strict graph's conditions) refuses to read a field the state
  does not have: a path whose segment is absent from its object, or that continues through a string,
  number, bool or null, raises InvalidGraphError when its value is used, except as an operand of ``==``
  or ``!=`` whose other side is null (so ``x == null`` still tests for absence). A path that meets an
  array is a membership test and always has a value; a field present with the value null is null; the
  path ``null`` is null unless the state has a field of that name.

Nothing here recurses on the Python stack: the parser is an operator-precedence (shunting-yard) loop and
an expression compiles to a flat instruction list run by a small stack machine, with jumps giving
``&&``/``||`` their short circuit. Nesting is still capped at ``MAX_NESTING`` parentheses as a sanity
bound on what a graph may contain.
"""

from __future__ import annotations

import enum
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from dwarf.errors import InvalidGraphError
from dwarf.workflow.regexps import Refusal, Regexp, compile_regexp

__all__ = ["MAX_NESTING", "Expression", "compile_expression", "parse_expression"]

MAX_NESTING: Final = 200
"""The deepest parenthesis nesting an expression may have."""

# How much of an expression an error message quotes: enough to recognise it, not a whole pasted document.
_QUOTE_LIMIT: Final = 120

# One alternative per kind of token, tried in this order at each position: two-character operators before
# their one-character prefixes, and a number before a path so that "1.5" is a number while "1.5.2" and
# "2fa" are paths. Strings repeat possessively ("*+") so that a backslash consumed as an escape is never
# given back to close the string: 'it\' is unterminated rather than the text "it\".
_TOKEN_RE: Final = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<operator>&&|\|\||==|!=|<=|>=|=~|!~|[<>!()])
    | (?P<number>[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?![A-Za-z0-9_.]))
    | (?P<path>[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)
    | '(?P<single>(?:[^'\\]|\\['"\\]|\\)*+)'
    | "(?P<double>(?:[^"\\]|\\['"\\]|\\)*+)"
    | `(?P<raw>[^`]*)`
    """,
    re.VERBOSE,
)
_ESCAPE_RE: Final = re.compile(r"""\\(['"\\])""")
_COMPARISONS: Final = frozenset({"==", "!=", "<", "<=", ">", ">=", "=~", "!~"})
_REGEXP_OPERATORS: Final = frozenset({"=~", "!~"})


# ---------------------------------------------------------------------------------------------- tokens


class _Kind(enum.Enum):
    LPAREN = "("
    RPAREN = ")"
    AND = "&&"
    OR = "||"
    NOT = "!"
    COMPARE = "comparison"
    LITERAL = "literal"
    PATH = "path"
    END = "end"


class _Token(NamedTuple):
    kind: _Kind
    pos: int
    text: str
    # The literal's value, the path's segments, or the operator.
    value: Any = None

    def describe(self) -> str:
        if self.kind is _Kind.END:
            return "the end of the expression"
        text = self.text if len(self.text) <= 30 else self.text[:27] + "..."
        return repr(text)


def _error(source: str, pos: int, message: str) -> InvalidGraphError:
    quoted = source if len(source) <= _QUOTE_LIMIT else source[: _QUOTE_LIMIT - 3] + "..."
    return InvalidGraphError(f"invalid expression {quoted!r} at position {pos}: {message}")


_OPERATOR_KINDS: Final = {
    "&&": _Kind.AND,
    "||": _Kind.OR,
    "!": _Kind.NOT,
    "(": _Kind.LPAREN,
    ")": _Kind.RPAREN,
    **{operator: _Kind.COMPARE for operator in _COMPARISONS},
}


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN_RE.match(source, pos)
        if match is None:
            raise _error(source, pos, _unexpected(source, pos))
        group = match.lastgroup
        text = match.group()
        if group == "operator":
            tokens.append(_Token(_OPERATOR_KINDS[text], pos, text, text))
        elif group == "number":
            tokens.append(_Token(_Kind.LITERAL, pos, text, _number_value(source, pos, text)))
        elif group == "path":
            keyword = text.lower()
            if keyword in ("true", "false"):
                tokens.append(_Token(_Kind.LITERAL, pos, text, keyword == "true"))
            else:
                tokens.append(_Token(_Kind.PATH, pos, text, tuple(text.split("."))))
        elif group in ("single", "double"):
            tokens.append(_Token(_Kind.LITERAL, pos, text, _ESCAPE_RE.sub(r"\1", match.group(group))))
        elif group == "raw":
            tokens.append(_Token(_Kind.LITERAL, pos, text, match.group(group)))
        pos = match.end()
    tokens.append(_Token(_Kind.END, len(source), ""))
    return tokens


def _unexpected(source: str, pos: int) -> str:
    char = source[pos]
    if char in "'\"`":
        return "unterminated string"
    hints = {"=": "use '==' to compare", "&": "use '&&'", "|": "use '||'"}
    hint = hints.get(char)
    return f"unexpected character {char!r}" + (f" ({hint})" if hint else "")


def _number_value(source: str, pos: int, text: str) -> int | float:
    if any(char in text for char in ".eE"):
        value = float(text)
        if not math.isfinite(value):
            raise _error(source, pos, f"number {text} is out of range")
        return value
    try:
        return int(text)
    except ValueError:
        # Python refuses to convert integers of more than a few thousand digits.
        raise _error(source, pos, "number has too many digits") from None


# ----------------------------------------------------------------------------------------- instructions


class _Op(enum.Enum):
    PUSH_LITERAL = enum.auto()  # push value
    PUSH_PATH = enum.auto()  # push the state value at path
    TRUTH = enum.auto()  # replace the top with its truthiness
    NOT = enum.auto()  # negate the bool on top
    COMPARE = enum.auto()  # pop the right operand, replace the left one with the comparison's bool
    JUMP_IF_FALSE = enum.auto()  # &&: if the top is false jump to target keeping it, else pop it
    JUMP_IF_TRUE = enum.auto()  # ||: if the top is true jump to target keeping it, else pop it


@dataclass(frozen=True, slots=True)
class _Instr:
    op: _Op
    # PUSH_LITERAL: the literal. COMPARE: the text of a path right operand, for error messages.
    value: Any = None
    path: tuple[str, ...] = ()
    operator: str = ""
    # A literal regexp, compiled and checked at parse time; None when the pattern comes from the state.
    pattern: Regexp | None = None
    target: int = -1


# ------------------------------------------------------------------------------------------------ parser


@dataclass(slots=True)
class _Open:
    """An open parenthesis on the operator stack."""

    pos: int
    negations: int
    negation_pos: int


@dataclass(slots=True)
class _Junction:
    """A pending ``&&`` or ``||``: its jump is patched to skip the rest of its chain once that is known."""

    kind: _Kind
    jump: int


@dataclass(slots=True)
class _Comparison:
    """A comparison waiting for its right operand."""

    token: _Token


@dataclass(slots=True)
class _Operand:
    """The operand that was just read, whose fate depends on the token after it."""

    # True while the instructions leave a raw value (a literal or a path) rather than a bool.
    is_value: bool
    # True when the operand is already a complete comparison, which cannot be compared again.
    is_comparison: bool
    negations: int
    negation_pos: int


class _Compiler:
    """Translates tokens to instructions in one pass, with an explicit operator stack."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._code: list[_Instr] = []
        self._stack: list[_Open | _Junction | _Comparison] = []
        self._depth = 0

    def compile(self) -> tuple[_Instr, ...]:
        tokens = _tokenize(self._source)
        if len(tokens) == 1:
            raise _error(self._source, 0, "the expression is empty")
        negations = 0
        negation_pos = -1
        operand: _Operand | None = None  # None while an operand is expected
        for token in tokens:
            if operand is None:
                if token.kind is _Kind.NOT:
                    if isinstance(self._top(), _Comparison):
                        raise self._fail(token, "a comparison operand cannot be negated; use parentheses")
                    if negations == 0:
                        negation_pos = token.pos
                    negations += 1
                elif token.kind is _Kind.LPAREN:
                    self._depth += 1
                    if self._depth > MAX_NESTING:
                        raise _error(
                            self._source, token.pos, f"parentheses nest deeper than {MAX_NESTING} levels"
                        )
                    self._stack.append(_Open(token.pos, negations, negation_pos))
                    negations = 0
                elif token.kind in (_Kind.LITERAL, _Kind.PATH):
                    if token.kind is _Kind.LITERAL:
                        self._code.append(_Instr(_Op.PUSH_LITERAL, value=token.value))
                    else:
                        self._code.append(_Instr(_Op.PUSH_PATH, path=token.value))
                    operand = self._complete(_Operand(True, False, negations, negation_pos), token)
                    negations = 0
                else:
                    raise self._fail(token, "expected a value, a field, '(' or '!'")
                continue

            if token.kind is _Kind.COMPARE:
                if operand.is_comparison:
                    raise self._fail(token, "comparisons cannot be chained; join them with '&&'")
                if operand.negations:
                    raise _error(
                        self._source,
                        operand.negation_pos,
                        "'!' before a comparison is ambiguous; write '!(a == b)' to negate the comparison",
                    )
                self._stack.append(_Comparison(token))
                operand = None
                continue
            if token.kind not in (_Kind.AND, _Kind.OR, _Kind.RPAREN, _Kind.END):
                raise self._fail(token, "expected '&&', '||', ')' or a comparison operator")

            # The operand ends here and is used as a condition.
            if operand.is_value:
                self._code.append(_Instr(_Op.TRUTH))
            if operand.negations % 2:
                self._code.append(_Instr(_Op.NOT))
            operand = None
            if token.kind is _Kind.AND:
                self._close_junctions(_Kind.AND)
                self._stack.append(_Junction(_Kind.AND, len(self._code)))
                self._code.append(_Instr(_Op.JUMP_IF_FALSE))
            elif token.kind is _Kind.OR:
                self._close_junctions(_Kind.AND, _Kind.OR)
                self._stack.append(_Junction(_Kind.OR, len(self._code)))
                self._code.append(_Instr(_Op.JUMP_IF_TRUE))
            elif token.kind is _Kind.RPAREN:
                self._close_junctions(_Kind.AND, _Kind.OR)
                opening = self._top()
                if not isinstance(opening, _Open):
                    raise _error(self._source, token.pos, "')' has no matching '('")
                self._stack.pop()
                self._depth -= 1
                group = _Operand(False, False, opening.negations, opening.negation_pos)
                operand = self._complete(group, token)
            else:
                self._close_junctions(_Kind.AND, _Kind.OR)
                opening = self._top()
                if isinstance(opening, _Open):
                    raise _error(self._source, opening.pos, "'(' is never closed")
        return tuple(self._code)

    def _top(self) -> _Open | _Junction | _Comparison | None:
        return self._stack[-1] if self._stack else None

    def _fail(self, token: _Token, message: str) -> InvalidGraphError:
        return _error(self._source, token.pos, f"{message}, found {token.describe()}")

    def _complete(self, operand: _Operand, token: _Token) -> _Operand:
        """Emit the comparison awaiting ``operand`` as its right side, if any; return what the term is."""
        comparison = self._top()
        if not isinstance(comparison, _Comparison):
            return operand
        self._stack.pop()
        operator = comparison.token.value
        pattern = None
        if operator in _REGEXP_OPERATORS and token.kind is _Kind.LITERAL and isinstance(token.value, str):
            compiled = compile_regexp(token.value)
            if isinstance(compiled, Refusal):
                if compiled.invalid:
                    raise _error(self._source, token.pos, f"invalid regular expression ({compiled.reason})")
                raise _error(
                    self._source,
                    token.pos,
                    f"regular expression {_shorten(token.value)!r} is refused: {compiled.reason}",
                )
            pattern = compiled
        # For the message should a pattern read from the state turn out to be invalid.
        operand_text = token.text if token.kind is _Kind.PATH else ""
        self._code.append(_Instr(_Op.COMPARE, operator=operator, pattern=pattern, value=operand_text))
        return _Operand(False, True, 0, -1)

    def _close_junctions(self, *kinds: _Kind) -> None:
        """Pop the pending junctions of ``kinds``: each chain they start ends at the current instruction."""
        while True:
            top = self._top()
            if not isinstance(top, _Junction) or top.kind not in kinds:
                return
            self._stack.pop()
            jump = self._code[top.jump]
            self._code[top.jump] = _Instr(jump.op, target=len(self._code))


# -------------------------------------------------------------------------------------------- evaluation


def _shorten(text: str) -> str:
    """``text`` cut to a length an error message can quote."""
    return text if len(text) <= 60 else text[:57] + "..."


def _resolve(state: Any, path: tuple[str, ...]) -> Any:
    current = state
    for index, segment in enumerate(path):
        if isinstance(current, Mapping):
            current = current.get(segment)
        elif isinstance(current, list | tuple):
            return True if _has_element(current, ".".join(path[index:])) else None
        else:
            return None
    return current


class _Missing:
    """What ``evaluate_strict`` pushes for a path that names nothing in the state."""

    __slots__ = ("path",)

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path


_NULL_PATH: Final = ("null",)


def _resolve_strict(state: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    current: Any = state
    for index, segment in enumerate(path):
        if isinstance(current, Mapping):
            if segment not in current:
                return None if path == _NULL_PATH else _Missing(path)
            current = current[segment]
        elif isinstance(current, list | tuple):
            return True if _has_element(current, ".".join(path[index:])) else None
        else:
            return _Missing(path)
    return current


def _missing_field(source: str, missing: _Missing) -> InvalidGraphError:
    field = ".".join(missing.path)
    return InvalidGraphError(
        f"expression {source!r} reads field {field!r}, which the state does not have (a strict graph "
        f"refuses to guess; test for absence with '{field} == null')"
    )


def _has_element(array: list[Any] | tuple[Any, ...], text: str) -> bool:
    return any(_element_text(element) == text for element in array)


def _element_text(element: Any) -> str | None:
    """The text by which an array element answers a membership path, or None if no path can name it.

    The reference renders elements with Go's ``%v``: strings as they are, bools as true/false, numbers in
    the shortest form, switching to exponent notation below 1e-4 and from 1e6 up. A path holds only
    letters, digits, underscores and dots, so a number that would print with a sign or an exponent can
    never match, and neither can null, an array or an object.
    """
    if isinstance(element, str):
        return element
    if isinstance(element, bool):
        return "true" if element else "false"
    if isinstance(element, int | float):
        try:
            number = float(element)
        except OverflowError:
            return None
        if math.copysign(1.0, number) < 0 or not (number == 0 or 1e-4 <= number < 1e6):
            return None
        return str(int(number)) if number.is_integer() else repr(number)
    return None


class _Type(enum.Enum):
    NULL = enum.auto()
    BOOL = enum.auto()
    NUMBER = enum.auto()
    STRING = enum.auto()
    OTHER = enum.auto()  # arrays, objects and anything that is not JSON: never equal, never ordered


def _type_of(value: Any) -> _Type:
    if value is None:
        return _Type.NULL
    # bool before int: in Python a bool is an int, in JSON it is not a number.
    if isinstance(value, bool):
        return _Type.BOOL
    if isinstance(value, int | float):
        return _Type.NUMBER
    if isinstance(value, str):
        return _Type.STRING
    return _Type.OTHER


def _truthy(value: Any) -> bool:
    kind = _type_of(value)
    if kind is _Type.NULL:
        return False
    if kind is _Type.OTHER:
        return True
    return bool(value)


def _equal(left: Any, right: Any) -> bool:
    kind = _type_of(left)
    return kind is _type_of(right) and kind is not _Type.OTHER and bool(left == right)


def _less(left: Any, right: Any) -> bool:
    kind = _type_of(left)
    return kind is _type_of(right) and kind in (_Type.NUMBER, _Type.STRING) and bool(left < right)


def _compare(instr: _Instr, left: Any, right: Any, source: str) -> bool:
    operator = instr.operator
    if operator == "==":
        return _equal(left, right)
    if operator == "!=":
        return not _equal(left, right)
    if operator == "<":
        return _less(left, right)
    if operator == ">":
        return _less(right, left)
    if operator == "<=":
        return _equal(left, right) or _less(left, right)
    if operator == ">=":
        return _equal(left, right) or _less(right, left)
    if _type_of(left) is not _Type.STRING or _type_of(right) is not _Type.STRING:
        return False
    pattern = instr.pattern if instr.pattern is not None else compile_regexp(right)
    if isinstance(pattern, Refusal):
        what = "an invalid regular expression" if pattern.invalid else "a refused regular expression"
        raise InvalidGraphError(
            f"expression {source!r}: field {instr.value!r} holds {what} {_shorten(right)!r} "
            f"({pattern.reason})"
        )
    if len(left) > pattern.max_subject:
        raise InvalidGraphError(
            f"expression {source!r}: the string matched against {_shorten(pattern.pattern.pattern)!r} has "
            f"{len(left)} characters, more than the {pattern.max_subject} this pattern may search "
            "(the cap keeps its worst-case backtracking bounded)"
        )
    found = pattern.search(left)
    return found if operator == "=~" else not found


# ---------------------------------------------------------------------------------------------- public


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed ``when``/``switch`` condition: immutable, hashable by its source text, safe to share."""

    source: str
    _code: tuple[_Instr, ...] = field(repr=False, compare=False)

    def __str__(self) -> str:
        return self.source

    def evaluate(self, state: Mapping[str, Any]) -> bool:
        """Decide the condition over ``state`` (a JSON object).

        Never raises for any state, except InvalidGraphError when a regexp operand read from the state is
        not a valid pattern or is refused, or when the string to search is longer than its pattern allows.
        """
        code = self._code
        stack: list[Any] = []
        pc = 0
        while pc < len(code):
            instr = code[pc]
            op = instr.op
            if op is _Op.PUSH_LITERAL:
                stack.append(instr.value)
            elif op is _Op.PUSH_PATH:
                stack.append(_resolve(state, instr.path))
            elif op is _Op.TRUTH:
                stack[-1] = _truthy(stack[-1])
            elif op is _Op.NOT:
                stack[-1] = not stack[-1]
            elif op is _Op.COMPARE:
                right = stack.pop()
                stack[-1] = _compare(instr, stack[-1], right, self.source)
            else:
                decided = stack[-1] if op is _Op.JUMP_IF_TRUE else not stack[-1]
                if decided:
                    # The left side settles the junction: it stays on the stack as the junction's value.
                    pc = instr.target
                    continue
                stack.pop()
            pc += 1
        return bool(stack[-1])

    def evaluate_strict(self, state: Mapping[str, Any]) -> bool:
        """``evaluate`` for a strict graph: InvalidGraphError when the decision depends on a field the
        state does not have (see the module docstring), besides the regexp errors ``evaluate`` raises."""
        code = self._code
        stack: list[Any] = []
        pc = 0
        while pc < len(code):
            instr = code[pc]
            op = instr.op
            if op is _Op.PUSH_LITERAL:
                stack.append(instr.value)
            elif op is _Op.PUSH_PATH:
                stack.append(_resolve_strict(state, instr.path))
            elif op is _Op.TRUTH:
                if isinstance(stack[-1], _Missing):
                    raise _missing_field(self.source, stack[-1])
                stack[-1] = _truthy(stack[-1])
            elif op is _Op.NOT:
                stack[-1] = not stack[-1]
            elif op is _Op.COMPARE:
                right = stack.pop()
                left = stack[-1]
                if isinstance(left, _Missing) or isinstance(right, _Missing):
                    missing = left if isinstance(left, _Missing) else right
                    other = right if missing is left else left
                    if instr.operator not in ("==", "!=") or other is not None:
                        raise _missing_field(self.source, missing)
                    left = None if left is missing else left
                    right = None if right is missing else right
                stack[-1] = _compare(instr, left, right, self.source)
            else:
                decided = stack[-1] if op is _Op.JUMP_IF_TRUE else not stack[-1]
                if decided:
                    pc = instr.target
                    continue
                stack.pop()
            pc += 1
        return bool(stack[-1])


def parse_expression(text: str) -> Expression:
    """Parse a condition; raises InvalidGraphError naming the position and what was expected."""
    if not isinstance(text, str):
        raise InvalidGraphError(f"an expression must be a string, not {type(text).__name__}")
    return Expression(text, _Compiler(text).compile())


def compile_expression(text: str) -> Expression:
    """``parse_expression`` with a process-wide cache of recently used expressions."""
    if not isinstance(text, str):
        raise InvalidGraphError(f"an expression must be a string, not {type(text).__name__}")
    return _cached_parse(text)


@functools.lru_cache(maxsize=1024)
def _cached_parse(text: str) -> Expression:
    return parse_expression(text)
