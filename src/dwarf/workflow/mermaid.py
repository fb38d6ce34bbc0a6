"""Mermaid flowcharts of a graph definition and of a flow's executed steps.

Every piece of text that comes from users (node and task names, expressions, field names, workflow names)
goes through ``escape_label`` and is emitted only inside a double-quoted label, so no name or value can
end the label, start a new statement, inject HTML into the rendered page, or open a Markdown string.
Node ids are generated (``n<k>`` for graph nodes, ``s<step_id>`` for steps), never derived from text.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from dwarf.workflow.graph import END
from dwarf.workflow.status import TERMINAL_STATUSES, Status
from dwarf.workflow.stepgroups import StepGroup, group_fan_outs

if TYPE_CHECKING:
    from dwarf.workflow.graph import Graph, Transition
    from dwarf.workflow.records import FlowStep

__all__ = ["escape_label", "graph_mermaid", "group_node_id", "history_mermaid"]

# Characters that are inert inside a quoted Mermaid label; everything else ASCII becomes an entity.
# "#" and ";" are escaped too, so text that merely looks like an entity ("#quot;") stays literal.
_SAFE_ASCII: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:/_-+*=!?@$^~"
)
# Mermaid draws a label holding "$$...$$" as a formula with KaTeX, which the dashboard does not ship (it
# would be a quarter of the vendored Mermaid), and it looks for "$$" after decoding entities, so escaping
# "$" does not help: an invisible zero-width space goes between two "$" instead.
_DOLLAR_BREAK: Final = "#8203;"
_NAMED: Final = {'"': "#quot;", "&": "#amp;", "<": "#lt;", ">": "#gt;"}
_LINE_BREAK: Final = "<br/>"  # our own line separator between escaped parts; never built from user text
_INDENT: Final = "    "
_MAX_INDENT_LEVELS: Final = 8  # deeper subgraphs share one indentation; the output stays linear in size


def escape_label(text: str) -> str:
    """``text`` made safe for the inside of a double-quoted Mermaid label (``["..."]``).

    Letters, digits, space and a few inert punctuation marks pass through; every other ASCII character,
    line break, control or invisible character becomes a Mermaid entity (``#quot;``, ``#lt;``, ``#91;``),
    which Mermaid renders as the original character. The empty string becomes one space, because an
    empty label renders badly. A zero-width space separates two "$" in a row, so that no label reads as a
    Mermaid formula.
    """
    if not text:
        return " "
    out: list[str] = []
    previous = ""
    for char in text:
        if char == "$" and previous == "$":
            out.append(_DOLLAR_BREAK)
        previous = char
        if char in _SAFE_ASCII or (char > "\x7f" and char.isprintable()):
            out.append(char)
        else:
            out.append(_NAMED.get(char) or f"#{ord(char)};")
    return "".join(out)


def _quoted(*parts: str) -> str:
    return '"' + _LINE_BREAK.join(escape_label(part) for part in parts) + '"'


# ----------------------------------------------------------------------------------- graph definition

_GRAPH_CLASSES: Final = (
    "classDef task fill:#e5f4f3,stroke:#32a7c1,color:#1f2d3d",
    "classDef fanIn fill:#fff3cd,stroke:#b8860b,color:#1f2d3d,stroke-width:3px",
    "classDef undeclared fill:#ffffff,stroke:#d9534f,color:#d9534f,stroke-dasharray:4 3",
    "classDef terminal fill:#f4f2ef,stroke:#434343,color:#434343",
)
_ON_ERROR_LINK_STYLE: Final = "stroke:#d9534f,color:#d9534f,stroke-width:2px"
_START_ID: Final = "dwarf_start"
_END_ID: Final = "dwarf_end"


def graph_mermaid(graph: Graph) -> str:
    """``graph`` as a ``flowchart TD``: one box per task, END, and one arrow per transition.

    Plain arrows are unlabelled; ``when`` arrows carry their expression, switch arrows ``case <k>: <expr>``
    in evaluation order, forEach arrows ``for each <as_> in <field>``; goto arrows are dotted and labelled
    ``goto``; onError arrows are dotted, labelled ``on error`` and drawn in red. Fan-in nodes have a
    double-bordered shape and their own colour. Names a transition uses without declaring them are drawn
    with a dashed red border, so an invalid graph still renders.
    """
    lines = ["flowchart TD", *(_INDENT + line for line in _GRAPH_CLASSES)]
    ids: dict[str, str] = {}
    declared = {node.name: node for node in graph.nodes}

    def node_id(name: str) -> str:
        known = ids.get(name)
        if known is None:
            known = ids[name] = f"n{len(ids)}"
            if name == END:
                lines.append(f"{_INDENT}{_END_ID}(({_quoted(END)})):::terminal")
            elif name not in declared:
                lines.append(f"{_INDENT}{known}[{_quoted(name)}]:::undeclared")
            elif declared[name].fan_in:
                lines.append(f"{_INDENT}{known}[[{_quoted(name)}]]:::fanIn")
            else:
                lines.append(f"{_INDENT}{known}[{_quoted(name)}]:::task")
        return _END_ID if name == END else known

    for node in graph.nodes:
        node_id(node.name)
    transitions = graph.transitions
    for t in transitions:
        node_id(t.from_)
        node_id(t.to)

    edges: list[str] = []
    on_error_links: list[int] = []
    if graph.entry_point:
        lines.append(f"{_INDENT}{_START_ID}(({_quoted('start')})):::terminal")
        edges.append(f"{_START_ID} --> {node_id(graph.entry_point)}")
    switch_rank: dict[str, int] = {}
    for t in transitions:
        arrow, label = _graph_edge(t, switch_rank)
        if t.on_error:
            on_error_links.append(len(edges))
        labelled = f"|{_quoted(label)}| " if label else " "
        edges.append(f"{node_id(t.from_)} {arrow}{labelled}{node_id(t.to)}")
    lines.extend(_INDENT + edge for edge in edges)
    if on_error_links:
        lines.append(f"{_INDENT}linkStyle {','.join(map(str, on_error_links))} {_ON_ERROR_LINK_STYLE}")
    return "\n".join(lines) + "\n"


def _graph_edge(t: Transition, switch_rank: dict[str, int]) -> tuple[str, str]:
    """The arrow and the (unescaped) label of transition ``t``."""
    kind = t.kind
    if kind == "on_error":
        return "-.->", "on error"
    if kind == "goto":
        return "-.->", "goto"
    if kind == "switch":
        switch_rank[t.from_] = switch_rank.get(t.from_, 0) + 1
        return "-->", f"case {switch_rank[t.from_]}: {t.when}"
    if kind == "for_each":
        return "-->", f"for each {t.as_} in {t.for_each}"
    return "-->", t.when


# ----------------------------------------------------------------------------------- executed history

_STEP_CLASSES: Final = (
    "classDef completed fill:#32a7c1,stroke:#32a7c1,color:#f4f2ef",
    "classDef running fill:#e5f4f3,stroke:#32a7c1,color:#1f2d3d,stroke-width:3px,stroke-dasharray:6 3",
    "classDef pending fill:#f4f2ef,stroke:#434343,color:#434343,stroke-dasharray:2 2",
    "classDef parked fill:#ede7f6,stroke:#6a4c93,color:#1f2d3d,stroke-dasharray:8 3",
    "classDef interrupted fill:#ed2e92,stroke:#ed2e92,color:#f4f2ef",
    "classDef failed fill:#f15922,stroke:#b33c12,color:#f4f2ef,stroke-width:3px",
    "classDef cancelled fill:#9e9e9e,stroke:#616161,color:#f4f2ef",
)
_STEP_CLASS: Final = {
    Status.COMPLETED: "completed",
    Status.RUNNING: "running",
    Status.PENDING: "pending",
    Status.CREATED: "pending",
    Status.INTERRUPTED: "interrupted",
    Status.FAILED: "failed",
    Status.CANCELLED: "cancelled",
}


@dataclass
class _Level:
    """One flow's steps being rendered: the top-level flow, or a child flow inside a subgraph block."""

    steps: Sequence[FlowStep]
    node_ids: list[str]  # parallel to steps
    ids: dict[int, str]  # step_id -> node id, for resolving predecessor/successor ids in this flow
    depth: int
    caller_id: str  # the step that ran this child flow; "" at the top
    groups: dict[int, StepGroup]  # step_id -> the fan-out group drawn in its place
    pending: Iterator[tuple[FlowStep, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.pending = zip(self.steps, self.node_ids, strict=True)


def group_node_id(group: StepGroup) -> str:
    """The node id ``history_mermaid`` gives a collapsed fan-out group (``g<first member's step id>``)."""
    return f"g{group.group_id}" if group.group_id >= 0 else f"gn{-group.group_id}"


def history_mermaid(
    steps: Sequence[FlowStep], *, collapse_over: int = 0, expanded: Collection[int] = ()
) -> str:
    """The executed DAG of a flow as a ``flowchart TD``.

    One node per step (id ``s<step_id>``, made unique with a suffix should an id repeat) labelled with
    its task name, ``attempt <n>`` when it is a retry, and its status; a solid arrow from each step's
    predecessor and to its successor (so a fan-out is one step with many successors and a fan-in a step
    that several branches name as successor). A step that ran a child flow is followed by a ``subgraph``
    block holding the child's steps, with dotted arrows from the caller to the child's first steps.
    Nesting depth is handled with an explicit stack, never Python recursion.

    With ``collapse_over`` > 0, the siblings of a fan-out that ran the same task, when there are at least
    that many (``dwarf.workflow.stepgroups``), are drawn as one node (id from ``group_node_id``, a box
    with double side borders) labelled ``Work ×200`` and ``198 completed, 2 failed``, in the colour of
    its most urgent status; the child flows of its members are not drawn. Groups whose id (the first
    member's step id) is in ``expanded`` are drawn step by step.
    """
    lines = ["flowchart TD", *(_INDENT + line for line in _STEP_CLASSES)]
    edges: list[str] = []
    seen_edges: set[tuple[str, str, str]] = set()
    used_ids: set[str] = set()
    drawn_groups: set[str] = set()
    block_count = 0

    def add_edge(source: str, target: str, arrow: str) -> None:
        if source != target and (source, target, arrow) not in seen_edges:
            seen_edges.add((source, target, arrow))
            edges.append(f"{_INDENT}{source} {arrow} {target}")

    def unique_id(base: str) -> str:
        unique, suffix = base, 1
        while unique in used_ids:
            suffix += 1
            unique = f"{base}_{suffix}"
        used_ids.add(unique)
        return unique

    def open_level(level_steps: Sequence[FlowStep], depth: int, caller_id: str) -> _Level:
        groups = group_fan_outs(level_steps, collapse_over, expanded) if collapse_over > 0 else {}
        group_ids: dict[int, str] = {}
        ids: dict[int, str] = {}
        node_ids: list[str] = []
        for step in level_steps:
            group = groups.get(step.step_id)
            if group is not None:
                known = group_ids.get(group.group_id)
                if known is None:
                    known = group_ids[group.group_id] = unique_id(group_node_id(group))
                own = known
            else:
                own = unique_id(f"s{step.step_id}" if step.step_id >= 0 else f"sn{-step.step_id}")
            ids.setdefault(step.step_id, own)
            node_ids.append(own)
        return _Level(level_steps, node_ids, ids, depth, caller_id, groups)

    def close_level(level: _Level) -> None:
        has_incoming: set[str] = set()
        for step, own in zip(level.steps, level.node_ids, strict=True):
            # 0 means "no such neighbour", even in a level that happens to hold a step with id 0.
            predecessor = level.ids.get(step.predecessor_id) if step.predecessor_id else None
            successor = level.ids.get(step.successor_id) if step.successor_id else None
            for source, target in ((predecessor, own), (own, successor)):
                if source is not None and target is not None and source != target:
                    add_edge(source, target, "-->")
                    has_incoming.add(target)
        if level.caller_id:
            for own in level.node_ids:
                if own not in has_incoming:
                    add_edge(level.caller_id, own, "-.->")

    stack = [open_level(steps, 0, "")]
    while stack:
        level = stack[-1]
        entry = next(level.pending, None)
        if entry is None:
            close_level(level)
            stack.pop()
            if stack:
                lines.append(_indent(level.depth - 1) + "end")
            continue
        step, own = entry
        group = level.groups.get(step.step_id)
        if group is not None:
            if own not in drawn_groups:
                drawn_groups.add(own)
                label = _quoted(group.title, group.counts_text())
                lines.append(f"{_indent(level.depth)}{own}[[{label}]]:::{_group_class(group)}")
            continue
        lines.append(f"{_indent(level.depth)}{own}[{_quoted(*_step_label(step))}]:::{_step_class(step)}")
        if step.sub_history:
            block_count += 1
            title = step.sub_workflow_name or step.sub_workflow_url or "subgraph"
            lines.append(f"{_indent(level.depth)}subgraph sg{block_count} [{_quoted(title)}]")
            stack.append(open_level(step.sub_history, level.depth + 1, own))
    return "\n".join(lines + edges) + "\n"


def _group_class(group: StepGroup) -> str:
    # A group whose members still wait to run is under way as a whole: drawn as running.
    status = Status.RUNNING if group.status == Status.PENDING else group.status
    return _STEP_CLASS.get(status, "pending")


def _indent(depth: int) -> str:
    return _INDENT * (1 + min(depth, _MAX_INDENT_LEVELS))


def _step_label(step: FlowStep) -> list[str]:
    parts = [step.task_name]
    if step.attempt > 0:
        parts.append(f"attempt {step.attempt}")
    status = str(step.status)
    parts.append(f"{status}, parked" if _is_parked(step) else status)
    if step.waited_signal:
        parts.append(f"signal {step.waited_signal}")
    return parts


def _is_parked(step: FlowStep) -> bool:
    return step.parked and step.status not in TERMINAL_STATUSES


def _step_class(step: FlowStep) -> str:
    if _is_parked(step):
        return "parked"
    try:
        return _STEP_CLASS[Status(step.status)]
    except ValueError:
        return "pending"
