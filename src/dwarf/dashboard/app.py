"""The dashboard's ASGI application: routes, templates, static files, its gatekeepers and error pages.

``create_app`` either borrows a started engine (the caller starts and stops it, on the event loop the
server runs on) or builds an operations-only engine from a DSN and starts/stops it with the app's lifespan.
An operations-only engine runs no steps: the resumes, cancels and forks it records are carried out by the
application's own engines, which poll for new work about once a second.
"""

from __future__ import annotations

import contextlib
import mimetypes
from collections.abc import AsyncIterator, Iterable
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from dwarf.dashboard.pages import Pages, path_for
from dwarf.dashboard.security import (
    LOOPBACK_NAMES,
    AllowedHosts,
    HostCheck,
    SameOriginPosts,
    SecurityHeaders,
    TokenAuth,
    UnexpectedErrors,
    check_token,
)
from dwarf.dashboard.views import format_duration, format_time
from dwarf.engine import Engine
from dwarf.errors import DwarfError, EngineStateError

__all__ = ["create_app"]

# Browsers run module scripts only when served with a JavaScript type; some systems' MIME tables do not
# know ".mjs" (the extension of Mermaid's ES-module build and of diagrams.mjs).
mimetypes.add_type("text/javascript", ".mjs")


def create_app(
    engine: Engine | None = None,
    *,
    dsn: str | None = None,
    num_shards: int = 1,
    allowed_hosts: Iterable[str] | None = None,
    token: str | None = None,
) -> Starlette:
    """The dashboard as a Starlette application.

    Pass either ``engine``, a started engine that the caller shuts down (run the server on the loop the
    engine was started on), or ``dsn`` (and ``num_shards``), from which the app builds an operations-only
    engine (``workers=0``) that its lifespan starts and stops::

        app = create_app(dsn="postgresql://dwarf@db/flows_%d", num_shards=4, token=secret,
                         allowed_hosts=["dwarf.internal.example"])

    ``allowed_hosts`` are the ``Host`` names the app answers (``name``, ``name:port``, ``[::1]:8080``;
    ``"*"`` for any); every other request gets a 400 before it reaches a page, which defeats DNS
    rebinding. The default is the loopback names (localhost, 127.0.0.1, ::1). With ``token`` every request
    must carry it (``Authorization: Bearer TOKEN``, or HTTP Basic with the token as password) or gets a
    401. ValueError for a malformed host name or token.
    """
    if (engine is None) == (dsn is None):
        raise TypeError("create_app takes either a started engine or a dsn, not both and not neither")
    hosts = AllowedHosts(LOOPBACK_NAMES if allowed_hosts is None else allowed_hosts)
    gatekeepers = [Middleware(SecurityHeaders), Middleware(UnexpectedErrors), Middleware(HostCheck, hosts)]
    if token is not None:
        check_token(token)  # now: Starlette builds the middleware only on the first request
        gatekeepers.append(Middleware(TokenAuth, token))
    gatekeepers.append(Middleware(SameOriginPosts))
    owned = engine is None
    if engine is not None:
        active = engine
    else:
        assert dsn is not None  # checked above: exactly one of the two
        active = Engine(workers=0, dsn=dsn, num_shards=num_shards)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not owned:
            yield
            return
        await active.startup()
        try:
            yield
        finally:
            await active.shutdown()

    pages = Pages(active, _templates())
    routes = [
        Route("/", pages.home, name="home"),
        Route("/flows", pages.flows, name="flows"),
        Route("/flows/{key}", pages.flow, name="flow"),
        Route("/flows/{key}/timeline", pages.timeline, name="timeline"),
        Route("/flows/{key}/resume", pages.resume, methods=["POST"], name="resume"),
        Route("/flows/{key}/cancel", pages.cancel, methods=["POST"], name="cancel"),
        Route("/flows/{key}/fork", pages.fork, methods=["POST"], name="fork"),
        Route("/schedules", pages.schedules, name="schedules"),
        Route("/schedules/pause", pages.pause_schedule, methods=["POST"], name="schedule_pause"),
        Route("/schedules/resume", pages.resume_schedule, methods=["POST"], name="schedule_resume"),
        Mount("/static", StaticFiles(packages=[("dwarf.dashboard", "static")]), name="static"),
    ]

    async def dwarf_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DwarfError)
        if isinstance(exc, EngineStateError):
            return PlainTextResponse("The dashboard's engine is not running.", status_code=503)
        return pages.error_page(request, exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = "Not found" if exc.status_code == 404 else "Cannot show this page"
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return pages.render(request, "error.html", {"title": title, "message": message}, exc.status_code)

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # In this order, outermost first: every answer (refusals too) gets the headers; the Host is
        # checked before the token, so a rebinding page never even sees the login prompt.
        middleware=gatekeepers,
        exception_handlers={DwarfError: dwarf_error, HTTPException: http_error},
    )
    app.state.engine = active
    return app


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dwarf.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format_time
    env.filters["seconds"] = format_duration
    env.filters["flow_id"] = _correlation_id
    templates = Jinja2Templates(env=env)

    @jinja2.pass_context
    def path(context: Any, name: str, **params: str) -> str:
        return path_for(context["request"], name, **params)

    env.globals["path_for"] = path
    return templates


def _correlation_id(key: str) -> str:
    """``{shard}-{id}`` of a key: names a flow on screen without its secret token."""
    return "-".join(key.split("-", 2)[:2])
