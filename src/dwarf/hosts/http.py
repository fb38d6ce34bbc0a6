"""HTTPHost runs tasks behind HTTP endpoints; ``task_app`` is the ASGI application that serves them.

The engine's side (``HTTPHost``) POSTs each step's flow carrier as JSON to the task URL (an absolute
``http(s)://`` URL in the graph). The task side (``task_app``) rebuilds a real ``Flow`` from it, runs the
handler registered for the request path, and answers with what the handler did: its changes, its control
signals (goto, sleep, retry, a park for an interrupt or a subgraph) and the error it raised. HTTPHost
replays that on the engine's ``Flow``, so a remote task behaves exactly like a local one: the engine cannot
tell the difference. ``current_baggage()`` works on the task side too (the baggage travels along).

The wire format (JSON, camelCase like the graph JSON)::

    request  {"protocol": 1, "flowKey", "stepKey", "attempt", "createdAt", "updatedAt", "stepCreatedAt",
              "state", "changes", "resumeData", "subgraphResult", "subgraphError", "baggage"}
    answer   {"changes": {...}, "appends": {field: [items]}, "goto": str | null, "sleepSeconds": float,
              "retryDelaySeconds": float | null,
              "park": null | {"kind": "interrupt", "payload": {...}}
                          | {"kind": "subgraph", "url": str, "input": {...}},
              "error": null | {"message": str, "type": str, "statusCode": int | null}}

A task that raises still answers HTTP 200 (its changes and a requested retry count, as they do locally);
anything but 200 means the service itself failed, and fails the attempt with a ``TaskServiceError``.

Answers are read as a stream and never past ``max_response_bytes``: a service that answers too much (a bug,
or an endpoint that is not a dwarf task) fails the attempt instead of filling the engine's memory.

``task_app`` is a plain ASGI callable rather than a Starlette application: it serves one POST route per
task and a GET per graph, which needs no router, and a task service should not have to install the web
extra. It runs under any ASGI server (uvicorn, hypercorn) and mounts inside Starlette or FastAPI apps.

httpx (the ``http`` extra) is imported only when an HTTPHost is built, so the task side needs nothing but
dwarf itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import weakref
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from dwarf.errors import BadRequestError, DwarfError
from dwarf.hosts.local import EngineLinks, SyncRunner, TaskHandler
from dwarf.hosts.relay import SignalRelay
from dwarf.workflow.baggage import baggage_scope, current_baggage
from dwarf.workflow.durations import to_seconds
from dwarf.workflow.flow import Flow, Park
from dwarf.workflow.graph import Graph
from dwarf.workflow.jsonvalue import check_json

if TYPE_CHECKING:
    import httpx

    from dwarf.engine.engine import Engine

__all__ = ["ASGIApp", "HTTPHost", "RemoteTaskError", "TaskServiceError", "task_app"]

PROTOCOL_VERSION = 1
_JSON = "application/json"

DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""16 MiB, the same as ``task_app``'s default request limit: an answer carries a step's changes, which
are at most about as large as the state a request carries. Far above any sane answer (a few KiB), and
still small next to the memory of a process that holds several such answers at once."""
_ERROR_BODY_BYTES = 64 * 1024
"""How much of an answer that is not HTTP 200 is read: enough for a JSON ``detail``, nothing more."""
_ERROR_DETAIL_CHARS = 500
"""How much of an error answer's body an error message quotes."""

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RemoteTaskError(Exception):
    """The task raised on the task side; the message is its error text.

    ``remote_type`` names the exception class. When the remote exception had an integer ``status_code``
    (every DwarfError does) this error carries it too, so an onError handler sees the same ``statusCode``
    it would see for a local task.
    """

    def __init__(self, message: str, *, remote_type: str = "", status_code: int | None = None) -> None:
        super().__init__(message)
        self.remote_type = remote_type
        if status_code is not None:
            self.status_code = status_code


class TaskServiceError(DwarfError):
    """The task service was unreachable, timed out, or answered outside the protocol (not HTTP 200, or a
    malformed body); ``status_code`` is the HTTP status it answered, 504 for a timeout, else 502."""

    status_code = 502

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


