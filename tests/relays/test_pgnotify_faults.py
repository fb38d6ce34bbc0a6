"""PgNotifyRelay survives lost connections: a terminated backend (what a PostgreSQL restart does to every
connection) is re-opened and signals flow again, while the engines keep running flows meanwhile."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from dwarf.hosts.pgnotify import PgNotifyRelay
from dwarf.hosts.relay import RelayHost
from tests.conftest import EngineMaker
from tests.relays.conftest import (
    SLOW_POLL,
    Inbox,
    PingService,
    publish_until_received,
    slow_down_polling,
    start_latencies,
    terminate_backends,
    wait_until_listening,
)


@pytest_asyncio.fixture
async def pair(relay_dsn: str, channel: str) -> AsyncIterator[tuple[PgNotifyRelay, PgNotifyRelay, Inbox]]:
    """A sending and a receiving relay on one channel, and the receiver's inbox."""
    sender, receiver, inbox = PgNotifyRelay(relay_dsn, channel), PgNotifyRelay(relay_dsn, channel), Inbox()
    await sender.start(Inbox().deliver)
    await receiver.start(inbox.deliver)
    yield sender, receiver, inbox
    await sender.close()
    await receiver.close()


def _name(relay: PgNotifyRelay, role: str) -> str:
    return relay.listen_application_name.replace("-listen-", f"-{role}-")


async def test_a_terminated_listening_connection_is_reopened(
    pair: tuple[PgNotifyRelay, PgNotifyRelay, Inbox], relay_dsn: str
) -> None:
    sender, receiver, inbox = pair
    [killed] = await terminate_backends(relay_dsn, receiver.listen_application_name)

    await wait_until_listening(relay_dsn, receiver.listen_application_name, not_pid=killed)
    await publish_until_received(sender.publish, inbox)


async def test_a_terminated_publishing_connection_is_reopened(
    pair: tuple[PgNotifyRelay, PgNotifyRelay, Inbox], relay_dsn: str
) -> None:
    sender, _, inbox = pair
    assert await terminate_backends(relay_dsn, _name(sender, "publish"))

    await publish_until_received(sender.publish, inbox)


async def test_engines_keep_running_flows_while_the_relay_reconnects(
    make_engine: EngineMaker, relay_dsn: str, channel: str
) -> None:
    service = PingService()
    proxy = service.proxy()
    creator_relay, runner_relay = PgNotifyRelay(relay_dsn, channel), PgNotifyRelay(relay_dsn, channel)
    creator = await make_engine(RelayHost(proxy, creator_relay), workers=0)
    runner = await make_engine(RelayHost(proxy, runner_relay), workers=4)

    # Both ends lose their connections; the runner's 1 s poll keeps the flows going meanwhile.
    await terminate_backends(relay_dsn, _name(creator_relay, "publish"))
    [killed] = await terminate_backends(relay_dsn, runner_relay.listen_application_name)
    assert len(await start_latencies(creator, runner, service, 2)) == 2

    # Once the runner listens again, signals alone wake it.
    await wait_until_listening(relay_dsn, runner_relay.listen_application_name, not_pid=killed)
    slow_down_polling(runner)
    latencies = await start_latencies(creator, runner, service, 2)
    assert max(latencies) < SLOW_POLL / 6, "a step waited for the poll: the relay did not recover"
