"""The branches of a fan-out, gathered so that a wide one reads as one thing: ``Work ×200: 198 completed,
2 failed`` instead of two hundred boxes or rows.

A group is the sibling steps of one flow that run the same task after the same step: the branches a
forEach (or a fan-out) started from one spawn, and then, branch by branch, the steps that followed them
at the same task. ``group_fan_outs`` finds them depth by depth (a step's predecessor is one depth
shallower), so a three-task branch of 200 items gives three groups one after the other. Steps that ran
once (a chain, a loop, the fan-in) are never grouped.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

from dwarf.workflow.status import TERMINAL_STATUSES, Status

if TYPE_CHECKING:
    from dwarf.workflow.records import FlowStep

__all__ = ["DEFAULT_GROUP_SIZE", "StepGroup", "group_fan_outs"]

DEFAULT_GROUP_SIZE: Final = 10
"""Siblings at one task that are drawn and listed as one group (fewer are shown one by one)."""

# The order counts are told in: what needs attention first.
_STATUS_ORDER: Final = (
    Status.FAILED,
    Status.INTERRUPTED,
    Status.RUNNING,
    Status.PENDING,
    Status.CREATED,
    Status.CANCELLED,
    Status.COMPLETED,
)


@dataclass
class StepGroup:
    """Sibling steps of one flow at one task, shown as one. ``group_id`` is its first member's step id."""

    group_id: int
    task_name: str
    members: list[FlowStep] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.members)

    def counts(self) -> list[tuple[Status, int]]:
        """How many members have each status (parked steps count as pending), most urgent first."""
        tally: dict[Status, int] = {}
        for step in self.members:
            status = Status(step.status)
            if status == Status.CREATED:
                status = Status.PENDING
            tally[status] = tally.get(status, 0) + 1
        return [(status, tally[status]) for status in _STATUS_ORDER if status in tally]

    def counts_text(self) -> str:
        """``198 completed, 2 failed``: the counts, most urgent last so the total reads first."""
        parts = [f"{count:,} {status}" for status, count in reversed(self.counts())]
        return ", ".join(parts)

    @property
    def title(self) -> str:
        """``Work ×200``."""
        return f"{self.task_name} ×{self.size:,}"

    @property
    def summary(self) -> str:
        """``Work ×200: 198 completed, 2 failed``."""
        return f"{self.title}: {self.counts_text()}"

    @property
    def status(self) -> Status:
        """The status the group is drawn in: failed if any member failed, then interrupted, then still
        going (running or waiting), then cancelled; completed only when every member completed."""
        counts = dict(self.counts())
        for status in (Status.FAILED, Status.INTERRUPTED, Status.RUNNING, Status.PENDING, Status.CANCELLED):
            if counts.get(status):
                return status
        return Status.COMPLETED

    @property
    def finished(self) -> int:
        """Members that ended (completed, failed or cancelled)."""
        return sum(1 for step in self.members if step.status in TERMINAL_STATUSES)

    @property
    def first_created(self) -> datetime:
        return min(step.created_at for step in self.members)

    @property
    def first_started(self) -> datetime | None:
        starts = [step.started_at for step in self.members if step.started_at is not None]
        return min(starts) if starts else None

    @property
    def last_ended(self) -> datetime | None:
        """When the last member ended; None while any has not."""
        if self.finished < self.size:
            return None
        return max(step.updated_at for step in self.members)

    def notable(self, limit: int) -> list[FlowStep]:
        """Up to ``limit`` members worth a look without opening the group: the failed, interrupted,
        running and waiting ones, in that order (completed and cancelled ones are left out)."""
        rank = {status: index for index, status in enumerate(_STATUS_ORDER)}
        picked = [s for s in self.members if s.status not in (Status.COMPLETED, Status.CANCELLED)]
        picked.sort(key=lambda step: (rank.get(Status(step.status), len(rank)), step.step_id))
        return picked[:limit]


def group_fan_outs(
    steps: Sequence[FlowStep], min_size: int = DEFAULT_GROUP_SIZE, expanded: Collection[int] = ()
) -> dict[int, StepGroup]:
    """The groups of one flow's steps (not its child flows'), by the step id of each member.

    Siblings form a group when there are at least ``min_size`` of them (0 or less: never). The groups
    whose ``group_id`` is in ``expanded`` are left out, so their members show one by one; the steps that
    follow an expanded group's members are then siblings no more and are not grouped either.
    """
    if min_size <= 0 or len(steps) < min_size:
        return {}
    by_depth: dict[int, list[FlowStep]] = {}
    for step in steps:
        by_depth.setdefault(step.step_depth, []).append(step)
    member_of: dict[int, StepGroup] = {}
    for depth in sorted(by_depth):
        # Siblings: the same task after the same step, or after members of the same group.
        candidates: dict[tuple[str, int, str], list[FlowStep]] = {}
        for step in sorted(by_depth[depth], key=lambda s: s.step_id):
            before = member_of.get(step.predecessor_id) if step.predecessor_id else None
            anchor = ("g", before.group_id) if before is not None else ("s", step.predecessor_id)
            candidates.setdefault((*anchor, step.task_name), []).append(step)
        for (kind, _, task), members in candidates.items():
            if len(members) < min_size or (kind == "s" and not members[0].predecessor_id):
                continue
            group = StepGroup(members[0].step_id, task, members)
            if group.group_id in expanded:
                continue
            for step in members:
                member_of[step.step_id] = group
    return member_of
