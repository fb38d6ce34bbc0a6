"""Running the dashboard under uvicorn, configured so that no flow key reaches a log."""

from __future__ import annotations

import contextlib
import logging
import re

import uvicorn
from starlette.applications import Starlette

from dwarf.dashboard.app import create_app

__all__ = ["KeyRedactor", "serve", "server_config"]

# A key is "{shard}-{id}-{16-character token}"; the token is the secret part.
_KEY = re.compile(r"\b(\d+-\d+-)[A-Za-z0-9_-]{16}(?![A-Za-z0-9_-])")


def redact_keys(text: str) -> str:
    """``text`` with the token of every flow or step key in it replaced by ``***``."""
    return _KEY.sub(r"\1***", text)


class KeyRedactor(logging.Filter):
    """Strips key tokens from log records (request lines hold keys), keeping the token-free ``shard-id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_keys(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_keys(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def _redact_uvicorn_logs() -> None:
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(existing, KeyRedactor) for existing in logger.filters):
            logger.addFilter(KeyRedactor())


def server_config(app: Starlette, host: str = "127.0.0.1", port: int = 8080) -> uvicorn.Config:
    """The uvicorn configuration of the dashboard.

    The access log is off, and should anything turn it back on (a logging setup that attaches handlers
    to uvicorn's loggers does), the tokens of keys in request lines are redacted: keys are bearer
    capabilities and every flow page's path holds one.
    """
    config = uvicorn.Config(app, host=host, port=port, access_log=False, server_header=False, lifespan="on")
    _redact_uvicorn_logs()
    return config


def serve(dsn: str, num_shards: int = 1, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the dashboard over the flows of ``dsn`` until interrupted (blocking).

    It binds to localhost by default. Anyone who can reach it can resume, cancel and fork flows: put
    authentication in front of it before binding it to another interface. Ctrl+C (SIGINT) shuts it down
    gracefully and returns.
    """
    server = uvicorn.Server(server_config(create_app(dsn=dsn, num_shards=num_shards), host, port))
    # uvicorn re-raises the signal that stopped it once it has shut down; Ctrl+C is the normal way out.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