def _require_httpx() -> Any:
    try:
        import httpx
    except ImportError as error:  # pragma: no cover - the dev environment has the extra
        raise ImportError(
            "HTTPHost needs httpx: install the http extra, pip install 'dwarf-workflow[http]'"
        ) from error
    return httpx


def _is_http_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _error_text(error: BaseException) -> str:
    # The same rule as the engine's: the message, or the type's name when there is none.
    return str(error) or type(error).__name__


# --- the engine's side ---


class HTTPHost:
    """A Host whose tasks are HTTP endpoints (served by ``task_app`` or anything speaking its protocol).

    ``graphs`` maps workflow URLs to graphs known up front; any other ``http(s)://`` workflow URL is
    fetched with GET and read with ``Graph.from_json`` (404 means "no such workflow"). ``timeout`` bounds
    each request (seconds or a timedelta); by default there is none of its own, and the step's time
    budget bounds the call (the engine cancels the request when the budget runs out). ``headers`` go
    with every request (e.g. an authorization token). ``client`` replaces the host's own
    ``httpx.AsyncClient`` (for custom transports or TLS settings; the caller closes it). ``relay`` links
    engines of several processes, as for ``LocalHost``. ``max_response_bytes`` caps every answer (task
    outcomes and graphs, counted after content decoding): a longer one fails the attempt (or the graph
    load) with a ``TaskServiceError`` and is not read further.
    """

    def __init__(
        self,
        *,
        graphs: Mapping[str, Graph] | None = None,
        timeout: timedelta | float | None = None,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        relay: SignalRelay | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._httpx = _require_httpx()
        if (
            not isinstance(max_response_bytes, int)
            or isinstance(max_response_bytes, bool)
            or max_response_bytes < 1
        ):
            raise BadRequestError(f"max_response_bytes must be a positive int, not {max_response_bytes!r}")
        self._max_response_bytes = max_response_bytes
        self._graphs = dict(graphs or {})
        for url, graph in self._graphs.items():
            if not isinstance(graph, Graph):
                raise BadRequestError(f"graphs[{url!r}] is a {type(graph).__name__}, not a Graph")
        self._timeout: float | None = None
        if timeout is not None:
            self._timeout = to_seconds(timeout, what="timeout")
            if self._timeout <= 0:
                raise BadRequestError("the timeout must be positive")
        self._headers = dict(headers or {})
        self._client = client
        # An AsyncClient belongs to the event loop it first ran on; engines on other loops get their own.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._links = EngineLinks(relay)

    def _http(self) -> httpx.AsyncClient:
        if self._client is not None:
            return self._client
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._httpx.AsyncClient(timeout=self._httpx.Timeout(self._timeout))
            self._clients[loop] = client
        return client

    def _request_options(self) -> dict[str, Any]:
        # The host's own client already has the timeout; a caller's client gets it per request.
        if self._client is not None and self._timeout is not None:
            return {"timeout": self._timeout}
        return {}

    async def _send(
        self, method: str, url: str, what: str, headers: dict[str, str], **options: Any
    ) -> _Answer:
        """Make a request and read its answer, at most ``max_response_bytes`` of it (``what`` names the
        endpoint in the error for a longer one)."""
        errors = self._httpx
        try:
            async with self._http().stream(
                method, url, headers={**self._headers, **headers}, **options, **self._request_options()
            ) as response:
                status = response.status_code
                if status != 200:
                    # Only the detail matters: read a little, whatever the service meant to send.
                    body, _ = await _read_capped(response, _ERROR_BODY_BYTES)
                    return _Answer(status, body, response.reason_phrase)
                limit = self._max_response_bytes
                too_long = _declares_more(response.headers.get("content-length", ""), limit)
                if not too_long:
                    # Content-Length is only a claim (and absent when chunked): count what arrives.
                    body, too_long = await _read_capped(response, limit)
                if too_long:
                    raise TaskServiceError(f"{method} {url}: the {what}'s answer exceeded {limit} bytes")
                return _Answer(status, body, response.reason_phrase)
        except errors.TimeoutException as error:
            raise TaskServiceError(f"{method} {url} timed out", status_code=504) from error
        except errors.HTTPError as error:
            raise TaskServiceError(f"{method} {url} failed: {_error_text(error)}") from error

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop (engines do this when the last one on the loop
        stops; a client passed in stays open)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # --- Host ---

    async def load_graph(self, workflow_url: str) -> Graph | None:
        known = self._graphs.get(workflow_url)
        if known is not None:
            return known
        if not _is_http_url(workflow_url):
            return None
        answer = await self._send("GET", workflow_url, "graph endpoint", headers={"accept": _JSON})
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise TaskServiceError(
                f"GET {workflow_url} answered HTTP {answer.status}: {answer.detail()}",
                status_code=answer.status,
            )
        return Graph.from_json(answer.body)

    def serves(self, task_url: str) -> bool | None:
        """False for a URL that is not http(s), which ``execute_task`` refuses (so ``create`` refuses the
        graph); None otherwise: whether the service answers is known only when the task runs."""
        return None if _is_http_url(task_url) else False

    async def execute_task(self, task_url: str, flow: Flow) -> None:
        if not _is_http_url(task_url):
            raise BadRequestError(f"HTTPHost runs tasks at http(s) URLs, not at {task_url!r}")
        body = json.dumps(_request_document(flow, current_baggage()), separators=(",", ":"), allow_nan=False)
        answer = await self._send(
            "POST",
            task_url,
            "task endpoint",
            content=body.encode(),
            headers={"content-type": _JSON, "accept": _JSON},
        )
        if answer.status != 200:
            raise TaskServiceError(
                f"POST {task_url} answered HTTP {answer.status}: {answer.detail()}", status_code=answer.status
            )
        try:
            outcome = _TaskOutcome.parse(answer.body)
        except ValueError as error:
            raise TaskServiceError(f"POST {task_url} answered a malformed outcome: {error}") from error
        outcome.replay_on(flow)

    async def signal_peers(self, op: str, payload: bytes) -> None:
        await self._links.publish(op, payload)

    async def engine_started(self, engine: Engine) -> None:
        await self._links.attach(engine)

    async def engine_stopped(self, engine: Engine) -> None:
        try:
            await self._links.detach(engine)
        finally:
            if not self._links.loop_in_use(asyncio.get_running_loop()):
                await self.aclose()


def _declares_more(content_length: str, limit: int) -> bool:
    """Whether a Content-Length header announces more than ``limit`` bytes (a malformed one does not)."""
    digits = content_length.strip()
    if not (digits.isascii() and digits.isdigit()):
        return False
    digits = digits.lstrip("0") or "0"
    # Compared as text first: int() refuses texts of more than 4,300 digits.
    return len(digits) > len(str(limit)) or int(digits) > limit


async def _read_capped(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The first ``limit`` bytes of a streamed body, and whether there was more (left unread)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            chunks.append(chunk[: len(chunk) - (size - limit)])
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


@dataclass(frozen=True)
class _Answer:
    """A read answer: its status and (capped) body."""

    status: int
    body: bytes
    reason: str

    def detail(self) -> str:
        """What an error message quotes of the answer: its JSON ``detail``, or the start of its body.

        Capped, because the body is whatever the service sent: an error text is stored with the flow.
        """
        try:
            document = json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            document = None
        if isinstance(document, dict) and isinstance(document.get("detail"), str):
            text = str(document["detail"])
        else:
            text = self.body.decode("utf-8", "replace")
        if len(text) > _ERROR_DETAIL_CHARS:
            return text[:_ERROR_DETAIL_CHARS] + "…"
        return text or self.reason


def _flow_internals(flow: Flow) -> dict[str, Any]:
    # The Flow keeps what the task side needs to rebuild it (the step's input state apart from the
    # changes, the resume data, the child's result) in private slots with no public reader: the carrier is
    # meant to be built by the engine only. Reading them here is the price of not widening the Flow API.
    return {
        "state": flow._state,
        "resumeData": flow._resume_data,
        "subgraphResult": flow._subgraph_result,
        "subgraphError": flow._subgraph_error,
    }


def _request_document(flow: Flow, baggage: Any) -> dict[str, Any]:
    return {
        "protocol": PROTOCOL_VERSION,
        "flowKey": flow.flow_key,
        "stepKey": flow.step_key,
        "attempt": flow.attempt,
        "createdAt": flow.created_at.isoformat(),
        "updatedAt": flow.updated_at.isoformat(),
        "stepCreatedAt": flow.step_created_at.isoformat(),
        "changes": flow.changes,
        "baggage": baggage,
        **_flow_internals(flow),
    }


@dataclass(frozen=True)
class _TaskOutcome:
    """What a task did on the task side, as the answer document carries it."""

    changes: dict[str, Any]
    appends: dict[str, list[Any]]
    goto: str | None
    sleep_seconds: float
    retry_delay: float | None
    park: dict[str, Any] | None
    error: dict[str, Any] | None

    @classmethod
    def parse(cls, body: bytes) -> _TaskOutcome:
        """Read an answer document; ValueError when it breaks the protocol."""
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as unreadable:
            raise ValueError(f"not JSON ({unreadable})") from None
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        changes = document.get("changes", {})
        # A service older than Flow.append sends no appends.
        appends = document.get("appends") or {}
        goto = document.get("goto")
        sleep = document.get("sleepSeconds", 0)
        retry = document.get("retryDelaySeconds")
        park = document.get("park")
        error = document.get("error")
        if not isinstance(changes, dict):
            raise ValueError("changes is not an object")
        if not isinstance(appends, dict) or not all(isinstance(items, list) for items in appends.values()):
            raise ValueError("appends is not an object of arrays")
        if goto is not None and (not isinstance(goto, str) or not goto):
            raise ValueError("goto is not a node name")
        if not _is_finite_number(sleep):
            raise ValueError("sleepSeconds is not a number")
        if retry is not None and not _is_finite_number(retry):
            raise ValueError("retryDelaySeconds is not a number")
        if park is not None:
            _check_park(park)
        if error is not None and (not isinstance(error, dict) or not isinstance(error.get("message"), str)):
            raise ValueError("error has no message")
        if park is not None and error is not None:
            raise ValueError("a task cannot both park and fail")
        return cls(changes, appends, goto, float(sleep), None if retry is None else float(retry), park, error)

    def replay_on(self, flow: Flow) -> None:
        """Do to the engine's flow what the task did to its copy, then end as the task ended: return,
        raise its error, or park (``Flow.interrupt``/``Flow.subgraph`` raise Park)."""
        for key, value in self.changes.items():
            # The answer repeats changes the flow already holds (from a run before a park): setting them
            # again is harmless, and deletions are recorded the same way the task recorded them.
            if value is None:
                flow.delete(key)
            else:
                flow.set(key, value)
        for key, items in self.appends.items():
            flow.append(key, *items)
        if self.goto is not None:
            flow.goto(self.goto)
        if self.sleep_seconds:
            flow.sleep(self.sleep_seconds)
        if self.retry_delay is not None:
            # Multiplier 1, no cap and no horizon: the flow schedules exactly the delay the task computed.
            flow.retry(self.retry_delay, 1.0, 0.0, 0.0)
        if self.error is not None:
            code = self.error.get("statusCode")
            raise RemoteTaskError(
                self.error["message"],
                remote_type=str(self.error.get("type") or ""),
                status_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            )
        if self.park is None:
            return
        if self.park["kind"] == "interrupt":
            flow.interrupt(self.park["payload"])
        else:
            flow.subgraph(self.park["url"], self.park["input"])
        # Both calls raise Park on a flow that has not parked yet; returning means the task side parked a
        # step the engine already resumed, which only a service out of step with the protocol does.
        raise TaskServiceError("the task service parked a step that was already resumed")


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_park(park: Any) -> None:
    if not isinstance(park, dict):
        raise ValueError("park is not an object")
    kind = park.get("kind")
    if kind == "interrupt":
        if not isinstance(park.get("payload"), dict):
            raise ValueError("an interrupt park needs a payload object")
    elif kind == "subgraph":
        if not isinstance(park.get("url"), str) or not isinstance(park.get("input"), dict):
            raise ValueError("a subgraph park needs a url and an input object")
    else:
        raise ValueError(f"unknown park kind {kind!r}")


# --- the task side ---


def task_app(
    handlers: Mapping[str, TaskHandler],
    *,
    graphs: Mapping[str, Graph] | None = None,
    max_threads: int = 16,
    max_body_bytes: int = 16 * 1024 * 1024,
) -> ASGIApp:
    """An ASGI application serving task handlers (POST) and, optionally, graphs (GET) by path.

    ``handlers`` maps paths (``"/charge"``; a missing leading slash is added) to sync or async task
    handlers; a graph's task URL is then the service's address plus the path. ``graphs`` maps paths to
    graphs that ``HTTPHost`` can load by URL. Sync handlers run in a pool of ``max_threads`` threads.
    A request whose client disconnects (e.g. the engine's time budget ran out) cancels an async handler.

    Serve it with any ASGI server, e.g. ``uvicorn.run(task_app({"/charge": charge}), port=8001)``.
    """
    return _TaskApp(handlers, graphs or {}, max_threads, max_body_bytes)


def _route_table(routes: Mapping[str, Any], what: str) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for path, target in routes.items():
        if not isinstance(path, str) or not path:
            raise BadRequestError(f"a {what} path must be a non-empty string, not {path!r}")
        normalized = path if path.startswith("/") else "/" + path
        if normalized in table:
            raise BadRequestError(f"two {what}s are registered at {normalized!r}")
        table[normalized] = target
    return table


class _BadRequest(Exception):
    """A request the task side cannot read: answered with HTTP 400 (or ``status``)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Disconnected(Exception):
    """The client went away before the request was read: there is nobody to answer."""


class _TaskApp:
    def __init__(
        self,
        handlers: Mapping[str, TaskHandler],
        graphs: Mapping[str, Graph],
        max_threads: int,
        max_body_bytes: int,
    ) -> None:
        self._handlers = _route_table(handlers, "task")
        for path, handler in self._handlers.items():
            if not callable(handler):
                raise BadRequestError(f"the handler at {path!r} is not callable")
        self._graphs: dict[str, Graph] = _route_table(graphs, "graph")
        for path, graph in self._graphs.items():
            if not isinstance(graph, Graph):
                raise BadRequestError(f"the graph at {path!r} is a {type(graph).__name__}, not a Graph")
        self._threads = SyncRunner(max_threads, "dwarf-http-task")
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: nothing to serve
            return
        path = self._local_path(scope)
        method = scope["method"]
        try:
            if method == "POST" and path in self._handlers:
                await self._run_task(self._handlers[path], receive, send)
            elif method == "GET" and path in self._graphs:
                await _send_body(send, 200, self._graphs[path].to_json().encode())
            elif path in self._handlers or path in self._graphs:
                allow = "POST" if path in self._handlers else "GET"
                await _send_json(send, 405, {"detail": f"use {allow}"}, [(b"allow", allow.encode())])
            else:
                await _send_json(send, 404, {"detail": f"nothing is served at {path}"})
        except _BadRequest as error:
            await _send_json(send, error.status, {"detail": str(error)})
        except _Disconnected:
            return

    def _local_path(self, scope: Scope) -> str:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        # Mounted under a prefix, servers differ on whether "path" still includes it.
        if path not in self._handlers and path not in self._graphs and root and path.startswith(root):
            return path[len(root) :] or "/"
        return path

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._threads.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body_bytes:
                raise _BadRequest(f"the request is larger than {self._max_body_bytes} bytes", 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _run_task(self, handler: TaskHandler, receive: Receive, send: Send) -> None:
        flow, baggage = _flow_from_document(await self._read_body(receive))
        running = asyncio.ensure_future(self._run_handler(handler, flow, baggage))
        disconnected = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({running, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnected.cancel()
            if not running.done():
                # The caller gave up (its time budget ran out, or it stopped): nobody reads the answer.
                running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await disconnected
        if running.cancelled():
            return
        await _send_json(send, 200, running.result())

    async def _run_handler(self, handler: TaskHandler, flow: Flow, baggage: Any) -> dict[str, Any]:
        park: Park | None = None
        error: Exception | None = None
        try:
            with baggage_scope(baggage):
                if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                    type(handler).__call__
                ):
                    result = handler(flow)
                    if inspect.isawaitable(result):
                        await result
                else:
                    await self._threads.call(handler, flow)
        except Park as parked:
            park = parked
        except Exception as raised:
            error = raised
        return _outcome_document(flow, park, error)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _flow_from_document(body: bytes) -> tuple[Flow, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise _BadRequest(f"the request is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise _BadRequest("the request is not a JSON object")
    if document.get("protocol") != PROTOCOL_VERSION:
        raise _BadRequest(f"unsupported protocol {document.get('protocol')!r} (expected {PROTOCOL_VERSION})")
    try:
        flow = Flow(
            flow_key=_field(document, "flowKey", str),
            step_key=_field(document, "stepKey", str),
            attempt=_field(document, "attempt", int),
            created_at=_timestamp(document, "createdAt"),
            updated_at=_timestamp(document, "updatedAt"),
            step_created_at=_timestamp(document, "stepCreatedAt"),
            state=_field(document, "state", dict),
            changes=_optional_object(document, "changes"),
            resume_data=_optional_object(document, "resumeData"),
            subgraph_result=_optional_object(document, "subgraphResult"),
            subgraph_error=document.get("subgraphError") or "",
        )
    except (BadRequestError, TypeError) as error:
        raise _BadRequest(f"the request's flow is malformed: {error}") from None
    return flow, document.get("baggage")


def _field(document: dict[str, Any], name: str, kind: type) -> Any:
    value = document.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _BadRequest(f"the request's {name} is missing or not a {kind.__name__}")
    return value


def _optional_object(document: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = document.get(name)
    if value is not None and not isinstance(value, dict):
        raise _BadRequest(f"the request's {name} is not an object")
    return value


def _timestamp(document: dict[str, Any], name: str) -> datetime:
    try:
        value = datetime.fromisoformat(_field(document, name, str))
    except ValueError:
        raise _BadRequest(f"the request's {name} is not an ISO 8601 timestamp") from None
    if value.tzinfo is None:
        raise _BadRequest(f"the request's {name} has no time zone")
    return value


def _outcome_document(flow: Flow, park: Park | None, error: Exception | None) -> dict[str, Any]:
    park_document: dict[str, Any] | None = None
    if park is not None:
        subgraph = flow.subgraph_request
        if park.kind == "interrupt" and flow.interrupt_payload is not None:
            park_document = {"kind": "interrupt", "payload": flow.interrupt_payload}
        elif park.kind == "subgraph" and subgraph is not None:
            park_document = {"kind": "subgraph", "url": subgraph[0], "input": subgraph[1]}
        else:
            # Park raised by hand, without Flow.interrupt or Flow.subgraph: nothing says what to wait for.
            error = RuntimeError("the task raised Park without interrupting or starting a subgraph")
    error_document: dict[str, Any] | None = None
    if error is not None:
        code = getattr(error, "status_code", None)
        error_document = {
            "message": _error_text(error),
            "type": type(error).__name__,
            "statusCode": code if isinstance(code, int) and not isinstance(code, bool) else None,
        }
    return {
        "changes": flow.changes,
        "appends": flow.appends,
        "goto": flow.goto_target,
        "sleepSeconds": flow.sleep_seconds,
        "retryDelaySeconds": flow.retry_delay,
        "park": park_document,
        "error": error_document,
    }


async def _send_json(
    send: Send, status: int, document: Mapping[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    check_json(document, "the answer")
    body = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    await _send_body(send, status, body, headers)


async def _send_body(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", _JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
