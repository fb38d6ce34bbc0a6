"""Serving: run an engine as a long-lived worker until it is told to stop, then drain it.

``Engine.serve``, ``SyncEngine.serve`` and the ``dwarf worker`` command share this module. A served engine
goes through four phases, each logged once on the ``dwarf.worker`` logger (silent until the application
configures logging; the command prints it on stderr):

- ``starting``: opening and migrating the shards, starting the workers;
- ``ready``: claiming and running steps;
- ``draining``: SIGTERM or SIGINT arrived (or ``stop`` was set): no new claims, running steps get
  ``drain_timeout`` seconds to finish, the leases of the rest are handed back;
- ``stopped``: the engine is shut down.

With a health port, a small HTTP server (asyncio streams, nothing beyond the standard library) answers
``GET /healthz`` with 200 while the process runs and ``GET /readyz`` with 200 only while the engine is
ready and every shard answered its last health check (the claimers' polls), 503 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypedDict, Unpack

from dwarf.errors import BadRequestError, EngineStateError

if TYPE_CHECKING:
    from dwarf.engine.engine import Engine

__all__ = [
    "HEALTH_PATH",
    "READY_PATH",
    "HealthServer",
    "Phase",
    "ServeOptions",
    "Service",
    "serve",
    "serving_logger",
    "stop_on_signals",
]

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
REQUEST_TIMEOUT = 5.0
"""Seconds a health client gets to send its request before the connection is closed."""
MAX_REQUEST_LINES = 100
"""Header lines read at most from one health request (a probe sends a handful)."""


class Phase(enum.StrEnum):
    """Where a served engine stands."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class ServeOptions(TypedDict, total=False):
    """The keywords of ``Engine.serve`` and ``SyncEngine.serve``.

    - ``drain_timeout``: seconds running steps get to finish after the stop (default: the engine's
      ``drain_timeout``, 10 s).
    - ``handle_signals``: stop on SIGTERM and SIGINT (default True; possible only in the main thread, and
      skipped elsewhere).
    - ``health_port``: answer ``/healthz`` and ``/readyz`` on this port (0 picks a free one; default none).
    - ``health_host``: the interface of the health server (default ``0.0.0.0``, so that an orchestrator's
      probes reach it).
    - ``logger``: where the phases are logged (default ``dwarf.worker``).
    """

    drain_timeout: float | None
    handle_signals: bool
    health_port: int | None
    health_host: str
    logger: logging.Logger | None


def serving_logger() -> logging.Logger:
    """The default logger of served engines, ``dwarf.worker``: silent unless the application configures
    logging (the library convention of a NullHandler)."""
    logger = logging.getLogger("dwarf.worker")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def _check_port(port: int | None) -> None:
    valid = port is None or (isinstance(port, int) and not isinstance(port, bool) and 0 <= port <= 65535)
    if not valid:
        raise BadRequestError(f"the health port must be a number from 0 to 65535, not {port!r}")


class Service:
    """One engine served as a worker: started, run until told to stop, drained; its phase is logged at
    each change and tells the health server whether the worker is ready (see the module docstring).

    ``run`` does it all; ``request_stop`` (on the service's event loop) ends it, as setting ``stop`` or a
    signal does.
    """

    def __init__(
        self, engine: Engine, stop: asyncio.Event | None = None, **options: Unpack[ServeOptions]
    ) -> None:
        unknown = set(options) - set(ServeOptions.__annotations__)
        if unknown:
            raise TypeError(f"serve() got an unknown option {sorted(unknown)[0]!r}")
        port = options.get("health_port")
        _check_port(port)
        self.engine = engine
        self.log = options.get("logger") or serving_logger()
        self.drain_timeout = options.get("drain_timeout")
        self.handle_signals = options.get("handle_signals", True)
        self.health = (
            None if port is None else HealthServer(self, options.get("health_host", "0.0.0.0"), port)
        )
        self._stop = stop if stop is not None else asyncio.Event()
        self._reason = "stop requested"
        self._phase: Phase | None = None

    @property
    def phase(self) -> Phase | None:
        """The current phase (None before ``run``)."""
        return self._phase

    def enter(self, phase: Phase, detail: str = "") -> None:
        """Move to ``phase`` and log it (one line; nothing when the phase does not change)."""
        if phase == self._phase:
            return
        self._phase = phase
        self.log.info("%s%s", phase.value, f": {detail}" if detail else "")

    def request_stop(self, reason: str = "stop requested") -> None:
        """Begin to drain (once started); the first reason given is the one logged."""
        if not self._stop.is_set():
            self._reason = reason
            self._stop.set()

    def readiness(self) -> tuple[bool, str]:
        """Whether the engine is ready for work, and a word on why not: the phase, or the shards that
        failed their last health check."""
        if self._phase != Phase.READY:
            return False, (self._phase or Phase.STARTING).value
        try:
            stores = self.engine.runtime.stores
        except EngineStateError:  # shut down behind the service's back
            return False, Phase.STOPPED.value
        down = [str(store.shard) for store in stores if not store.healthy]
        if down:
            return False, f"shard {', '.join(down)} unreachable"
        return True, Phase.READY.value

    async def run(self) -> None:
        """Start the engine (unless started), serve until stopped, then drain and shut it down.

        A failed startup, or a health port that cannot be bound, raises after logging ``stopped``;
        cancelling the call drains the engine before the cancellation goes on.
        """
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            self.request_stop(signal.Signals(signum).name)

        with stop_on_signals(on_signal, loop) if self.handle_signals else contextlib.nullcontext(False):
            settings = self.engine.settings
            shards = settings.get("num_shards", 1)
            self.enter(
                Phase.STARTING,
                f"{settings.get('workers')} workers, {shards} shard{'s' if shards != 1 else ''}",
            )
            try:
                if self.health is not None:
                    await self.health.start()
                await self.engine.startup()
            except BaseException:
                self.enter(Phase.STOPPED, "the engine did not start")
                if self.health is not None:
                    await self.health.close()
                raise
            where = f" (health checks on port {self.health.port})" if self.health is not None else ""
            self.enter(Phase.READY, f"claiming steps{where}")
            try:
                await self._stop.wait()
            except asyncio.CancelledError:
                self.request_stop("cancelled")
                raise
            finally:
                await self._drain(loop)

    async def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        timeout = self.engine.drain_timeout if self.drain_timeout is None else max(0.0, self.drain_timeout)
        running = self.engine.busy_workers
        self.enter(
            Phase.DRAINING,
            f"{self._reason}; {running} running step{'' if running == 1 else 's'} get up to {timeout:g} s",
        )
        began = loop.time()
        try:
            await self.engine.shutdown(drain_timeout=timeout)
        finally:
            self.enter(Phase.STOPPED, f"drained in {loop.time() - began:.1f} s")
            if self.health is not None:
                await self.health.close()


