"""What the dashboard draws to show a flow at a glance: the steps table with fan-outs gathered into groups,
the history diagram's groups, the timeline (Gantt) of a flow's steps, and the list page's activity chart.

All of it is computed here from engine records and rendered by the templates as HTML and inline SVG: no
script is needed to read any of it (diagrams.mjs adds pan, zoom and clicks on the diagram's groups).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from dwarf.dashboard.views import StepRow, format_duration
from dwarf.errors import BadRequestError
from dwarf.workflow.mermaid import group_node_id, history_mermaid
from dwarf.workflow.progress import FlowActivity
from dwarf.workflow.records import FlowStep
from dwarf.workflow.status import TERMINAL_STATUSES, Status
from dwarf.workflow.stepgroups import DEFAULT_GROUP_SIZE, StepGroup, group_fan_outs

__all__ = [
    "GROUP_SIZE",
    "MAX_DIAGRAM_NODES",
    "MAX_DRAWN_EXPANSION",
    "MAX_TIMELINE_ROWS",
    "NOTABLE_MEMBERS",
    "ActivityChart",
    "DiagramGroup",
    "GroupItem",
    "Timeline",
    "activity_chart",
    "count_steps",
    "diagram",
    "parse_expanded",
    "table_items",
    "timeline",
]

GROUP_SIZE: Final = DEFAULT_GROUP_SIZE
"""Siblings at one task that the page gathers into one group (fewer are shown one by one)."""
NOTABLE_MEMBERS: Final = 10
"""Members of a closed group listed under it anyway: its failed, interrupted, running or waiting ones."""
MAX_DIAGRAM_NODES: Final = 500
"""Above this many boxes (groups count as one) the diagram is not drawn: Mermaid gets slow and cramped."""
MAX_DRAWN_EXPANSION: Final = 200
"""An opened group of more members than this stays one box in the diagram (the table lists them)."""
MAX_TIMELINE_ROWS: Final = 300
"""Rows of the timeline (a group is one row)."""
_MAX_EXPANDED: Final = 20

ItemKind = Literal["step", "group"]


def parse_expanded(text: str) -> frozenset[int]:
    """The groups a page opens (``?expand=12,40``: first members' step ids); BadRequestError if malformed."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if len(parts) > _MAX_EXPANDED or any(len(p) > 19 or not (p.isascii() and p.isdigit()) for p in parts):
        raise BadRequestError(f"expand takes up to {_MAX_EXPANDED} step ids separated by commas")
    return frozenset(int(part) for part in parts)


def expand_param(expanded: frozenset[int], toggle: int) -> str:
    """The ``expand`` value with ``toggle`` opened (or closed, when it is open); "" for none."""
    ids = set(expanded) ^ {toggle}
    return ",".join(str(i) for i in sorted(ids))


@dataclass(frozen=True)
class GroupItem:
    """A fan-out group as the steps table shows it: one summary row, then (closed) its notable members
    or (open) every member."""

    group: StepGroup
    depth: int
    path: tuple[str, ...]
    expanded: bool
    shown: list[StepRow] = field(default_factory=list)
    toggle: str = ""
    """The page's ``expand`` value that opens this group (or closes it, when open)."""
    kind: ItemKind = "group"

    @property
    def dom_id(self) -> str:
        return f"group-{self.group.group_id}"

    @property
    def unfinished_or_failed(self) -> int:
        """Members that did not complete (and were not cancelled): those worth listing."""
        return sum(
            1 for step in self.group.members if step.status not in (Status.COMPLETED, Status.CANCELLED)
        )

    @property
    def hidden(self) -> int:
        """Members not listed under a closed group."""
        return 0 if self.expanded else self.group.size - len(self.shown)

    @property
    def span(self) -> str:
        """From the first member's start to the last one's end, while the group ran or since it ended."""
        start, end = self.group.first_started, self.group.last_ended
        if start is None or end is None:
            return ""
        return format_duration(max(0.0, (end - start).total_seconds()))


Item = StepRow | GroupItem


def table_items(
    history: Sequence[FlowStep],
    *,
    expanded: frozenset[int] = frozenset(),
    limit: int = 500,
    min_size: int = GROUP_SIZE,
) -> tuple[list[Item], int]:
    """The steps table in reading order with fan-outs gathered, and how many step rows were cut.

    Like ``step_rows``, each step is followed by its child flow's steps (indented); a group of siblings
    (``dwarf.workflow.stepgroups``) is one item in place of its members: closed, it lists only its
    ``NOTABLE_MEMBERS`` most urgent members; open (its id in ``expanded``), every member follows it with
    its child flow. At most ``limit`` step rows are listed (a group's summary row is not counted).
    """
    items: list[Item] = []
    rows = 0
    cut = 0
    stack: list[tuple[Iterator[FlowStep], int, tuple[str, ...], dict[int, StepGroup]]] = [
        (iter(history), 0, (), group_fan_outs(history, min_size))
    ]
    while stack:
        steps, depth, path, groups = stack[-1]
        step = next(steps, None)
        if step is None:
            stack.pop()
            continue
        group = groups.get(step.step_id)
        if group is not None and step.step_id == group.group_id:
            is_open = group.group_id in expanded
            shown: list[StepRow] = []
            if not is_open:
                for member in group.notable(NOTABLE_MEMBERS):
                    if rows >= limit:
                        cut += 1
                        continue
                    shown.append(StepRow(member, depth + 1, path))
                    rows += 1
            toggle = expand_param(expanded, group.group_id)
            items.append(GroupItem(group, depth, path, is_open, shown, toggle))
        if group is not None and group.group_id not in expanded:
            continue  # a closed group's members are its item
        if rows >= limit:
            cut += 1 + count_steps(step.sub_history)
            continue
        row = StepRow(step, depth + 1 if group is not None else depth, path)
        items.append(row)
        rows += 1
        if step.sub_history:
            child = step.sub_history
            stack.append(
                (iter(child), row.depth + 1, (*path, row.child_title), group_fan_outs(child, min_size))
            )
    return items, cut


def count_steps(steps: Sequence[FlowStep]) -> int:
    """The steps of a history, its child flows' included."""
    count = 0
    pending = [steps]
    while pending:
        level = pending.pop()
        count += len(level)
        pending.extend(step.sub_history for step in level if step.sub_history)
    return count


# --------------------------------------------------------------------------------------------- diagram


@dataclass(frozen=True)
class DiagramGroup:
    """A group drawn as one box: the box's node id, what it says, and the page that opens it."""

    node_id: str
    group: StepGroup
    drawn_open: bool
    expand: str


@dataclass(frozen=True)
class Diagram:
    """The history diagram's Mermaid text ("" when it is not drawn) and the groups it holds."""

    mermaid: str
    groups: list[DiagramGroup]
    nodes: int


def diagram(history: Sequence[FlowStep], expanded: frozenset[int], min_size: int = GROUP_SIZE) -> Diagram:
    """The history diagram with fan-outs drawn as one box each, unless opened and small enough to draw.

    Not drawn (empty text) above ``MAX_DIAGRAM_NODES`` boxes; the groups are listed all the same.
    """
    drawn_open: set[int] = set()
    found: list[DiagramGroup] = []
    nodes = 0
    pending: list[Sequence[FlowStep]] = [history]
    while pending:
        level = pending.pop()
        everything = group_fan_outs(level, min_size)
        openable = {
            g.group_id
            for g in everything.values()
            if g.group_id in expanded and g.size <= MAX_DRAWN_EXPANSION
        }
        drawn_open |= openable
        groups = group_fan_outs(level, min_size, openable) if openable else everything
        seen: set[int] = set()
        for group in everything.values():
            if group.group_id not in seen:
                seen.add(group.group_id)
                found.append(
                    DiagramGroup(
                        group_node_id(group),
                        group,
                        group.group_id in openable,
                        expand_param(expanded, group.group_id),
                    )
                )
        for step in level:
            drawn_in = groups.get(step.step_id)
            if drawn_in is None:
                nodes += 1
                if step.sub_history:
                    pending.append(step.sub_history)
            elif step.step_id == drawn_in.group_id:
                nodes += 1
    found.sort(key=lambda item: item.group.group_id)
    if not history or nodes > MAX_DIAGRAM_NODES:
        return Diagram("", found, nodes)
    text = history_mermaid(history, collapse_over=min_size, expanded=drawn_open)
    return Diagram(text, found, nodes)


# -------------------------------------------------------------------------------------------- timeline


SegmentKind = Literal["wait", "run", "park"]


@dataclass(frozen=True)
class Segment:
    """A stretch of a timeline bar, placed in % of the track: ``wait`` (queued, sleeping or backing off
    before an attempt), ``run`` (a worker ran it), ``park`` (interrupted, or waiting on a child flow)."""

    kind: SegmentKind
    left: float
    width: float


@dataclass(frozen=True)
class TimelineRow:
    """One bar of the timeline: a step, or a fan-out group from its first branch's creation to its last
    branch's end (or now, while branches are still to run)."""

    label: str
    depth: int
    status: str
    kind: ItemKind
    anchor: str
    segments: list[Segment]
    note: str


@dataclass(frozen=True)
class Timeline:
    """The rows, the ticks of the time axis (position %, label) and what the axis spans."""

    rows: list[TimelineRow]
    ticks: list[tuple[float, str]]
    start: datetime
    end: datetime
    cut: int

    @property
    def span(self) -> str:
        return format_duration(max(0.0, (self.end - self.start).total_seconds()))


Stretch = tuple[SegmentKind, datetime, datetime]


def _step_stretches(step: FlowStep, now: datetime) -> list[Stretch]:
    """What a step did when: waited to start, ran, and (not ended) waits for a retry, a resume or a child."""
    status = Status(step.status)
    started = step.started_at
    if started is None:
        return [("wait", step.created_at, step.updated_at if status in TERMINAL_STATUSES else now)]
    stretches: list[Stretch] = [("wait", step.created_at, started)]
    if status == Status.RUNNING:
        return [*stretches, ("run", started, now)]
    stretches.append(("run", started, step.updated_at))
    if status == Status.PENDING:
        stretches.append(("wait", step.updated_at, now))  # an attempt ended: the next one is due later
    elif status in (Status.INTERRUPTED, Status.CREATED) or (step.parked and status not in TERMINAL_STATUSES):
        stretches.append(("park", step.updated_at, now))
    return stretches


def _group_stretches(group: StepGroup, now: datetime) -> list[Stretch]:
    started = group.first_started
    if started is None:
        return [("wait", group.first_created, now)]
    ended = [step.updated_at for step in group.members if step.status in TERMINAL_STATUSES]
    last = max(ended) if ended else started
    stretches: list[Stretch] = [("wait", group.first_created, started), ("run", started, max(last, started))]
    if len(ended) < group.size:
        stretches.append(("wait", max(last, started), now))
    return stretches


def _seconds(stretches: list[Stretch], kind: SegmentKind) -> float:
    return sum(max(0.0, (end - begin).total_seconds()) for k, begin, end in stretches if k == kind)


def timeline(items: Sequence[Item], now: datetime | None = None) -> Timeline:
    """The timeline of the steps table's items, at most ``MAX_TIMELINE_ROWS`` rows: a group is one bar,
    followed by the members the table lists under it (those that did not complete)."""
    now = now or datetime.now(UTC)
    entries: list[tuple[Item, list[Stretch]]] = []
    for item in items:
        if isinstance(item, GroupItem):
            entries.append((item, _group_stretches(item.group, now)))
            entries.extend((row, _step_stretches(row.step, now)) for row in item.shown)
        else:
            entries.append((item, _step_stretches(item.step, now)))
    cut = max(0, len(entries) - MAX_TIMELINE_ROWS)
    entries = entries[:MAX_TIMELINE_ROWS]
    if not entries:
        return Timeline([], [], now, now, 0)
    start = min(begin for _, stretches in entries for _, begin, _ in stretches)
    end = max(finish for _, stretches in entries for _, _, finish in stretches)
    if end <= start:
        end = start + timedelta(milliseconds=1)
    total = (end - start).total_seconds()

    def pos(moment: datetime) -> float:
        return round(100.0 * (moment - start).total_seconds() / total, 3)

    rows: list[TimelineRow] = []
    for item, stretches in entries:
        segments = [
            Segment(kind, pos(begin), max(0.0, round(pos(finish) - pos(begin), 3)))
            for kind, begin, finish in stretches
            if finish > begin or kind == "run"
        ]
        waited, ran, parked = (_seconds(stretches, kind) for kind in ("wait", "run", "park"))
        if isinstance(item, GroupItem):
            group = item.group
            note = f"{group.finished:,} of {group.size:,} ended within {format_duration(ran)}"
            if group.finished < group.size:
                note += f", {group.size - group.finished:,} still to run"
            label = f"{group.title}: {group.counts_text()}"
            rows.append(
                TimelineRow(label, item.depth, str(group.status), "group", item.dom_id, segments, note)
            )
            continue
        step = item.step
        note = f"waited {format_duration(waited)}"
        if step.started_at is not None:
            note += f", ran {format_duration(ran)}"
        if parked:
            note += f", parked {format_duration(parked)}"
        label = item.label.split(" / ")[-1]
        rows.append(
            TimelineRow(label, item.depth, str(step.status), "step", f"step-{step.step_id}", segments, note)
        )
    return Timeline(rows, _ticks(start, end), start, end, cut)


_TICK_STEPS: Final = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900,
    1800, 3600, 7200, 14400, 21600, 43200, 86400, 172800, 604800,
)  # fmt: skip


