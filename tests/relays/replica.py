"""A replica process for the cross-process relay test: runs steps, woken only by PgNotifyRelay signals.

Usage: python -m tests.relays.replica ENGINE_DSN RELAY_DSN CHANNEL

It serves the ``ping`` graph, polls for due steps only every SLOW_POLL seconds (so a prompt start proves
the relay woke it), prints ``ready`` once its relay listens, and shuts down cleanly when its standard
input closes. The ping task records the wall-clock time it started and this process's id in the state.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from dwarf import END, Engine, Flow, Graph, TestProxy
from dwarf.hosts.pgnotify import PgNotifyRelay
from dwarf.hosts.relay import RelayHost
from tests.relays.conftest import slow_down_polling


def ping_host() -> TestProxy:
    proxy = TestProxy()
    graph = Graph("ping")
    graph.add_task("ping", "ping")
    graph.add_transition("ping", END)
    proxy.handle_graph("ping", graph)

    @proxy.task("ping")
    async def ping(flow: Flow) -> None:
        flow.set("startedAt", time.time())
        flow.set("ranIn", os.getpid())

    return proxy


async def run(engine_dsn: str, relay_dsn: str, channel: str) -> None:
    engine = Engine(host=RelayHost(ping_host(), PgNotifyRelay(relay_dsn, channel)), dsn=engine_dsn, workers=4)
    await engine.startup()
    try:
        slow_down_polling(engine)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the test closes our stdin
    finally:
        await engine.shutdown(drain_timeout=1.0)


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], sys.argv[3]))
