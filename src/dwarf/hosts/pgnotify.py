"""PgNotifyRelay: engine signals between replicas over PostgreSQL LISTEN/NOTIFY.

Each relay keeps two dedicated autocommit connections outside the engine's pools: one that LISTENs on the
channel for as long as the relay runs, and one that publishes. Every notification carries the publishing
relay's random replica id, so a relay ignores its own. Publishing never waits on the database: signals go
into a small queue in which identical signals coalesce (a burst of doorbells for one shard is sent once),
and a background task sends the queue in one statement per round trip, with a bounded timeout.

A lost connection (a PostgreSQL restart, a terminated backend, a network cut) is logged and re-opened with
a growing back-off; the engines keep working meanwhile on their polling fallback, and signals queued in
the gap are sent once the publishing connection is back (or dropped when the queue is full).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from dwarf._extras import missing_extra

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
except ImportError as error:  # the core install has no PostgreSQL driver
    raise missing_extra("PgNotifyRelay", "postgres", error) from error

from dwarf.errors import BadRequestError
from dwarf.hosts.relay import Backoff, DeliverSignal, RelayError, check_positive_seconds, relay_logger

__all__ = ["MAX_NOTIFY_BYTES", "PgNotifyRelay"]

# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more (in the default build).
MAX_NOTIFY_BYTES = 7999
# Distinct signals waiting to be sent; beyond it new ones are dropped (they are hints, and the queue only
# grows while the database is unreachable).
MAX_PENDING = 1024
_MAX_IDENTIFIER_BYTES = 63

_NEW, _STARTED, _CLOSED = "new", "started", "closed"


def _resolve_dsn(dsn: str) -> str:
    """The database to LISTEN in: with a ``%d`` shard placeholder, the first shard's."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise BadRequestError("PgNotifyRelay needs a PostgreSQL DSN")
    if urlsplit(dsn).scheme.startswith("sqlite"):
        raise BadRequestError("PgNotifyRelay needs a PostgreSQL DSN, not a SQLite one")
    return dsn.replace("%d", "1")


