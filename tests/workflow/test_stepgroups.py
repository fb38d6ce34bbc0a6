"""Fan-out groups: the siblings of a wide fan-out gather into one group per task (branch by branch for
multi-task branches), with counts; chains, loops and small fan-outs stay step by step; the history diagram
draws a group as one node."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dwarf import FlowStep, Status
from dwarf.workflow.mermaid import group_node_id, history_mermaid
from dwarf.workflow.stepgroups import group_fan_outs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _step(
    step_id: int, task: str, depth: int, predecessor: int, status: Status = Status.COMPLETED
) -> FlowStep:
    return FlowStep(
        step_key=f"1-{step_id}-abcdefghijklmnop",
        step_id=step_id,
        step_depth=depth,
        task_name=task,
        predecessor_id=predecessor,
        status=status,
        created_at=T0 + timedelta(seconds=step_id),
        started_at=T0 + timedelta(seconds=step_id + 1),
        updated_at=T0 + timedelta(seconds=step_id + 2),
    )


def _fan_out(width: int, failed: int = 0, tasks: tuple[str, ...] = ("Work",)) -> list[FlowStep]:
    """Split (1) -> ``width`` branches running ``tasks`` one after the other -> Join."""
    steps = [_step(1, "Split", 1, 0)]
    previous = [1] * width
    next_id = 2
    for depth, task in enumerate(tasks, start=2):
        for branch in range(width):
            status = Status.FAILED if depth == 2 and branch < failed else Status.COMPLETED
            steps.append(_step(next_id, task, depth, previous[branch], status))
            previous[branch] = next_id
            next_id += 1
    steps.append(_step(next_id, "Join", len(tasks) + 2, previous[-1]))
    return steps


def test_a_wide_fan_out_is_one_group_with_counts() -> None:
    steps = _fan_out(200, failed=2)
    groups = group_fan_outs(steps, 10)
    found = {id(group): group for group in groups.values()}
    assert len(found) == 1
    group = next(iter(found.values()))
    assert group.group_id == 2 and group.size == 200 and group.task_name == "Work"
    assert group.summary == "Work ×200: 198 completed, 2 failed"
    assert group.status == Status.FAILED
    assert [step.step_id for step in group.notable(5)] == [2, 3]
    assert group.first_created == T0 + timedelta(seconds=2)
    assert group.last_ended == T0 + timedelta(seconds=203)


def test_multi_task_branches_group_task_by_task() -> None:
    steps = _fan_out(12, tasks=("Fetch", "Parse"))
    groups = {group.task_name: group for group in group_fan_outs(steps, 10).values()}
    assert sorted(groups) == ["Fetch", "Parse"]
    assert groups["Fetch"].size == groups["Parse"].size == 12
    # Expanding the first group shows its members one by one, and the steps after them too.
    assert group_fan_outs(steps, 10, expanded={groups["Fetch"].group_id}) == {}


def test_small_fan_outs_chains_and_loops_are_not_grouped() -> None:
    assert group_fan_outs(_fan_out(9), 10) == {}
    assert group_fan_outs(_fan_out(200), 0) == {}
    loop = [_step(i, "Think", i, i - 1) for i in range(1, 40)]
    assert group_fan_outs(loop, 2) == {}


def test_the_diagram_draws_a_group_as_one_node() -> None:
    steps = _fan_out(200, failed=2)
    steps[-1].predecessor_id = 0  # the fan-in: its branches name it as their successor
    for step in steps[1:-1]:
        step.successor_id = steps[-1].step_id
    full = history_mermaid(steps)
    assert full.count('["Work<br/>') == 200
    drawn = history_mermaid(steps, collapse_over=10)
    group = group_fan_outs(steps, 10)[2]
    node = group_node_id(group)
    assert node == "g2"
    assert f'{node}[["Work ×200<br/>198 completed, 2 failed"]]:::failed' in drawn
    assert drawn.count('["Work<br/>') == 0
    assert f"s1 --> {node}" in drawn and f"{node} --> s{steps[-1].step_id}" in drawn
    assert len(drawn) < 2000
    expanded = history_mermaid(steps, collapse_over=10, expanded={2})
    assert expanded.count('["Work<br/>') == 200


def test_a_group_still_running_is_drawn_as_running() -> None:
    steps = _fan_out(20)
    steps[3].status = Status.RUNNING
    steps[4].status = Status.PENDING
    group = group_fan_outs(steps, 10)[2]
    assert group.status == Status.RUNNING and group.last_ended is None
    assert group.counts_text() == "18 completed, 1 pending, 1 running"
