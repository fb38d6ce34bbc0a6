"""The dashboard's ASGI application: routes, templates, static files, security headers and error pages.

``create_app`` either borrows a started engine (the caller starts and stops it, on the event loop the
server runs on) or builds an operations-only engine from a DSN and starts/stops it with the app's lifespan.
An operations-only engine runs no steps: the resumes, cancels and forks it records are carried out by the
application's own engines, which poll for new work about once a second.
"""

from __future__ import annotations

import contextlib
import mimetypes
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dwarf.dashboard.pages import Pages, path_for
from dwarf.dashboard.views import format_duration, format_time
from dwarf.engine import Engine
from dwarf.errors import DwarfError, EngineStateError

__all__ = ["create_app"]

# Browsers run module scripts only when served with a JavaScript type; some systems' MIME tables do not
# know ".mjs" (the extension of Mermaid's ES-module build and of diagrams.mjs).
mimetypes.add_type("text/javascript", ".mjs")

# Mermaid puts <style> elements into the SVGs it draws, hence 'unsafe-inline' for styles only; scripts
# come from our own static files and nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(engine: Engine | None = None, *, dsn: str | None = None, num_shards: int = 1) -> Starlette:
    """The dashboard as a Starlette application.

    Pass either ``engine``, a started engine that the caller shuts down (run the server on the loop the
    engine was started on), or ``dsn`` (and ``num_shards``), from which the app builds an operations-only
    engine (``workers=0``) that its lifespan starts and stops::

        app = create_app(dsn="postgresql://dwarf@db/flows_%d", num_shards=4)
    """
    if (engine is None) == (dsn is None):
        raise TypeError("create_app takes either a started engine or a dsn, not both and not neither")
    owned = engine is None
    active = engine if engine is not None else Engine(workers=0, dsn=dsn, num_shards=num_shards)

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
        Route("/flows/{key}/resume", pages.resume, methods=["POST"], name="resume"),
        Route("/flows/{key}/cancel", pages.cancel, methods=["POST"], name="cancel"),
        Route("/flows/{key}/fork", pages.fork, methods=["POST"], name="fork"),
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
        middleware=[Middleware(SecurityHeaders), Middleware(SameOriginPosts)],
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


class SecurityHeaders:
    """Adds a strict content policy and no-caching of pages (they carry keys and state) to each response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(scope.get("root_path", "") + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    # Keys are in page URLs: never hand them to another site in a Referer header. (Not
                    # "no-referrer": browsers then send "Origin: null", which the POST check must refuse.)
                    (b"referrer-policy", b"same-origin"),
                    (b"cache-control", b"no-cache" if static else b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class SameOriginPosts:
    """Refuses a POST that a browser sent from another origin (a page elsewhere submitting our forms).

    Browsers say where a request comes from in ``Sec-Fetch-Site`` (older ones only in ``Origin``); tools
    such as curl send neither and are let through (they hold the key themselves anyway).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and _cross_origin(scope):
            response = PlainTextResponse("Cross-origin form posts are refused.", status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _cross_origin(scope: Scope) -> bool:
    headers: dict[str, str] = {
        name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
    }
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in {"same-origin", "none"}
    origin = headers.get("origin")
    if origin is None:
        return False
    # "null" is the origin of sandboxed frames and file: pages: never ours.
    return origin == "null" or urlsplit(origin).netloc.lower() != headers.get("host", "").lower()
