"""Regular expressions for ``=~`` and ``!~``, bounded so that no pattern can stall the engine's event loop.

Python's ``re`` backtracks: a pattern such as ``(a+)+$`` takes time exponential in the length of a string
it fails to match (about a second at 25 characters, doubling per character), and conditions are decided
on the event loop that runs every flow. ``compile_regexp`` therefore checks a pattern before it is used:

- a pattern longer than ``MAX_PATTERN_LENGTH`` characters is refused;
- the pattern is translated into its position automaton (one state per character-matching atom, as in
  Glushkov's construction, with the search's retry at every start modelled as a leading loop on any
  character) and refused when the automaton shows that backtracking can blow up:

  * exponentially: some state can return to itself along two different paths reading the same text, so
    each repetition multiplies the ways to match (``(a+)+``, ``(a|aa)*``, ``(\\w+\\s?)*``, and
    ``(a(|b?))+``, whose empty alternatives are two paths too: states count the ways to reach them);
  * polynomially beyond the square: three or more unbounded loops follow one another and can all consume
    the same text (``.*a.*b`` searched anywhere, ``(.*a){3}``), each adding a factor of the length;
  * combinatorially: alternatives and optional parts that read the same text give more than
    ``MAX_AMBIGUITY`` paths through the pattern for one text (``(?:ab|ab){10}``, ``(?:a?a?){8}b``);

- what remains has a worst case linear or quadratic in the string's length, times a factor known from
  the pattern, and ``Regexp.max_subject`` is the longest string that keeps that product under a fixed
  budget of backtracking steps (``MAX_SUBJECT_LENGTH`` for ordinary linear patterns, some hundreds to a
  couple of thousand characters for quadratic ones); the caller refuses longer strings.

The analysis leans to caution: where it cannot tell (whether two huge character ranges share a character,
say) it assumes the worst, so a few harmless but unusual patterns are refused too (the same alternative
written twice and repeated, for one); the refusal says why, so the pattern can be rewritten (usually by
anchoring it or by making a repetition's parts match different characters). The check itself is bounded
(``_MAX_POSITIONS``, ``_MAX_WORK``), since it runs on the event loop as well, and cached per pattern.

A linear-time engine (RE2) would need no such check, but it is deliberately not used: it gives ``\\d``,
``\\w``, ``\\s`` and ``$`` their ASCII and end-of-text meanings where Python's ``re`` has Unicode and
before-a-final-newline ones, so routing would depend on which packages a machine has installed.
"""

from __future__ import annotations

import functools
import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

__all__ = [
    "MAX_AMBIGUITY",
    "MAX_PATTERN_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "Refusal",
    "Regexp",
    "compile_regexp",
]

MAX_PATTERN_LENGTH: Final = 1_000
"""The longest pattern, in characters, that ``=~``/``!~`` accept."""

MAX_SUBJECT_LENGTH: Final = 100_000
"""The longest string, in characters, that any pattern is matched against."""

MAX_AMBIGUITY: Final = 256
"""How many ways to read one text a pattern's alternatives and optional parts may offer in a row."""

# The worst-case number of backtracking steps one match may take; ``Regexp.max_subject`` derives from it.
# Python's matcher takes from a few to a few tens of nanoseconds a step (groups cost most), so this keeps a
# match within some tens of milliseconds even on a busy machine.
_STEP_BUDGET: Final = 2_000_000

# The analysis refuses, as too complex to check, patterns whose automaton outgrows _MAX_POSITIONS or whose
# check would examine more than _MAX_WORK edges: the check runs on the event loop too, so it must be bounded
# itself (to some tens of milliseconds).
_MAX_POSITIONS: Final = 2_000
_MAX_WORK: Final = 100_000

# A bounded repetition is copied into the automaton up to this many times; a larger bound is analysed as
# an unbounded repetition, which can only make the verdict more cautious.
_UNROLL_LIMIT: Final = 16

# A character class with more members than this is not enumerated when testing whether two overlap.
_ENUMERABLE: Final = 256

_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")
_MAXREPEAT: Final[int] = int(_constants.MAXREPEAT)


