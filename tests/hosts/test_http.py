"""HTTPHost and task_app: remote tasks behave exactly like local ones.

Most tests reach the task app through httpx's ASGITransport (real HTTP semantics, no socket); the ones
about connections (timeouts, a vanished service, a caller that gives up) serve it with uvicorn on a free
port in a thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from dwarf import (
    END,
    BadRequestError,
    ConflictError,
    Flow,
    FlowOptions,
    Graph,
    NotFoundError,
    Status,
    current_baggage,
)
from dwarf.engine import Engine
from dwarf.engine.keys import TOKEN_LENGTH
from dwarf.hosts.http import ASGIApp, HTTPHost, RemoteTaskError, TaskServiceError, task_app
from dwarf.hosts.local import TaskHandler
from dwarf.testing import engine_factory
from dwarf.testing import test_name_for as isolated_name
from dwarf.workflow.flow import Park
from tests.engine.graphs import WAIT

BASE = "http://tasks.test"

HostMaker = Callable[..., HTTPHost]


def remote_graph(name: str, *nodes: str, base: str = BASE) -> Graph:
    """Task nodes served at ``{base}/{node}``, chained to END."""
    graph = Graph(name)
    for node in nodes:
        graph.add_task(node, f"{base}/{node}")
    graph.add_transition_chain(*nodes, END)
    return graph


@pytest_asyncio.fixture
async def sqlite_engine(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    """Like ``make_engine`` on SQLite only: for tests whose subject is the HTTP round trip."""
    async with engine_factory(isolated_name(request.node.nodeid), dsn="sqlite://:memory:") as make:
        yield make


@pytest_asyncio.fixture
async def asgi_host() -> AsyncIterator[HostMaker]:
    """Build HTTPHosts whose requests go straight into a task app (closing their clients afterwards)."""
    clients: list[httpx.AsyncClient] = []

    def make(
        handlers: Mapping[str, TaskHandler],
        *,
        graphs: Mapping[str, Graph] | None = None,
        served_graphs: Mapping[str, Graph] | None = None,
        app: ASGIApp | None = None,
    ) -> HTTPHost:
        served = app or task_app(handlers, graphs=served_graphs)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=served))
        clients.append(client)
        return HTTPHost(graphs=graphs, client=client)

    yield make
    for client in clients:
        await client.aclose()


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT)
        sock.close()


def engine_side_flow(**overrides: Any) -> Flow:
    """A Flow as the engine builds it for a step, for calling execute_task directly."""
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "flow_key": "1-1-k",
        "step_key": "1-2-s",
        "attempt": 0,
        "created_at": now,
        "updated_at": now,
        "step_created_at": now,
        "state": {},
    }
    fields.update(overrides)
    return Flow(**fields)


# --- flows end to end ---


async def test_a_linear_flow_of_remote_tasks_completes(make_engine: Any, asgi_host: HostMaker) -> None:
    async def greet(flow: Flow) -> None:
        flow.set("text", f"hello, {flow.get_str('name')}")

    def shout(flow: Flow) -> None:
        flow.set("text", flow.get_str("text").upper())

    host = asgi_host({"/Greet": greet, "Shout": shout}, graphs={"greet": remote_graph("G", "Greet", "Shout")})
    engine = await make_engine(host)
    _, outcome = await engine.run("greet", {"name": "ada"}, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"name": "ada", "text": "HELLO, ADA"}


async def test_deletions_and_clear_travel_back_as_deletions(sqlite_engine: Any, asgi_host: HostMaker) -> None:
    async def trim(flow: Flow) -> None:
        flow.delete("secret")

    async def reset(flow: Flow) -> None:
        kept = flow.get_int("keep")
        flow.clear()
        flow.set("kept", kept)

    host = asgi_host({"/Trim": trim, "/Reset": reset}, graphs={"f": remote_graph("F", "Trim", "Reset")})
    engine = await sqlite_engine(host)
    key, outcome = await engine.run("f", {"secret": "x", "keep": 7, "other": [1]}, timeout=WAIT)
    assert outcome.state == {"kept": 7}
    trim_step = (await engine.history(key))[0]
    assert trim_step.changes == {"secret": None}


async def test_goto_chosen_remotely_routes_the_flow(sqlite_engine: Any, asgi_host: HostMaker) -> None:
    graph = Graph("Goto")
    for node in ("A", "Jump", "Walk"):
        graph.add_task(node, f"{BASE}/{node}")
    graph.add_transition_goto("A", "Jump")
    graph.add_transition("A", "Walk")
    graph.add_transition("Jump", END)
    graph.add_transition("Walk", END)

    async def a(flow: Flow) -> None:
        flow.goto("Jump")

    async def mark(flow: Flow) -> None:
        flow.set("went", flow.step_key != "")

    host = asgi_host(
        {"/A": a, "/Jump": mark, "/Walk": lambda flow: flow.set("walked", True)}, graphs={"goto": graph}
    )
    engine = await sqlite_engine(host)
    key, outcome = await engine.run("goto", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert [step.task_name for step in await engine.history(key)] == ["A", "Jump"]


async def test_a_remote_retry_runs_the_task_again_with_the_next_attempt(
    sqlite_engine: Any, asgi_host: HostMaker
) -> None:
    attempts: list[int] = []

    async def flaky(flow: Flow) -> None:
        attempts.append(flow.attempt)
        flow.set("tries", flow.get_int("tries") + 1)
        if flow.attempt == 0 and flow.retry(0.01, 2.0, 1.0, 60.0):
            raise ConnectionError("upstream unavailable")

    host = asgi_host({"/Flaky": flaky}, graphs={"f": remote_graph("F", "Flaky")})
    engine = await sqlite_engine(host)
    _, outcome = await engine.run("f", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert attempts == [0, 1]
    assert outcome.state == {"tries": 2}


async def test_interrupt_and_resume_round_trip(make_engine: Any, asgi_host: HostMaker) -> None:
    async def approve(flow: Flow) -> None:
        flow.set("asked", True)
        answer = flow.interrupt({"question": "ship it?"})
        flow.set("approved", answer["yes"])

    host = asgi_host({"/Approve": approve}, graphs={"f": remote_graph("F", "Approve")})
    engine = await make_engine(host)
    key, parked = await engine.run("f", timeout=WAIT)
    assert parked.status == Status.INTERRUPTED
    assert parked.interrupt_payload == {"question": "ship it?"}
    await engine.resume(key, {"yes": True})
    outcome = await engine.wait(key, timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"asked": True, "approved": True}


async def test_a_remote_task_can_run_a_subgraph(sqlite_engine: Any, asgi_host: HostMaker) -> None:
    async def call(flow: Flow) -> None:
        flow.set("result", flow.subgraph("child", {"n": 20})["n"])

    async def double(flow: Flow) -> None:
        flow.set("n", flow.get_int("n") * 2)

    graphs = {"parent": remote_graph("P", "Call"), "child": remote_graph("C", "Double")}
    engine = await sqlite_engine(asgi_host({"/Call": call, "/Double": double}, graphs=graphs))
    _, outcome = await engine.run("parent", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state == {"result": 40}


async def test_a_remote_exception_fails_the_flow_with_its_text(
    sqlite_engine: Any, asgi_host: HostMaker
) -> None:
    async def charge(flow: Flow) -> None:
        flow.set("tried", True)
        raise ValueError("card declined")

    engine = await sqlite_engine(asgi_host({"/Charge": charge}, graphs={"f": remote_graph("F", "Charge")}))
    key, outcome = await engine.run("f", timeout=WAIT)
    assert (outcome.status, outcome.error) == (Status.FAILED, "card declined")
    assert (await engine.history(key))[0].changes == {"tried": True}


async def test_on_error_sees_the_status_code_of_a_remote_dwarf_error(
    sqlite_engine: Any, asgi_host: HostMaker
) -> None:
    graph = Graph("OnError")
    graph.add_task("Book", f"{BASE}/Book")
    graph.add_task("Handle", f"{BASE}/Handle")
    graph.add_transition("Book", END)
    graph.add_transition_on_error("Book", "Handle")
    graph.add_transition("Handle", END)

    async def book(flow: Flow) -> None:
        raise ConflictError("already booked")

    engine = await sqlite_engine(
        asgi_host({"/Book": book, "/Handle": lambda flow: None}, graphs={"f": graph})
    )
    _, outcome = await engine.run("f", timeout=WAIT)
    assert outcome.state["onErr"] == {"error": "already booked", "statusCode": 409}


async def test_the_remote_task_sees_the_flow_baggage(sqlite_engine: Any, asgi_host: HostMaker) -> None:
    def tenant(flow: Flow) -> None:
        flow.set("tenant", current_baggage()["tenant"])

    engine = await sqlite_engine(asgi_host({"/T": tenant}, graphs={"f": remote_graph("F", "T")}))
    _, outcome = await engine.run("f", options=FlowOptions(baggage={"tenant": "acme"}), timeout=WAIT)
    assert outcome.state == {"tenant": "acme"}


async def test_workflows_are_fetched_by_url_and_an_unknown_one_is_not_found(
    sqlite_engine: Any, asgi_host: HostMaker
) -> None:
    served = {"/graphs/f": remote_graph("F", "A")}
    host = asgi_host({"/A": lambda flow: flow.set("ran", True)}, served_graphs=served)
    engine = await sqlite_engine(host)
    _, outcome = await engine.run(f"{BASE}/graphs/f", timeout=WAIT)
    assert outcome.state == {"ran": True}
    with pytest.raises(NotFoundError):
        await engine.create(f"{BASE}/graphs/missing")
    with pytest.raises(NotFoundError):
        await engine.create("not-a-url")


# --- what execute_task leaves on the engine's Flow ---


async def test_sleep_and_retry_delays_arrive_exactly(asgi_host: HostMaker) -> None:
    async def pause(flow: Flow) -> None:
        flow.sleep(12.5)
        flow.retry(3.0, 2.0, 100.0, 0)

    host = asgi_host({"/P": pause})
    flow = engine_side_flow(attempt=2)
    await host.execute_task(f"{BASE}/P", flow)
    assert (flow.sleep_seconds, flow.retry_delay) == (12.5, 12.0)


async def test_a_remote_interrupt_parks_the_engine_flow_with_its_payload_and_earlier_changes(
    asgi_host: HostMaker,
) -> None:
    async def ask(flow: Flow) -> None:
        flow.set("draft", "v1")
        flow.interrupt({"q": 1})

    host = asgi_host({"/Ask": ask})
    flow = engine_side_flow(state={"a": 1})
    with pytest.raises(Park) as parked:
        await host.execute_task(f"{BASE}/Ask", flow)
    assert parked.value.kind == "interrupt"
    assert (flow.interrupt_payload, flow.changes) == ({"q": 1}, {"draft": "v1"})


async def test_a_remote_subgraph_request_parks_the_engine_flow(asgi_host: HostMaker) -> None:
    async def call(flow: Flow) -> None:
        flow.subgraph("child", {"x": 1})

    host = asgi_host({"/Call": call})
    flow = engine_side_flow()
    with pytest.raises(Park):
        await host.execute_task(f"{BASE}/Call", flow)
    assert flow.subgraph_request == ("child", {"x": 1})


async def test_the_task_side_sees_the_resume_data_state_and_earlier_changes(asgi_host: HostMaker) -> None:
    seen: list[Any] = []

    async def ask(flow: Flow) -> None:
        seen.append((flow.interrupt({}), flow.snapshot(), flow.attempt, flow.flow_key))

    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    flow = engine_side_flow(
        state={"a": 1, "b": 2},
        changes={"b": None, "c": 3},
        resume_data={"ok": True},
        attempt=3,
        created_at=created,
    )
    await asgi_host({"/Ask": ask}).execute_task(f"{BASE}/Ask", flow)
    assert seen == [({"ok": True}, {"a": 1, "c": 3}, 3, "1-1-k")]


async def test_a_remote_exception_arrives_as_remote_task_error(asgi_host: HostMaker) -> None:
    async def broken(flow: Flow) -> None:
        raise KeyError("sku")

    with pytest.raises(RemoteTaskError, match="'sku'") as raised:
        await asgi_host({"/B": broken}).execute_task(f"{BASE}/B", engine_side_flow())
    assert raised.value.remote_type == "KeyError"
    assert not hasattr(raised.value, "status_code")


async def test_the_host_headers_go_with_every_request() -> None:
    seen: list[str] = []
    tasks = task_app({"/A": lambda flow: None})

    async def recording_app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope["headers"]).get(b"authorization", b"").decode())
        await tasks(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=recording_app)) as client:
        host = HTTPHost(client=client, headers={"authorization": "Bearer t0ken"})
        await host.execute_task(f"{BASE}/A", engine_side_flow())
    assert seen == ["Bearer t0ken"]


# --- the service failing ---


async def test_a_task_path_the_service_does_not_serve_fails_the_attempt(asgi_host: HostMaker) -> None:
    with pytest.raises(TaskServiceError, match="HTTP 404") as raised:
        await asgi_host({}).execute_task(f"{BASE}/Nothing", engine_side_flow())
    assert raised.value.status_code == 404


async def test_a_server_error_fails_the_flow(sqlite_engine: Any, asgi_host: HostMaker) -> None:
    async def crashing_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"overloaded"})

    host = asgi_host({}, graphs={"f": remote_graph("F", "A")}, app=crashing_app)
    engine = await sqlite_engine(host)
    _, outcome = await engine.run("f", timeout=WAIT)
    assert outcome.status == Status.FAILED
    assert "HTTP 503: overloaded" in outcome.error


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"changes": 1}', b'{"park": {"kind": "nap"}}', b'{"error": {}}']
)
async def test_a_malformed_answer_fails_the_attempt(asgi_host: HostMaker, body: bytes) -> None:
    async def odd_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with pytest.raises(TaskServiceError, match="malformed"):
        await asgi_host({}, app=odd_app).execute_task(f"{BASE}/A", engine_side_flow())


async def test_a_task_url_that_is_not_http_is_a_bad_request(asgi_host: HostMaker) -> None:
    with pytest.raises(Exception, match="http"):
        await asgi_host({}).execute_task("charge", engine_side_flow())


# --- task_app on its own ---


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/A", b"{", 400),
        ("POST", "/A", b'{"protocol": 99}', 400),
        ("POST", "/A", b'{"protocol": 1, "flowKey": 5}', 400),
        ("GET", "/A", b"", 405),
        ("POST", "/graphs/g", b"{}", 405),
        ("GET", "/elsewhere", b"", 404),
    ],
)
async def test_task_app_answers_requests_it_cannot_serve_with_a_client_error(
    method: str, path: str, body: bytes, status: int
) -> None:
    app = task_app({"/A": lambda flow: None}, graphs={"/graphs/g": remote_graph("G", "A")})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        response = await client.request(method, f"{BASE}{path}", content=body)
    assert response.status_code == status
    assert isinstance(response.json()["detail"], str)


async def test_task_app_refuses_a_body_over_its_limit() -> None:
    app = task_app({"/A": lambda flow: None}, max_body_bytes=100)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        response = await client.post(f"{BASE}/A", content=b"x" * 101)
    assert response.status_code == 413


def test_task_app_rejects_two_handlers_for_one_path() -> None:
    with pytest.raises(Exception, match="two tasks"):
        task_app({"/A": lambda flow: None, "A": lambda flow: None})


# --- over real HTTP (uvicorn) ---


async def test_a_flow_runs_against_a_served_task_app(make_engine: Any) -> None:
    async def approve(flow: Flow) -> None:
        flow.set("approved", flow.interrupt({"q": "ok?"})["yes"])

    with serving(task_app({"/Approve": approve, "/Count": lambda f: f.set("n", 1)})) as base:
        host = HTTPHost(graphs={"f": remote_graph("F", "Approve", "Count", base=base)})
        engine = await make_engine(host)
        key, parked = await engine.run("f", timeout=WAIT)
        assert parked.status == Status.INTERRUPTED
        await engine.resume(key, {"yes": True})
        outcome = await engine.wait(key, timeout=WAIT)
        await engine.shutdown()
    assert outcome.state == {"approved": True, "n": 1}


async def test_a_request_that_outlasts_the_timeout_fails_the_attempt() -> None:
    release = threading.Event()

    def slow(flow: Flow) -> None:
        release.wait(WAIT)

    with serving(task_app({"/Slow": slow})) as base:
        host = HTTPHost(timeout=0.2)
        try:
            with pytest.raises(TaskServiceError, match="timed out") as raised:
                await host.execute_task(f"{base}/Slow", engine_side_flow())
        finally:
            release.set()
            await host.aclose()
    assert raised.value.status_code == 504


async def test_an_unreachable_service_fails_the_attempt() -> None:
    with socket.socket() as sock:  # a port nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    host = HTTPHost()
    try:
        with pytest.raises(TaskServiceError, match="failed"):
            await host.execute_task(f"http://127.0.0.1:{port}/A", engine_side_flow())
    finally:
        await host.aclose()


async def test_a_step_over_its_time_budget_cancels_the_remote_async_handler(sqlite_engine: Any) -> None:
    cancelled = threading.Event()

    async def endless(flow: Flow) -> None:
        try:
            await asyncio.sleep(WAIT)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with serving(task_app({"/Endless": endless})) as base:
        engine = await sqlite_engine(HTTPHost(graphs={"f": remote_graph("F", "Endless", base=base)}))
        _, outcome = await engine.run("f", options=FlowOptions(time_budget=0.3), timeout=WAIT)
        assert outcome.status == Status.FAILED
        assert "time budget" in outcome.error
        assert await asyncio.to_thread(cancelled.wait, WAIT)
        await engine.shutdown()


# --- answers over max_response_bytes ---


class CountingStream(httpx.AsyncByteStream):
    """An answer body of ``chunks`` chunks of ``size`` bytes, made as they are read, counting how many
    were read."""

    def __init__(self, chunks: int, size: int = 1000, chunk: bytes | None = None) -> None:
        self.chunks = chunks
        self.chunk = chunk if chunk is not None else b"x" * size
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.read += 1
            yield self.chunk


def mock_host(answer: Callable[[httpx.Request], httpx.Response], **settings: Any) -> HTTPHost:
    """An HTTPHost whose requests are answered by ``answer`` in-process (httpx's MockTransport)."""
    return HTTPHost(client=httpx.AsyncClient(transport=httpx.MockTransport(answer)), **settings)


def chunked_app(status: int, total_bytes: int, chunk_bytes: int = 64 * 1024) -> ASGIApp:
    """An app answering ``total_bytes`` of filler in chunks made as they are sent (no Content-Length)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": status, "headers": []})
        chunk = b"x" * chunk_bytes
        for _ in range(total_bytes // chunk_bytes):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


async def test_an_answer_over_the_cap_fails_the_step_without_being_read_whole(sqlite_engine: Any) -> None:
    # 50 MB streamed by a real server against a 1 MiB cap: reading stops at the cap.
    cap = 1024 * 1024
    with serving(chunked_app(200, 50 * 1000 * 1000)) as base:
        host = HTTPHost(graphs={"f": remote_graph("F", "Big", base=base)}, max_response_bytes=cap)
        engine = await sqlite_engine(host)
        key, outcome = await engine.run("f", timeout=WAIT)
        [step] = await engine.history(key)
        await engine.shutdown()
    assert outcome.status == Status.FAILED
    assert outcome.error == f"POST {base}/Big: the task endpoint's answer exceeded {cap} bytes"
    assert step.error == outcome.error


async def test_an_answer_over_the_cap_is_a_task_error_that_on_error_routes(sqlite_engine: Any) -> None:
    graph = Graph("OnError")
    graph.add_task("Big", f"{BASE}/Big")
    graph.add_task("Handle", f"{BASE}/Handle")
    graph.add_transition("Big", END)
    graph.add_transition_on_error("Big", "Handle")
    graph.add_transition("Handle", END)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/Big":
            return httpx.Response(200, stream=CountingStream(chunks=10))
        return httpx.Response(200, json={"changes": {"handled": True}})

    engine = await sqlite_engine(mock_host(answer, graphs={"f": graph}, max_response_bytes=5000))
    _, outcome = await engine.run("f", timeout=WAIT)
    assert outcome.status == Status.COMPLETED
    assert outcome.state["handled"] is True
    assert outcome.state["onErr"] == {
        "error": f"POST {BASE}/Big: the task endpoint's answer exceeded 5000 bytes",
        "statusCode": 502,
    }


async def test_a_content_length_over_the_cap_is_refused_before_reading_the_body() -> None:
    body = CountingStream(chunks=3)
    host = mock_host(
        lambda request: httpx.Response(200, headers={"content-length": "3000"}, stream=body),
        max_response_bytes=2999,
    )
    with pytest.raises(TaskServiceError, match="answer exceeded 2999 bytes"):
        await host.execute_task(f"{BASE}/A", engine_side_flow())
    assert body.read == 0


async def test_a_body_longer_than_its_content_length_claims_is_cut_at_the_cap() -> None:
    body = CountingStream(chunks=1000)
    host = mock_host(
        lambda request: httpx.Response(200, headers={"content-length": "10"}, stream=body),
        max_response_bytes=5000,
    )
    with pytest.raises(TaskServiceError, match="answer exceeded 5000 bytes"):
        await host.execute_task(f"{BASE}/A", engine_side_flow())
    assert body.read == 6


async def test_an_answer_of_exactly_the_cap_is_read() -> None:
    answer = b'{"changes":{"n":1}}'

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=CountingStream(chunks=1, chunk=answer))

    flow = engine_side_flow()
    await mock_host(respond, max_response_bytes=len(answer)).execute_task(f"{BASE}/A", flow)
    assert flow.changes == {"n": 1}
    with pytest.raises(TaskServiceError, match=f"exceeded {len(answer) - 1} bytes"):
        await mock_host(respond, max_response_bytes=len(answer) - 1).execute_task(f"{BASE}/A", flow)


async def test_a_graph_answer_over_the_cap_fails_the_load() -> None:
    body = CountingStream(chunks=1000)
    host = mock_host(lambda request: httpx.Response(200, stream=body), max_response_bytes=5000)
    with pytest.raises(TaskServiceError, match="the graph endpoint's answer exceeded 5000 bytes"):
        await host.load_graph(f"{BASE}/graphs/big")
    assert body.read == 6


async def test_a_graph_answer_over_the_cap_makes_create_fail(sqlite_engine: Any) -> None:
    graph_json = remote_graph("G", "A").to_json().encode()
    host = mock_host(lambda request: httpx.Response(200, content=graph_json), max_response_bytes=100)
    engine = await sqlite_engine(host)
    with pytest.raises(TaskServiceError, match="exceeded 100 bytes"):
        await engine.create(f"{BASE}/graphs/g")


async def test_an_error_answer_quotes_at_most_500_characters_of_its_body() -> None:
    host = mock_host(lambda request: httpx.Response(500, content=b"y" * 100_000))
    with pytest.raises(TaskServiceError) as raised:
        await host.execute_task(f"{BASE}/A", engine_side_flow())
    assert str(raised.value) == f"POST {BASE}/A answered HTTP 500: {'y' * 500}…"
    assert raised.value.status_code == 500


async def test_an_error_answer_is_read_only_as_far_as_its_detail_needs() -> None:
    body = CountingStream(chunks=1_000_000)  # a gigabyte, were it read
    host = mock_host(lambda request: httpx.Response(503, stream=body))
    with pytest.raises(TaskServiceError, match="answered HTTP 503"):
        await host.execute_task(f"{BASE}/A", engine_side_flow())
    assert body.read <= 66


async def test_an_error_answer_over_a_real_connection_is_cut_short(sqlite_engine: Any) -> None:
    with serving(chunked_app(500, 50 * 1000 * 1000)) as base:
        engine = await sqlite_engine(HTTPHost(graphs={"f": remote_graph("F", "Big", base=base)}))
        _, outcome = await engine.run("f", timeout=WAIT)
        await engine.shutdown()
    assert outcome.status == Status.FAILED
    assert outcome.error == f"POST {base}/Big answered HTTP 500: {'x' * 500}…"


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "1000"])
def test_max_response_bytes_must_be_a_positive_int(value: Any) -> None:
    with pytest.raises(BadRequestError, match="max_response_bytes"):
        HTTPHost(max_response_bytes=value)


# --- keys are bearer secrets ---


def _echo_app() -> ASGIApp:
    """A careless task endpoint: it answers HTTP 500 with the request it got (flowKey, stepKey and all)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


def _token(key: str) -> str:
    return key[-TOKEN_LENGTH:]


def _correlation_id(key: str) -> str:
    return key[: -TOKEN_LENGTH - 1]


async def test_an_endpoint_echoing_its_request_leaks_no_token_into_errors_or_spans(
    make_engine: Any, asgi_host: HostMaker
) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    graph = Graph("Echo")
    graph.add_task("Echo", f"{BASE}/Echo")
    graph.add_task("Handle", f"{BASE}/Handle")
    graph.add_transition("Echo", END)
    graph.add_transition_on_error("Echo", "Handle")  # Handle echoes too, and fails the flow
    graph.add_transition("Handle", END)
    engine = await make_engine(
        asgi_host({}, graphs={"f": graph}, app=_echo_app()), tracer_provider=tracer_provider
    )
    key, outcome = await engine.run("f", timeout=WAIT)
    steps = await engine.history(key)
    await engine.shutdown()
    tracer_provider.shutdown()

    tokens = [_token(key)] + [_token(step.step_key) for step in steps]
    assert outcome.status == Status.FAILED
    assert f'"flowKey":"{_correlation_id(key)}-[redacted]"' in outcome.error
    assert [step.task_name for step in steps] == ["Echo", "Handle"]
    assert all("[redacted]" in step.error for step in steps)
    assert "[redacted]" in outcome.state["onErr"]["error"]
    spans = exporter.get_finished_spans()
    assert [span.status.status_code for span in spans if span.name.startswith("task")] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
    ]
    exported = [span.to_json() for span in spans]
    stored = [outcome.error, json.dumps(outcome.state), *(step.error for step in steps)]
    for token in tokens:
        assert not any(token in text for text in stored + exported)


async def test_a_remote_error_quoting_the_flow_key_is_stored_without_its_token(
    sqlite_engine: Any, asgi_host: HostMaker
) -> None:
    async def careless(flow: Flow) -> None:
        raise ValueError(f"cannot charge flow {flow.flow_key} (step {flow.step_key})")

    engine = await sqlite_engine(asgi_host({"/Charge": careless}, graphs={"f": remote_graph("F", "Charge")}))
    key, outcome = await engine.run("f", timeout=WAIT)
    [step] = await engine.history(key)
    flow_id, step_id = _correlation_id(key), _correlation_id(step.step_key)
    assert outcome.error == f"cannot charge flow {flow_id}-[redacted] (step {step_id}-[redacted])"
    assert step.error == outcome.error
