"""The plain records that cross the API: flow options, outcomes, steps, summaries, list queries.

They are dataclasses with no behaviour beyond validation of their own fields, so code that only defines
graphs and tasks can import them without the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from dwarf.errors import BadRequestError
from dwarf.workflow.durations import to_seconds
from dwarf.workflow.jsonvalue import check_text
from dwarf.workflow.status import Status

__all__ = [
    "DEADLINE_REASON",
    "KEEP_FOREVER",
    "FlowOptions",
    "FlowOutcome",
    "FlowStep",
    "FlowSummary",
    "IdempotencyPolicy",
    "Query",
    "ShardSummary",
    "retention_seconds",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MAX_PRIORITY = 2**31 - 1
"""The largest priority a flow may have (any larger number is a mistake, and the claim sums priorities)."""
MAX_TIME_BUDGET = 366 * 86400.0
"""The longest time budget of a step, in seconds (a year: beyond it a budget is a typo, not a plan)."""
MAX_IDEMPOTENCY_KEY_LENGTH = 255
"""The longest idempotency key, in characters (a request id, a hash, an event's id: never a document)."""
DEADLINE_REASON = "deadline passed"
"""The cancel reason of a flow whose deadline passed (``FlowOutcome.cancel_reason``, docs/waits.md)."""
MAX_DEADLINE = 100 * 365.25 * 86400.0
"""The furthest a deadline may lie ahead, in seconds (a century: beyond it a deadline is a typo)."""
MAX_KEYED_URL_BYTES = 1024
"""The longest workflow URL (UTF-8 bytes) a create with an idempotency key accepts: the URL and the key
are one entry of a unique index, which PostgreSQL caps at 2704 bytes."""

IdempotencyPolicy = Literal["return_existing", "fail", "start_new_if_ended"]
"""What a create does when a flow of the same workflow URL already holds its idempotency key:
``"return_existing"`` returns that flow's key, ``"fail"`` raises ``FlowExistsError`` (a
``ConflictError``), ``"start_new_if_ended"`` starts a new flow once that one has ended (completed, failed
or cancelled) and returns the running or interrupted one's key otherwise. See docs/flows.md#idempotent-create.
"""
_IDEMPOTENCY_POLICIES = frozenset(get_args(IdempotencyPolicy))

KEEP_FOREVER = timedelta.max
"""A retention that never runs out: ``FlowOptions(retain_for=KEEP_FOREVER)`` keeps a flow for ever even
when the engine's default retention is set (``math.inf`` means the same)."""


def retention_seconds(value: timedelta | float | None, what: str = "retain_for") -> float | None:
    """A retention in seconds: None stays None (unset); ``KEEP_FOREVER`` (``timedelta.max``) or
    ``math.inf`` is ``math.inf``; otherwise a finite number of seconds, at least 0. BadRequestError
    for anything else."""
    if value is None:
        return None
    if value == KEEP_FOREVER or (isinstance(value, float) and value == math.inf):
        return math.inf
    seconds = to_seconds(value, what=what)
    if seconds < 0:
        raise BadRequestError(f"{what} must not be negative")
    return seconds


@dataclass
class FlowOptions:
    """How a new flow is scheduled and treated when it stops.

    ``priority`` 0 means the engine default (lower numbers run first); ``fairness_weight`` 0 means 1.0;
    ``time_budget`` None means the engine default. ``thread_key`` joins the flow to an existing thread.
    ``idempotency_key`` makes the create idempotent per workflow URL, ``idempotency_policy`` says what a
    second create with the key does (see ``IdempotencyPolicy`` and docs/flows.md#idempotent-create).
    ``retain_for`` is how long the flow is kept once it has ended (completed, failed or cancelled) before
    it is purged with its tree: None means the engine default (``Engine.set_retain_for``, itself for ever
    unless set), ``KEEP_FOREVER`` for ever (docs/operations.md#retention).
    ``deadline`` cancels the flow, its child flows with it, once it passes: a duration from the create
    (a timedelta or seconds, more than 0) or an aware ``datetime`` still in the future; the outcome is
    then cancelled with the reason "deadline passed" (docs/waits.md#deadlines).
    """

    priority: int = 0
    fairness_key: str = ""
    fairness_weight: float = 0.0
    time_budget: timedelta | float | None = None
    notify_on_stop: bool = False
    delete_on_completion: bool = False
    baggage: Any = None
    thread_key: str = ""
    idempotency_key: str = ""
    idempotency_policy: IdempotencyPolicy = "return_existing"
    retain_for: timedelta | float | None = None
    deadline: timedelta | float | datetime | None = None

    def check(self) -> None:
        """Raise BadRequestError if a field is out of range or of the wrong type."""
        if (
            isinstance(self.priority, bool)
            or not isinstance(self.priority, int)
            or not 0 <= self.priority <= MAX_PRIORITY
        ):
            raise BadRequestError(
                f"priority must be an integer from 0 to {MAX_PRIORITY} (0 = engine default)"
            )
        if not isinstance(self.fairness_key, str):
            raise BadRequestError("fairness_key must be a string")
        check_text(self.fairness_key, "fairness_key")
        weight = self.fairness_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise BadRequestError("fairness_weight must be a finite number")
        if weight < 0:
            raise BadRequestError("fairness_weight must not be negative")
        if self.time_budget is not None:
            budget = to_seconds(self.time_budget, what="time_budget")
            if not 0 <= budget <= MAX_TIME_BUDGET:
                raise BadRequestError(f"time_budget must be from 0 to {MAX_TIME_BUDGET:g} seconds")
        if not isinstance(self.thread_key, str):
            raise BadRequestError("thread_key must be a string")
        key = self.idempotency_key
        if key:
            if not isinstance(key, str):
                raise BadRequestError("idempotency_key must be a string")
            if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
                raise BadRequestError(
                    f"idempotency_key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters long"
                )
            check_text(key, "idempotency_key")
            if self.thread_key:
                # A thread lives on its first flow's shard, a key on the shard its hash picks: a flow
                # cannot always be on both (docs/flows.md#idempotent-create).
                raise BadRequestError("idempotency_key cannot be combined with thread_key")
        elif not isinstance(key, str):
            raise BadRequestError("idempotency_key must be a string")
        policy = self.idempotency_policy
        if not isinstance(policy, str) or policy not in _IDEMPOTENCY_POLICIES:
            raise BadRequestError(
                "idempotency_policy must be one of "
                + ", ".join(repr(p) for p in sorted(_IDEMPOTENCY_POLICIES))
            )
        retention_seconds(self.retain_for)
        self.deadline_in()

    def deadline_in(self, now: datetime | None = None) -> float | None:
        """Seconds from ``now`` (default: this moment) until the deadline; None without one.

        BadRequestError for a deadline that is not a positive duration or an aware datetime after
        ``now``, or one more than a century ahead: a deadline already passed at create is refused, not
        met by a flow cancelled at birth (docs/waits.md#deadlines).
        """
        deadline = self.deadline
        if deadline is None:
            return None
        if isinstance(deadline, datetime):
            if deadline.tzinfo is None or deadline.utcoffset() is None:
                raise BadRequestError("deadline must be a timezone-aware datetime (or a duration)")
            seconds = (deadline - (now or datetime.now(UTC))).total_seconds()
            if seconds <= 0:
                raise BadRequestError(f"the deadline {deadline.isoformat()} has already passed")
        else:
            seconds = to_seconds(deadline, what="deadline")
            if seconds <= 0:
                raise BadRequestError("deadline must be a positive duration (or an aware datetime)")
        if seconds > MAX_DEADLINE:
            raise BadRequestError("deadline must lie at most a century ahead")
        return seconds


@dataclass
class FlowOutcome:
    """Where a flow stands: its status, its state (final when terminal) and why it stopped."""

    status: Status
    state: dict[str, Any]
    error: str = ""
    interrupt_payload: dict[str, Any] = field(default_factory=dict)
    cancel_reason: str = ""


@dataclass
class FlowStep:
    """One execution of one task in a flow, as history reports it."""

    step_key: str = ""
    step_id: int = 0
    step_depth: int = 0
    task_name: str = ""
    # The URL the task ran at (a task given by reference gets one derived at registration).
    task_url: str = ""
    attempt: int = 0
    predecessor_id: int = 0
    successor_id: int = 0
    prev_key: str = ""
    next_key: str = ""
    subgraph: bool = False
    sub_workflow_url: str = ""
    sub_workflow_name: str = ""
    # The child flow's key: whoever holds the parent's key may open its children (docs/design.md#keys).
    sub_flow_key: str = ""
    sub_history: list[FlowStep] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] = field(default_factory=dict)
    interrupt_payload: dict[str, Any] = field(default_factory=dict)
    status: Status = Status.PENDING
    parked: bool = False
    # The signal the step waited for (flow.wait_for_signal), "" for none.
    waited_signal: str = ""
    # When its timed interrupt or signal wait times out (or timed out); None without a timeout.
    timeout_at: datetime | None = None
    error: str = ""
    created_at: datetime = _EPOCH
    started_at: datetime | None = None
    updated_at: datetime = _EPOCH