@dataclass(frozen=True, slots=True)
class Regexp:
    """A pattern that passed the check: the compiled pattern and the longest string it may search."""

    pattern: re.Pattern[str]
    max_subject: int

    def search(self, subject: str) -> bool:
        """Whether ``subject`` contains a match; the caller has checked it against ``max_subject``."""
        return self.pattern.search(subject) is not None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a pattern cannot be used: ``invalid`` when ``re`` rejects it, else a bound it would break."""

    reason: str
    invalid: bool = False


@functools.lru_cache(maxsize=512)
def compile_regexp(pattern: str) -> Regexp | Refusal:
    """Compile and check ``pattern`` (cached: the check runs once per distinct pattern and process)."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return Refusal(f"it is {len(pattern)} characters long, more than the {MAX_PATTERN_LENGTH} allowed")
    try:
        compiled = re.compile(pattern)
        tree = _parser.parse(pattern, compiled.flags)
    except re.error as exc:
        return Refusal(exc.msg, invalid=True)
    # re raises these for huge repeat counts and very deeply nested groups rather than re.error.
    except (OverflowError, RecursionError) as exc:
        return Refusal(str(exc), invalid=True)
    verdict = _analyse(tree)
    if isinstance(verdict, Refusal):
        return verdict
    return Regexp(compiled, verdict)


# ------------------------------------------------------------------------------------------ characters

_IGNORECASE: Final = int(re.IGNORECASE)
_DOTALL: Final = int(re.DOTALL)
_ASCII: Final = int(re.ASCII)
_MULTILINE: Final = int(re.MULTILINE)

_ASCII_SPACE: Final = frozenset(" \t\n\r\f\v")

# Membership in re's character categories for str patterns, Unicode (default) and ASCII (re.ASCII).
_CATEGORIES: Final[dict[str, tuple[Callable[[str], bool], Callable[[str], bool]]]] = {
    "CATEGORY_DIGIT": (str.isdecimal, lambda c: "0" <= c <= "9"),
    "CATEGORY_SPACE": (str.isspace, lambda c: c in _ASCII_SPACE),
    "CATEGORY_WORD": (lambda c: c.isalnum() or c == "_", lambda c: c.isascii() and (c.isalnum() or c == "_")),
    "CATEGORY_LINEBREAK": (lambda c: c == "\n", lambda c: c == "\n"),
}

# Characters standing for every combination of category memberships a character can have (Unicode and
# ASCII digit, space and word, and the newline that "." excludes); a test checks that no combination is
# missing. Two classes built from categories and a few listed characters overlap exactly when one of
# these, or one of the listed characters, belongs to both. Each group has several members so that a
# class that lists some of them still leaves one to stand for the rest (the newline stands alone).
_WITNESS_GROUPS: Final[tuple[tuple[str, ...], ...]] = (
    ("0", "7", "5"),  # ASCII digits
    ("\u0661", "\u0967", "\uff15"),  # other decimal digits
    ("a", "Z", "q", "_"),  # ASCII word characters
    ("\u00e9", "\u0436", "\u4e2d", "\u00b2"),  # other word characters
    (" ", "\t", "\r", "\f"),  # ASCII spaces besides the newline
    ("\n",),  # the newline: alone in its combination
    ("\x1c", "\x85", "\u00a0", "\u2028", "\u3000"),  # Unicode spaces that ASCII does not count
    (".", "-", "@", "\x00", "!"),  # ASCII characters of no category
    ("\u20ac", "\u2014", "\u00bf", "\ud800"),  # other characters of no category
)


def _case_variants(char: str) -> set[str]:
    """``char`` and the single characters its case mappings give, for case-insensitive matching."""
    variants = {char}
    for mapped in (char.lower(), char.upper(), char.casefold(), char.lower().upper(), char.upper().lower()):
        if len(mapped) == 1:
            variants.add(mapped)
    return variants


@dataclass(frozen=True, slots=True)
class _CharSet:
    """What one position of the automaton can read: a (possibly negated) set of listed characters, code
    point ranges and categories, under the flags in force where it appears."""

    negate: bool
    chars: frozenset[str]
    ranges: tuple[tuple[int, int], ...]
    categories: tuple[str, ...]
    flags: int

    def _raw(self, char: str) -> bool:
        if char in self.chars:
            return not self.negate
        code = ord(char)
        if any(low <= code <= high for low, high in self.ranges):
            return not self.negate
        ascii_only = 1 if self.flags & _ASCII else 0
        for name in self.categories:
            # CATEGORY_NOT_DIGIT is the complement of CATEGORY_DIGIT, and so on.
            base = name.replace("_NOT_", "_")
            if _CATEGORIES[base][ascii_only](char) != (base != name):
                return not self.negate
        return self.negate

    def contains(self, char: str) -> bool:
        """Whether the position reads ``char`` (re folds case by similar mappings)."""
        if self.flags & _IGNORECASE:
            return any(self._raw(variant) for variant in _case_variants(char))
        return self._raw(char)


