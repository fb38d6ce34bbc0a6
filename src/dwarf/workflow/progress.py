"""Records that say how flows are getting on: why one is not moving (``FlowWait``) and what many did
lately (``FlowActivity``). ``Engine.why`` and ``Engine.activity`` return them; the CLI and the dashboard
show them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from dwarf.workflow.limits import Limit
from dwarf.workflow.status import FLOW_STATUSES, Status

__all__ = ["AHEAD_LIMIT", "FlowActivity", "FlowWait", "WaitReason"]

AHEAD_LIMIT = 10_000
"""``FlowWait.ahead`` counts due steps up to this many; a wait that shows it has at least as many ahead."""


class WaitReason(enum.StrEnum):
    """What the unfinished steps of a flow are doing (see ``FlowWait``)."""

    RUNNING = "running"
    """A worker is running the step right now: the flow is moving."""
    QUEUED = "queued"
    """The step is due and waits for a free worker, behind ``ahead`` other due steps."""
    LIMITED = "limited"
    """The step is due but its fairness key or task URL is at its concurrency or rate limit (``limit``,
    docs/limits.md): it starts when a running step of the key ends, or the rate allows another start."""
    SLEEPING = "sleeping"
    """The task slept (``flow.sleep``): the next step comes due at ``until``."""
    RETRYING = "retrying"
    """An attempt failed (``flow.retry``, a ``Retry`` policy): attempt ``attempt`` comes due at ``until``."""
    INTERRUPTED = "interrupted"
    """The task asked a question (``flow.interrupt``) and waits for ``Engine.resume`` since ``since``;
    with a timeout, until ``until`` at the latest."""
    SIGNAL = "signal"
    """The task waits for signal ``signal_name`` (``flow.wait_for_signal``, ``Engine.signal``) since
    ``since``; with a timeout, until ``until`` at the latest."""
    CHILD_FLOW = "child_flow"
    """The step started a child flow (``flow.subgraph``) and waits for it to stop."""
    STALLED = "stalled"
    """The flow is running but no step of it can run: a join about to happen, or a wedge the engine's
    sweep will end (docs/design.md)."""


@dataclass
class FlowWait:
    """One reason a flow is not moving, shared by ``steps`` of its unfinished steps.

    Steps that wait the same way at the same task form one wait (the branches of a fan-out queue as one),
    described by the oldest of them: ``step_key``, ``since`` (when it was created, started, parked or
    interrupted) and, for a child flow, ``child_flow_key``. ``until`` is the earliest time any of them
    comes due (sleeping, retrying) or times out (a timed interrupt or signal wait); ``signal_name`` the
    signal a step waits for. ``attempt`` is the attempt a retry runs next (1 for the first retry).
    ``ahead`` (queued only) is how many due steps a worker takes first: every due step of a better
    priority band and the older due steps of its own band, counted up to ``AHEAD_LIMIT``; inside a band
    the claim mixes fairness keys, so it is an estimate. ``error`` is the last failed attempt's error.
    ``limit`` (limited only) is the limit that holds the steps back, as it stood when asked.
    """

    reason: WaitReason
    task_name: str = ""
    steps: int = 1
    step_key: str = ""
    since: datetime | None = None
    until: datetime | None = None
    attempt: int = 0
    ahead: int = 0
    child_flow_key: str = ""
    child_workflow_name: str = ""
    error: str = ""
    signal_name: str = ""
    limit: Limit | None = None

    def describe(self) -> str:
        """One line for people: ``Work (200 steps) queued behind 1,250 due steps``."""
        what = self.task_name or "the flow"
        if self.steps > 1:
            what += f" ({self.steps:,} steps)"
        reason = self.reason
        if reason == WaitReason.RUNNING:
            text = f"{what} running on a worker"
            return text + (f" since {_when(self.since)}" if self.since else "")
        if reason == WaitReason.QUEUED:
            more = "+" if self.ahead >= AHEAD_LIMIT else ""
            noun = "step" if self.ahead == 1 else "steps"
            return f"{what} queued behind {self.ahead:,}{more} due {noun}, waiting for a free worker"
        if reason == WaitReason.LIMITED and self.limit is not None:
            return f"{what} waiting for {_limit_text(self.limit)}"
        if reason == WaitReason.SLEEPING:
            return f"{what} sleeping until {_when(self.until)}"
        if reason == WaitReason.RETRYING:
            text = f"{what} waiting for a retry at {_when(self.until)} (attempt {self.attempt})"
            return text + (f" after: {_first_line(self.error)}" if self.error else "")
        if reason == WaitReason.INTERRUPTED:
            text = f"{what} interrupted since {_when(self.since)}, waiting for a resume"
            return text + (f" until {_when(self.until)}" if self.until else "")
        if reason == WaitReason.SIGNAL:
            text = f"{what} waiting for signal {self.signal_name!r}"
            return text + (f" until {_when(self.until)}" if self.until else f" since {_when(self.since)}")
        if reason == WaitReason.CHILD_FLOW:
            child = self.child_workflow_name or "a child flow"
            text = f"{what} waiting on child flow {child}"
            return text + (f" (since {_when(self.since)})" if self.since else "")
        return "no step can run yet: waiting for a fan-in's join (or for the engine's wedge sweep)"

    def __str__(self) -> str:
        return self.describe()


@dataclass
class FlowActivity:
    """Root flows created since ``since``, counted by status and over time (``Engine.activity``).

    ``counts`` has every flow status (0 when none). ``started[i]`` counts the flows created in slot
    ``i`` (``bucket_seconds`` long, slot 0 starting at ``since``); ``completed[i]``, ``failed[i]`` and
    ``cancelled[i]`` those of them that stopped so in slot ``i``. ``capped`` is true when more flows than
    ``Engine.activity`` counts at most were created: the figures then cover the newest ones only.
    """

    since: datetime
    bucket_seconds: float
    counts: dict[Status, int] = field(default_factory=lambda: dict.fromkeys(FLOW_STATUSES, 0))
    started: list[int] = field(default_factory=list)
    completed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    capped: bool = False

    @property
    def total(self) -> int:
        """Every flow counted."""
        return sum(self.counts.values())


def _limit_text(limit: Limit) -> str:
    """``the concurrency limit of fairness key 'acme' (5 of 5 running)`` or its rate limit's text."""
    if limit.concurrency is not None and limit.running >= limit.concurrency:
        return (
            f"the concurrency limit of {limit.subject()} ({limit.running:,} of {limit.concurrency:,} running)"
        )
    rate = f"{limit.rate:g}" if limit.rate is not None else "?"
    return f"the rate limit of {limit.subject()} ({rate} starts per second)"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment is not None else "(unknown)"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 200 else line[:199] + "…"
