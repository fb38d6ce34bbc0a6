"""Turning the engine's DSN settings into one open store per shard, including isolated test databases.

``set_in_test(name)`` databases: SQLite in-memory stores are shared by every engine of the process that
uses the same name (that is how a test runs several replicas); PostgreSQL databases are created on the
server named by ``DWARF_TEST_DSN`` and dropped when the last engine using them shuts down.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import weakref
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from dwarf._extras import require_postgres
from dwarf.errors import BadRequestError, StoreError
from dwarf.store.base import Store, first_line
from dwarf.store.sqlite import SQLiteStore, parse_sqlite_dsn

__all__ = ["DEFAULT_DSN", "StoreRegistry", "open_stores", "release_stores", "shard_dsn", "test_database_name"]

DEFAULT_DSN = "sqlite:///dwarf.db"
TEST_DSN_VARIABLE = "DWARF_TEST_DSN"


def shard_dsn(dsn: str, shard: int, num_shards: int) -> str:
    """The DSN of one shard: ``%d`` replaced by the shard number; required when there are several shards."""
    if "%d" in dsn:
        return dsn.replace("%d", str(shard))
    if num_shards > 1:
        raise BadRequestError("the DSN must contain %d when there is more than one shard")
    return dsn


def test_database_name(test_name: str) -> str:
    """The ``%d`` replacement for a test name: the first 12 hex digits of its SHA-256."""
    return hashlib.sha256(test_name.encode()).hexdigest()[:12]


def _is_postgres(dsn: str) -> bool:
    return urlsplit(dsn).scheme in {"postgres", "postgresql"}


@dataclass
class _SharedStore:
    store: Store
    users: int = 0
    drop_database: str = ""
    admin_dsn: str = ""


@dataclass
class StoreRegistry:
    """Stores shared between engines of one process, keyed by their resolved DSN."""

    shared: dict[str, _SharedStore] = field(default_factory=dict)
    lock: asyncio.Lock | None = None

    def get_lock(self) -> asyncio.Lock:
        if self.lock is None:
            self.lock = asyncio.Lock()
        return self.lock


# Engines of one process that name the same test share these. Stores and locks belong to one event loop
# (each pytest test runs its own), so there is one registry per loop.
_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StoreRegistry] = weakref.WeakKeyDictionary()


def _registry_of_loop() -> StoreRegistry:
    loop = asyncio.get_running_loop()
    registry = _registries.get(loop)
    if registry is None:
        registry = _registries[loop] = StoreRegistry()
    return registry


@dataclass(frozen=True)
class StoreSpec:
    """How to reach one shard: the DSN to open and, for test databases, how to create and drop it."""

    key: str
    dsn: str
    shared: bool
    create_database: str = ""
    admin_dsn: str = ""


def resolve_specs(dsn: str, num_shards: int, test_name: str) -> list[StoreSpec]:
    """Work out the store of every shard from the settings."""
    specs = []
    for shard in range(1, num_shards + 1):
        if test_name:
            # An explicit DSN picks the dialect (a SQLite one means in-memory); else DWARF_TEST_DSN does.
            base = dsn or os.environ.get(TEST_DSN_VARIABLE, "")
            if base and _is_postgres(base):
                if "%d" not in base:
                    raise BadRequestError(f"{TEST_DSN_VARIABLE} must contain %d in its database name")
                database_dsn = base.replace("%d", f"{test_database_name(test_name)}_{shard}")
                parts = urlsplit(database_dsn)
                database = parts.path.lstrip("/")
                admin = urlunsplit(parts._replace(path="/postgres"))
                specs.append(StoreSpec(database_dsn, database_dsn, True, database, admin))
            else:
                specs.append(StoreSpec(f"memory:{test_name}:{shard}", "sqlite://:memory:", True))
        else:
            resolved = shard_dsn(dsn or DEFAULT_DSN, shard, num_shards)
            specs.append(StoreSpec(resolved, resolved, False))
    return specs


def build_store(spec: StoreSpec, shard: int, pool_size: int) -> Store:
    """Instantiate (not open) the store for a spec."""
    if _is_postgres(spec.dsn):
        from dwarf.store.postgres import PostgresStore

        return PostgresStore(spec.dsn, shard, pool_size=pool_size)
    path, options = parse_sqlite_dsn(spec.dsn)
    return SQLiteStore(path, shard, synchronous=options.get("synchronous", "normal"))


async def _create_test_database(admin_dsn: str, database: str) -> None:
    require_postgres()
    import psycopg

    from dwarf.store.postgres import redact_dsn

    try:
        async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
            # A database left over by a crashed earlier run would leak its flows into this test: start clean.
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'.encode())
            await conn.execute(f'CREATE DATABASE "{database}"'.encode())
    except psycopg.Error as error:
        where = redact_dsn(admin_dsn)
        raise StoreError(
            f'cannot create the test database "{database}" through {where}: {first_line(error)}'
        ) from error


async def _drop_test_database(admin_dsn: str, database: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'.encode())


async def open_stores(
    specs: list[StoreSpec], pool_size: int, *, migrate: bool = True, log: logging.Logger | None = None
) -> list[Store]:
    """Open (and migrate) every shard's store, sharing the ones a test name shares.

    ``migrate=False`` is for operations-only engines: no database file and no schema is created, and a
    database without dwarf's complete schema raises StoreError (see ``Store.open``). Test databases
    (shared specs) are new and empty, so they are always migrated. ``log`` becomes every store's
    ``Store.log``, where outages are reported.
    """
    stores: list[Store] = []
    _registry = _registry_of_loop()
    try:
        for shard, spec in enumerate(specs, start=1):
            if not spec.shared:
                store = build_store(spec, shard, pool_size)
                if log is not None:
                    store.log = log
                await store.open(migrate=migrate)
                stores.append(store)
                continue
            async with _registry.get_lock():
                entry = _registry.shared.get(spec.key)
                if entry is None:
                    if spec.create_database:
                        await _create_test_database(spec.admin_dsn, spec.create_database)
                    store = build_store(spec, shard, pool_size)
                    await store.open(migrate=True)
                    entry = _SharedStore(store, 0, spec.create_database, spec.admin_dsn)
                    _registry.shared[spec.key] = entry
                entry.users += 1
                if log is not None:
                    entry.store.log = log
                stores.append(entry.store)
    except BaseException:
        await release_stores(specs[: len(stores)], stores)
        raise
    return stores


async def release_stores(specs: list[StoreSpec], stores: list[Store]) -> None:
    """Close stores; a shared one only when its last user releases it (dropping a test database then)."""
    _registry = _registry_of_loop()
    for spec, store in zip(specs, stores, strict=False):
        if not spec.shared:
            await store.close()
            continue
        async with _registry.get_lock():
            entry = _registry.shared.get(spec.key)
            if entry is None or entry.store is not store:
                await store.close()
                continue
            entry.users -= 1
            if entry.users > 0:
                continue
            del _registry.shared[spec.key]
            await store.close()
            if entry.drop_database:
                await _drop_test_database(entry.admin_dsn, entry.drop_database)
