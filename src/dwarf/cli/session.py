"""One operations-only engine per CLI command: open it, run one coroutine on it, always shut it down.

The CLI never runs steps itself. Its engine has no workers and no host, so a resume or a fork it records
is picked up by the application's own engines (they poll within about a second).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from dwarf._extras import require_postgres
from dwarf.errors import DwarfError

if TYPE_CHECKING:
    from dwarf.engine import Engine, Host

__all__ = [
    "DEFAULT_DSN",
    "CommandError",
    "Target",
    "missing_sqlite_files",
    "redact",
    "value_settings",
    "with_engine",
]

DEFAULT_DSN = "sqlite:///dwarf.db"
CODEC_VARIABLE = "DWARF_CODEC"
BLOB_STORE_VARIABLE = "DWARF_BLOB_STORE"
PROBE_TIMEOUT = 5
"""Seconds to wait for a PostgreSQL server to accept a connection before reporting it unreachable."""

T = TypeVar("T")


class CommandError(Exception):
    """A failure the CLI reports as one line on stderr with exit code 1, without a traceback."""


@dataclass(frozen=True)
class Target:
    """The database a command works on: the DSN (``%d`` per shard) and the number of shards."""

    dsn: str
    num_shards: int


_USERINFO_PASSWORD = re.compile(r"(//[^/?#@:]*):[^/?#@]*@")


def redact(dsn: str) -> str:
    """The DSN without its password, for messages (even a DSN that does not parse as a URL)."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return _USERINFO_PASSWORD.sub(r"\1:***@", dsn)
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def missing_sqlite_files(target: Target) -> list[str]:
    """The SQLite database files of ``target`` that do not exist (none for PostgreSQL or in-memory)."""
    from dwarf.store.shards import shard_dsn
    from dwarf.store.sqlite import parse_sqlite_dsn

    if urlsplit(target.dsn).scheme not in {"sqlite", "sqlite3"}:
        return []
    missing = []
    for shard in range(1, target.num_shards + 1):
        path, _ = parse_sqlite_dsn(shard_dsn(target.dsn, shard, target.num_shards))
        # A "file:" path is an SQLite URI that would open (or create) some other file: as a literal path it
        # does not exist, so the command refuses it instead.
        if path != ":memory:" and not os.path.exists(path):
            missing.append(path)
    return missing


def with_engine(
    target: Target,
    operation: Callable[[Engine], Awaitable[T]],
    *,
    host: Host | None = None,
    workers: int = 0,
    create_database: bool = False,
) -> T:
    """Run ``operation`` on a started engine for ``target`` and return its result.

    Without ``create_database`` a missing SQLite file is an error rather than a new empty database, so
    that a command run in the wrong directory says so instead of showing nothing. DwarfErrors pass
    through (the command layer reports them); a database that cannot be opened becomes a CommandError.
    """
    if not create_database:
        missing = missing_sqlite_files(target)
        if missing:
            raise CommandError(
                f"no database at {missing[0]}: pass --dsn (or set DWARF_DSN), "
                "or run `dwarf demo` to create one"
            )
    return asyncio.run(_session(target, operation, host, workers))


def value_settings() -> dict[str, Any]:
    """The engine settings for stored values that the environment names (docs/codecs.md): the codecs
    of ``DWARF_CODEC`` and the blob store of ``DWARF_BLOB_STORE``, each ``MODULE:ATTR`` naming the object
    (a codec or a list of codecs; a blob store) or a function of no arguments returning it."""
    settings: dict[str, Any] = {}
    for variable, setting in ((CODEC_VARIABLE, "codec"), (BLOB_STORE_VARIABLE, "blob_store")):
        reference = os.environ.get(variable, "")
        if reference:
            settings[setting] = _resolve(reference, variable)
    return settings


def _resolve(reference: str, variable: str) -> Any:
    """The object ``MODULE:ATTR`` names (``ATTR`` may be dotted), called when it is a plain function."""
    module_name, sep, attr_path = reference.partition(":")
    if not sep or not module_name or not attr_path:
        raise CommandError(f"{variable}={reference!r} is not MODULE:ATTR (e.g. myapp.storage:codecs)")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as for python -m: the application's modules are importable
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise CommandError(f"{variable}: cannot import {module_name!r}: {error}") from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(f"{variable}: {module_name!r} has no attribute {attr_path!r}") from None
    if inspect.isfunction(target):
        target = target()
    return target


async def _probe_postgres(target: Target) -> None:
    """Connect once to every PostgreSQL shard, failing within seconds.

    The engine's pool keeps retrying an unreachable server for half a minute before it gives up; a
    person at a shell wants to hear about a wrong host or port at once.
    """
    if urlsplit(target.dsn).scheme not in {"postgres", "postgresql"}:
        return
    try:
        require_postgres()
    except ImportError as error:
        raise CommandError(str(error)) from error
    import psycopg

    from dwarf.store.shards import shard_dsn

    for shard in range(1, target.num_shards + 1):
        dsn = shard_dsn(target.dsn, shard, target.num_shards)
        try:
            connection = await psycopg.AsyncConnection.connect(dsn, connect_timeout=PROBE_TIMEOUT)
        except psycopg.Error as error:
            raise CommandError(f"cannot open the database {redact(dsn)}: {_first_line(error)}") from error
        await connection.close()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


async def _session(
    target: Target, operation: Callable[[Engine], Awaitable[T]], host: Host | None, workers: int
) -> T:
    from dwarf.engine import Engine

    engine = Engine(workers=workers, dsn=target.dsn, num_shards=target.num_shards, **value_settings())
    if host is not None:
        engine.set_host(host)
    await _probe_postgres(target)
    try:
        await engine.startup()
    except DwarfError:
        raise
    except Exception as error:
        raise CommandError(f"cannot open the database {redact(target.dsn)}: {_first_line(error)}") from error
    try:
        return await operation(engine)
    finally:
        await engine.shutdown()
