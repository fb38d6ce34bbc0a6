"""Turning requests into engine queries and engine records into values the templates show.

Nothing here touches the network or the engine's internals: list filters parsed from a query string, JSON
text parsed from a form, and flow history flattened into table rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from dwarf.errors import BadRequestError, NotFoundError
from dwarf.workflow.records import FlowStep, Query
from dwarf.workflow.status import FLOW_STATUSES, TERMINAL_STATUSES

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_CURSOR_LENGTH",
    "MAX_FILTER_LENGTH",
    "MAX_PAGE_SIZE",
    "STEP_JSON_LIMIT",
    "ListFilters",
    "StepRow",
    "checked_cursor",
    "checked_key",
    "format_duration",
    "format_time",
    "parse_json_object",
    "pretty_json",
    "step_rows",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
STEP_JSON_LIMIT = 10_000
"""Characters of a step's input state or changes shown in the steps table (the flow's state is whole)."""

MAX_FILTER_LENGTH = 1000
"""Characters of one text filter of the list (names and searches are far shorter)."""
MAX_CURSOR_LENGTH = 1000
"""Characters of a list cursor; the engine's are short, opaque base64url text."""

# The shape of a flow or step key, "{shard}-{id}-{16-character token}", with bounded digit runs: what does
# not fit is answered 404 here, before the engine converts the numbers (a 5,000-digit id fails there).
_KEY_SHAPE = re.compile(r"[0-9]{1,9}-[0-9]{1,19}-[A-Za-z0-9_-]{16}")
_CURSOR_SHAPE = re.compile(r"[A-Za-z0-9_=-]+")

_STATUSES = tuple(status.value for status in FLOW_STATUSES)


@dataclass(frozen=True)
class ListFilters:
    """The flow list's filters as the query string carries them (``/flows?status=failed&task=Pay``).

    ``workflow`` is the graph's name, ``url`` the workflow URL the flow was started with.
    """

    status: str = ""
    workflow: str = ""
    url: str = ""
    thread: str = ""
    task: str = ""
    search: str = ""
    subgraphs: bool = False
    limit: int = DEFAULT_PAGE_SIZE

    statuses = _STATUSES

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> ListFilters:
        """Read the filters; BadRequestError for a limit that is not a whole number in range."""
        raw_limit = params.get("limit", "").strip()
        limit = DEFAULT_PAGE_SIZE
        if raw_limit:
            # Length first: int() refuses (ValueError) a text of more than about 4,300 digits.
            if (
                len(raw_limit) > len(str(MAX_PAGE_SIZE))
                or not raw_limit.isascii()
                or not raw_limit.isdigit()
                or not 1 <= int(raw_limit) <= MAX_PAGE_SIZE
            ):
                raise BadRequestError(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}")
            limit = int(raw_limit)
        thread = _filter_text(params, "thread")
        if thread and not _KEY_SHAPE.fullmatch(thread):
            raise BadRequestError("the thread filter must be a flow key or thread key")
        return cls(
            status=_filter_text(params, "status"),
            workflow=_filter_text(params, "workflow"),
            url=_filter_text(params, "url"),
            thread=thread,
            task=_filter_text(params, "task"),
            search=_filter_text(params, "search"),
            subgraphs=params.get("subgraphs", "") not in {"", "0", "false", "off"},
            limit=limit,
        )

    def query(self, cursor: str = "") -> Query:
        """The engine query of these filters, from ``cursor`` on."""
        return Query(
            status=self.status,
            workflow_name=self.workflow,
            workflow_url=self.url,
            thread_key=self.thread,
            task_name=self.task,
            search=self.search,
            include_subgraphs=self.subgraphs,
            cursor=cursor,
            limit=self.limit,
        )

    def query_string(self, cursor: str = "") -> str:
        """The list page's query string (``?status=failed``, or empty) for these filters and ``cursor``."""
        params: list[tuple[str, str]] = [
            (name, value)
            for name, value in (
                ("status", self.status),
                ("workflow", self.workflow),
                ("url", self.url),
                ("thread", self.thread),
                ("task", self.task),
                ("search", self.search),
            )
            if value
        ]
        if self.subgraphs:
            params.append(("subgraphs", "1"))
        if self.limit != DEFAULT_PAGE_SIZE:
            params.append(("limit", str(self.limit)))
        if cursor:
            params.append(("cursor", cursor))
        return "?" + urlencode(params) if params else ""

    @property
    def active(self) -> bool:
        """True when any filter narrows the list."""
        return bool(
            self.status
            or self.workflow
            or self.url
            or self.thread
            or self.task
            or self.search
            or self.subgraphs
        )


def _filter_text(params: Mapping[str, str], name: str) -> str:
    value = params.get(name, "").strip()
    if len(value) > MAX_FILTER_LENGTH:
        raise BadRequestError(f"the {name} filter is longer than {MAX_FILTER_LENGTH} characters")
    if any(char < " " for char in value):
        raise BadRequestError(f"the {name} filter contains a control character")
    return value