def _describe(dsn: str) -> str:
    """Where a DSN points, without its password (for error messages)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "the configured database"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    database = params.get("dbname") or params.get("user") or "?"
    return f"database {database!r} at {host}:{port}"


async def _close_quietly(conn: psycopg.AsyncConnection[Any] | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()


async def _finish(task: asyncio.Task[None], timeout: float, log: logging.Logger) -> None:
    """Give ``task`` up to ``timeout`` seconds to end, then cancel it and wait for it.

    asyncio.wait neither raises the task's error nor swallows a cancellation of the caller.
    """
    if timeout > 0:
        await asyncio.wait({task}, timeout=timeout)
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is not None:
        log.debug("signal relay task ended with %r", task.exception())


class PgNotifyRelay:
    """Relay engine signals through PostgreSQL LISTEN/NOTIFY on ``channel``.

    ``dsn`` names the database every replica of the deployment can reach; it is usually the engine's
    own DSN. NOTIFY is scoped to one database, so all replicas must use the same one: with a ``%d``
    shard placeholder the relay uses the first shard's database (``%d`` replaced by ``1``). Replicas
    that use different channels do not hear each other, which lets deployments share a database.

    ``start`` opens both connections and raises ``RelayError`` when it cannot (a wrong DSN fails the
    engine's startup instead of leaving it silently deaf). After that the relay never raises for
    transport trouble. Connections are named ``{application_name}-listen-{replica_id}`` and
    ``...-publish-...`` in ``pg_stat_activity``.

    Example::

        engine = Engine(host=RelayHost(proxy, PgNotifyRelay(dsn)), dsn=dsn)
    """

    def __init__(
        self,
        dsn: str,
        channel: str = "dwarf_signals",
        *,
        application_name: str = "dwarf-relay",
        connect_timeout: float = 5.0,
        publish_timeout: float = 2.0,
        keepalive: float = 10.0,
        max_backoff: float = 5.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self._dsn = _resolve_dsn(dsn)
        if not isinstance(channel, str) or not channel or len(channel.encode()) > _MAX_IDENTIFIER_BYTES:
            raise BadRequestError(f"the channel must be a name of 1 to {_MAX_IDENTIFIER_BYTES} bytes")
        check_positive_seconds(
            connect_timeout=connect_timeout,
            publish_timeout=publish_timeout,
            keepalive=keepalive,
            max_backoff=max_backoff,
        )
        self._channel = channel
        self._replica_id = secrets.token_hex(8)
        self._application_name = application_name
        self._connect_timeout = float(connect_timeout)
        self._publish_timeout = float(publish_timeout)
        self._keepalive = float(keepalive)
        self._max_backoff = float(max_backoff)
        self._log = logger if logger is not None else relay_logger()
        self._state = _NEW
        self._closing = False
        self._deliver: DeliverSignal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publisher: psycopg.AsyncConnection[Any] | None = None
        # An insertion-ordered set: a signal already waiting is not queued twice.
        self._pending: dict[str, None] = {}
        self._overflowed = False
        self._wakeup: asyncio.Event | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._sender_task: asyncio.Task[None] | None = None

    @property
    def dsn(self) -> str:
        """The DSN the relay connects to (``%d`` resolved to the first shard)."""
        return self._dsn

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel."""
        return self._channel

    @property
    def replica_id(self) -> str:
        """This relay's random id, carried in its notifications so it can ignore its own."""
        return self._replica_id

    @property
    def listen_application_name(self) -> str:
        """The ``application_name`` of the listening connection (to find it in ``pg_stat_activity``)."""
        return self._connection_name("listen")

    def _connection_name(self, role: str) -> str:
        return f"{self._application_name}-{role}-{self._replica_id}"

    # --- lifecycle ---

    async def start(self, deliver: DeliverSignal) -> None:
        """Connect, LISTEN, and from now on await ``deliver(op, payload)`` for other replicas' signals."""
        if self._state != _NEW:
            raise RelayError("a relay starts once; create a new one for another engine")
        try:
            listener = await self._open_listener()
        except Exception as error:
            raise RelayError(
                f"PgNotifyRelay cannot listen on channel {self._channel!r} in {_describe(self._dsn)}: {error}"
            ) from error
        try:
            self._publisher = await self._connect("publish")
        except Exception as error:
            await _close_quietly(listener)
            raise RelayError(f"PgNotifyRelay cannot connect to {_describe(self._dsn)}: {error}") from error
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._state = _STARTED
        self._listener_task = asyncio.create_task(self._listen(listener), name="dwarf-pgnotify-listen")
        self._sender_task = asyncio.create_task(self._send(), name="dwarf-pgnotify-send")

    async def close(self) -> None:
        """Send what is queued (for at most ``publish_timeout``), stop listening, close. Idempotent."""
        if self._state != _STARTED:
            self._state = _CLOSED
            return
        self._state = _CLOSED
        self._closing = True
        assert self._wakeup is not None and self._sender_task is not None and self._listener_task is not None
        self._wakeup.set()
        # The sender returns once the queue is empty; it is cut short if the database is slow.
        await _finish(self._sender_task, self._publish_timeout, self._log)
        await _finish(self._listener_task, 0, self._log)
        await _close_quietly(self._publisher)
        self._publisher = None
        self._pending.clear()

    # --- publishing ---

    async def publish(self, op: str, payload: bytes) -> None:
        """Queue a signal for the other replicas and return at once; a no-op unless started.

        Raises BadRequestError only for a signal NOTIFY cannot carry (over ``MAX_NOTIFY_BYTES``). May be
        called from another thread's event loop: the signal is handed to the relay's own loop.
        """
        message = self._envelope(op, payload)
        if self._state != _STARTED or self._closing:
            return
        loop = self._loop
        assert loop is not None
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._enqueue(message)
        else:
            with contextlib.suppress(RuntimeError):  # the relay's loop already closed
                loop.call_soon_threadsafe(self._enqueue, message)

    def _envelope(self, op: str, payload: bytes) -> str:
        if not isinstance(op, str) or not op or not isinstance(payload, bytes | bytearray):
            raise BadRequestError("a signal is a non-empty op string and a bytes payload")
        message = json.dumps(
            {"r": self._replica_id, "o": op, "p": base64.b64encode(payload).decode("ascii")},
            separators=(",", ":"),
        )
        if len(message.encode()) > MAX_NOTIFY_BYTES:
            raise BadRequestError(f"the signal is too large for NOTIFY (limit {MAX_NOTIFY_BYTES} bytes)")
        return message

    def _enqueue(self, message: str) -> None:
        if self._closing or self._wakeup is None:
            return
        if message not in self._pending and len(self._pending) >= MAX_PENDING:
            if not self._overflowed:
                self._overflowed = True
                self._log.warning("signal relay queue is full (%d signals); dropping new ones", MAX_PENDING)
            return
        self._pending[message] = None
        self._wakeup.set()

    async def _send(self) -> None:
        """Send the queue, one statement per batch, until closing empties it."""
        assert self._wakeup is not None
        backoff = Backoff(0.1, self._max_backoff)
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch = list(self._pending)
            self._pending.clear()
            try:
                await asyncio.wait_for(self._notify(batch), self._publish_timeout)
            except Exception as error:
                self._log.warning("signal relay dropped %d signal(s): %s", len(batch), error or type(error))
                publisher, self._publisher = self._publisher, None
                await _close_quietly(publisher)
                if self._closing:
                    return
                await asyncio.sleep(backoff.next())
            else:
                backoff.reset()
                self._overflowed = False

    async def _notify(self, batch: list[str]) -> None:
        if self._publisher is None or self._publisher.closed:
            self._publisher = await self._connect("publish")
        await self._publisher.execute(
            "SELECT pg_notify(%s, message) FROM unnest(%s::text[]) AS message", (self._channel, batch)
        )

    # --- listening ---

    async def _connect(self, role: str) -> psycopg.AsyncConnection[Any]:
        return await asyncio.wait_for(
            psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, application_name=self._connection_name(role)
            ),
            self._connect_timeout,
        )

    async def _open_listener(self) -> psycopg.AsyncConnection[Any]:
        conn = await self._connect("listen")
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except BaseException:
            await _close_quietly(conn)
            raise
        return conn

    async def _listen(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        """Receive notifications forever, re-opening the listening connection whenever it breaks."""
        backoff = Backoff(0.1, self._max_backoff)
        while True:
            if conn is None:
                try:
                    conn = await self._open_listener()
                except Exception as error:
                    pause = backoff.next()
                    self._log.warning(
                        "signal relay cannot listen (%s); retrying in %.1f s", error or type(error), pause
                    )
                    await asyncio.sleep(pause)
                    continue
                # Signals sent while we were away are lost; the engines' polling covers them.
                self._log.info("signal relay listening again on channel %r", self._channel)
            try:
                await self._receive_until_broken(conn, backoff)
            except Exception as error:
                self._log.warning("signal relay lost its listening connection: %s", error or type(error))
            finally:
                await _close_quietly(conn)
                conn = None
            await asyncio.sleep(backoff.next())

    async def _receive_until_broken(self, conn: psycopg.AsyncConnection[Any], backoff: Backoff) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._keepalive):
                await self._receive(notify.payload)
            # A quiet connection may be dead without anyone noticing (a network cut sends no reset):
            # a round trip proves it alive. Notifications arriving meanwhile wait in psycopg's backlog.
            await asyncio.wait_for(conn.execute("SELECT 1"), self._connect_timeout)
            backoff.reset()

    async def _receive(self, message: str) -> None:
        try:
            body = json.loads(message)
            sender, op, payload = body["r"], body["o"], base64.b64decode(body["p"], validate=True)
            if not isinstance(sender, str) or not isinstance(op, str):
                raise TypeError("malformed envelope")
        except (ValueError, KeyError, TypeError, binascii.Error):
            self._log.debug("signal relay ignored a malformed notification: %.200r", message)
            return
        if sender == self._replica_id or self._deliver is None:
            return
        try:
            await self._deliver(op, payload)
        except Exception as error:  # e.g. an engine that is shutting down
            self._log.debug("signal relay could not deliver %s: %s", op, error)
