"""NatsRelay: engine signals between replicas over a NATS subject (needs the ``nats`` extra).

Every replica subscribes to one subject and publishes its signals there, the op and the sender's random
replica id in message headers and the payload as the message body; a relay ignores its own messages.
nats-py does the hard parts: it reconnects forever with a pause between attempts and buffers what is
published meanwhile, sending it once the connection is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dwarf.errors import BadRequestError
from dwarf.hosts.relay import DeliverSignal, RelayError, check_positive_seconds, relay_logger

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = ["OP_HEADER", "REPLICA_HEADER", "NatsRelay"]

OP_HEADER = "Dwarf-Op"
REPLICA_HEADER = "Dwarf-Replica"

_NEW, _STARTED, _CLOSED = "new", "started", "closed"


def _require_nats() -> None:
    try:
        import nats  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "NatsRelay needs nats-py; install it with: pip install 'dwarf-workflow[nats]'"
        ) from error


def _server_list(servers: str | Sequence[str]) -> list[str]:
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    urls = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    if not urls:
        raise BadRequestError("NatsRelay needs at least one server URL")
    return urls


class NatsRelay:
    """Relay engine signals through the NATS ``subject`` on ``servers``.

    ``servers`` is one URL, a comma-separated list or a sequence of URLs of one NATS cluster. Replicas on
    different subjects do not hear each other. ``start`` raises ``RelayError`` when the first connection
    attempt fails or takes longer than ``connect_timeout`` (a wrong URL fails the engine's startup);
    afterwards lost connections are re-established in the background. Further keyword arguments (``user``,
    ``password``, ``token``, ``tls``, ``user_credentials``, ...) go to ``nats.connect`` unchanged.

    Example::

        engine = Engine(host=RelayHost(proxy, NatsRelay("nats://nats.internal:4222")), dsn=dsn)
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        subject: str = "dwarf.signals",
        *,
        name: str = "dwarf-relay",
        connect_timeout: float = 5.0,
        publish_timeout: float = 2.0,
        reconnect_wait: float = 1.0,
        logger: logging.Logger | None = None,
        **connect_options: Any,
    ) -> None:
        _require_nats()
        self._servers = _server_list(servers)
        if (
            not isinstance(subject, str)
            or not subject
            or any(char.isspace() for char in subject)
            or any(token in {"*", ">", ""} for token in subject.split("."))
        ):
            raise BadRequestError(f"{subject!r} is not a NATS subject to publish on (no wildcards)")
        check_positive_seconds(
            connect_timeout=connect_timeout, publish_timeout=publish_timeout, reconnect_wait=reconnect_wait
        )
        self._subject = subject
        self._replica_id = secrets.token_hex(8)
        self._name = name
        self._connect_timeout = float(connect_timeout)
        self._publish_timeout = float(publish_timeout)
        self._reconnect_wait = float(reconnect_wait)
        self._connect_options = connect_options
        self._log = logger if logger is not None else relay_logger()
        self._state = _NEW
        self._client: Client | None = None
        self._deliver: DeliverSignal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Set while a failure has been logged at warning level: repeats go to debug until things recover.
        self._publish_failing = False
        self._connection_failing = False

    @property
    def subject(self) -> str:
        """The NATS subject signals travel on."""
        return self._subject

    @property
    def replica_id(self) -> str:
        """This relay's random id, sent in the ``Dwarf-Replica`` header so it can ignore its own."""
        return self._replica_id

    # --- lifecycle ---

    async def start(self, deliver: DeliverSignal) -> None:
        """Connect and subscribe; from now on await ``deliver(op, payload)`` for other replicas' signals."""
        if self._state != _NEW:
            raise RelayError("a relay starts once; create a new one for another engine")
        from nats.aio.client import Client

        client = Client()
        loop = asyncio.get_running_loop()
        first_error: asyncio.Future[BaseException] = loop.create_future()

        async def on_error(error: Exception) -> None:
            if not first_error.done():
                first_error.set_result(error)
            elif not self._connection_failing:
                self._connection_failing = True
                self._log.warning("signal relay: NATS error: %s", error or type(error))
            else:
                self._log.debug("signal relay: NATS error: %s", error or type(error))

        async def on_disconnected() -> None:
            if self._state == _STARTED:
                self._log.warning("signal relay disconnected from NATS; reconnecting")

        async def on_reconnected() -> None:
            self._connection_failing = False
            # Signals sent while we were away are lost; the engines' polling covers them.
            self._log.info("signal relay reconnected to NATS")

        options: dict[str, Any] = {
            "name": f"{self._name}-{self._replica_id}",
            "connect_timeout": max(1, math.ceil(self._connect_timeout)),
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": self._reconnect_wait,
            "error_cb": on_error,
            "disconnected_cb": on_disconnected,
            "reconnected_cb": on_reconnected,
            **self._connect_options,
        }
        connecting = asyncio.ensure_future(client.connect(self._servers, **options))
        # nats-py would retry the first connection forever; a deployment with a wrong URL should fail now.
        racers: set[asyncio.Future[Any]] = {connecting, first_error}
        await asyncio.wait(racers, timeout=self._connect_timeout, return_when=asyncio.FIRST_COMPLETED)
        failure: BaseException | None
        if connecting.done():
            failure = connecting.exception()
        else:
            failure = first_error.result() if first_error.done() else TimeoutError("timed out")
            connecting.cancel()
            await asyncio.wait({connecting})
            if not connecting.cancelled():
                connecting.exception()  # retrieved: the failure reported is the first error
        if failure is None:
            try:
                await client.subscribe(self._subject, cb=self._on_message)
                # The subscription is in force on the server once a round trip has passed.
                await client.flush(timeout=max(1, math.ceil(self._connect_timeout)))
            except Exception as error:
                failure = error
        if failure is not None:
            with contextlib.suppress(Exception):
                await client.close()
            raise RelayError(
                f"NatsRelay cannot reach {', '.join(self._servers)} to subscribe to {self._subject!r}: "
                f"{failure or type(failure).__name__}"
            ) from failure
        if not first_error.done():
            first_error.cancel()
        self._client = client
        self._deliver = deliver
        self._loop = loop
        self._state = _STARTED

    async def close(self) -> None:
        """Flush what is buffered (for at most ``publish_timeout``) and disconnect. Idempotent."""
        if self._state != _STARTED:
            self._state = _CLOSED
            return
        self._state = _CLOSED
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.flush(), self._publish_timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), self._publish_timeout)

    # --- signals ---

    async def publish(self, op: str, payload: bytes) -> None:
        """Send a signal to the other replicas; a no-op unless started, never raises for transport trouble.

        May be called from another thread's event loop: the signal is handed to the relay's own loop.
        """
        if not isinstance(op, str) or not op or not isinstance(payload, bytes | bytearray):
            raise BadRequestError("a signal is a non-empty op string and a bytes payload")
        if self._state != _STARTED:
            return
        loop = self._loop
        assert loop is not None
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            await self._send(op, bytes(payload))
            return
        with contextlib.suppress(RuntimeError):  # the relay's loop already closed
            asyncio.run_coroutine_threadsafe(self._send(op, bytes(payload)), loop)

    async def _send(self, op: str, payload: bytes) -> None:
        client = self._client
        if client is None:
            return
        headers = {REPLICA_HEADER: self._replica_id, OP_HEADER: op}
        try:
            await asyncio.wait_for(
                client.publish(self._subject, payload, headers=headers), self._publish_timeout
            )
        except Exception as error:
            level = logging.DEBUG if self._publish_failing else logging.WARNING
            self._publish_failing = True
            self._log.log(level, "signal relay dropped a %s signal: %s", op, error or type(error))
        else:
            self._publish_failing = False

    async def _on_message(self, message: Msg) -> None:
        headers = message.headers or {}
        op = headers.get(OP_HEADER)
        if not op:
            self._log.debug("signal relay ignored a message without a %s header", OP_HEADER)
            return
        if headers.get(REPLICA_HEADER) == self._replica_id or self._deliver is None:
            return
        try:
            await self._deliver(op, message.data)
        except Exception as error:  # e.g. an engine that is shutting down
            self._log.debug("signal relay could not deliver %s: %s", op, error)