@functools.lru_cache(maxsize=4096)
def _listed(charset: _CharSet) -> frozenset[str] | None:
    """Every character ``charset``'s ranges and listed characters name, case variants included, when few."""
    if sum(high - low + 1 for low, high in charset.ranges) > _ENUMERABLE:
        return None
    listed = set(charset.chars)
    for low, high in charset.ranges:
        listed.update(chr(code) for code in range(low, high + 1))
    if charset.flags & _IGNORECASE:
        listed = {variant for char in listed for variant in _case_variants(char)}
    return frozenset(listed)


def _members(charset: _CharSet) -> frozenset[str] | None:
    """All the characters ``charset`` reads, when they are few enough to list."""
    if charset.negate or charset.categories:
        return None
    return _listed(charset)


@functools.lru_cache(maxsize=65536)
def _overlap(first: _CharSet, second: _CharSet) -> bool:
    """Whether some character is read by both positions (True when that cannot be settled cheaply)."""
    for small, other in ((first, second), (second, first)):
        members = _members(small)
        if members is not None:
            return any(other.contains(char) for char in members)
    listed = [_listed(first), _listed(second)]
    witnesses: set[str] = set()
    for chars in listed:
        if chars is None:
            # A huge range may hide a common character the witnesses miss.
            return True
        witnesses |= chars
    for group in _WITNESS_GROUPS:
        free = [char for char in group if char not in witnesses]
        if not free and len(group) > 1:
            return True  # every stand-in of the group is listed: none is left to stand for the others
        witnesses.update(free[:1])
    return any(first.contains(char) and second.contains(char) for char in witnesses)


_ANYTHING: Final = _CharSet(True, frozenset(), (), (), 0)


def _charset(op: str, value: Any, flags: int) -> _CharSet:
    """The position for a LITERAL, NOT_LITERAL, ANY or IN item of re's parse tree."""
    if op == "LITERAL":
        return _CharSet(False, frozenset(chr(value)), (), (), flags)
    if op == "NOT_LITERAL":
        return _CharSet(True, frozenset(chr(value)), (), (), flags)
    if op == "ANY":
        return _ANYTHING if flags & _DOTALL else _CharSet(True, frozenset("\n"), (), (), flags)
    negate = False
    chars: set[str] = set()
    ranges: list[tuple[int, int]] = []
    categories: list[str] = []
    for item_op, item_value in value:
        name = str(item_op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            chars.add(chr(item_value))
        elif name == "RANGE":
            ranges.append((int(item_value[0]), int(item_value[1])))
        else:  # CATEGORY
            categories.append(str(item_value))
    return _CharSet(negate, frozenset(chars), tuple(ranges), tuple(categories), flags)


# ----------------------------------------------------------------------------------------- automaton


@dataclass(frozen=True, slots=True)
class _Fragment:
    """A piece of the automaton: the positions that can start it and end it, each with the number of
    distinct ways the structure gives to do so, and the number of ways it can match nothing (0 when it
    cannot). ``(|)`` matches nothing two ways, so ``a(|)`` ends at ``a`` two ways: paths that look alike
    but that backtracking explores one after the other."""

    first: dict[int, int]
    last: dict[int, int]
    empty: int


_EMPTY: Final = _Fragment({}, {}, 1)

# Counts of ways saturate here: past MAX_AMBIGUITY the pattern is refused whatever the exact number.
_WAYS_CAP: Final = MAX_AMBIGUITY + 1


def _ways(count: int) -> int:
    return min(count, _WAYS_CAP)


def _plus(first: dict[int, int], second: dict[int, int], times: int = 1) -> dict[int, int]:
    """``first`` plus ``times`` times ``second``, position by position."""
    total = dict(first)
    if times:
        for position, ways in second.items():
            total[position] = _ways(total.get(position, 0) + ways * times)
    return total


class _TooComplex(Exception):
    """The automaton outgrew what the check is willing to build or examine."""


class _Meter:
    """Counts the edges the analysis examines, to give up past _MAX_WORK."""

    def __init__(self) -> None:
        self.spent = 0

    def spend(self, amount: int) -> None:
        self.spent += amount
        if self.spent > _MAX_WORK:
            raise _TooComplex


_CHARACTER_OPS: Final = frozenset({"LITERAL", "NOT_LITERAL", "ANY", "IN"})
_REPEAT_OPS: Final = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})

