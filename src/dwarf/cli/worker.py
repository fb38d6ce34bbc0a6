"""`dwarf worker MODULE:HOST`: run an application's tasks in a worker process, until SIGTERM or SIGINT.

The command imports the application's host (``MODULE:HOST``: a Host object, or a zero-argument callable
returning one, such as a function or a class), builds an engine with workers on ``--dsn``, optionally wraps
the host in a signal relay, and serves it (``dwarf.engine.serving``): one log line per phase on stderr,
``/healthz`` and ``/readyz`` with ``--health-port``, and a drain of ``--drain-timeout`` seconds on SIGTERM
or SIGINT, after which it exits 0.

A MODULE:HOST that cannot be imported or names no host is a usage error (exit code 2, one line); a
database or relay that cannot be reached, or a health port that cannot be bound, ends it with exit code 1.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import inspect
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from dwarf.cli.session import CommandError, value_settings
from dwarf.errors import DwarfError

if TYPE_CHECKING:
    from dwarf.engine import Host

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_NATS_URL",
    "DEFAULT_WORKERS",
    "LOG_FORMAT",
    "LogLevel",
    "Relay",
    "WorkerOptions",
    "load_host_reference",
    "run_worker",
]

DEFAULT_WORKERS = 64
"""The engine's default number of workers (``dwarf.engine.settings.DEFAULT_WORKERS``), repeated here so
that parsing the command line does not import the engine."""
DEFAULT_DRAIN_TIMEOUT = 10.0
"""The engine's default drain timeout (``dwarf.engine.settings.DEFAULT_DRAIN_TIMEOUT``)."""
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_REFERENCE_HINT = "MODULE:HOST"


class Relay(enum.StrEnum):
    """How the worker hears the other replicas' signals (see docs/relays.md)."""

    NONE = "none"
    PG = "pg"
    NATS = "nats"


class LogLevel(enum.StrEnum):
    """The least severe record of the ``dwarf`` loggers that `dwarf worker` prints."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class WorkerOptions:
    """What `dwarf worker` was asked to do, as parsed from its command line."""

    reference: str
    dsn: str
    shards: int = 1
    workers: int = DEFAULT_WORKERS
    relay: Relay = Relay.NONE
    nats_url: str = ""
    health_port: int | None = None
    health_host: str = "0.0.0.0"
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    log_level: str = "info"


def _bad_reference(message: str) -> typer.BadParameter:
    return typer.BadParameter(message, param_hint=_REFERENCE_HINT)


def _is_host(value: object) -> bool:
    return not isinstance(value, type) and all(
        callable(getattr(value, method, None)) for method in ("load_graph", "execute_task")
    )


def load_host_reference(reference: str) -> Any:
    """The host named by ``module:attr`` (``attr`` may be dotted): the attribute itself when it is a host
    (it has ``load_graph`` and ``execute_task`` methods), else what calling it with no arguments returns.

    Every way the reference can be wrong is a usage error naming it. The working directory is importable,
    as it is for ``python -m``.
    """
    module_name, sep, attr_path = reference.partition(":")
    if not sep or not module_name or not attr_path:
        raise _bad_reference(f"{reference!r} is not MODULE:HOST (e.g. myapp.tasks:host)")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise _bad_reference(f"cannot import {module_name!r}: {error}") from None
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise _bad_reference(f"{module_name!r} has no attribute {attr_path!r}") from None
    if not _is_host(target) and callable(target):
        try:
            inspect.signature(target).bind()
        except TypeError:
            raise _bad_reference(f"{reference} needs arguments; name a host or a function of none") from None
        except ValueError:
            pass  # no signature to check (a builtin): just call it
        target = target()
    if not _is_host(target):
        raise _bad_reference(
            f"{reference} is a {type(target).__name__}, not a host (an object with load_graph and "
            "execute_task methods, such as a LocalHost, or a function returning one)"
        )
    return target


def _with_relay(host: Host, options: WorkerOptions) -> Host:
    """``host`` wrapped in the relay ``--relay`` asked for (the host itself without one)."""
    if options.relay == Relay.NONE:
        return host
    from dwarf.hosts.relay import RelayHost, SignalRelay

    relay: SignalRelay
    if options.relay == Relay.PG:
        if urlsplit(options.dsn).scheme.lower() not in {"postgres", "postgresql"}:
            raise typer.BadParameter("pg needs a PostgreSQL --dsn", param_hint="--relay")
        try:
            from dwarf.hosts.pgnotify import PgNotifyRelay
        except ImportError as error:
            raise CommandError(str(error)) from error
        relay = PgNotifyRelay(options.dsn)
    else:
        try:
            from dwarf.hosts.nats import NatsRelay

            relay = NatsRelay(options.nats_url or DEFAULT_NATS_URL)
        except ImportError as error:
            raise CommandError(str(error)) from error
    return RelayHost(host, relay)


class _StderrLogging:
    """Phase lines (and the engine's warnings) on stderr for the command's duration.

    When the application configured logging itself (its module put handlers on the root logger), the
    records go to those handlers instead; either way the ``dwarf`` logger gets the asked level, and both
    are put back afterwards (the command may run inside another program, such as a test).
    """

    def __init__(self, level: str) -> None:
        self._logger = logging.getLogger("dwarf")
        self._level = level.upper()
        self._handler: logging.Handler | None = None
        self._saved_level = self._logger.level

    def __enter__(self) -> None:
        self._logger.setLevel(self._level)
        if not logging.getLogger().handlers:
            self._handler = logging.StreamHandler(sys.stderr)
            self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
            self._logger.addHandler(self._handler)

    def __exit__(self, *exc: object) -> None:
        if self._handler is not None:
            self._logger.removeHandler(self._handler)
        self._logger.setLevel(self._saved_level)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_worker(options: WorkerOptions) -> None:
    """Serve the host of ``options.reference`` until SIGTERM or SIGINT, then drain; returns after a clean
    drain. Usage errors raise ``typer.BadParameter``; what stops the worker from starting raises
    ``CommandError`` or ``DwarfError`` (exit code 1)."""
    host = _with_relay(load_host_reference(options.reference), options)
    from dwarf.engine import Engine
    from dwarf.engine.serving import serve

    with _StderrLogging(options.log_level):
        try:
            engine = Engine(
                host=host,
                dsn=options.dsn,
                num_shards=options.shards,
                workers=options.workers,
                logger=logging.getLogger("dwarf.engine"),
                **value_settings(),
            )
            asyncio.run(
                serve(
                    engine,
                    drain_timeout=options.drain_timeout,
                    health_port=options.health_port,
                    health_host=options.health_host,
                )
            )
        except DwarfError:
            raise
        except OSError as error:  # the health port
            raise CommandError(error.strerror or _first_line(error)) from error
        except ImportError as error:  # the postgres extra, for a postgresql:// DSN
            raise CommandError(_first_line(error)) from error
