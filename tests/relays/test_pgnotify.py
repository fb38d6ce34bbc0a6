"""PgNotifyRelay on its own: who hears a signal, what it refuses, and its lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from dwarf import BadRequestError
from dwarf.hosts.pgnotify import MAX_NOTIFY_BYTES, PgNotifyRelay
from dwarf.hosts.relay import RelayError
from tests.relays.conftest import Inbox, backend_pids

StartedRelay = Callable[..., Awaitable[tuple[PgNotifyRelay, Inbox]]]


@pytest_asyncio.fixture
async def start_relay(relay_dsn: str, channel: str) -> AsyncIterator[StartedRelay]:
    """Start relays on this test's channel (or another); all are closed afterwards."""
    relays: list[PgNotifyRelay] = []

    async def start(on: str = channel) -> tuple[PgNotifyRelay, Inbox]:
        relay, inbox = PgNotifyRelay(relay_dsn, on), Inbox()
        relays.append(relay)
        await relay.start(inbox.deliver)
        return relay, inbox

    yield start
    for relay in relays:
        await relay.close()


async def test_a_signal_reaches_the_other_relay_but_not_its_sender(start_relay: StartedRelay) -> None:
    sender, sender_inbox = await start_relay()
    _, receiver_inbox = await start_relay()

    await sender.publish("doorbell", b'{"shard":1}')

    await receiver_inbox.wait_for("doorbell", b'{"shard":1}')
    # The sender's own LISTEN gets the notification too (at about the same time) and must drop it.
    await asyncio.sleep(0.1)
    assert receiver_inbox.signals == [("doorbell", b'{"shard":1}')]
    assert sender_inbox.signals == []


async def test_every_other_relay_on_the_channel_hears_a_signal(start_relay: StartedRelay) -> None:
    sender, _ = await start_relay()
    _, first = await start_relay()
    _, second = await start_relay()

    await sender.publish("flow-stopped", b'{"shard":1,"flow":7}')

    await first.wait_for("flow-stopped", b'{"shard":1,"flow":7}')
    await second.wait_for("flow-stopped", b'{"shard":1,"flow":7}')


async def test_relays_on_other_channels_hear_nothing(start_relay: StartedRelay, channel: str) -> None:
    sender, _ = await start_relay()
    _, same_channel = await start_relay()
    _, other_channel = await start_relay(on=channel + "_other")

    await sender.publish("doorbell", b"1")

    await same_channel.wait_for("doorbell", b"1")
    await asyncio.sleep(0.1)
    assert other_channel.signals == []


async def test_payload_bytes_arrive_unchanged(start_relay: StartedRelay) -> None:
    sender, _ = await start_relay()
    _, receiver = await start_relay()
    payload = bytes(range(256))

    await sender.publish("doorbell", payload)

    await receiver.wait_for("doorbell", payload)


async def test_identical_signals_queued_together_are_sent_once(start_relay: StartedRelay) -> None:
    sender, _ = await start_relay()
    _, receiver = await start_relay()

    # publish only queues, so all of these wait together for the sender task
    for _ in range(50):
        await sender.publish("doorbell", b'{"shard":1}')
    await sender.publish("doorbell", b"end")

    await receiver.wait_for("doorbell", b"end")
    assert receiver.signals == [("doorbell", b'{"shard":1}'), ("doorbell", b"end")]


async def test_a_signal_too_large_for_notify_is_refused(relay_dsn: str, channel: str) -> None:
    relay = PgNotifyRelay(relay_dsn, channel)

    with pytest.raises(BadRequestError, match="too large"):
        await relay.publish("doorbell", b"x" * MAX_NOTIFY_BYTES)


async def test_close_is_idempotent_and_publish_after_close_does_nothing(start_relay: StartedRelay) -> None:
    closed, _ = await start_relay()
    witness, _ = await start_relay()
    _, receiver = await start_relay()

    await closed.close()
    await closed.close()
    await closed.publish("doorbell", b"after close")
    await witness.publish("doorbell", b"witness")

    await receiver.wait_for("doorbell", b"witness")
    assert ("doorbell", b"after close") not in receiver.signals


async def test_close_releases_both_connections(start_relay: StartedRelay, relay_dsn: str) -> None:
    relay, _ = await start_relay()
    prefix = relay.listen_application_name.replace("-listen-", "-{}-")
    names = [prefix.format("listen"), prefix.format("publish")]
    assert [len(await backend_pids(relay_dsn, name)) for name in names] == [1, 1]

    await relay.close()

    assert [len(await backend_pids(relay_dsn, name)) for name in names] == [0, 0]


async def test_close_sends_what_is_still_queued(start_relay: StartedRelay) -> None:
    sender, _ = await start_relay()
    _, receiver = await start_relay()

    await sender.publish("flow-stopped", b"last words")
    await sender.close()

    await receiver.wait_for("flow-stopped", b"last words")


async def test_a_relay_starts_only_once(start_relay: StartedRelay) -> None:
    relay, inbox = await start_relay()

    with pytest.raises(RelayError, match="starts once"):
        await relay.start(inbox.deliver)


async def test_start_fails_clearly_when_the_database_does_not_exist(relay_dsn: str, channel: str) -> None:
    relay = PgNotifyRelay(relay_dsn.rsplit("/", 1)[0] + "/dwarf_no_such_database", channel)

    with pytest.raises(RelayError, match="dwarf_no_such_database"):
        await relay.start(Inbox().deliver)


async def test_start_fails_clearly_when_the_server_is_unreachable(channel: str) -> None:
    relay = PgNotifyRelay("postgresql://postgres@127.0.0.1:1/flows", channel, connect_timeout=2)

    with pytest.raises(RelayError, match=r"cannot listen on channel .* 'flows' at 127\.0\.0\.1:1"):
        await relay.start(Inbox().deliver)


def test_a_shard_placeholder_selects_the_first_shard_database() -> None:
    relay = PgNotifyRelay("postgresql://db.internal/flows_%d")

    assert relay.dsn == "postgresql://db.internal/flows_1"


@pytest.mark.parametrize(
    "dsn, channel, message",
    [
        ("sqlite:///flows.db", "dwarf_signals", "PostgreSQL DSN"),
        ("", "dwarf_signals", "PostgreSQL DSN"),
        ("postgresql://db.internal/flows", "", "channel"),
        ("postgresql://db.internal/flows", "c" * 64, "channel"),
    ],
)
def test_unusable_settings_are_refused(dsn: str, channel: str, message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        PgNotifyRelay(dsn, channel)