# What one group, alternation or repetition of more than a character costs per step, in character reads.
_OVERHEAD_WEIGHT: Final = 10


class _Automaton:
    """Positions (character sets) and the follow relation between them, built from re's parse tree."""

    def __init__(self) -> None:
        self.charsets: list[_CharSet] = []
        # How many groups, alternations, lookarounds and repetitions of more than a character the pattern has.
        self.overhead = 0
        # follow[p][q]: how many distinct ways the pattern's structure steps from p to q. Two (as the inner
        # and the outer loop of (a+)+ both give) mean two paths that backtracking explores separately.
        self.follow: list[dict[int, int]] = []

    def position(self, charset: _CharSet) -> _Fragment:
        if len(self.charsets) >= _MAX_POSITIONS:
            raise _TooComplex
        index = len(self.charsets)
        self.charsets.append(charset)
        self.follow.append({})
        return _Fragment({index: 1}, {index: 1}, 0)

    def link(self, sources: dict[int, int], targets: dict[int, int]) -> None:
        for source, source_ways in sources.items():
            follow = self.follow[source]
            for target, target_ways in targets.items():
                follow[target] = _ways(follow.get(target, 0) + source_ways * target_ways)

    def concat(self, left: _Fragment, right: _Fragment) -> _Fragment:
        self.link(left.last, right.first)
        return _Fragment(
            _plus(left.first, right.first, left.empty),
            _plus(right.last, left.last, right.empty),
            _ways(left.empty * right.empty),
        )

    def loop(self, body: _Fragment, optional: bool) -> _Fragment:
        self.link(body.last, body.first)
        return _Fragment(body.first, body.last, _ways(body.empty + 1) if optional else body.empty)

    def build(self, items: list[Any], flags: int) -> _Fragment:
        """The fragment of a parsed sequence, built with an explicit stack rather than recursion."""
        root = _Frame(_sequence, [], flags, items=list(items))
        stack = [root]
        while True:
            frame = stack[-1]
            if frame.pending:
                child, child_flags = frame.pending.pop(0)
                stack.append(_Frame(_sequence, [], child_flags, items=list(child)))
                continue
            if frame.items:
                op, value = frame.items.pop(0)
                nested = self._item(str(op), value, frame.flags)
                if isinstance(nested, _Fragment):
                    frame.results.append(nested)
                else:
                    stack.append(nested)
                continue
            stack.pop()
            fragment = frame.combine(self, frame.results)
            if not stack:
                return fragment
            stack[-1].results.append(fragment)

    def _item(self, op: str, value: Any, flags: int) -> _Fragment | _Frame:
        """A leaf item's fragment, or the frame that will build a compound item from its parts."""
        if op in _CHARACTER_OPS:
            return self.position(_charset(op, value, flags))
        if op == "AT":
            return _EMPTY
        if op != "SUBPATTERN" or value[0] is not None:
            # Groups, alternatives, lookarounds and repetitions of more than one character cost re far
            # more per step than reading a character (marks saved and restored, repeat contexts).
            repeats_one_character = (
                op in _REPEAT_OPS and len(value[2]) == 1 and str(value[2][0][0]) in _CHARACTER_OPS
            )
            if not repeats_one_character:
                self.overhead += 1
        if op == "SUBPATTERN":
            _group, add_flags, del_flags, body = value
            return _Frame(_single, [(body, (flags | add_flags) & ~del_flags)], flags)
        if op == "ATOMIC_GROUP":
            return _Frame(_single, [(value, flags)], flags)
        if op == "BRANCH":
            return _Frame(_union, [(branch, flags) for branch in value[1]], flags)
        if op == "GROUPREF_EXISTS":
            _group, yes, no = value
            return _Frame(_union, [(yes, flags), (no or [], flags)], flags)
        if op in ("ASSERT", "ASSERT_NOT"):
            # A lookaround reads ahead (or behind) without consuming; taking it as an optional part of the
            # sequence lets its repetitions meet those around it, which can only add caution.
            return _Frame(_optional, [(value[1], flags)], flags)
        if op in _REPEAT_OPS:
            low, high, body = value
            if high == 0:
                return _EMPTY
            if high != _MAXREPEAT and high <= _UNROLL_LIMIT:
                return _Frame(_unrolled(low, high), [(body, flags)] * high, flags)
            return _Frame(_looped(low), [(body, flags)], flags)
        # GROUPREF, and anything a later Python adds: any text, any number of times.
        return self.loop(self.position(_ANYTHING), True)


