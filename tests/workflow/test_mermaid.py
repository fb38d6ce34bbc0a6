"""Mermaid rendering: graph and history diagram structure, and label escaping that no text can break."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dwarf.workflow.graph import END, Graph
from dwarf.workflow.mermaid import escape_label, graph_mermaid, history_mermaid
from dwarf.workflow.records import FlowStep
from dwarf.workflow.status import Status

# What may appear between the quotes of a label: inert ASCII, printable non-ASCII, entities, and the
# renderer's own <br/> separator. Nothing else, in particular no raw quote, bracket, pipe or line break.
_SAFE_CONTENT = r'(?:[A-Za-z0-9 .,:/_\-+*=!?@$^~]|[^\x00-\x7f"]|#(?:quot|amp|lt|gt|\d+);|<br/>)*'
_LABEL = rf'"(?P<label>{_SAFE_CONTENT})"'
_ID = r"[A-Za-z][A-Za-z0-9_]*"
_NODE = re.compile(
    rf"^\s+(?P<id>{_ID})(?P<open>\[\[|\[|\(\(){_LABEL}(?P<close>\]\]|\]|\)\)):::(?P<cls>[A-Za-z]+)$"
)
_EDGE = re.compile(rf"^\s+(?P<src>{_ID}) (?P<arrow>-->|-\.->)(?:\|{_LABEL}\|)? (?P<dst>{_ID})$")
_SUBGRAPH = re.compile(rf"^\s+subgraph (?P<id>sg\d+) \[{_LABEL}\]$")
_STYLE = re.compile(r"^\s+(?:classDef [A-Za-z]+|linkStyle [\d,]+) [-#:,a-z0-9 ]+$")
_SHAPES = {"[": "]", "[[": "]]", "((": "))"}
_ENTITY = re.compile(r"#(quot|amp|lt|gt|\d+);")
_NAMED = {"quot": '"', "amp": "&", "lt": "<", "gt": ">"}


def decode(label: str) -> str:
    return _ENTITY.sub(lambda m: _NAMED.get(m.group(1)) or chr(int(m.group(1))), label)


@dataclass
class Diagram:
    nodes: dict[str, tuple[str, list[str], str]] = field(default_factory=dict)  # id -> shape, parts, class
    edges: list[tuple[str, str, str, str]] = field(default_factory=list)  # src, arrow, label, dst
    subgraphs: list[tuple[str, str, list[str]]] = field(default_factory=list)  # id, title, member ids
    link_styles: list[str] = field(default_factory=list)


def parse(text: str) -> Diagram:
    """Parse the subset of Mermaid the renderers emit; fail on any line outside it."""
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    assert lines[0] == "flowchart TD"
    diagram = Diagram()
    open_blocks: list[tuple[str, str, list[str]]] = []
    for line in lines[1:]:
        if match := _NODE.match(line):
            assert _SHAPES[match["open"]] == match["close"], line
            assert match["id"] not in diagram.nodes, f"duplicate node id in {line!r}"
            parts = [decode(part) for part in match["label"].split("<br/>")]
            diagram.nodes[match["id"]] = (match["open"], parts, match["cls"])
            for block in open_blocks:
                block[2].append(match["id"])
        elif match := _EDGE.match(line):
            label = decode(match["label"]) if match["label"] is not None else ""
            diagram.edges.append((match["src"], match["arrow"], label, match["dst"]))
        elif match := _SUBGRAPH.match(line):
            open_blocks.append((match["id"], decode(match["label"]), []))
        elif line.strip() == "end":
            diagram.subgraphs.append(open_blocks.pop())
        elif _STYLE.match(line):
            if line.strip().startswith("linkStyle"):
                diagram.link_styles.append(line.strip())
        else:
            raise AssertionError(f"unparsable diagram line {line!r}")
    assert not open_blocks, "unclosed subgraph"
    for src, _, _, dst in diagram.edges:
        assert src in diagram.nodes and dst in diagram.nodes, (src, dst)
    return diagram


def by_label(diagram: Diagram) -> dict[str, str]:
    return {parts[0]: node_id for node_id, (_, parts, _) in diagram.nodes.items()}


# ------------------------------------------------------------------------------------------- escaping


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("Reserve", "Reserve"),
        ('say "hi"', "say #quot;hi#quot;"),
        ("a[0] (b) {c}", "a#91;0#93; #40;b#41; #123;c#125;"),
        ("x|y", "x#124;y"),
        ("line\nbreak\r", "line#10;break#13;"),
        ("<script>alert(1)</script>", "#lt;script#gt;alert#40;1#41;#lt;/script#gt;"),
        ("`code`", "#96;code#96;"),
        ("a;b", "a#59;b"),
        ("end", "end"),
        ("#quot;", "#35;quot#59;"),
        ("R&D's", "R#amp;D#39;s"),
        ("%%{init: {}}%%", "#37;#37;#123;init: #123;#125;#125;#37;#37;"),
        ("a\\b\tc", "a#92;b#9;c"),
        ("Größe 東京", "Größe 東京"),
        ("\u2028\u200b\x7f", "#8232;#8203;#127;"),
        ("$$x^2$$", "$#8203;$x^2$#8203;$"),
        ("a$b$$$", "a$b$#8203;$#8203;$"),
        ("", " "),
    ],
)
def test_escape_label(text: str, escaped: str) -> None:
    assert escape_label(text) == escaped


@given(st.text())
def test_escaped_label_is_inert_and_decodes_back(text: str) -> None:
    escaped = escape_label(text)
    assert re.fullmatch(_SAFE_CONTENT, escaped)
    assert "<br/>" not in escaped
    assert all(char.isprintable() for char in escaped)
    # The only addition: a zero-width space between two "$" (no label reads as a formula).
    unbroken = re.compile("(?<=\\$)\u200b(?=\\$)")
    assert unbroken.sub("", decode(escaped)) == unbroken.sub("", text or " ")
    assert "$$" not in decode(escaped)


# ------------------------------------------------------------------------------------- graph diagrams


def sample_graph() -> Graph:
    g = Graph("Sample")
    for name in ("Start", "Router", "Split", "Work", "Join", "Alt", "Fix"):
        g.add_task(name, f"svc/{name.lower()}")
    g.add_transition("Start", "Router")
    g.add_transition_switch("Router", "Split", "kind == 'bulk'")
    g.add_transition_switch("Router", "Alt", "true")
    g.add_transition_on_error("Router", "Fix")
    g.add_transition_for_each("Split", "Work", "items", "item")
    g.add_transition_when("Work", "Join", "ok && n > 1")
    g.add_transition_goto("Alt", "Start")
    g.add_transition("Alt", END)
    g.add_transition("Join", END)
    g.add_transition("Fix", END)
    g.set_fan_in("Join")
    return g


def test_graph_diagram_has_one_node_per_task_plus_start_and_end() -> None:
    diagram = parse(graph_mermaid(sample_graph()))
    labels = {parts[0] for _, parts, _ in diagram.nodes.values()}
    assert labels == {"Start", "Router", "Split", "Work", "Join", "Alt", "Fix", "start", END}


def test_graph_diagram_marks_fan_in_and_terminals() -> None:
    diagram = parse(graph_mermaid(sample_graph()))
    ids = by_label(diagram)
    assert diagram.nodes[ids["Join"]][0::2] == ("[[", "fanIn")
    assert diagram.nodes[ids["Work"]][0::2] == ("[", "task")
    assert diagram.nodes[ids[END]][0::2] == ("((", "terminal")
    assert diagram.nodes[ids["start"]][0::2] == ("((", "terminal")


def test_graph_diagram_edges_carry_kind_labels() -> None:
    diagram = parse(graph_mermaid(sample_graph()))
    ids = by_label(diagram)
    named = [(ids_inv(ids)[src], arrow, label, ids_inv(ids)[dst]) for src, arrow, label, dst in diagram.edges]
    assert named == [
        ("start", "-->", "", "Start"),
        ("Start", "-->", "", "Router"),
        ("Router", "-->", "case 1: kind == 'bulk'", "Split"),
        ("Router", "-->", "case 2: true", "Alt"),
        ("Router", "-.->", "on error", "Fix"),
        ("Split", "-->", "for each item in items", "Work"),
        ("Work", "-->", "ok && n > 1", "Join"),
        ("Alt", "-.->", "goto", "Start"),
        ("Alt", "-->", "", END),
        ("Join", "-->", "", END),
        ("Fix", "-->", "", END),
    ]
    assert diagram.link_styles == ["linkStyle 4 stroke:#d9534f,color:#d9534f,stroke-width:2px"]


def ids_inv(ids: dict[str, str]) -> dict[str, str]:
    return {node_id: label for label, node_id in ids.items()}


def test_graph_without_end_or_on_error_has_neither() -> None:
    g = Graph("G")
    g.add_task("A", "svc/a")
    text = graph_mermaid(g)
    diagram = parse(text)
    assert {parts[0] for _, parts, _ in diagram.nodes.values()} == {"A", "start"}
    assert diagram.link_styles == []


def test_empty_graph_renders_header_only() -> None:
    diagram = parse(graph_mermaid(Graph("Empty")))
    assert diagram.nodes == {} and diagram.edges == []


def test_undeclared_names_render_distinctly() -> None:
    g = Graph("G")
    g.add_task("A", "svc/a")
    g.add_transition("A", "Typo")
    g.add_transition("A", END)
    diagram = parse(graph_mermaid(g))
    assert diagram.nodes[by_label(diagram)["Typo"]][2] == "undeclared"


def test_graph_mermaid_method_delegates() -> None:
    g = sample_graph()
    assert g.mermaid() == graph_mermaid(g)


# Hostile to the diagram, not to the database: NUL and lone surrogates are refused by the graph builders
# (check_text).
_hostile = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=20
) | st.sampled_from(
    ['"]; click A call alert(1) %%', "end", "A[x]", "a|b", "<img src=x onerror=alert(1)>", "`md`", "x\n--> y"]
)


@settings(max_examples=150)
@given(_hostile, _hostile, _hostile, _hostile)
def test_hostile_graph_text_cannot_break_the_diagram(first: str, second: str, expr: str, field: str) -> None:
    if first == second or {first, second} & {END, "start"}:
        return
    g = Graph("G")
    g.add_task(first, "svc/a")
    g.add_task(second, "svc/b")
    g.add_transition_when(first, second, expr)
    g.add_transition_switch(second, first, expr)
    g.add_transition_for_each(first, second, field, expr)
    g.add_transition(second, END)
    g.set_fan_in(second)
    diagram = parse(graph_mermaid(g))
    ids = by_label(diagram)
    assert ids[first] != ids[second]
    labels = [label for _, _, label, _ in diagram.edges]
    assert expr in labels
    assert f"case 1: {expr}" in labels
    assert f"for each {expr} in {field}" in labels


# ----------------------------------------------------------------------------------- history diagrams


def step(step_id: int, task: str = "", **fields: object) -> FlowStep:
    return FlowStep(step_id=step_id, task_name=task or f"T{step_id}", **fields)  # type: ignore[arg-type]


def test_empty_history_renders_header_only() -> None:
    diagram = parse(history_mermaid([]))
    assert diagram.nodes == {} and diagram.edges == []


def test_history_labels_name_attempt_and_status() -> None:
    diagram = parse(
        history_mermaid(
            [
                step(1, "Reserve", status=Status.COMPLETED, successor_id=2),
                step(2, "Charge", status=Status.FAILED, attempt=2, predecessor_id=1),
            ]
        )
    )
    assert diagram.nodes["s1"] == ("[", ["Reserve", "completed"], "completed")
    assert diagram.nodes["s2"] == ("[", ["Charge", "attempt 2", "failed"], "failed")
    assert diagram.edges == [("s1", "-->", "", "s2")]


@pytest.mark.parametrize(
    ("status", "parked", "css_class", "text"),
    [
        (Status.COMPLETED, False, "completed", "completed"),
        (Status.FAILED, False, "failed", "failed"),
        (Status.INTERRUPTED, False, "interrupted", "interrupted"),
        (Status.RUNNING, False, "running", "running"),
        (Status.PENDING, False, "pending", "pending"),
        (Status.CREATED, False, "pending", "created"),
        (Status.CANCELLED, False, "cancelled", "cancelled"),
        (Status.RUNNING, True, "parked", "running, parked"),
        (Status.PENDING, True, "parked", "pending, parked"),
        (Status.COMPLETED, True, "completed", "completed"),
        ("weird", False, "pending", "weird"),
    ],
)
def test_history_styles_each_status_distinctly(
    status: Status, parked: bool, css_class: str, text: str
) -> None:
    diagram = parse(history_mermaid([step(1, "Task", status=status, parked=parked)]))
    assert diagram.nodes["s1"] == ("[", ["Task", text], css_class)


def test_history_defines_every_status_class() -> None:
    text = history_mermaid([])
    for css_class in ("completed", "failed", "interrupted", "running", "pending", "cancelled", "parked"):
        assert f"classDef {css_class} " in text


def test_history_fan_out_and_fan_in_edges_are_deduplicated() -> None:
    steps = [
        step(1, "Split", status=Status.COMPLETED),
        step(2, "Work", predecessor_id=1, successor_id=5, status=Status.COMPLETED),
        step(3, "Work", predecessor_id=1, successor_id=5, status=Status.COMPLETED),
        step(4, "Work", predecessor_id=1, successor_id=5, status=Status.CANCELLED),
        step(5, "Join", predecessor_id=2, status=Status.RUNNING),
    ]
    diagram = parse(history_mermaid(steps))
    assert sorted((src, dst) for src, _, _, dst in diagram.edges) == [
        ("s1", "s2"),
        ("s1", "s3"),
        ("s1", "s4"),
        ("s2", "s5"),
        ("s3", "s5"),
        ("s4", "s5"),
    ]


def test_history_ignores_edges_to_steps_it_does_not_have() -> None:
    diagram = parse(history_mermaid([step(7, predecessor_id=3, successor_id=9), step(8, predecessor_id=8)]))
    assert diagram.edges == []


def test_history_reads_neighbour_id_zero_as_none() -> None:
    diagram = parse(history_mermaid([step(0, "Zero"), step(5, "Five")]))
    assert diagram.edges == []


def test_history_repeated_and_negative_step_ids_get_unique_node_ids() -> None:
    diagram = parse(history_mermaid([step(4, "A"), step(4, "B"), step(-2, "C")]))
    assert list(diagram.nodes) == ["s4", "s4_2", "sn2"]


def test_history_renders_a_child_flow_inside_a_subgraph_block() -> None:
    child = [
        step(11, "Inner1", status=Status.COMPLETED, successor_id=12),
        step(12, "Inner2", predecessor_id=11, status=Status.INTERRUPTED),
    ]
    steps = [
        step(1, "Before", status=Status.COMPLETED, successor_id=2),
        step(
            2,
            "Call",
            predecessor_id=1,
            status=Status.RUNNING,
            parked=True,
            subgraph=True,
            sub_workflow_name='Child "flow"',
            sub_history=child,
        ),
    ]
    diagram = parse(history_mermaid(steps))
    assert diagram.subgraphs == [("sg1", 'Child "flow"', ["s11", "s12"])]
    assert ("s2", "-.->", "", "s11") in diagram.edges
    assert ("s11", "-->", "", "s12") in diagram.edges
    assert ("s1", "-->", "", "s2") in diagram.edges
    assert ("s2", "-.->", "", "s12") not in diagram.edges


def test_subgraph_title_falls_back_to_url_then_a_word() -> None:
    by_url = step(1, sub_workflow_url="wf://child", sub_history=[step(2)])
    anonymous = step(3, sub_history=[step(4)])
    diagram = parse(history_mermaid([by_url, anonymous]))
    assert [title for _, title, _ in diagram.subgraphs] == ["wf://child", "subgraph"]


def test_history_nests_subgraph_blocks() -> None:
    leaf = step(30, "Leaf")
    middle = step(20, "Middle", sub_workflow_name="Mid", sub_history=[leaf])
    top = step(
        10, "Top", sub_workflow_name="Outer", sub_history=[middle, step(21, "After", predecessor_id=20)]
    )
    text = history_mermaid([top])
    diagram = parse(text)
    assert diagram.subgraphs == [("sg2", "Mid", ["s30"]), ("sg1", "Outer", ["s20", "s30", "s21"])]
    assert ("s10", "-.->", "", "s20") in diagram.edges
    assert ("s20", "-.->", "", "s30") in diagram.edges
    assert ("s20", "-->", "", "s21") in diagram.edges


def test_history_of_deeply_nested_children_needs_no_recursion() -> None:
    depth = 5000
    current = step(depth + 1, "Leaf")
    for step_id in range(depth, 0, -1):
        current = step(step_id, "Call", sub_history=[current])
    lines = history_mermaid([current]).splitlines()
    # parse() tracks membership of every open block, quadratic at this depth: count lines instead.
    assert sum(1 for line in lines if line.lstrip().startswith("subgraph ")) == depth
    assert sum(1 for line in lines if line.strip() == "end") == depth
    assert sum(1 for line in lines if _NODE.match(line)) == depth + 1
    assert sum(1 for line in lines if _EDGE.match(line)) == depth
    assert max(len(line) - len(line.lstrip()) for line in lines) <= 40  # indentation is capped


@settings(max_examples=150)
@given(_hostile, _hostile, st.integers(0, 3))
def test_hostile_history_text_cannot_break_the_diagram(task: str, title: str, attempt: int) -> None:
    steps = [
        step(1, task, status=Status.COMPLETED, successor_id=2),
        step(
            2, task, predecessor_id=1, attempt=attempt, sub_workflow_name=title, sub_history=[step(3, task)]
        ),
    ]
    diagram = parse(history_mermaid(steps))
    assert diagram.nodes["s1"][1][0] == task
    assert diagram.nodes["s3"][1][0] == task
    assert diagram.subgraphs[0][1] == title
    assert (attempt > 0) == (f"attempt {attempt}" in diagram.nodes["s2"][1])