class HealthServer:
    """Answers ``GET /healthz`` (200 while the process runs) and ``GET /readyz`` (200 while the service is
    ready, 503 otherwise) over plain HTTP/1.1, one request per connection."""

    def __init__(self, service: Service, host: str = "0.0.0.0", port: int = 0) -> None:
        _check_port(port)
        self._service = service
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one picked when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen; OSError saying so when the port is taken or the address is not this machine's."""
        try:
            self._server = await asyncio.start_server(self._answer, self._host, self._port)
        except OSError as error:
            where = f"{self._host}:{self._port}"
            raise OSError(
                error.errno, f"cannot listen for health checks on {where}: {error.strerror}"
            ) from error

    async def close(self) -> None:
        """Stop listening (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await reader.readline()
                for _ in range(MAX_REQUEST_LINES):  # the headers, unread: nothing in them matters
                    if (await reader.readline()).strip() == b"":
                        break
            status, body = self._respond(request)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n"
            )
            method = request.split(b" ", 1)[0]
            writer.write(head.encode("ascii") + (b"" if method == b"HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # a client that went away or sent garbage gets nothing
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _respond(self, request: bytes) -> tuple[str, bytes]:
        parts = request.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in (HEALTH_PATH, READY_PATH):
            return "404 Not Found", b"not found\n"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", b"use GET\n"
        if target == HEALTH_PATH:
            return "200 OK", b"alive\n"
        ready, why = self._service.readiness()
        return ("200 OK" if ready else "503 Service Unavailable"), f"{why}\n".encode()


@contextlib.contextmanager
def stop_on_signals(
    stop: Callable[[int], None], loop: asyncio.AbstractEventLoop | None = None
) -> Iterator[bool]:
    """While inside, SIGTERM and SIGINT call ``stop(signum)`` instead of ending the process; yields
    whether the handlers are installed (only the main thread can install them). With ``loop`` they are
    the loop's handlers (called on it); without, plain ``signal`` handlers. The previous handlers come
    back on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    on_loop = loop is not None
    for signum in STOP_SIGNALS:
        if loop is not None and on_loop:
            try:
                loop.add_signal_handler(signum, stop, signum)
                continue
            except NotImplementedError:  # a loop without signal support: plain handlers hand over to it
                on_loop = False
        if loop is not None:
            signal.signal(signum, lambda received, _frame: loop.call_soon_threadsafe(stop, received))
        else:
            signal.signal(signum, lambda received, _frame: stop(received))
    try:
        yield True
    finally:
        for signum, handler in previous.items():
            if loop is not None and on_loop:
                loop.remove_signal_handler(signum)
            if handler is not None:
                signal.signal(signum, handler)


async def serve(engine: Engine, stop: asyncio.Event | None = None, **options: Unpack[ServeOptions]) -> None:
    """Start ``engine`` unless it is started, run it until SIGTERM or SIGINT arrives or ``stop`` is set,
    then drain it and shut it down (``Service.run``)."""
    await Service(engine, stop, **options).run()