@dataclass(slots=True)
class _Frame:
    """A compound item being built: its parts' sequences still to build, and the fragments built so far.

    A sequence's own frame holds its items instead, consumed one by one.
    """

    combine: Callable[[_Automaton, list[_Fragment]], _Fragment]
    pending: list[tuple[list[Any], int]]
    flags: int
    items: list[Any] = field(default_factory=list)
    results: list[_Fragment] = field(default_factory=list)


def _sequence(automaton: _Automaton, parts: list[_Fragment]) -> _Fragment:
    fragment = _EMPTY
    for part in parts:
        fragment = automaton.concat(fragment, part)
    return fragment


def _single(automaton: _Automaton, parts: list[_Fragment]) -> _Fragment:
    return parts[0]


def _union(automaton: _Automaton, parts: list[_Fragment]) -> _Fragment:
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for part in parts:
        first = _plus(first, part.first)
        last = _plus(last, part.last)
    return _Fragment(first, last, _ways(sum(part.empty for part in parts)))


def _optional(automaton: _Automaton, parts: list[_Fragment]) -> _Fragment:
    return _Fragment(parts[0].first, parts[0].last, _ways(parts[0].empty + 1))


def _looped(low: int) -> Callable[[_Automaton, list[_Fragment]], _Fragment]:
    def combine(automaton: _Automaton, parts: list[_Fragment]) -> _Fragment:
        return automaton.loop(parts[0], low == 0)

    return combine


def _unrolled(low: int, high: int) -> Callable[[_Automaton, list[_Fragment]], _Fragment]:
    """``body{low,high}`` from ``high`` copies: ``low`` required, the rest each optional after the one
    before (``x{1,3}`` is ``x(x(x)?)?``), so that one text is read one way, as re reads it."""

    def combine(automaton: _Automaton, copies: list[_Fragment]) -> _Fragment:
        tail = _EMPTY
        for copy in reversed(copies[low:]):
            tail = _optional(automaton, [automaton.concat(copy, tail)])
        return _sequence(automaton, [*copies[:low], tail])

    return combine


# ------------------------------------------------------------------------------------------- analysis


def _analyse(tree: Any) -> int | Refusal:
    """The longest string the parsed pattern may search, or why it is refused."""
    automaton = _Automaton()
    flags = int(tree.state.flags)
    items = list(tree)
    meter = _Meter()
    try:
        # Position 0 stands for search's retry at every start: a loop on any character before the pattern,
        # left out when the pattern is anchored at the start of the string, which re tries only there.
        search = automaton.position(_ANYTHING)
        anchored = bool(items) and str(items[0][0]) == "AT" and _anchors_start(str(items[0][1]), flags)
        body = automaton.build(items, flags)
        initial = body.first if anchored else automaton.concat(automaton.loop(search, True), body).first
        components = _components_in_order(automaton)
        loops = [
            component
            for component in components
            if len(component) > 1 or any(member in automaton.follow[member] for member in component)
        ]
        exponential = any(_backtracks_exponentially(automaton, loop, meter) for loop in loops)
        degree = 0 if exponential else _chained_loops(automaton, loops, meter)
        ambiguity = 0 if exponential or degree >= 3 else _ambiguity(automaton, initial, components, meter)
    except _TooComplex:
        return Refusal("it is too complex to check for runaway backtracking; simplify it")
    if exponential:
        return Refusal(
            "it can backtrack exponentially: a repetition can match the same text in more than one way, "
            "as in (a+)+ or (a|aa)*; make each repetition's parts match different characters"
        )
    if degree >= 3:
        return Refusal(
            f"its matching time can grow as the power {degree} of the string's length: {degree} unbounded "
            "repetitions in a row can match the same characters, as in .*a.*b searched anywhere; "
            "anchor it with ^ or make the repetitions match different characters"
        )
    if ambiguity > MAX_AMBIGUITY:
        return Refusal(
            f"its alternatives and optional parts offer more than {MAX_AMBIGUITY} ways to read the same "
            "text, as (?:ab|ab){10} does; make alternatives start with different characters"
        )
    # Each start explores at most `ambiguity` paths through the pattern's positions (the search loop aside),
    # and a loop chained to the search's retries makes the number of starts a second factor of the length.
    per_start = max(ambiguity, 1) * max(
        len(automaton.charsets) - 1 + _OVERHEAD_WEIGHT * automaton.overhead, 1
    )
    steps = _STEP_BUDGET // per_start
    # Quadratic: the starts times what each start's repetition still reads, about a half of length squared.
    limit = math.isqrt(2 * steps) if degree == 2 else steps
    return max(1, min(MAX_SUBJECT_LENGTH, limit))


