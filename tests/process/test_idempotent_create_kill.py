"""Idempotent creates racing on two replica processes, one of them SIGKILLed mid-way and run again (as a
client retrying after a crash would): still exactly one flow per key, every create of a key answered
with the same flow, every flow run once (docs/flows.md#idempotent-create)."""

from __future__ import annotations

import collections
import json
from dataclasses import replace

import pytest

from dwarf import Engine, Query, Status
from tests.engine.graphs import wait_until
from tests.process.harness import Replica, ReplicaOptions, ReplicaSet, wait_for_outcome
from tests.process.workloads import keyed_host

pytestmark = pytest.mark.slow

KEYS = 60
"""Each replica creates the flows keyed k0 ... k59, each in its own shuffled order."""
READ_BEFORE_KILL = 15
"""Creates the doomed replica reports before it is killed; it is killed in the middle of the next ones."""
DEADLINE = 60.0


async def _read_answers(replica: Replica, count: int, answers: dict[str, set[str]]) -> int:
    """Read up to ``count`` of the replica's ``IDEMPOTENCY_KEY FLOW_KEY`` lines; how many came."""
    for done in range(count):
        try:
            idempotency_key, flow_key = (await replica.read_line(DEADLINE)).split()
        except RuntimeError:  # no more lines: the process died there
            return done
        answers[idempotency_key].add(flow_key)
    return count


async def _start_together(replica_set: ReplicaSet, replicas: list[Replica]) -> None:
    async def all_ready() -> bool:
        return all((replica_set.directory / f"keyed-ready-{r.pid}").exists() for r in replicas)

    await wait_until(all_ready, DEADLINE)
    (replica_set.directory / "keyed-go").write_text("")


async def test_keyed_creates_racing_on_two_replicas_survive_a_kill(
    fresh_dsn: str, replica_set: ReplicaSet
) -> None:
    markers = replica_set.directory
    async with Engine(host=keyed_host(markers), dsn=fresh_dsn):
        pass  # the schema first: the inspecting engine below has no workers, so it never creates one
    options = ReplicaOptions(
        fresh_dsn,
        "tests.process.workloads:keyed_host",
        create="keyed",
        extra=["--keyed-creates", str(KEYS), "--state", json.dumps({"workSeconds": 0.05})],
    )
    doomed = replica_set.launch("doomed", replace(options, extra=[*options.extra, "--keyed-seed", "1"]))
    steady = replica_set.launch("steady", replace(options, extra=[*options.extra, "--keyed-seed", "2"]))
    await _start_together(replica_set, [doomed, steady])
    answers: dict[str, set[str]] = collections.defaultdict(set)
    printed = await _read_answers(doomed, READ_BEFORE_KILL, answers)
    await replica_set.kill("doomed")
    printed += await _read_answers(doomed, KEYS, answers)  # what it printed before it died
    # The client retries every create, in a fresh process (the go marker is there already).
    retry = replica_set.launch("doomed", replace(options, extra=[*options.extra, "--keyed-seed", "3"]))
    assert await _read_answers(steady, KEYS, answers) == KEYS
    assert await _read_answers(retry, KEYS, answers) == KEYS
    assert sorted(answers) == sorted(f"k{number}" for number in range(KEYS))
    split = {key: flows for key, flows in answers.items() if len(flows) != 1}
    assert not split, f"keys answered with more than one flow: {split}\n{replica_set.logs()}"

    engine = Engine(host=keyed_host(markers), dsn=fresh_dsn, workers=0)
    await engine.startup()
    try:
        page, _ = await engine.list(Query(workflow_url="keyed", limit=1000))
        assert len(page) == KEYS, replica_set.logs()
        creators: collections.Counter[int] = collections.Counter()
        for idempotency_key, (flow_key,) in answers.items():
            outcome = await wait_for_outcome(engine, flow_key, DEADLINE)
            assert outcome.status == Status.COMPLETED, (idempotency_key, outcome)
            creators[outcome.state.pop("createdBy")] += 1
            assert outcome.state == {"key": idempotency_key, "workSeconds": 0.05, "runs": 1}
    finally:
        await engine.shutdown()
    print(f"the doomed replica reported {printed} of {KEYS} creates; flows by creator: {dict(creators)}")
    assert printed < KEYS, "the kill came after the doomed replica's last create: it proved nothing"
    assert creators[doomed.pid] and creators[steady.pid], "one replica made every flow: the two never raced"