def _ticks(start: datetime, end: datetime) -> list[tuple[float, str]]:
    """Up to about eight ticks at round offsets from the start (``+250 ms``, ``+2 min``)."""
    total = (end - start).total_seconds()
    step = next((s for s in _TICK_STEPS if total / s <= 8), _TICK_STEPS[-1])
    ticks: list[tuple[float, str]] = []
    offset = 0.0
    while offset <= total + 1e-9:
        ticks.append(
            (round(100.0 * offset / total, 3), "0" if offset == 0 else f"+{format_duration(offset)}")
        )
        offset += step
    return ticks


# --------------------------------------------------------------------------------------- activity chart

CHART_WIDTH: Final = 720
CHART_HEIGHT: Final = 120
_SERIES: Final = (("started", "started"), ("completed", "completed"), ("failed", "failed"))


@dataclass(frozen=True)
class ChartBar:
    series: str
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class ActivityChart:
    """The list page's bar chart: per time slot, flows started, completed and failed."""

    bars: list[ChartBar]
    labels: list[tuple[float, str]]
    peak: int
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT


def activity_chart(activity: FlowActivity) -> ActivityChart:
    """Three thin bars per slot (started, completed, failed), scaled to the busiest slot of any series."""
    slots = len(activity.started)
    series = {"started": activity.started, "completed": activity.completed, "failed": activity.failed}
    peak = max([1, *activity.started, *activity.completed, *activity.failed])
    slot_width = CHART_WIDTH / max(slots, 1)
    bar_width = max(1.0, (slot_width - 2) / 3)
    bars: list[ChartBar] = []
    for index in range(slots):
        slot_start = activity.since + timedelta(seconds=activity.bucket_seconds * index)
        for offset, (name, _) in enumerate(_SERIES):
            count = series[name][index]
            if not count:
                continue
            height = max(1.0, (CHART_HEIGHT - 4) * count / peak)
            bars.append(
                ChartBar(
                    name,
                    round(index * slot_width + 1 + offset * bar_width, 2),
                    round(CHART_HEIGHT - height, 2),
                    round(bar_width, 2),
                    round(height, 2),
                    f"{count:,} {name} from {slot_start:%Y-%m-%d %H:%M} UTC",
                )
            )
    every = max(1, slots // 6)
    labels = [
        (
            round(index * slot_width, 2),
            (activity.since + timedelta(seconds=activity.bucket_seconds * index)).strftime(
                "%H:%M" if activity.bucket_seconds * slots <= 86400 else "%m-%d %H:%M"
            ),
        )
        for index in range(0, slots, every)
    ]
    return ActivityChart(bars, labels, peak)
