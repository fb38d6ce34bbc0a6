"""NatsRelay: who hears a signal, its lifecycle, and engines woken through it."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from dwarf import BadRequestError
from dwarf.hosts.nats import NatsRelay
from dwarf.hosts.relay import RelayError, RelayHost
from tests.conftest import EngineMaker
from tests.relays.conftest import SLOW_POLL, Inbox, PingService, slow_down_polling, start_latencies, summary

StartedRelay = Callable[..., Awaitable[tuple[NatsRelay, Inbox]]]


@pytest.fixture
def subject(channel: str) -> str:
    return f"dwarf.test.{channel}"


@pytest_asyncio.fixture
async def start_relay(nats_url: str, subject: str) -> AsyncIterator[StartedRelay]:
    """Start relays on this test's subject (or another); all are closed afterwards."""
    relays: list[NatsRelay] = []

    async def start(on: str = subject) -> tuple[NatsRelay, Inbox]:
        relay, inbox = NatsRelay(nats_url, on), Inbox()
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
    # The sender's own subscription gets the message too (at about the same time) and must drop it.
    await asyncio.sleep(0.1)
    assert sender_inbox.signals == []


async def test_relays_on_other_subjects_hear_nothing(start_relay: StartedRelay, subject: str) -> None:
    sender, _ = await start_relay()
    _, same_subject = await start_relay()
    _, other_subject = await start_relay(on=subject + "_other")

    await sender.publish("flow-stopped", b'{"shard":1,"flow":7}')

    await same_subject.wait_for("flow-stopped", b'{"shard":1,"flow":7}')
    await asyncio.sleep(0.1)
    assert other_subject.signals == []


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


async def test_a_relay_starts_only_once(start_relay: StartedRelay) -> None:
    relay, inbox = await start_relay()

    with pytest.raises(RelayError, match="starts once"):
        await relay.start(inbox.deliver)


async def test_start_fails_clearly_when_the_server_is_unreachable() -> None:
    relay = NatsRelay("nats://127.0.0.1:1", connect_timeout=2)

    with pytest.raises(RelayError, match=r"cannot reach nats://127\.0\.0\.1:1"):
        await relay.start(Inbox().deliver)


@pytest.mark.parametrize("subject", ["", "dwarf.*", "dwarf.>", "dwarf..signals", "dwarf signals"])
def test_a_subject_that_cannot_be_published_on_is_refused(subject: str) -> None:
    with pytest.raises(BadRequestError, match="subject"):
        NatsRelay(subject=subject)


def test_an_empty_server_list_is_refused() -> None:
    with pytest.raises(BadRequestError, match="server"):
        NatsRelay(" , ")


async def test_a_step_created_on_one_engine_starts_promptly_on_its_peer(
    make_engine: EngineMaker, nats_url: str, subject: str
) -> None:
    service = PingService()
    proxy = service.proxy()
    creator = await make_engine(RelayHost(proxy, NatsRelay(nats_url, subject)), workers=0)
    runner = await make_engine(RelayHost(proxy, NatsRelay(nats_url, subject)), workers=4)
    slow_down_polling(runner)

    latencies = await start_latencies(creator, runner, service, 5)

    print(f"\ncreate-to-start through NatsRelay (peer polls every {SLOW_POLL:.0f} s): {summary(latencies)}")
    assert max(latencies) < SLOW_POLL / 6, "a step waited for the poll: the doorbell was not relayed"
    assert statistics.median(latencies) < 0.5
