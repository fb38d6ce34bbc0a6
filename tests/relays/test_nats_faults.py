"""NatsRelay survives a NATS server restart: both ends reconnect on their own and signals flow again.

The test runs its own throwaway ``nats-server`` on a free port (so that it may stop it) and skips when
the binary is not installed.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from dwarf.hosts.nats import NatsRelay
from tests.relays.conftest import Inbox, publish_until_received

NATS_SERVER = shutil.which("nats-server")


class PrivateNatsServer:
    """A nats-server process on a fixed local port that a test can stop and start again."""

    def __init__(self, binary: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"nats://127.0.0.1:{self.port}"
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        self._process = subprocess.Popen(
            [self._binary, "-a", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            await asyncio.to_thread(process.wait, 10)


@pytest_asyncio.fixture
async def nats_server() -> AsyncIterator[PrivateNatsServer]:
    if NATS_SERVER is None:
        pytest.skip("nats-server is not installed")
    server = PrivateNatsServer(NATS_SERVER)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_signals_flow_again_after_the_server_restarts(
    nats_server: PrivateNatsServer, channel: str
) -> None:
    subject = f"dwarf.test.{channel}"
    sender = NatsRelay(nats_server.url, subject, reconnect_wait=0.2)
    receiver, inbox = NatsRelay(nats_server.url, subject, reconnect_wait=0.2), Inbox()
    await sender.start(Inbox().deliver)
    await receiver.start(inbox.deliver)
    try:
        await publish_until_received(sender.publish, inbox)

        await nats_server.stop()
        # Publishing while the server is down neither raises nor blocks.
        await asyncio.wait_for(sender.publish("doorbell", b"during the outage"), 5)
        await nats_server.start()

        await publish_until_received(sender.publish, inbox)
    finally:
        await sender.close()
        await receiver.close()
