"""What every benchmark run shares: fresh databases, latency percentiles, the result schema, RSS.

Our engine and the peers both report through ``throughput_result`` so that their JSON lines have the same
keys and can be compared column by column.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

# Steps one flow of each throughput workload executes (fan-out adds the split and the join to its width).
LINEAR_STEPS = {"linear3": 3, "linear10": 10, "latency": 3}


def steps_per_flow(workload: str, width: int) -> int:
    return width + 2 if workload == "fanout" else LINEAR_STEPS[workload]


def default_flows(workload: str) -> int:
    return {"fanout": 20, "latency": 200, "parked": 10_000}.get(workload, 1000)


def default_concurrency(workload: str) -> int:
    return {"latency": 1, "fanout": 4}.get(workload, 32)


async def create_pg_database(admin_dsn: str, name: str = "") -> tuple[str, str]:
    """Create an empty database (uniquely named unless ``name`` is given); return (conninfo, name)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = name or f"dwarf_bench_{uuid.uuid4().hex[:10]}"
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"'.encode())
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    return make_conninfo("", **params), name


async def drop_pg_database(admin_dsn: str, name: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def pg_url(conninfo: str) -> str:
    """A ``postgresql://`` URL for a conninfo string (dwarf and DBOS take URLs, not key=value strings)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(conninfo)
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    user = params.get("user", "postgres")
    password = params.get("password")
    auth = f"{user}:{password}" if password else str(user)
    return f"postgresql://{auth}@{host}:{port}/{params['dbname']}"


@dataclass
class FreshDatabase:
    """An empty database for one run: ``url`` for engines, ``path`` for SQLite, ``names`` of PG shards."""

    url: str
    path: str = ""
    names: tuple[str, ...] = ()


@asynccontextmanager
async def fresh_database(
    db: str, admin_dsn: str = "", *, shards: int = 1, filename: str = "bench.db"
) -> AsyncIterator[FreshDatabase]:
    """A new SQLite file in a temporary folder, or new PostgreSQL database(s); removed afterwards.

    With ``shards`` > 1 the URL holds ``%d`` (dwarf's per-shard placeholder) and one database or file
    exists per shard.
    """
    if db == "sqlite":
        folder = tempfile.mkdtemp(prefix="dwarf-bench-")
        stem, dot, suffix = filename.rpartition(".")
        path = os.path.join(folder, f"{stem}_%d{dot}{suffix}" if shards > 1 else filename)
        try:
            yield FreshDatabase(url=f"sqlite:///{path}", path=path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    admin = admin_dsn or DEFAULT_PG_DSN
    created: list[str] = []
    prefix = f"dwarf_bench_{uuid.uuid4().hex[:10]}"
    try:
        conninfo = ""
        for shard in range(1, shards + 1):
            conninfo, name = await create_pg_database(admin, prefix if shards == 1 else f"{prefix}_{shard}")
            created.append(name)
        url = pg_url(conninfo)
        if shards > 1:
            url = url.rsplit("/", 1)[0] + f"/{prefix}_%d"
        yield FreshDatabase(url=url, names=tuple(created))
    finally:
        for name in created:
            await drop_pg_database(admin, name)


def postgres_reachable(admin_dsn: str = "") -> bool:
    """Whether the PostgreSQL admin DSN accepts a connection (within a few seconds)."""
    try:
        import psycopg

        with psycopg.connect(admin_dsn or DEFAULT_PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def throughput_result(
    *,
    engine: str,
    workload: str,
    db: str,
    flows: int,
    concurrency: int,
    width: int,
    elapsed: float,
    latencies: list[float],
) -> dict[str, Any]:
    """The fields every throughput/latency JSON line carries, ours and the peers' alike."""
    steps = steps_per_flow(workload, width)
    return {
        "engine": engine,
        "workload": workload,
        "db": db,
        "flows": flows,
        "concurrency": concurrency,
        "width": width if workload == "fanout" else None,
        "elapsed_s": round(elapsed, 3),
        "steps_per_s": round(flows * steps / elapsed, 1),
        "flows_per_s": round(flows / elapsed, 2),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
    }


def rss_mb() -> float:
    """This process's resident set size in MiB, from /proc/self/status (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
