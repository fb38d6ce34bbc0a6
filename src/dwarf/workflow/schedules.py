"""Schedules as values: the ``Schedule`` record, when a schedule ticks, and which ticks a late engine runs.

A schedule starts a flow of one workflow URL at every **tick**: the times a cron expression names (in a
time zone), or the whole multiples of an interval since the Unix epoch. Tick times are kept as integer
milliseconds since the epoch (UTC): every engine formats one the same way, so the idempotency key built
from a schedule's name and its tick (``tick_key``) is the same on every replica, and the keyed create
makes exactly one flow per tick however many engines try (docs/schedules.md).

Cron expressions are parsed and evaluated by ``cronsim`` (a maintained, dependency-free evaluator that
follows Debian's cron, daylight-saving quirks included), imported on first use.
"""

from __future__ import annotations

import unicodedata
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal, get_args

from dwarf.errors import BadRequestError
from dwarf.workflow.durations import Duration, to_seconds
from dwarf.workflow.jsonvalue import check_json, check_text
from dwarf.workflow.records import FlowOptions

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "CATCH_UP_LIMIT",
    "LATE_GRACE",
    "MAX_SCHEDULE_NAME",
    "MIN_EVERY",
    "NEVER",
    "RESERVED_STATE_FIELDS",
    "CatchUp",
    "Schedule",
    "ScheduleTiming",
    "TickPlan",
    "check_catch_up",
    "check_schedule_name",
    "options_document",
    "options_from_document",
    "plan_ticks",
    "tick_key",
    "tick_text",
]

CatchUp = Literal["skip", "one", "all"]
"""Which due ticks an engine runs when it reaches a schedule late (after downtime, say):
``"skip"`` only the ticks at most ``LATE_GRACE`` late, ``"one"`` the most recent due tick alone, ``"all"``
every due tick (the ``CATCH_UP_LIMIT`` most recent). See docs/schedules.md#catching-up."""
_CATCH_UPS = frozenset(get_args(CatchUp))

MAX_SCHEDULE_NAME = 200
"""The longest schedule name, in characters (the name and a tick's time make each flow's idempotency key,
which may be 255 characters long)."""
MAX_CRON_LENGTH = 200
"""The longest cron expression, in characters."""
MIN_EVERY = 0.1
"""The shortest interval of an ``every`` schedule, in seconds."""
MAX_EVERY = 10 * 366 * 86400.0
"""The longest interval of an ``every`` schedule, in seconds (ten years: beyond it, a typo)."""
LATE_GRACE = 60.0
"""Seconds a tick may be late and still run under ``catch_up="skip"`` (a restart, a busy replica): older
due ticks count as missed."""
CATCH_UP_LIMIT = 1000
"""The most ticks one catch-up runs: ``"all"`` (and ``"skip"`` within its grace) run the most recent ones
and drop older ticks beyond this many, with a warning in the log."""
NEVER = 2**62
"""The next tick of a cron expression that fires no more (cronsim looks 50 years ahead): never due."""
RESERVED_STATE_FIELDS = ("scheduleName", "scheduledAt")
"""The fields the engine adds to the state of every scheduled flow: the schedule's name and the tick's
time (``tick_text``). A schedule's own state may not hold them."""

# @-shortcuts as Vixie cron knows them; cronsim takes only the five (or six) fields.
_SHORTCUTS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# cronsim ignores a datetime's fold: asked for the tick after 01:10 of the second (fold=1) hour of a
# fall-back night, it may hand back the first hour's 01:30, which is already past. Iterating on skips
# such a tick; it can happen only a few times in a row.
_FOLD_GUARD = 8