def _anchors_start(code: str, flags: int) -> bool:
    return code == "AT_BEGINNING_STRING" or (code == "AT_BEGINNING" and not flags & _MULTILINE)


_Node = tuple[int, int]
_T = TypeVar("_T", bound=tuple[Any, ...])
_Pair = tuple[int, int, bool]


def _backtracks_exponentially(automaton: _Automaton, loop: frozenset[int], meter: _Meter) -> bool:
    """Whether some position of ``loop`` (a strongly connected component of the automaton) returns to
    itself along two different paths that read the same text; such paths never leave the component.

    Pairs of paths reading the same text form a graph whose nodes are their current positions plus
    whether the paths have parted yet (an edge when both can step to positions sharing a character). A
    return exists exactly when a node of paths not yet parted shares a cycle with one of parted paths, once
    parted paths that meet again at one position are allowed to start over as one.
    """
    follow = automaton.follow
    charsets = automaton.charsets

    def successors(node: _Pair) -> list[_Pair]:
        left, right, parted = node
        meter.spend(len(follow[left]) * len(follow[right]))
        found = []
        if not parted:
            for target, ways in follow[left].items():
                if target not in loop:
                    continue
                found.append((target, target, False))
                if ways > 1:
                    found.append((target, target, True))
                for other in follow[left]:
                    if other != target and other in loop and _overlap(charsets[target], charsets[other]):
                        found.append((target, other, True))
            return found
        if left == right:
            found.append((left, left, False))
        for next_left in follow[left]:
            for next_right in follow[right]:
                if next_left not in loop or next_right not in loop:
                    continue
                if next_left == next_right or _overlap(charsets[next_left], charsets[next_right]):
                    found.append((next_left, next_right, True))
        return found

    roots = [(position, position, False) for position in sorted(loop)]
    for component in _components(roots, successors, _MAX_WORK):
        if len({parted for _left, _right, parted in component}) == 2:
            return True
    return False


def _components(roots: list[_T], successors: Callable[[_T], list[_T]], limit: int) -> list[list[_T]]:
    """The strongly connected components of the graph reachable from ``roots``, each after every component
    it reaches (Tarjan's algorithm with an explicit stack); _TooComplex past ``limit`` nodes."""
    index: dict[_T, int] = {}
    low: dict[_T, int] = {}
    on_stack: set[_T] = set()
    stack: list[_T] = []
    found: list[list[_T]] = []

    def visit(node: _T) -> tuple[_T, list[_T]]:
        if len(index) >= limit:
            raise _TooComplex
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        return node, successors(node)

    for root in roots:
        if root in index:
            continue
        work = [visit(root)]
        while work:
            node, pending = work[-1]
            if pending:
                child = pending.pop()
                if child not in index:
                    work.append(visit(child))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                found.append(component)
    return found


def _components_in_order(automaton: _Automaton) -> list[frozenset[int]]:
    """The automaton's strongly connected components, each before every component it reaches."""
    follow = automaton.follow

    def successors(node: _Node) -> list[_Node]:
        return [(target, target) for target in follow[node[0]]]

    roots = [(position, position) for position in range(len(follow))]
    components = _components(roots, successors, len(follow) + 1)
    return [frozenset(left for left, _right in component) for component in reversed(components)]


