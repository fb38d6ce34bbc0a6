"""The narrow interface between the engine and a database, and the named-query loader.

The engine runs its logic against ``Store``/``Tx`` and refers to SQL statements by name; each dialect
module supplies the statements (``queries.sql`` shared, ``queries_<dialect>.sql`` overriding) and the
connection handling. Statements are written with ``:name`` parameters and a ``{now}`` macro that each
dialect replaces by its expression for the database clock in epoch seconds.
"""

from __future__ import annotations

import abc
import logging
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

from dwarf.errors import StoreError
from dwarf.store.statements import StatementName

__all__ = ["Row", "Store", "Tx", "TxFunction", "load_queries", "silent_logger"]

Row = dict[str, Any]

_QUERY_HEADER = re.compile(r"^--\s*name:\s*(_?[a-z][a-z0-9_]*)\s*$", re.MULTILINE)


def _parse_query_file(text: str) -> dict[str, str]:
    """Split a ``-- name: x`` delimited file into {name: statement}; comment lines are dropped."""
    queries: dict[str, str] = {}
    parts = _QUERY_HEADER.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        # A query may hold several statements separated by ";" at line ends (SQLite's stand-in for a
        # PostgreSQL CTE); only the trailing ";" is dropped here.
        statement = "\n".join(lines).strip().rstrip(";").strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = statement
    return queries


def load_queries(dialect: str, now_expression: str) -> dict[str, str]:
    """Return the named statements for ``dialect``: the shared ones overridden by the dialect's own."""
    package = resources.files("dwarf.store")
    queries = _parse_query_file((package / "queries.sql").read_text(encoding="utf-8"))
    queries.update(_parse_query_file((package / f"queries_{dialect}.sql").read_text(encoding="utf-8")))
    # Names starting with "_" are fragments shared by several statements, spliced in as {_name}. A fragment
    # may splice in others; they are resolved first (a few rounds: fragments nest shallowly).
    fragments = {name: sql for name, sql in queries.items() if name.startswith("_")}
    for _ in range(4):
        for name, text in fragments.items():
            for fragment, inner in fragments.items():
                if fragment != name:
                    text = text.replace("{" + fragment + "}", inner)
            fragments[name] = text
    resolved = {}
    for name, sql in queries.items():
        if name.startswith("_"):
            continue
        for fragment, text in fragments.items():
            sql = sql.replace("{" + fragment + "}", text)
        resolved[name] = sql.replace("{now}", now_expression)
    return resolved


def migration_scripts(dialect: str) -> list[tuple[int, str, str]]:
    """Return the dialect's migrations as (version, file name, SQL) sorted by version."""
    folder = resources.files("dwarf.store") / "migrations" / dialect
    scripts = []
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        scripts.append((version, name, entry.read_text(encoding="utf-8")))
    scripts.sort()
    return scripts


def split_statements(script: str) -> list[str]:
    """Split a migration script on semicolons at line ends (our migrations hold no procedural code)."""
    statements = []
    for chunk in re.split(r";\s*$", script, flags=re.MULTILINE):
        lines = [line for line in chunk.splitlines() if not line.lstrip().startswith("--")]
        statement = "\n".join(lines).strip()
        if statement:
            statements.append(statement)
    return statements


def missing_migrations(dialect: str, applied: set[int]) -> list[str]:
    """The file names of the dialect's migrations that ``applied`` (versions in dwarf_migrations) lacks."""
    return [name for version, name, _ in migration_scripts(dialect) if version not in applied]


def silent_logger() -> logging.Logger:
    """The default logger of engines and stores: discards everything and never reaches the application's
    root handlers."""
    logger = logging.getLogger("dwarf.silent")
    logger.propagate = False
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


