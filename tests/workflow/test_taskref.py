"""Task references in ``Graph.add_task`` (docs/graphs.md#nodes-and-urls) and the strict graph option's
place in the graph JSON (docs/graphs.md#strict-graphs)."""

from __future__ import annotations

import functools
import json

import pytest

from dwarf import END, Flow, Graph, InvalidGraphError
from dwarf.hosts.local import LocalHost
from dwarf.workflow.taskref import TASK_URLS_ATTRIBUTE, remember_task_url, task_url_of

# --- references ---


def test_a_registered_handler_stands_for_the_url_it_was_registered_under() -> None:
    def act(flow: Flow) -> None:
        pass

    host = LocalHost()
    host.add_task("agent/act", act)
    graph = Graph("Agent")
    graph.add_task("Act", act)
    graph.set_endpoint("ActAgain", act)
    graph.add_transition_chain("Act", "ActAgain", END)
    graph.validate()
    assert graph.url_of("Act") == graph.url_of("ActAgain") == "agent/act"
    assert [node["url"] for node in json.loads(graph.to_json())["nodes"]] == ["agent/act", "agent/act"]


def test_the_string_form_is_unchanged_and_mixes_with_references() -> None:
    host = LocalHost()

    @host.task("tasks/a")
    def a(flow: Flow) -> None:
        pass

    graph = Graph("Mixed")
    graph.add_task("A", a)
    graph.add_task("B", "tasks/b")
    assert [(node.name, node.url) for node in graph.nodes] == [("A", "tasks/a"), ("B", "tasks/b")]


def test_a_decorator_without_a_url_registers_the_qualified_name() -> None:
    host = LocalHost()

    @host.task
    def bare(flow: Flow) -> None:
        pass

    @host.task()
    async def called(flow: Flow) -> None:
        pass

    graph = Graph("Derived")
    graph.add_task("Bare", bare)
    graph.add_task("Called", called)
    prefix = "test_a_decorator_without_a_url_registers_the_qualified_name.<locals>."
    assert graph.url_of("Bare") == prefix + "bare"
    assert graph.url_of("Called") == prefix + "called"


def test_a_function_no_host_registered_is_refused_with_the_fix() -> None:
    def unregistered(flow: Flow) -> None:
        pass

    graph = Graph("G")
    with pytest.raises(InvalidGraphError) as caught:
        graph.add_task("Plan", unregistered)
    message = str(caught.value)
    assert "node 'Plan'" in message and "unregistered is not a registered task" in message
    assert "@host.task" in message and "pass its URL as a string" in message
    assert graph.nodes == []


def test_a_handler_registered_under_two_urls_is_ambiguous() -> None:
    def shared(flow: Flow) -> None:
        pass

    LocalHost().add_task("one", shared)
    LocalHost().add_task("two", shared)
    with pytest.raises(InvalidGraphError, match=r"several URLs \('one', 'two'\)"):
        Graph("G").add_task("Shared", shared)

    def replicated(flow: Flow) -> None:
        pass

    # The same URL on two hosts (one per engine, say) is no ambiguity.
    LocalHost().add_task("one", replicated)
    LocalHost().add_task("one", replicated)
    assert task_url_of(replicated, "P") == "one"


def test_an_object_that_takes_no_attribute_is_served_but_cannot_be_a_reference() -> None:
    class Tasks:
        def run(self, flow: Flow) -> None:
            pass

    tasks = Tasks()
    host = LocalHost()
    host.add_task("tasks/run", tasks.run)  # a bound method refuses attributes
    assert host.serves("tasks/run") is True
    with pytest.raises(InvalidGraphError, match="not a registered task"):
        Graph("G").add_task("Run", tasks.run)
    partial = functools.partial(Tasks.run, tasks)
    host.add_task("tasks/partial", partial)
    graph = Graph("G")
    graph.add_task("Partial", partial)
    assert graph.url_of("Partial") == "tasks/partial"


def test_remember_ignores_a_damaged_attribute_and_repeats() -> None:
    def handler(flow: Flow) -> None:
        pass

    setattr(handler, TASK_URLS_ATTRIBUTE, "not a tuple")
    remember_task_url(handler, "a")
    remember_task_url(handler, "a")
    assert getattr(handler, TASK_URLS_ATTRIBUTE) == ("a",)


def test_non_callables_keep_the_string_checks() -> None:
    graph = Graph("G")
    with pytest.raises(InvalidGraphError, match="must be a string"):
        graph.add_task("A", 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidGraphError, match="must not be empty"):
        graph.add_task("A", "")


# --- the strict option in JSON ---


def _small(strict: bool = False) -> Graph:
    graph = Graph("Small", strict=strict)
    graph.add_task("A", "a")
    graph.add_transition("A", END)
    return graph


def test_strict_is_off_by_default_and_absent_from_the_json() -> None:
    graph = _small()
    assert graph.strict is False
    assert "strict" not in json.loads(graph.to_json())


def test_strict_round_trips_and_changes_equality() -> None:
    strict = _small(strict=True)
    assert json.loads(strict.to_json())["strict"] is True
    copy = Graph.from_json(strict.to_json())
    assert copy.strict is True and copy == strict
    assert strict != _small()
    loose = _small()
    loose.set_strict()
    assert loose == strict and "strict=True" in repr(loose)
    loose.set_strict(False)
    assert loose == _small() and loose.to_json() == _small().to_json()


def test_json_written_before_the_option_still_reads() -> None:
    old = (
        '{"entryPoint":"A","fanIn":[],"formatVersion":1,"name":"Small",'
        '"nodes":[{"name":"A","url":"a"}],"reducers":{},"transitions":[{"from":"A","to":"END"}]}'
    )
    graph = Graph.from_json(old)
    assert graph.strict is False and graph.to_json() == old


@pytest.mark.parametrize("value", ["1", "0", "null", '"yes"'])
def test_a_strict_that_is_not_a_boolean_is_refused(value: str) -> None:
    text = _small().to_json()[:-1] + f',"strict":{value}}}'
    with pytest.raises(InvalidGraphError, match="strict must be a boolean"):
        Graph.from_json(text)


def test_the_builders_refuse_a_strict_that_is_not_a_boolean() -> None:
    with pytest.raises(InvalidGraphError, match="strict must be a boolean"):
        Graph("G", strict=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidGraphError, match="strict must be a boolean"):
        Graph("G").set_strict("yes")  # type: ignore[arg-type]