def _chained_loops(automaton: _Automaton, loops: list[frozenset[int]], meter: _Meter) -> int:
    """The most loops one path can pass that could all consume the same text, each a factor of the length.

    Two loops chain when the second is reachable from the first through positions that can read
    characters of both loops: then one text can be split between them in as many ways as it is long.
    ``loops`` come in topological order.
    """
    charsets = automaton.charsets
    follow = automaton.follow

    def reads_from(position: int, loop: frozenset[int]) -> bool:
        meter.spend(len(loop))
        return any(_overlap(charsets[position], charsets[member]) for member in loop)

    def chains(source: frozenset[int], target: frozenset[int]) -> bool:
        seen = set(source)
        frontier = list(source)
        while frontier:
            for successor in follow[frontier.pop()]:
                if successor in seen or not (reads_from(successor, source) and reads_from(successor, target)):
                    continue
                if successor in target:
                    return True
                seen.add(successor)
                frontier.append(successor)
        return False

    longest = [1] * len(loops)
    for later in range(len(loops)):
        for earlier in range(later):
            if longest[earlier] + 1 > longest[later] and chains(loops[earlier], loops[later]):
                longest[later] = longest[earlier] + 1
    return max(longest, default=0)


def _ambiguity(
    automaton: _Automaton, initial: dict[int, int], components: list[frozenset[int]], meter: _Meter
) -> int:
    """An upper bound on the ways the pattern's alternatives and optional parts give to read one text,
    counting paths through the automaton with its loops cut (repetitions were bounded above); stops
    counting just past MAX_AMBIGUITY.

    Paths of equal length are counted first, whatever they read; only when that exceeds the bound are
    the paths reading the same characters counted, over the kinds of character the positions tell apart.
    """
    component_of = {position: number for number, component in enumerate(components) for position in component}
    # The edges between different components: an acyclic graph, whose paths are at most as long as it has
    # positions, so counting step by step ends.
    skeleton = [
        {target: ways for target, ways in follow.items() if component_of[target] != component_of[source]}
        for source, follow in enumerate(automaton.follow)
    ]
    # A last node stands for the start, before the first character.
    skeleton.append(initial)
    counts = _count_paths(skeleton, None, meter)
    if counts <= MAX_AMBIGUITY:
        return counts
    return _count_paths(skeleton, _alphabet(automaton.charsets, meter), meter)


def _count_paths(skeleton: list[dict[int, int]], alphabet: list[frozenset[int]] | None, meter: _Meter) -> int:
    """The most paths of ``skeleton`` from its last node that read one text (any text of one length when
    ``alphabet`` is None; else ``alphabet`` gives the positions reading each kind of character)."""
    cap = MAX_AMBIGUITY + 1
    frontier: set[tuple[tuple[int, int], ...]] = {((len(skeleton) - 1, 1),)}
    seen: set[tuple[tuple[int, int], ...]] = set()
    worst = 1
    while frontier:
        following: set[tuple[tuple[int, int], ...]] = set()
        for vector in frontier:
            for letter in alphabet if alphabet is not None else [None]:
                step: dict[int, int] = {}
                for position, count in vector:
                    meter.spend(len(skeleton[position]))
                    for target, ways in skeleton[position].items():
                        if letter is None or target in letter:
                            step[target] = min(step.get(target, 0) + count * ways, cap)
                if not step:
                    continue
                worst = max(worst, min(sum(step.values()), cap))
                if worst >= cap:
                    return worst
                state = tuple(sorted(step.items()))
                if state not in seen:
                    seen.add(state)
                    following.add(state)
        frontier = following
    return worst


def _alphabet(charsets: list[_CharSet], meter: _Meter) -> list[frozenset[int]]:
    """The kinds of character the positions tell apart: for each, the set of positions that read it.

    Drawn from every character some position lists plus the stand-ins of the character categories, and
    the ends and middle of every huge range.
    """
    candidates: set[str] = {char for group in _WITNESS_GROUPS for char in group}
    for charset in charsets:
        listed = _listed(charset)
        if listed is not None:
            candidates |= listed
        for low, high in charset.ranges:
            candidates.update(chr(code) for code in (low, (low + high) // 2, high))
    meter.spend(len(candidates) * len(charsets))
    letters = {
        frozenset(position for position, charset in enumerate(charsets) if charset.contains(char))
        for char in candidates
    }
    letters.discard(frozenset())
    return sorted(letters, key=sorted)
