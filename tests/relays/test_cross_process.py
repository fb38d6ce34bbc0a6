"""A replica in another OS process starts the steps this process creates promptly, woken through
PgNotifyRelay (its own poll is too slow to explain the start)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from dwarf import Engine
from dwarf.hosts.pgnotify import PgNotifyRelay
from dwarf.hosts.relay import RelayHost
from tests.relays.conftest import SLOW_POLL
from tests.relays.replica import ping_host

ROOT = Path(__file__).resolve().parents[2]
FLOWS = 3


async def test_a_flow_created_here_starts_promptly_in_a_replica_process(
    fresh_dsn: str, relay_dsn: str, channel: str
) -> None:
    async with Engine(host=ping_host(), dsn=fresh_dsn):
        pass  # only an engine with workers creates the dwarf tables; the creator below has none
    creator = Engine(host=RelayHost(ping_host(), PgNotifyRelay(relay_dsn, channel)), dsn=fresh_dsn, workers=0)
    await creator.startup()
    replica = subprocess.Popen(
        [sys.executable, "-m", "tests.relays.replica", fresh_dsn, relay_dsn, channel],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert replica.stdout is not None and replica.stdin is not None
        line = await asyncio.wait_for(asyncio.to_thread(replica.stdout.readline), 30)
        assert line.strip() == "ready", f"the replica did not start: {line!r}"
        latencies = []
        for _ in range(FLOWS):
            began = time.time()
            key = await creator.create("ping")
            outcome = await creator.wait(key, timeout=SLOW_POLL / 2)
            assert outcome.status == "completed"
            assert outcome.state["ranIn"] == replica.pid
            latencies.append(outcome.state["startedAt"] - began)
        print(f"\ncreate-to-start in a replica process: {', '.join(f'{x * 1000:.1f} ms' for x in latencies)}")
        assert max(latencies) < SLOW_POLL / 6, "the replica waited for its poll: the doorbell was not relayed"
        replica.stdin.close()
        assert await asyncio.to_thread(replica.wait, 15) == 0
    finally:
        if replica.poll() is None:
            replica.kill()
            replica.wait()
        for pipe in (replica.stdin, replica.stdout):
            if pipe is not None:
                pipe.close()
        await creator.shutdown()