def first_line(error: BaseException) -> str:
    """The first line of an exception's text (or its type's name).

    Only the first line goes into a StoreError: PostgreSQL's DETAIL and CONTEXT lines quote the values
    of the failing statement, which may hold a key's token or a flow's data.
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


T = TypeVar("T")
TxFunction = Callable[["Tx"], Awaitable[T]]


class Tx(abc.ABC):
    """One open transaction. Statements are referred to by name; parameters by keyword."""

    @abc.abstractmethod
    async def fetch_all(self, query: StatementName, **params: Any) -> list[Row]:
        """Run a statement and return every row."""

    @abc.abstractmethod
    async def execute(self, query: StatementName, **params: Any) -> int:
        """Run a statement and return the number of rows it changed."""

    async def fetch_one(self, query: StatementName, **params: Any) -> Row | None:
        """Run a statement and return its first row, or None."""
        rows = await self.fetch_all(query, **params)
        return rows[0] if rows else None

    async def fetch_value(self, query: StatementName, **params: Any) -> Any:
        """Run a statement and return the first column of its first row, or None."""
        row = await self.fetch_one(query, **params)
        return next(iter(row.values())) if row else None


class Store(abc.ABC):
    """One shard's database: opens, migrates, runs units of work, closes.

    A unit of work is an async function of a ``Tx``: ``run`` calls it inside one transaction that commits
    when it returns and rolls back when it raises. The function must only await its ``Tx`` (no other
    I/O): the SQLite store runs it whole on the database's own thread.

    Failures of the database reach callers as ``StoreError`` (the driver's exception as ``__cause__``),
    from ``open`` as from ``run``, ``read`` and ``write``; whatever a unit of work raises on purpose
    passes through unchanged.
    """

    dialect: str
    shard: int
    # Whether the shard answered its last health check: a claim, a ping of shard_info, or a failed
    # create. New root flows are placed only on healthy shards while there is one.
    healthy: bool = True
    # Where the store reports an outage: one WARNING when the database stops answering, one INFO when
    # it answers again, nothing for the failures in between. Whoever opens the store may replace it
    # (the engine gives its own logger); the default discards everything.
    log: logging.Logger = silent_logger()
    # Whether the last failure was an outage not yet followed by a success (see note_failure).
    _outage: bool = False
    # Whether a unit of work may await something other than its Tx (SQLite runs a unit on the database's
    # thread, where it must never suspend): the codec layer calls a blob store accordingly.
    units_may_suspend: bool = True

    @abc.abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect and apply pending migrations (concurrent-safe across replicas).

        With ``migrate=False`` (an operations-only engine) nothing is created: neither the database
        (a missing SQLite file is an error) nor the schema, which must already be complete; either
        problem raises ``StoreError(transient=False)``.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection. Idempotent."""

    @abc.abstractmethod
    async def run(self, work: TxFunction[T], *, write: bool = True) -> T:
        """Run ``work`` in one transaction and return its result.

        ``write=False`` is a hint that the work only reads (SQLite then skips the write lock).
        """

    async def read(self, query: StatementName, **params: Any) -> list[Row]:
        """Run one read-only statement in its own transaction."""
        return await self.run(lambda tx: tx.fetch_all(query, **params), write=False)

    async def write(self, query: StatementName, **params: Any) -> list[Row]:
        """Run one writing statement in its own transaction and return the rows it returned."""
        return await self.run(lambda tx: tx.fetch_all(query, **params))

    async def resize(self, pool_size: int) -> None:
        """Apply a new connection pool size (stores without a pool ignore it)."""
        return None

    @property
    @abc.abstractmethod
    def description(self) -> str:
        """A credential-free description of the database for logs and errors."""

    # --- failures ---

    def store_error(self, cause: BaseException, *, transient: bool, what: str = "") -> StoreError:
        """A StoreError naming this shard's database for a driver failure, with ``cause`` attached (raise
        it ``from cause`` all the same). ``what`` says what failed when it is not the statement itself."""
        detail = first_line(cause)
        if what:
            detail = f"{what}: {detail}"
        error = StoreError(f"shard {self.shard} ({self.description}): {detail}", transient=transient)
        error.__cause__ = cause
        return error

    def is_outage(self, cause: BaseException) -> bool:
        """Whether a driver failure means the database is unavailable (down, unreachable, out of disk),
        as opposed to a refused value or a lock conflict that the next attempt may well not meet."""
        return False

    def note_failure(self, error: StoreError) -> None:
        """Log the first failure of an outage (the later ones until a success stay silent)."""
        if self._outage or error.__cause__ is None or not self.is_outage(error.__cause__):
            return
        self._outage = True
        self.log.warning(
            "shard %d (%s) unreachable: %s",
            self.shard,
            self.description,
            first_line(error.__cause__),
            extra={"flow": ""},
        )

    def note_success(self) -> None:
        """Log the end of an outage; callers test ``_outage`` first, so the hot path pays one check."""
        self._outage = False
        self.log.info("shard %d reachable again", self.shard, extra={"flow": ""})


class SingleStatementTx(Tx):
    """A Tx for a unit of work known to run exactly one statement, which runs as its own transaction.

    On PostgreSQL that statement goes out in autocommit mode: one round trip instead of three (BEGIN,
    the statement, COMMIT). Only for units whose single statement is all-or-nothing by itself (a data-
    modifying CTE, or SQLite's multi-statement queries, which the store runs as one unit).
    """

    def __init__(self, store: Store) -> None:
        self._store = store

    async def fetch_all(self, query: StatementName, **params: Any) -> list[Row]:
        return await self._store.write(query, **params)

    async def execute(self, query: StatementName, **params: Any) -> int:
        raise NotImplementedError("single-statement units only fetch rows")
