"""Workflow graphs: the builder, the validator, the routing queries the engine asks, and the frozen JSON form.

A ``Graph`` names task nodes (node name -> task URL) and the transitions between them. Builders only check
their own arguments; cross-references (a transition into a node declared later, the entry point, fan-in
marks) are settled by ``validate()``, which the engine also runs at create and at subgraph spawn.

``validate()`` raises InvalidGraphError, naming the graph and the offending node or field, when:

1. the graph name is empty;
2. the graph has no tasks;
3. the entry point is empty, is END, or is not a task;
4. ``set_fan_in`` marked END or a name that is not a task;
5. a reducer is not a known Reducer;
6. a transition leaves END;
7. a transition starts or ends at a name that is not a task (END aside as a target);
8. a transition carries ``as_`` without ``for_each`` or ``for_each`` without ``as_``;
9. a transition combines ``for_each`` with goto;
10. an onError transition also carries for_each, goto, switch or a ``when`` expression;
11. a switch transition also carries for_each or goto, or has no ``when`` expression;
12. an onError transition leads back to its own source (an unbounded loop: use ``flow.retry``);
13. a ``when``/``switch`` expression does not parse;
14. a node has more than one onError transition;
15. a node mixes switch transitions with plain/when/forEach/goto transitions;
16. a node combines an onError transition with a forEach or goto transition;
17. a node is not reachable from the entry point (over every kind of transition);
18. no transition leads to END;
19. fan-out lineage (see ``_trace_lineage``): a fan-in node entered from outside any fan-out; branches
    of one fan-out converging on different fan-in nodes; a branch reaching END without passing its
    fan-in (the case of an unmarked convergence node); a node reached both inside and outside a fan-out
    (or inside two different ones); a fan-out whose branches never reach a fan-in.

A *fan-out source* is a node with two or more plain/when transitions (duplicates count: each fires) or any
forEach transition; switch, goto and onError transitions never fan out. Its *siblings* are the branches
those transitions start. Every sibling path must pop the fan-out's frame at one and the same fan-in node
before anything reaches END, so the fan-in outcome cannot depend on which sibling finishes last.

``add_task`` takes a task URL or a handler a host registered, which stands for its URL
(``dwarf.workflow.taskref``); the graph holds URLs only. The ``strict`` option is no validation rule:
what it refuses (a condition on a missing field, a forEach over a missing array) depends on the state,
so the engine checks it when it routes (``dwarf.engine.transitions``). It is written to the JSON only
when set, so the frozen text of every other graph is what it was before the option existed.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from dwarf.errors import InvalidGraphError
from dwarf.workflow.expressions import parse_expression
from dwarf.workflow.jsonvalue import check_text
from dwarf.workflow.reducers import Reducer, parse_reducer
from dwarf.workflow.taskref import task_url_of

__all__ = ["END", "GRAPH_FORMAT_VERSION", "Graph", "Node", "TaskRef", "Transition"]

END: Final = "END"
"""The terminal pseudo-node: a transition to it ends the flow. It is never a task."""

GRAPH_FORMAT_VERSION: Final = 1
"""The ``formatVersion`` written by ``Graph.to_json``; ``from_json`` refuses any other."""

TaskRef: TypeAlias = str | Callable[..., Any]
"""What ``Graph.add_task`` takes for a node's task: its URL, or a handler a host registered (whose URL
the registration recorded, see ``dwarf.workflow.taskref``)."""


@dataclass(frozen=True, slots=True)
class Node:
    """A task node: its name in the graph, the URL the host executes, and whether it is a fan-in."""

    name: str
    url: str
    fan_in: bool = False


@dataclass(frozen=True, slots=True)
class Transition:
    """One edge of a graph. Exactly one kind applies; ``kind`` says which."""

    from_: str
    to: str
    when: str = ""
    with_goto: bool = False
    for_each: str = ""
    as_: str = ""
    on_error: bool = False
    switch: bool = False

    @property
    def kind(self) -> str:
        """``"on_error"``, ``"goto"``, ``"switch"``, ``"for_each"``, ``"when"`` or ``"plain"``."""
        if self.on_error:
            return "on_error"
        if self.with_goto:
            return "goto"
        if self.switch:
            return "switch"
        if self.for_each:
            return "for_each"
        if self.when:
            return "when"
        return "plain"

    @property
    def fans_out(self) -> bool:
        """True for the kinds that take part in fan-out: plain, when and forEach
        (docs/graphs.md#transitions)."""
        return not (self.on_error or self.with_goto or self.switch)


# JSON keys of a transition other than "from"/"to", with their Python attribute and type. A field at its
# zero value is omitted from the canonical form, so most transitions serialise as just from/to.
_TRANSITION_FIELDS: Final[tuple[tuple[str, str, type], ...]] = (
    ("when", "when", str),
    ("withGoto", "with_goto", bool),
    ("forEach", "for_each", str),
    ("as", "as_", str),
    ("onError", "on_error", bool),
    ("switch", "switch", bool),
)
_GRAPH_REQUIRED_KEYS: Final = frozenset({"formatVersion", "name", "entryPoint", "nodes", "transitions"})
_GRAPH_OPTIONAL_KEYS: Final = frozenset({"fanIn", "reducers", "strict"})


def _require_name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidGraphError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidGraphError(f"{what} must not be empty")
    # Names and URLs land in plain text columns of every step: refuse what a store cannot hold here,
    # or a flow of this graph would fail at its first commit instead of at validation.
    return check_text(value, what, InvalidGraphError)


def _require_bool(value: object, what: str) -> bool:
    if type(value) is not bool:
        raise InvalidGraphError(f"{what} must be a boolean, not {type(value).__name__}")
    return value


def _require_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidGraphError(f"{what} must be a string, not {type(value).__name__}")
    return check_text(value, what, InvalidGraphError)


class Graph:
    """A named workflow definition: task nodes, transitions, an entry point, fan-in marks and reducers.

    Example::

        g = Graph("Checkout")
        g.add_task("Reserve", "inventory.reserve")
        g.add_task("Charge", "billing.charge")
        g.add_transition_chain("Reserve", "Charge", END)
        g.validate()

    With ``strict=True`` (or ``set_strict()``) routing refuses to guess: a ``when``/``switch`` expression
    that reads a field the state does not have, or a forEach whose array field is missing or not an
    array, fails the step instead of evaluating to false or starting no branch (docs/graphs.md#strict-graphs).
    """

    # A mutable object whose equality follows its content must not be hashable.
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, name: str, *, strict: bool = False) -> None:
        self._name = _require_str(name, "graph name")
        self._strict = _require_bool(strict, "strict")
        self._entry_point = ""
        self._nodes: dict[str, str] = {}
        self._transitions: list[Transition] = []
        self._fan_in: set[str] = set()
        self._reducers: dict[str, Reducer] = {}
        # fan-out source -> its fan-in node, derived by validate(); None until then or after a change.
        self._fan_in_by_source: dict[str, str] | None = None

    # ----------------------------------------------------------------- properties

    @property
    def name(self) -> str:
        """The graph's display name (not the workflow URL the host resolves it by)."""
        return self._name

    @property
    def strict(self) -> bool:
        """Whether routing treats a missing ``when`` field or forEach array as an error (``set_strict``)."""
        return self._strict

    @property
    def entry_point(self) -> str:
        """The node a flow starts at: the first task added unless ``set_entry_point`` chose another."""
        return self._entry_point

    @property
    def nodes(self) -> list[Node]:
        """The task nodes in the order they were first declared (a new list each call)."""
        return [Node(name, url, name in self._fan_in) for name, url in self._nodes.items()]

    @property
    def transitions(self) -> list[Transition]:
        """Every transition in registration order (a new list each call)."""
        return list(self._transitions)

    @property
    def reducers(self) -> dict[str, Reducer]:
        """The fan-in reducer per state field (a copy); an absent field uses ``replace``."""
        return dict(self._reducers)

    # ----------------------------------------------------------------- builders

    def set_endpoint(self, name: str, url: TaskRef) -> None:
        """Declare the task node ``name`` dispatched to ``url``, or change the URL of an existing one.

        ``url`` is the task's URL, or a handler function registered on a host (``@host.task``), which
        stands for the URL it was registered under; InvalidGraphError for a function no host registered
        or one registered under several URLs. The graph keeps only the URL.

        The first node declared becomes the entry point unless ``set_entry_point`` is called. The same URL
        may serve several node names (one task at several positions of the graph).
        """
        _require_name(name, "node name")
        resolved = url if isinstance(url, str) or not callable(url) else task_url_of(url, name)
        checked = _require_name(resolved, f"url of node {name!r}")
        if name == END:
            raise InvalidGraphError(f"{END!r} is the terminal pseudo-node and cannot be declared as a task")
        self._touch()
        self._nodes[name] = checked
        if not self._entry_point:
            self._entry_point = name

    def add_task(self, name: str, url: TaskRef) -> None:
        """Same as ``set_endpoint``: ``url`` is a task URL or a registered handler standing for its URL."""
        self.set_endpoint(name, url)

    def url_of(self, name: str) -> str:
        """The URL of node ``name``; END maps to itself and an undeclared name to ``""``."""
        if name == END:
            return END
        return self._nodes.get(name, "")

    def set_strict(self, strict: bool = True) -> None:
        """Make routing strict (or not again): see the class docstring and docs/graphs.md#strict-graphs."""
        self._strict = _require_bool(strict, "strict")

    def set_entry_point(self, name: str) -> None:
        """Start flows at ``name`` instead of the first task added (checked by ``validate``)."""
        _require_name(name, "entry point")
        self._touch()
        self._entry_point = name

    def add_transition(self, from_: str, to: str) -> None:
        """After ``from_`` completes, always go to ``to`` (several of these from one node fan out)."""
        self._add(Transition(_require_name(from_, "from_"), _require_name(to, "to")))

    def add_transition_when(self, from_: str, to: str, when: str) -> None:
        """Go to ``to`` when ``when`` holds over the merged state; every matching one fires.

        An empty ``when`` makes this a plain transition. The expression is parsed by ``validate``.
        """
        self._add(
            Transition(
                _require_name(from_, "from_"), _require_name(to, "to"), when=_require_str(when, "when")
            )
        )

    def add_transition_switch(self, from_: str, to: str, when: str) -> None:
        """Go to ``to`` if ``when`` is the first true switch expression of ``from_`` (in registration order).

        The last switch of a node is usually the catch-all ``"true"``; when none holds, the flow completes.
        """
        self._add(
            Transition(
                _require_name(from_, "from_"),
                _require_name(to, "to"),
                when=_require_str(when, "when"),
                switch=True,
            )
        )

    def add_transition_goto(self, from_: str, to: str) -> None:
        """Allow the task at ``from_`` to jump to ``to`` with ``flow.goto(to)``; never taken otherwise."""
        self._add(Transition(_require_name(from_, "from_"), _require_name(to, "to"), with_goto=True))

    def add_transition_for_each(self, from_: str, to: str, for_each: str, as_: str) -> None:
        """Run one branch of ``to`` per element of the state array ``for_each``, the element under ``as_``.

        Each branch also sees ``<as_>Index`` and ``<as_>Count``. Both field names must be non-empty.
        """
        self._add(
            Transition(
                _require_name(from_, "from_"),
                _require_name(to, "to"),
                for_each=_require_name(for_each, "for_each field"),
                as_=_require_name(as_, "as_ field"),
            )
        )

    def add_transition_on_error(self, from_: str, to: str) -> None:
        """When the task at ``from_`` raises, continue at ``to`` with the error in state field ``onErr``."""
        self._add(Transition(_require_name(from_, "from_"), _require_name(to, "to"), on_error=True))

    def add_transition_chain(self, *names: str) -> None:
        """Wire plain transitions between consecutive names: ``chain(a, b, c)`` is a -> b, b -> c.

        Fewer than two names adds nothing. END belongs last.
        """
        checked = [_require_name(name, "chain name") for name in names]
        for source, target in itertools.pairwise(checked):
            self._add(Transition(source, target))

    def add_transition_fan_out(self, from_: str, *to: str) -> None:
        """Wire a plain transition from ``from_`` to each of ``to``; they run in parallel.

        The branches still need a ``set_fan_in`` node where they converge. No targets adds nothing.
        """
        source = _require_name(from_, "from_")
        targets = [_require_name(name, "to") for name in to]
        for target in targets:
            self._add(Transition(source, target))

    def set_fan_in(self, name: str) -> None:
        """Mark ``name`` as the node where the branches of a fan-out converge and are merged."""
        _require_name(name, "fan-in node name")
        self._touch()
        self._fan_in.add(name)

    def set_reducer(self, field: str, reducer: Reducer | str) -> None:
        """Merge state field ``field`` with ``reducer`` at fan-in (default ``replace``)."""
        _require_name(field, "reducer field")
        parsed = parse_reducer(reducer)
        self._touch()
        self._reducers[field] = parsed

    # ----------------------------------------------------------------- routing queries

    def has_node(self, name: str) -> bool:
        """True if ``name`` is a declared task node (END is not)."""
        return name in self._nodes

    def node(self, name: str) -> Node:
        """The task node ``name``; InvalidGraphError if it is not declared."""
        url = self._nodes.get(name)
        if url is None:
            raise InvalidGraphError(f"graph {self._name!r} has no task node {name!r}")
        return Node(name, url, name in self._fan_in)

    def outgoing(self, name: str) -> list[Transition]:
        """Every transition leaving ``name``, of any kind, in registration order."""
        return [t for t in self._transitions if t.from_ == name]

    def on_error_target(self, name: str) -> str | None:
        """Where an exception raised by the task at ``name`` routes, or None to fail the flow."""
        for t in self._transitions:
            if t.from_ == name and t.on_error:
                return t.to
        return None

    def is_fan_in(self, name: str) -> bool:
        """True if ``name`` was marked with ``set_fan_in``."""
        return name in self._fan_in

    def is_fan_out_source(self, name: str) -> bool:
        """True if a completed ``name`` starts a cohort: 2+ plain/when transitions or any forEach."""
        plain_or_when = 0
        for t in self._transitions:
            if t.from_ != name or not t.fans_out:
                continue
            if t.for_each:
                return True
            plain_or_when += 1
        return plain_or_when >= 2

    def fan_in_for(self, name: str) -> str | None:
        """The fan-in node where the cohort started by fan-out source ``name`` converges, else None.

        Validates the graph first if it changed since the last ``validate`` (InvalidGraphError if invalid).
        """
        return self._checked_fan_ins().get(name)

    # ----------------------------------------------------------------- validation

    def validate(self) -> None:
        """Raise InvalidGraphError if the graph breaks a rule listed in this module's docstring."""
        self._checked_fan_ins()

    def _checked_fan_ins(self) -> dict[str, str]:
        # Every mutator clears the cache, so a graph the host hands over again and again is checked once.
        if self._fan_in_by_source is None:
            self._check_declarations()
            for t in self._transitions:
                self._check_transition(t)
            self._check_sources()
            self._check_reachability()
            if not any(t.to == END for t in self._transitions):
                raise self._error(f"no transition leads to {END}, so no path can complete the flow")
            self._fan_in_by_source = self._trace_lineage()
        return self._fan_in_by_source

    def _error(self, message: str) -> InvalidGraphError:
        return InvalidGraphError(f"graph {self._name!r}: {message}")

    def _check_declarations(self) -> None:
        if not self._name:
            raise InvalidGraphError("graph name is empty")
        if not self._nodes:
            raise self._error("has no tasks")
        entry = self._entry_point
        if not entry:
            raise self._error("has no entry point")
        if entry == END:
            raise self._error(f"the entry point cannot be {END}")
        if entry not in self._nodes:
            raise self._error(f"entry point {entry!r} is not a task")
        for name in sorted(self._fan_in):
            if name == END:
                raise self._error(f"set_fan_in cannot mark {END}")
            if name not in self._nodes:
                raise self._error(f"set_fan_in names unknown node {name!r}")
        for field, reducer in self._reducers.items():
            try:
                parse_reducer(reducer)
            except InvalidGraphError as exc:
                raise self._error(f"state field {field!r}: {exc}") from None

    def _check_transition(self, t: Transition) -> None:
        edge = f"transition from {t.from_!r} to {t.to!r}"
        if t.from_ == END:
            raise self._error(f"{edge} leaves {END}; {END} is terminal and has no outgoing transitions")
        if t.from_ not in self._nodes:
            raise self._error(f"{edge} starts at unknown node {t.from_!r}")
        if t.to != END and t.to not in self._nodes:
            raise self._error(f"{edge} leads to unknown node {t.to!r}")
        if t.as_ and not t.for_each:
            raise self._error(f"{edge} has as_ {t.as_!r} but an empty for_each field")
        if t.for_each and not t.as_:
            raise self._error(f"forEach {edge} over {t.for_each!r} has an empty as_ field")
        if t.for_each and t.with_goto:
            raise self._error(f"{edge} cannot be both forEach and goto")
        if t.on_error and (t.for_each or t.with_goto or t.switch or t.when):
            raise self._error(f"onError {edge} cannot also carry forEach, goto, switch or a when expression")
        if t.switch and (t.for_each or t.with_goto):
            raise self._error(f"switch {edge} cannot also be forEach or goto")
        if t.switch and not t.when:
            raise self._error(f"switch {edge} has no when expression (use 'true' for the default branch)")
        if t.on_error and t.from_ == t.to:
            raise self._error(
                f"onError {edge} leads back to itself and would loop without bound; "
                "use flow.retry in the task for bounded retries"
            )
        if t.when:
            try:
                parse_expression(t.when)
            except InvalidGraphError as exc:
                raise self._error(f"{edge} has an invalid when expression {t.when!r}: {exc}") from None

    def _check_sources(self) -> None:
        on_error_seen: set[str] = set()
        switch_sources = {t.from_ for t in self._transitions if t.switch}
        on_error_sources = {t.from_ for t in self._transitions if t.on_error}
        for t in self._transitions:
            if t.on_error:
                if t.from_ in on_error_seen:
                    raise self._error(f"node {t.from_!r} has more than one onError transition")
                on_error_seen.add(t.from_)
                continue
            if t.from_ in switch_sources and not t.switch:
                raise self._error(
                    f"node {t.from_!r} mixes switch transitions with a {t.kind} transition to {t.to!r}; "
                    "make every success transition of a switch node a switch (when 'true' for the default)"
                )
            if t.from_ in on_error_sources and (t.for_each or t.with_goto):
                raise self._error(
                    f"node {t.from_!r} combines an onError transition with a {t.kind} transition to {t.to!r}"
                )

    def _check_reachability(self) -> None:
        successors = self._successor_index()
        reached = {self._entry_point}
        queue = deque([self._entry_point])
        while queue:
            for target in successors.get(queue.popleft(), ()):
                if target != END and target not in reached:
                    reached.add(target)
                    queue.append(target)
        for name in self._nodes:
            if name not in reached:
                raise self._error(f"node {name!r} is not reachable from entry point {self._entry_point!r}")

    def _trace_lineage(self) -> dict[str, str]:
        """Check fan-out/fan-in pairing and return each fan-out source's fan-in node.

        A breadth-first walk from the entry point gives every node a lineage: the stack of fan-out sources
        whose cohorts it runs inside. A fan-out branch pushes its source; an edge into a fan-in node pops
        it (any kind of edge: the engine counts every arrival at a fan-in as a cohort arrival, so even a
        goto into a fan-in from outside a cohort must be refused, or it would count into no cohort). Goto,
        onError and switch edges push nothing: the engine spawns no cohort for them. A node must have one
        lineage however it is reached, since its step belongs to exactly one cohort; the same task at two
        positions takes two node names with one URL.
        """
        fan_out_sources = self._fan_out_sources()
        by_source: dict[str, list[Transition]] = {}
        for t in self._transitions:
            by_source.setdefault(t.from_, []).append(t)
        lineage: dict[str, tuple[str, ...]] = {self._entry_point: ()}
        queue = deque([self._entry_point])
        fan_in_by_source: dict[str, str] = {}
        while queue:
            source = queue.popleft()
            here = lineage[source]
            for t in by_source.get(source, ()):
                if t.to in self._fan_in:
                    if source in fan_out_sources:
                        owner, after = source, here
                    elif here:
                        owner, after = here[-1], here[:-1]
                    else:
                        raise self._error(
                            f"fan-in node {t.to!r} is entered from {source!r}, which runs outside any "
                            f"fan-out: no fan-out's branches converge at {t.to!r} on this path"
                        )
                    prior = fan_in_by_source.setdefault(owner, t.to)
                    if prior != t.to:
                        raise self._error(
                            f"branches of fan-out {owner!r} converge on different fan-in nodes "
                            f"{prior!r} and {t.to!r}; all siblings of a fan-out must meet at one fan-in"
                        )
                elif not t.fans_out:
                    after = here
                elif source in fan_out_sources:
                    after = (*here, source)
                else:
                    after = here
                if t.to == END:
                    if after:
                        raise self._unjoined_branch(
                            after[-1],
                            lineage,
                            f"a branch reaches {END} from {source!r} without passing a fan-in node",
                        )
                    continue
                seen = lineage.get(t.to)
                if seen is None:
                    lineage[t.to] = after
                    queue.append(t.to)
                elif seen != after:
                    raise self._error(
                        f"node {t.to!r} is reached inside {_describe(seen)} and inside {_describe(after)}; "
                        "a node belongs to one cohort, so give each position its own node name "
                        "(the same URL may serve both)"
                    )
        for name in self._nodes:
            if name in fan_out_sources and name not in fan_in_by_source:
                raise self._unjoined_branch(name, lineage, "its branches never reach a fan-in node")
        joined = set(fan_in_by_source.values())
        for name in sorted(self._fan_in - joined):
            # Only an entry point nothing leads back to gets here: every other node is entered by some
            # edge, and every edge into a fan-in node either pops a frame above or was refused.
            raise self._error(f"fan-in node {name!r} is not where the branches of any fan-out converge")
        return fan_in_by_source

    def _unjoined_branch(
        self, fan_out: str, lineage: Mapping[str, tuple[str, ...]], detail: str
    ) -> InvalidGraphError:
        """The error for branches of ``fan_out`` that miss their fan-in, naming an unmarked meeting point."""
        inside = [name for name, stack in lineage.items() if stack and stack[-1] == fan_out]
        for name in inside:
            feeders = {
                t.from_ for t in self._transitions if t.to == name and t.fans_out and t.from_ in lineage
            }
            if len(feeders) >= 2:
                return self._error(
                    f"branches of fan-out {fan_out!r} converge at {name!r}, which is not marked with "
                    f"set_fan_in ({detail})"
                )
        return self._error(
            f"fan-out {fan_out!r}: {detail}; mark the node where its branches converge with set_fan_in"
        )

    # ----------------------------------------------------------------- JSON

    def to_json(self) -> str:
        """The graph as canonical JSON: sorted keys, nodes and transitions in registration order.

        Equal graphs give equal text, so the engine can freeze it onto a flow and compare it later.
        """
        document: dict[str, Any] = {
            "formatVersion": GRAPH_FORMAT_VERSION,
            "name": self._name,
            "entryPoint": self._entry_point,
            "nodes": [{"name": name, "url": url} for name, url in self._nodes.items()],
            "transitions": [_transition_to_json(t) for t in self._transitions],
            "fanIn": sorted(self._fan_in),
            "reducers": {field: str(reducer) for field, reducer in self._reducers.items()},
        }
        if self._strict:
            # Written only when set, so that the frozen text of every graph without it stays as it was.
            document["strict"] = True
        # ASCII output: a lone surrogate in a name must not make the frozen text unencodable.
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, data: str | bytes) -> Graph:
        """Rebuild a graph written by ``to_json``; InvalidGraphError on anything malformed.

        The result is not validated (call ``validate``), but every field is type-checked and reducers
        must be known.
        """
        if isinstance(data, bytes | bytearray):
            try:
                data = bytes(data).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidGraphError(f"graph JSON is not UTF-8: {exc}") from None
        if not isinstance(data, str):
            raise InvalidGraphError(f"graph JSON must be str or bytes, not {type(data).__name__}")
        try:
            document = json.loads(data)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InvalidGraphError(f"graph JSON does not parse: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidGraphError("graph JSON must be an object")
        _check_keys(document, _GRAPH_REQUIRED_KEYS, _GRAPH_OPTIONAL_KEYS, "graph JSON")
        version = document["formatVersion"]
        if type(version) is not int or version != GRAPH_FORMAT_VERSION:
            raise InvalidGraphError(
                f"graph JSON formatVersion {version!r} is not supported (expected {GRAPH_FORMAT_VERSION})"
            )
        strict = document.get("strict", False)
        if type(strict) is not bool:
            raise InvalidGraphError("graph JSON strict must be a boolean")
        graph = cls(_require_str(document["name"], "graph JSON name"), strict=strict)
        graph._entry_point = _require_str(document["entryPoint"], "graph JSON entryPoint")
        for index, item in enumerate(_require_list(document["nodes"], "graph JSON nodes")):
            where = f"graph JSON nodes[{index}]"
            if not isinstance(item, dict):
                raise InvalidGraphError(f"{where} must be an object")
            _check_keys(item, frozenset({"name", "url"}), frozenset(), where)
            name = _require_name(item["name"], f"{where}.name")
            if name == END:
                raise InvalidGraphError(f"{where} declares {END}, which is not a task")
            if name in graph._nodes:
                raise InvalidGraphError(f"{where} declares node {name!r} a second time")
            graph._nodes[name] = _require_name(item["url"], f"{where}.url")
        for index, item in enumerate(_require_list(document["transitions"], "graph JSON transitions")):
            graph._transitions.append(_transition_from_json(item, f"graph JSON transitions[{index}]"))
        for index, item in enumerate(_require_list(document.get("fanIn", []), "graph JSON fanIn")):
            graph._fan_in.add(_require_name(item, f"graph JSON fanIn[{index}]"))
        reducers = document.get("reducers", {})
        if not isinstance(reducers, dict):
            raise InvalidGraphError("graph JSON reducers must be an object")
        for field, value in reducers.items():
            _require_name(field, "graph JSON reducer field")
            if not isinstance(value, str):
                raise InvalidGraphError(f"graph JSON reducer of {field!r} must be a string")
            try:
                graph._reducers[field] = parse_reducer(value)
            except InvalidGraphError as exc:
                raise InvalidGraphError(f"graph JSON reducer of {field!r}: {exc}") from None
        return graph

    # ----------------------------------------------------------------- rendering and dunders

    def mermaid(self) -> str:
        """The graph as a Mermaid ``flowchart`` (see ``dwarf.workflow.mermaid.graph_mermaid``)."""
        from dwarf.workflow.mermaid import graph_mermaid  # mermaid imports this module

        return graph_mermaid(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __repr__(self) -> str:
        strict = ", strict=True" if self._strict else ""
        return (
            f"Graph(name={self._name!r}, nodes={len(self._nodes)}, transitions={len(self._transitions)}, "
            f"entry_point={self._entry_point!r}{strict})"
        )

    # ----------------------------------------------------------------- internals

    def _add(self, transition: Transition) -> None:
        self._touch()
        self._transitions.append(transition)

    def _touch(self) -> None:
        self._fan_in_by_source = None

    def _fan_out_sources(self) -> set[str]:
        """Every fan-out source at once (``is_fan_out_source`` per node would rescan all transitions)."""
        plain_or_when: dict[str, int] = {}
        sources: set[str] = set()
        for t in self._transitions:
            if not t.fans_out:
                continue
            plain_or_when[t.from_] = plain_or_when.get(t.from_, 0) + 1
            if t.for_each or plain_or_when[t.from_] >= 2:
                sources.add(t.from_)
        return sources

    def _successor_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for t in self._transitions:
            index.setdefault(t.from_, []).append(t.to)
        return index


def _describe(stack: tuple[str, ...]) -> str:
    if not stack:
        return "no fan-out (the trunk)"
    return "the cohort of fan-out " + " > ".join(repr(source) for source in stack)


def _transition_to_json(t: Transition) -> dict[str, Any]:
    item: dict[str, Any] = {"from": t.from_, "to": t.to}
    for key, attribute, _ in _TRANSITION_FIELDS:
        value = getattr(t, attribute)
        if value:
            item[key] = value
    return item


def _transition_from_json(item: object, where: str) -> Transition:
    if not isinstance(item, dict):
        raise InvalidGraphError(f"{where} must be an object")
    _check_keys(item, frozenset({"from", "to"}), frozenset(key for key, _, _ in _TRANSITION_FIELDS), where)
    fields: dict[str, Any] = {}
    for key, attribute, kind in _TRANSITION_FIELDS:
        if key in item:
            value = item[key]
            if type(value) is not kind:
                raise InvalidGraphError(f"{where}.{key} must be a {'boolean' if kind is bool else 'string'}")
            fields[attribute] = value
    return Transition(
        _require_name(item["from"], f"{where}.from"), _require_name(item["to"], f"{where}.to"), **fields
    )


def _require_list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidGraphError(f"{what} must be an array")
    return value


def _check_keys(
    item: Mapping[str, Any], required: frozenset[str], optional: frozenset[str], where: str
) -> None:
    missing = sorted(required - item.keys())
    if missing:
        raise InvalidGraphError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(item.keys() - required - optional)
    if unknown:
        raise InvalidGraphError(f"{where} has unknown keys {', '.join(unknown)}")
