"""RelayHost: any host plus a relay makes engines of one database wake each other across replicas.

The engines' database follows the ``backend`` fixture; the relay is PostgreSQL LISTEN/NOTIFY. The peer
that runs steps polls only every SLOW_POLL seconds, so a step that starts within seconds was woken by a
relayed signal.
"""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path

import pytest

from dwarf import BadRequestError, Engine, EngineStateError, FlowOptions, FlowOutcome, TestProxy
from dwarf.engine.host import Host
from dwarf.hosts.pgnotify import PgNotifyRelay
from dwarf.hosts.relay import DeliverSignal, RelayError, RelayHost, SignalRelay
from tests.conftest import EngineMaker
from tests.engine.graphs import until
from tests.relays.conftest import SLOW_POLL, PingService, slow_down_polling, start_latencies, summary

LATENCY_FLOWS = 5
# Each baseline flow waits about a whole poll interval: fewer keep the test short.
BASELINE_FLOWS = 3


class RecordingRelay:
    """A relay that keeps what it is asked to do, to check what RelayHost forwards."""

    def __init__(self) -> None:
        self.deliver: DeliverSignal | None = None
        self.published: list[tuple[str, bytes]] = []
        self.closed = 0

    async def start(self, deliver: DeliverSignal) -> None:
        self.deliver = deliver

    async def publish(self, op: str, payload: bytes) -> None:
        self.published.append((op, payload))

    async def close(self) -> None:
        self.closed += 1


class HookedProxy(TestProxy):
    """A TestProxy with the optional lifecycle hooks, recording their calls."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks: list[str] = []

    async def engine_started(self, engine: Engine) -> None:
        self.hooks.append("started")

    async def engine_stopped(self, engine: Engine) -> None:
        self.hooks.append("stopped")


def test_a_relay_host_is_a_host_and_the_relays_are_relays() -> None:
    assert isinstance(RelayHost(TestProxy(), RecordingRelay()), Host)
    assert isinstance(PgNotifyRelay("postgresql://db.internal/flows"), SignalRelay)
    assert isinstance(RecordingRelay(), SignalRelay)


@pytest.mark.parametrize(
    "host, relay, missing",
    [(object(), RecordingRelay(), "load_graph"), (TestProxy(), object(), "start")],
)
def test_a_relay_host_refuses_parts_that_lack_methods(host: object, relay: object, missing: str) -> None:
    with pytest.raises(BadRequestError, match=missing):
        RelayHost(host, relay)  # type: ignore[arg-type]


async def test_relay_host_runs_flows_of_the_wrapped_host_and_publishes_its_signals(
    make_engine: EngineMaker,
) -> None:
    service = PingService()
    proxy = service.proxy()
    stopped: list[tuple[str, str]] = []
    proxy.on_flow_stopped(lambda key, outcome: stopped.append((key, outcome.status)))
    relay = RecordingRelay()
    engine = await make_engine(RelayHost(proxy, relay))

    key, outcome = await engine.run("ping", options=FlowOptions(notify_on_stop=True), timeout=10)

    assert outcome.status == "completed"
    assert stopped == [(key, "completed")]
    assert relay.deliver == engine.deliver_signal
    # Signals go out from background tasks: the flow-stopped one may follow the wake-up of `run`.
    await until(lambda: {op for op, _ in relay.published} == {"doorbell", "flow-stopped"})


async def test_relay_host_starts_and_closes_the_relay_with_the_engine(make_engine: EngineMaker) -> None:
    proxy = HookedProxy()
    relay = RecordingRelay()
    engine = await make_engine(RelayHost(proxy, relay))
    assert proxy.hooks == ["started"]
    assert relay.closed == 0

    await engine.shutdown()

    assert proxy.hooks == ["started", "stopped"]
    assert relay.closed == 1


async def test_engine_startup_fails_when_its_relay_cannot_connect(tmp_path: Path) -> None:
    relay = PgNotifyRelay("postgresql://postgres@127.0.0.1:1/flows", connect_timeout=2)
    engine = Engine(host=RelayHost(TestProxy(), relay), dsn=f"sqlite:///{tmp_path / 'flows.db'}")

    with pytest.raises(RelayError, match="cannot listen"):
        await engine.startup()

    with pytest.raises(EngineStateError):
        await engine.create("ping")


async def test_a_step_created_on_one_engine_starts_promptly_on_its_peer(
    make_engine: EngineMaker, relay_dsn: str, channel: str
) -> None:
    service = PingService()
    proxy = service.proxy()
    creator = await make_engine(RelayHost(proxy, PgNotifyRelay(relay_dsn, channel)), workers=0)
    runner = await make_engine(RelayHost(proxy, PgNotifyRelay(relay_dsn, channel)), workers=4)
    slow_down_polling(runner)

    latencies = await start_latencies(creator, runner, service, LATENCY_FLOWS)

    print(
        f"\ncreate-to-start through PgNotifyRelay (peer polls every {SLOW_POLL:.0f} s): {summary(latencies)}"
    )
    assert max(latencies) < SLOW_POLL / 6, "a step waited for the poll: the doorbell was not relayed"
    assert statistics.median(latencies) < 0.5


# The baseline the relay improves on; the poll interval, not the database, decides it, so one backend will do.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_without_a_relay_a_peer_starts_steps_only_when_it_polls(make_engine: EngineMaker) -> None:
    # Separate proxies link nothing, so only the 1 s poll finds the work.
    service = PingService()
    creator = await make_engine(service.proxy(), workers=0)
    runner = await make_engine(service.proxy(), workers=4)

    latencies = await start_latencies(creator, runner, service, BASELINE_FLOWS)

    print(f"\ncreate-to-start without a relay (peer polls every 1 s): {summary(latencies)}")
    assert max(latencies) < 5.0, "the polling fallback did not find the work"


async def test_wait_on_the_creating_engine_returns_promptly_when_the_peer_finishes(
    make_engine: EngineMaker, relay_dsn: str, channel: str
) -> None:
    service = PingService()
    service.release.clear()
    proxy = service.proxy()
    creator = await make_engine(RelayHost(proxy, PgNotifyRelay(relay_dsn, channel)), workers=0)
    await make_engine(RelayHost(proxy, PgNotifyRelay(relay_dsn, channel)), workers=4)
    key = await creator.create("ping")
    loop = asyncio.get_running_loop()

    waiting: asyncio.Task[FlowOutcome] = asyncio.ensure_future(creator.wait(key, timeout=10))
    # wait re-reads the flow after 1 s and then every 2 s: finishing just after the first re-read leaves
    # only the relayed flow-stopped signal to end the wait within the next 1.7 s.
    await asyncio.sleep(1.3)
    released_at = loop.time()
    service.release.set()
    outcome = await waiting
    latency = loop.time() - released_at

    print(f"\nfinish-to-wait-return through PgNotifyRelay: {latency * 1000:.1f} ms")
    assert outcome.status == "completed"
    assert latency < 0.5
