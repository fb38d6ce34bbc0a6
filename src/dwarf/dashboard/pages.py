"""The dashboard's request handlers: the flow list, the flow page, the resume/cancel/fork actions, and the
schedules page with its pause/resume actions.

Every action is a POST answered by a redirect to a GET page (so reloading never repeats it); an action
the engine refuses re-renders the flow page with the message, the HTTP status of the error, and the
text the user typed. Keys travel in paths and form fields only; nothing here logs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from dwarf.dashboard.insight import (
    MAX_DIAGRAM_NODES,
    ActivityChart,
    DiagramGroup,
    Item,
    Timeline,
    activity_chart,
    count_steps,
    diagram,
    parse_expanded,
    table_items,
    timeline,
)
from dwarf.dashboard.views import (
    DEFAULT_PAGE_SIZE,
    ListFilters,
    StepRow,
    checked_cursor,
    checked_key,
    parse_json_object,
    pretty_json,
    step_rows,
)
from dwarf.engine import Engine
from dwarf.errors import BadRequestError, DwarfError, NotFoundError
from dwarf.workflow.progress import FlowActivity, FlowWait
from dwarf.workflow.records import FlowStep, FlowSummary, Query
from dwarf.workflow.status import FLOW_STATUSES, TERMINAL_STATUSES, Status

__all__ = ["NOTICES", "SCHEDULE_NOTICES", "Pages", "path_for"]

MAX_DIAGRAM_STEPS = MAX_DIAGRAM_NODES
"""Above this many boxes (a fan-out group is one box) the diagram is not drawn."""

MAX_TABLE_STEPS = 500
"""The steps table (and the fork form's choice of steps) shows at most this many steps."""

ACTIVITY_WINDOWS = {"1h": (3600.0, 30), "24h": (86400.0, 24), "7d": (7 * 86400.0, 28)}
"""The list page's overview windows: (seconds, slots of its chart)."""
DEFAULT_WINDOW = "24h"

BIG_FLOW_STEPS = 1000
"""A running flow of more steps than this reloads its page every 10 s instead of every 2 s."""

THREAD_SHOWN = 10
"""How many flows of the thread the flow page lists."""

_THREAD_SCAN_PAGES = 10
_THREAD_PAGE = 1000
_FIELD_LIMIT = 1_000_000  # characters of one form field; a resume payload is a small JSON object

NOTICES = {
    "resumed": "Resume recorded. The application's workers pick the flow up within about a second.",
    "cancelled": "Flow cancelled.",
    "forked": "This flow is a fork. The application's workers run it from the chosen step.",
}
"""What the page says after an action redirected to it (``?done=<name>``); unknown names say nothing."""

SCHEDULE_NOTICES = {
    "paused": "Schedule paused: its ticks start no flows until it is resumed.",
    "resumed": "Schedule resumed: it starts flows again from its next tick.",
}
"""What the schedules page says after its pause or resume action redirected to it."""

SCHEDULE_REFRESH_SECONDS = 10
"""How often the schedules page reloads itself (next and last ticks move) while a schedule is active."""


def path_for(request: Request, name: str, **params: str) -> str:
    """The path of route ``name``, under the prefix the app is mounted at (relative to the host)."""
    return str(request.scope.get("root_path", "")) + str(request.app.url_path_for(name, **params))


@dataclass
class FlowInputs:
    """What the user typed into the flow page's forms, echoed back when an action is refused."""

    payload: str = "{}"
    reason: str = ""
    overrides: str = "{}"
    step: str = ""


@dataclass
class FlowPage:
    """Everything the flow page shows."""

    key: str
    status: Status
    state_json: str
    error: str
    cancel_reason: str
    payload_json: str
    summary: FlowSummary | None
    thread: list[FlowSummary]
    thread_more: bool
    rows: list[StepRow]
    rows_cut: int
    mermaid: str
    items: list[Item] = field(default_factory=list)
    groups: list[DiagramGroup] = field(default_factory=list)
    diagram_nodes: int = 0
    waits: list[FlowWait] = field(default_factory=list)
    expanded: frozenset[int] = frozenset()
    step_count: int = 0
    inputs: FlowInputs = field(default_factory=FlowInputs)

    @property
    def is_child(self) -> bool:
        return self.summary is not None and self.summary.subgraph

    @property
    def can_resume(self) -> bool:
        return self.status == Status.INTERRUPTED and not self.is_child

    @property
    def can_cancel(self) -> bool:
        return self.status not in TERMINAL_STATUSES and not self.is_child

    @property
    def can_fork(self) -> bool:
        return self.status in TERMINAL_STATUSES and bool(self.rows)


class Pages:
    """The handlers, bound to the engine they query and the templates they render."""

    def __init__(self, engine: Engine, templates: Jinja2Templates) -> None:
        self._engine = engine
        self._templates = templates

    # --- rendering ---

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        return self._templates.TemplateResponse(request, name, context, status_code=status_code)

    def error_page(self, request: Request, error: DwarfError) -> Response:
        """The page of an error that leaves nothing else to show (unknown flow, bad filter)."""
        status = error.status_code if 400 <= error.status_code < 600 else 500
        if isinstance(error, NotFoundError):
            # One text for every way a key can be wrong, like the engine's own uniform error.
            title, message = "Not found", "No flow or step has this key: it is mistyped, unknown or deleted."
        else:
            title, message = "Cannot show this page", str(error)
        return self.render(request, "error.html", {"title": title, "message": message}, status)

    # --- pages ---

    async def home(self, request: Request) -> Response:
        return RedirectResponse(path_for(request, "flows"), status_code=303)

    async def flows(self, request: Request) -> Response:
        params = request.query_params
        filters = ListFilters.from_params(params)
        cursor = checked_cursor(params.get("cursor", ""))
        try:
            flows, next_cursor = await self._engine.list(filters.query(cursor))
        except (OverflowError, ValueError, RecursionError) as error:
            # What a cursor holds is the engine's business; one altered to hold numbers the database
            # cannot take must not pass for a server fault.
            if not cursor:
                raise
            raise BadRequestError("malformed cursor: follow the list's own Next page link") from error
        window = params.get("window", DEFAULT_WINDOW)
        if window not in ACTIVITY_WINDOWS:
            raise BadRequestError(f"window must be one of {', '.join(ACTIVITY_WINDOWS)}")
        activity: FlowActivity | None = None
        chart: ActivityChart | None = None
        if not cursor:  # the overview heads the first page only
            seconds, slots = ACTIVITY_WINDOWS[window]
            activity = await self._engine.activity(seconds, buckets=slots)
            chart = activity_chart(activity)
        return self.render(
            request,
            "flows.html",
            {
                "filters": filters,
                "flows": flows,
                "cursor": cursor,
                "next_cursor": next_cursor,
                "default_limit": DEFAULT_PAGE_SIZE,
                "activity": activity,
                "chart": chart,
                "window": window,
                "windows": list(ACTIVITY_WINDOWS),
                "flow_statuses": [str(status) for status in FLOW_STATUSES],
            },
        )

    async def flow(self, request: Request) -> Response:
        key = checked_key(request.path_params["key"])
        expanded = parse_expanded(request.query_params.get("expand", ""))
        page = await self._flow_page(key, expanded)
        notice = NOTICES.get(request.query_params.get("done", ""), "")
        return self._render_flow(request, page, notice=notice)

    async def timeline(self, request: Request) -> Response:
        key = checked_key(request.path_params["key"])
        expanded = parse_expanded(request.query_params.get("expand", ""))
        outcome = await self._engine.snapshot(key)
        history = await self._engine.history(key)
        summary, _, _ = await self._thread_of(key)
        items, cut = table_items(history, expanded=expanded, limit=MAX_TABLE_STEPS)
        chart: Timeline = timeline(items)
        return self.render(
            request,
            "timeline.html",
            {
                "key": key,
                "status": outcome.status,
                "summary": summary,
                "timeline": chart,
                "rows_cut": cut,
                "expanded": expanded,
                "refresh_seconds": _refresh_seconds(outcome.status, count_steps(history)),
            },
        )

    # --- actions ---

    async def resume(self, request: Request) -> Response:
        key = checked_key(request.path_params["key"])
        form = await _form(request)
        inputs = FlowInputs(payload=_field(form, "payload"))
        try:
            data = parse_json_object(inputs.payload, "The resume payload")
            await self._engine.resume(key, data)
        except DwarfError as error:
            return await self._refused(request, key, error, inputs)
        return self._back_to_flow(request, key, "resumed")

    async def cancel(self, request: Request) -> Response:
        key = checked_key(request.path_params["key"])
        form = await _form(request)
        inputs = FlowInputs(reason=_field(form, "reason"))
        try:
            await self._engine.cancel(key, inputs.reason.strip())
        except DwarfError as error:
            return await self._refused(request, key, error, inputs)
        return self._back_to_flow(request, key, "cancelled")

    async def fork(self, request: Request) -> Response:
        key = checked_key(request.path_params["key"])
        form = await _form(request)
        inputs = FlowInputs(overrides=_field(form, "overrides"), step=_field(form, "step"))
        try:
            overrides = parse_json_object(inputs.overrides, "The state overrides")
            # The step must belong to this flow's tree: a form cannot fork some other flow by its step key.
            await self._require_step_of_flow(key, checked_key(inputs.step, "step"))
            new_key = await self._engine.fork(inputs.step, overrides)
        except DwarfError as error:
            return await self._refused(request, key, error, inputs)
        return self._back_to_flow(request, new_key, "forked")

    # --- schedules ---

    async def schedules(self, request: Request) -> Response:
        notice = SCHEDULE_NOTICES.get(request.query_params.get("done", ""), "")
        return await self._render_schedules(request, notice=notice)

    async def pause_schedule(self, request: Request) -> Response:
        return await self._schedule_action(request, self._engine.pause_schedule, "paused")

    async def resume_schedule(self, request: Request) -> Response:
        return await self._schedule_action(request, self._engine.resume_schedule, "resumed")

    async def _schedule_action(
        self, request: Request, action: Callable[[str], Awaitable[None]], done: str
    ) -> Response:
        name = _field(await _form(request), "name")
        try:
            await action(name)
        except DwarfError as error:
            message = (
                "Not found: there is no schedule of that name."
                if isinstance(error, NotFoundError)
                else str(error)
            )
            status = error.status_code if 400 <= error.status_code < 600 else 500
            return await self._render_schedules(request, error=message, status_code=status)
        return RedirectResponse(path_for(request, "schedules") + f"?done={done}", status_code=303)

    async def _render_schedules(
        self, request: Request, *, notice: str = "", error: str = "", status_code: int = 200
    ) -> Response:
        found = await self._engine.list_schedules()
        active = any(not schedule.paused for schedule in found)
        return self.render(
            request,
            "schedules.html",
            {
                "schedules": found,
                "notice": notice,
                "error": error,
                "refresh_seconds": SCHEDULE_REFRESH_SECONDS if active else 0,
            },
            status_code,
        )

    # --- helpers ---

    async def _require_step_of_flow(self, key: str, step_key: str) -> None:
        rows = step_rows(await self._engine.history(key))
        if not any(row.key == step_key for row in rows):
            raise NotFoundError("step not found")

    def _back_to_flow(self, request: Request, key: str, done: str) -> Response:
        return RedirectResponse(path_for(request, "flow", key=key) + f"?done={done}", status_code=303)

    async def _refused(self, request: Request, key: str, error: DwarfError, inputs: FlowInputs) -> Response:
        """The flow page again, with the engine's (or the form's) complaint and the user's input."""
        try:
            page = await self._flow_page(key)
        except NotFoundError:
            return self.error_page(request, NotFoundError("flow not found"))
        page.inputs = inputs
        if isinstance(error, NotFoundError):
            message = "Not found: no step of this flow has that key."
        else:
            message = str(error)
        status = error.status_code if 400 <= error.status_code < 600 else 500
        return self._render_flow(request, page, error=message, status_code=status)

    def _render_flow(
        self, request: Request, page: FlowPage, *, notice: str = "", error: str = "", status_code: int = 200
    ) -> Response:
        return self.render(
            request,
            "flow.html",
            {
                "page": page,
                "notice": notice,
                "error": error,
                # A running flow's page reloads itself (dashboard.js skips that while a form holds input).
                "refresh_seconds": _refresh_seconds(page.status, page.step_count),
            },
            status_code,
        )

    async def _flow_page(self, key: str, expanded: frozenset[int] = frozenset()) -> FlowPage:
        engine = self._engine
        outcome = await engine.snapshot(key)
        history = await engine.history(key)
        summary, thread, thread_more = await self._thread_of(key)
        waits = [] if outcome.status in TERMINAL_STATUSES else await engine.why(key)
        items, cut = table_items(history, expanded=expanded, limit=MAX_TABLE_STEPS)
        drawing = diagram(history, expanded)
        shown = [item for item in items if isinstance(item, StepRow)]
        for item in items:
            if not isinstance(item, StepRow):
                shown.extend(item.shown)
        shown.sort(key=_reading_order(history))
        return FlowPage(
            key=key,
            status=outcome.status,
            state_json=pretty_json(outcome.state),
            error=outcome.error,
            cancel_reason=outcome.cancel_reason,
            payload_json=pretty_json(outcome.interrupt_payload) if outcome.interrupt_payload else "",
            summary=summary,
            thread=thread,
            thread_more=thread_more,
            rows=shown,
            rows_cut=cut,
            mermaid=drawing.mermaid,
            items=items,
            groups=drawing.groups,
            diagram_nodes=drawing.nodes,
            waits=waits,
            expanded=expanded,
            step_count=count_steps(history),
        )

    async def _thread_of(self, key: str) -> tuple[FlowSummary | None, list[FlowSummary], bool]:
        """The flow's own summary, the newest flows of its thread, and whether the thread has more.

        The engine lists flows by thread but has no look-up of one flow's summary (workflow name, current
        task, timestamps); any flow's key names its thread, so the summary is found among the thread's.
        """
        summary: FlowSummary | None = None
        shown: list[FlowSummary] = []
        more = False
        cursor = ""
        for _ in range(_THREAD_SCAN_PAGES):
            page, cursor = await self._engine.list(
                Query(thread_key=key, include_subgraphs=True, cursor=cursor, limit=_THREAD_PAGE)
            )
            for flow in page:
                if len(shown) < THREAD_SHOWN:
                    shown.append(flow)
                else:
                    more = True
                if summary is None and flow.flow_key == key:
                    summary = flow
            if not cursor or summary is not None:
                break
        return summary, shown, more or bool(cursor)


def _refresh_seconds(status: Status, steps: int) -> int:
    """How often the page of a flow reloads itself: every 2 s while it runs, every 10 s once it has more
    than BIG_FLOW_STEPS steps (each load reads them all); never once it stopped or is interrupted."""
    if status != Status.RUNNING:
        return 0
    return 2 if steps <= BIG_FLOW_STEPS else 10


def _reading_order(history: list[FlowStep]) -> Callable[[StepRow], int]:
    """Sort key of rows by their step's place in the history's reading order (the fork form's list)."""
    order = {row.key: index for index, row in enumerate(step_rows(history))}
    return lambda row: order.get(row.key, len(order))


async def _form(request: Request) -> FormData:
    return await request.form(max_files=0, max_fields=16, max_part_size=_FIELD_LIMIT)


def _field(form: FormData, name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else ""
