"""Graph definitions that the `dwarf graph` tests point the command at (``tests.cli.sample_graphs:...``)."""

from __future__ import annotations

from dwarf import END, Graph


def build_review() -> Graph:
    """Draft -> Review -> Publish -> END: a valid graph, returned by a zero-argument function."""
    graph = Graph("review")
    for name in ("Draft", "Review", "Publish"):
        graph.add_task(name, f"docs/{name.lower()}")
    graph.add_transition_chain("Draft", "Review", "Publish", END)
    return graph


def build_broken() -> Graph:
    """A graph whose only transition leads to a node it never declares."""
    graph = Graph("broken")
    graph.add_task("A", "tasks/a")
    graph.add_transition("A", "Missing")
    return graph


review = build_review()
"""The same valid graph as a module attribute."""

not_a_graph = {"name": "review"}
