"""Running the dashboard under uvicorn, configured so that no flow key reaches a log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

import uvicorn
from starlette.applications import Starlette

from dwarf.dashboard.app import create_app
from dwarf.dashboard.security import default_allowed_hosts, is_loopback, redact_keys

__all__ = ["KeyRedactor", "redact_keys", "serve", "server_config"]


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


def serve(
    dsn: str,
    num_shards: int = 1,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    token: str | None = None,
    allowed_hosts: Iterable[str] = (),
    no_auth: bool = False,
) -> None:
    """Serve the dashboard over the flows of ``dsn`` until interrupted (blocking).

    It binds to localhost by default and answers only requests whose ``Host`` is a name it is bound to
    (see ``default_allowed_hosts``) or one of ``allowed_hosts`` (``"*"``: any). With ``token``, every
    request must carry it (bearer token, or the password of HTTP Basic). Anyone who can reach the
    dashboard can read every flow and resume, cancel and fork flows, so binding it beyond this machine
    without a token is refused (ValueError) unless ``no_auth`` says that something in front of it (an
    authenticating proxy) checks who comes in. Ctrl+C (SIGINT) shuts it down gracefully and returns.
    """
    if token is None and not no_auth and not is_loopback(host):
        raise ValueError(
            f"the dashboard would listen on {host} without authentication: give it a token, or say that "
            "a proxy in front of it authenticates users (no_auth=True)"
        )
    extra = [allowed_hosts] if isinstance(allowed_hosts, str) else list(allowed_hosts)
    hosts = [*default_allowed_hosts(host), *extra]
    app = create_app(dsn=dsn, num_shards=num_shards, allowed_hosts=hosts, token=token)
    server = uvicorn.Server(server_config(app, host, port))
    # uvicorn re-raises the signal that stopped it once it has shut down; Ctrl+C is the normal way out.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