@dataclass
class FlowSummary:
    """One row of ``Engine.list``: a flow without its state."""

    flow_key: str = ""
    thread_key: str = ""
    workflow_url: str = ""
    workflow_name: str = ""
    status: Status = Status.RUNNING
    task_name: str = ""
    error: str = ""
    cancel_reason: str = ""
    created_at: datetime = _EPOCH
    started_at: datetime | None = None
    updated_at: datetime = _EPOCH
    priority: int = 0
    fairness_key: str = ""
    subgraph: bool = False
    # The flow's distributed trace (32 hex digits), to look it up in a tracing backend; "" when the
    # engine that created it had no tracer (docs/observability.md#traces).
    trace_id: str = ""


_QUERY_TEXT_FIELDS = (
    "status",
    "workflow_url",
    "workflow_name",
    "thread_key",
    "task_name",
    "fairness_key",
    "cursor",
    "search",
)


@dataclass
class Query:
    """Filters for ``Engine.list`` and ``Engine.purge``; every empty field means no filter.

    ``older_than``/``newer_than`` are ages relative to now, matched against the flow's creation time.
    ``search`` is a literal substring matched against the workflow URL and name, the fairness key, the
    error and the cancel reason. ``limit`` 0 means 100; at most 1000.
    """

    status: str = ""
    workflow_url: str = ""
    workflow_name: str = ""
    thread_key: str = ""
    task_name: str = ""
    fairness_key: str = ""
    priority: int = 0
    older_than: timedelta | float | None = None
    newer_than: timedelta | float | None = None
    include_subgraphs: bool = False
    shard: int = 0
    cursor: str = ""
    search: str = ""
    limit: int = 0

    def check(self) -> None:
        """Raise BadRequestError if a filter is malformed."""
        for name in _QUERY_TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise BadRequestError(f"{name} must be a string")
            # A NUL cut SQLite's LIKE pattern short ("%\0x%" matched every flow, and purge deleted them
            # all) and PostgreSQL refuses it outright: no filter can contain one.
            check_text(value, name)
        if self.status and self.status not in {s.value for s in Status}:
            raise BadRequestError(f"unknown status filter {self.status!r}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0:
            raise BadRequestError("limit must be a non-negative integer")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int) or self.priority < 0:
            raise BadRequestError("priority filter must be a non-negative integer")
        if isinstance(self.shard, bool) or not isinstance(self.shard, int) or self.shard < 0:
            raise BadRequestError("shard filter must be a non-negative integer")
        for name in ("older_than", "newer_than"):
            value = getattr(self, name)
            if value is not None and to_seconds(value, what=name) < 0:
                raise BadRequestError(f"{name} must not be negative")


@dataclass
class ShardSummary:
    """Health and size of one shard, as ``Engine.shard_info`` reports it."""

    shard: int
    error: str = ""
    latency_ms: int = 0
    steps: int = 0
    flows: int = 0