def tick_text(tick_ms: int) -> str:
    """A tick's time as ISO 8601 UTC text with milliseconds, ``2026-03-08T07:00:00.000Z`` (as JavaScript's
    ``toISOString`` writes it): one width for every tick, so that the texts sort as the times do."""
    moment = datetime.fromtimestamp(tick_ms // 1000, UTC).replace(tzinfo=None)
    return f"{moment.isoformat()}.{tick_ms % 1000:03d}Z"


def tick_key(name: str, tick_ms: int) -> str:
    """The idempotency key of the flow schedule ``name`` starts at a tick: ``schedule:NAME@TIME``."""
    return f"schedule:{name}@{tick_text(tick_ms)}"


def check_schedule_name(name: object) -> str:
    """``name`` if it can name a schedule (1 to 200 characters, no control characters, no surrounding
    spaces); BadRequestError otherwise."""
    if not isinstance(name, str) or not name:
        raise BadRequestError("the schedule name must be a non-empty string")
    if len(name) > MAX_SCHEDULE_NAME:
        raise BadRequestError(f"the schedule name must be at most {MAX_SCHEDULE_NAME} characters long")
    check_text(name, "the schedule name")
    if name != name.strip() or any(unicodedata.category(char) == "Cc" for char in name):
        raise BadRequestError("the schedule name must not hold control characters or surrounding spaces")
    return name


def check_catch_up(catch_up: object) -> CatchUp:
    """``catch_up`` if it is one of the policies; BadRequestError otherwise."""
    if not isinstance(catch_up, str) or catch_up not in _CATCH_UPS:
        raise BadRequestError("catch_up must be one of " + ", ".join(repr(c) for c in sorted(_CATCH_UPS)))
    return catch_up  # type: ignore[return-value]


def _zone(name: object) -> tzinfo:
    if not isinstance(name, str) or not name:
        raise BadRequestError("the time zone must be a non-empty string, such as 'UTC' or 'Europe/Paris'")
    if name == "UTC":
        return UTC  # no time zone database needed
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        check_text(name, "the time zone")
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise BadRequestError(
            f"unknown time zone {name!r}: give an IANA name such as 'Europe/Paris' (a system without a "
            "time zone database needs the tzdata package)"
        ) from error


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


@dataclass(frozen=True)
class ScheduleTiming:
    """When a schedule ticks: a cron expression in a time zone, or every ``every_ms`` milliseconds.

    Build one with ``of`` (which checks its arguments); the methods take and return ticks as integer
    milliseconds since the epoch.
    """

    cron: str = ""
    every_ms: int = 0
    timezone: str = "UTC"

    @classmethod
    def of(cls, cron: object, every: Duration | None, timezone: object) -> ScheduleTiming:
        """The timing of ``cron`` or ``every`` (exactly one of them) in ``timezone``; BadRequestError for
        an unparsable cron expression, one that never fires, an interval out of range, or an unknown zone."""
        if not isinstance(cron, str):
            raise BadRequestError("cron must be a string")
        if cron and every is not None:
            raise BadRequestError("give a schedule either cron or every, not both")
        zone = _zone(timezone)
        assert isinstance(timezone, str)
        if every is not None:
            seconds = to_seconds(every, what="every")
            if not MIN_EVERY <= seconds <= MAX_EVERY:
                raise BadRequestError(
                    f"every must be from {MIN_EVERY:g} seconds to {MAX_EVERY / 86400:g} days"
                )
            if timezone != "UTC":
                raise BadRequestError(
                    "timezone applies to cron schedules only: every ticks at whole multiples of the interval "
                    "since 1970-01-01 UTC (use cron for a time of day in a zone)"
                )
            return cls(every_ms=round(seconds * 1000), timezone=timezone)
        if not cron.strip():
            raise BadRequestError(
                'give a schedule either cron (such as "*/5 * * * *") or every (a timedelta)'
            )
        if len(cron) > MAX_CRON_LENGTH:
            raise BadRequestError(f"the cron expression must be at most {MAX_CRON_LENGTH} characters long")
        check_text(cron, "the cron expression")
        timing = cls(cron=cron, timezone=timezone)
        from cronsim import CronSimError

        try:
            first = timing.next_after(_ms(datetime.now(zone)))
        except CronSimError as error:
            raise BadRequestError(f"bad cron expression {cron!r}: {error}") from error
        if first == NEVER:
            raise BadRequestError(f"the cron expression {cron!r} never fires")
        return timing

    @property
    def every(self) -> timedelta | None:
        """The interval of an ``every`` schedule; None for a cron schedule."""
        return timedelta(milliseconds=self.every_ms) if self.every_ms else None

    def describe(self) -> str:
        """``every 5m``, ``every 0.2s``, or ``cron */5 * * * * (Europe/Paris)``, for people."""
        if self.every_ms:
            return f"every {_short_duration(self.every_ms)}"
        return f"cron {self.cron} ({self.timezone})"

    # --- tick arithmetic ---

    def next_after(self, ms: int) -> int:
        """The first tick strictly after ``ms`` (``NEVER`` when a cron expression fires no more)."""
        if self.every_ms:
            return (ms // self.every_ms + 1) * self.every_ms
        for tick in self._cron_ticks(ms, reverse=False):
            if tick > ms:
                return tick
        return NEVER

    def latest_at_or_before(self, ms: int) -> int | None:
        """The most recent tick at or before ``ms``; None if there is none (within cronsim's 50 years)."""
        if self.every_ms:
            return ms // self.every_ms * self.every_ms
        for tick in self._cron_ticks(ms + 1, reverse=True):
            if tick <= ms:
                return tick
        return None

    def ticks_between(self, first_ms: int, last_ms: int, limit: int) -> tuple[list[int], bool]:
        """The ticks from ``first_ms`` to ``last_ms`` (both included), oldest first: at most the ``limit``
        most recent, and whether older ones were left out."""
        if last_ms < first_ms or limit <= 0:
            return [], False
        if self.every_ms:
            every = self.every_ms
            low, high = -(-first_ms // every), last_ms // every
            count = high - low + 1
            if count <= 0:
                return [], False
            start = max(low, high - limit + 1)
            return [n * every for n in range(start, high + 1)], count > limit
        found: list[int] = []
        for tick in self._cron_ticks(last_ms + 1, reverse=True, guard=limit + _FOLD_GUARD):
            if tick < first_ms:
                break
            if tick > last_ms or (found and tick >= found[-1]):
                continue  # a fold repeat (see _FOLD_GUARD)
            if len(found) == limit:
                return found[::-1], True
            found.append(tick)
        return found[::-1], False

    def _cron_ticks(self, ms: int, *, reverse: bool, guard: int = _FOLD_GUARD) -> Iterator[int]:
        """Up to ``guard`` ticks from ``ms`` on (backwards with ``reverse``), from cronsim."""
        from cronsim import CronSim

        start = datetime.fromtimestamp(ms / 1000, UTC).astimezone(_zone(self.timezone))
        expression = _SHORTCUTS.get(self.cron.strip().lower(), self.cron)
        ticks = CronSim(expression, start, reverse=reverse)
        for _ in range(guard):
            try:
                yield _ms(next(ticks))
            except StopIteration:
                return


def _short_duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms / 1000:g}s"


@dataclass(frozen=True)
class TickPlan:
    """What an engine does with a due schedule: the ticks to start flows for (oldest first), the tick to
    wait for afterwards, and whether due ticks were passed over (skipped, or beyond the catch-up limit)."""

    fire: list[int]
    next_ms: int
    passed_over: bool


def plan_ticks(timing: ScheduleTiming, due_ms: int, now_ms: int, catch_up: CatchUp) -> TickPlan:
    """The plan for a schedule whose next tick ``due_ms`` came at or before ``now_ms`` (docs/schedules.md
    #catching-up): every tick from ``due_ms`` to now under ``"all"``, the most recent alone under
    ``"one"``, those at most ``LATE_GRACE`` late under ``"skip"``; at most ``CATCH_UP_LIMIT`` of them."""
    next_ms = timing.next_after(now_ms)
    if catch_up == "one":
        latest = timing.latest_at_or_before(now_ms)
        if latest is None or latest < due_ms:
            latest = due_ms
        return TickPlan([latest], next_ms, latest != due_ms)
    first = due_ms if catch_up == "all" else max(due_ms, now_ms - round(LATE_GRACE * 1000))
    fire, capped = timing.ticks_between(first, now_ms, CATCH_UP_LIMIT)
    return TickPlan(fire, next_ms, capped or first > due_ms)


# --- flow options a schedule carries ---

_REFUSED_OPTIONS = {
    "thread_key": "each tick starts a flow of its own thread",
    "idempotency_key": "the schedule keys each flow by its name and tick",
}
_FOREVER = "forever"
"""How a document holds ``timedelta.max`` (``KEEP_FOREVER``), which JSON's numbers cannot."""


def options_document(options: FlowOptions | None) -> dict[str, Any]:
    """The flow options a schedule stores (the fields that differ from the defaults, durations in seconds);
    BadRequestError for options a scheduled flow cannot have (see ``_REFUSED_OPTIONS``)."""
    if options is None:
        return {}
    if not isinstance(options, FlowOptions):
        raise BadRequestError("options must be a FlowOptions")
    options.check()
    for name, reason in _REFUSED_OPTIONS.items():
        if getattr(options, name):
            raise BadRequestError(f"a schedule's options cannot set {name}: {reason}")
    if options.idempotency_policy != "return_existing":
        reason = _REFUSED_OPTIONS["idempotency_key"]
        raise BadRequestError(f"a schedule's options cannot set idempotency_policy: {reason}")
    document: dict[str, Any] = {}
    for item in fields(FlowOptions):
        value = getattr(options, item.name)
        if item.default is not MISSING and value == item.default:
            continue
        if isinstance(value, timedelta):
            value = _FOREVER if value == timedelta.max else value.total_seconds()
        document[item.name] = value
    check_json(document, "options")
    return document


def options_from_document(document: dict[str, Any]) -> FlowOptions:
    """The FlowOptions a stored options document stands for (fields this version does not know are
    ignored: a row written by a newer one)."""
    known = {item.name for item in fields(FlowOptions)}
    values: dict[str, Any] = {
        name: timedelta.max if value == _FOREVER else value
        for name, value in document.items()
        if name in known
    }
    return FlowOptions(**values)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Schedule:
    """A durable schedule, as ``Engine.schedule`` and ``Engine.list_schedules`` report it.

    Exactly one of ``cron`` and ``every`` is set. ``next_tick`` is None while the schedule is paused (or a
    cron expression fires no more); ``last_tick`` is the latest tick an engine acted on, ``last_flow_key``
    the key of the latest flow a tick started, and ``last_error`` why the latest tick started none ("" when
    it did). Every flow starts with ``state`` plus ``scheduleName`` and ``scheduledAt`` (the tick's time).
    """

    name: str
    workflow_url: str
    cron: str = ""
    every: timedelta | None = None
    timezone: str = "UTC"
    catch_up: CatchUp = "skip"
    state: dict[str, Any] = field(default_factory=dict)
    options: FlowOptions = field(default_factory=FlowOptions)
    paused: bool = False
    next_tick: datetime | None = None
    last_tick: datetime | None = None
    last_flow_key: str = ""
    last_error: str = ""
    created_at: datetime = _EPOCH
    updated_at: datetime = _EPOCH

    @property
    def timing(self) -> str:
        """When it ticks, for people: ``every 5m`` or ``cron 0 3 * * * (Europe/Paris)``."""
        if self.every is not None:
            return ScheduleTiming(every_ms=round(self.every.total_seconds() * 1000)).describe()
        return ScheduleTiming(cron=self.cron, timezone=self.timezone).describe()