def checked_key(key: str, what: str = "flow") -> str:
    """``key`` when it has the shape of a flow or step key; NotFoundError (like an unknown key) if not."""
    if not _KEY_SHAPE.fullmatch(key):
        raise NotFoundError(f"{what} not found")
    return key


def checked_cursor(cursor: str) -> str:
    """``cursor`` when it looks like one the list page handed out (the engine reads what is inside);
    BadRequestError for anything else."""
    if cursor and (len(cursor) > MAX_CURSOR_LENGTH or not _CURSOR_SHAPE.fullmatch(cursor)):
        raise BadRequestError("malformed cursor: follow the list's own Next page link")
    return cursor


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """The JSON object typed into a form field; empty text is ``{}``.

    BadRequestError, naming ``what`` and where parsing stopped, for text that is not JSON or not an object.
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadRequestError(
            f"{what} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from error
    except ValueError as error:  # an integer longer than Python converts (sys.get_int_max_str_digits)
        raise BadRequestError(f"{what} holds a number with too many digits") from error
    except RecursionError as error:
        raise BadRequestError(f"{what} is nested too deeply") from error
    if not isinstance(value, dict):
        raise BadRequestError(f'{what} must be a JSON object, like {{"approved": true}}')
    return value


def pretty_json(value: Any, limit: int = 0) -> str:
    """``value`` as indented JSON, non-ASCII text kept readable; cut after ``limit`` characters (0: never)
    with a note saying how much was left out, so that one huge state cannot swell a page without bound."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    if limit and len(text) > limit:
        return f"{text[:limit]}\n… ({len(text) - limit:,} more characters not shown)"
    return text


def format_time(moment: datetime | None) -> str:
    """A UTC timestamp to the second, or an empty string."""
    if moment is None:
        return ""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def format_duration(seconds: float) -> str:
    """A short human duration: ``850 ms``, ``12.3 s``, ``4 min 5 s``, ``2 h 3 min``."""
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@dataclass(frozen=True)
class StepRow:
    """One step as a row of the steps table.

    ``depth`` is how deep in child flows the step sits (0: the flow itself). ``path`` names the child flows
    above it, outermost first, for the fork form's step labels.
    """

    step: FlowStep
    depth: int
    path: tuple[str, ...] = field(default_factory=tuple)

    @property
    def kind(self) -> str:
        """ "step" (a fan-out group's item says "group")."""
        return "step"

    @property
    def key(self) -> str:
        return self.step.step_key

    @property
    def status(self) -> str:
        status = str(self.step.status)
        if self.step.parked and self.step.status not in TERMINAL_STATUSES:
            return f"{status}, parked"
        return status

    @property
    def duration(self) -> str:
        """How long the step ran, for a finished step that started."""
        step = self.step
        if step.started_at is None or step.status not in TERMINAL_STATUSES:
            return ""
        return format_duration(max(0.0, (step.updated_at - step.started_at).total_seconds()))

    @property
    def child_title(self) -> str:
        """The child flow's workflow name for a step that ran one, else empty."""
        if not self.step.subgraph:
            return ""
        return self.step.sub_workflow_name or self.step.sub_workflow_url or "child flow"

    @property
    def child_key(self) -> str:
        """The child flow's key when the engine reports it (``FlowStep.sub_flow_key``), else empty."""
        return str(getattr(self.step, "sub_flow_key", "") or "")

    @property
    def label(self) -> str:
        """``#12 Approve (attempt 2)``, prefixed by the child flows it sits in."""
        text = f"#{self.step.step_id} {self.step.task_name}"
        if self.step.attempt > 0:
            text += f" (attempt {self.step.attempt})"
        return " / ".join([*self.path, text])

    @property
    def state_json(self) -> str:
        return pretty_json(self.step.state, STEP_JSON_LIMIT)

    @property
    def changes_json(self) -> str:
        return pretty_json(self.step.changes, STEP_JSON_LIMIT)

    @property
    def payload_json(self) -> str:
        payload = self.step.interrupt_payload
        return pretty_json(payload, STEP_JSON_LIMIT) if payload else ""


def step_rows(history: Sequence[FlowStep]) -> list[StepRow]:
    """History flattened in reading order: each step, then (indented) the child flow it ran.

    Walked with an explicit stack, like the engine's history, so that deep nesting never meets Python's
    recursion limit.
    """
    rows: list[StepRow] = []
    stack: list[tuple[Iterator[FlowStep], int, tuple[str, ...]]] = [(iter(history), 0, ())]
    while stack:
        steps, depth, path = stack[-1]
        step = next(steps, None)
        if step is None:
            stack.pop()
            continue
        row = StepRow(step, depth, path)
        rows.append(row)
        if step.sub_history:
            stack.append((iter(step.sub_history), depth + 1, (*path, row.child_title)))
    return rows
