"""Fixtures of the process-level crash tests, shared by tests/process and tests/chaos via their conftests.

``replica_set`` kills every replica process a test launched, on success and on failure alike;
``throwaway_postgres`` starts a private PostgreSQL server (skipped when the server binaries are missing,
failed instead when ``DWARF_REQUIRE_POSTGRES=1``).
"""

from __future__ import annotations

import os
import pwd
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.process.harness import ReplicaSet
from tests.process.pgcluster import ThrowawayPostgres, postgres_bin_dir, throwaway_postgres_server


@pytest_asyncio.fixture
async def replica_set(tmp_path: Path) -> AsyncIterator[ReplicaSet]:
    """The test's replica processes; their marker directory is ``replica_set.directory``."""
    replicas = ReplicaSet(tmp_path / "replicas")
    try:
        yield replicas
    finally:
        await replicas.close()


def _why_no_private_server() -> str:
    if postgres_bin_dir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, but there is no 'postgres' OS user to run a server as"
    return ""


@pytest.fixture
def throwaway_postgres() -> Iterator[ThrowawayPostgres]:
    """A private PostgreSQL server of this test alone, which it may restart or pause at will."""
    reason = _why_no_private_server()
    bin_dir = postgres_bin_dir()
    if reason or bin_dir is None:
        if os.environ.get("DWARF_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"DWARF_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    with throwaway_postgres_server(bin_dir) as server:
        yield server
