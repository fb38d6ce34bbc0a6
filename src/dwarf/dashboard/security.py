"""The dashboard's gatekeepers: which Host names it answers, who may use it, and what every answer carries.

Each gatekeeper is a plain ASGI middleware, so that it runs before routing and answers refused requests
itself, without reaching a page handler:

- ``SecurityHeaders`` (outermost) adds the content policy and no-caching headers to every answer, refusals
  and error pages included;
- ``UnexpectedErrors`` turns an exception no handler expected into a bare 500 page (never a traceback),
  logging the traceback with key tokens redacted;
- ``HostCheck`` refuses a request whose ``Host`` is not one the dashboard was told it serves (DNS
  rebinding: a page of evil.example whose name now resolves to 127.0.0.1 would otherwise read the
  dashboard as its own origin);
- ``TokenAuth`` asks for the dashboard's token, as a bearer token or as the password of HTTP Basic;
- ``SameOriginPosts`` refuses forms that a browser posts from another site.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import re
import socket
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "LOOPBACK_NAMES",
    "TOKEN_ENV",
    "AllowedHosts",
    "HostCheck",
    "SameOriginPosts",
    "SecurityHeaders",
    "TokenAuth",
    "UnexpectedErrors",
    "check_token",
    "default_allowed_hosts",
    "is_loopback",
    "redact_keys",
]

TOKEN_ENV = "DWARF_DASHBOARD_TOKEN"
"""The environment variable `dwarf serve` reads its token from when ``--token`` is not given."""

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""The names a browser on this machine uses for a dashboard bound to a loopback address."""

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})

# Mermaid puts <style> elements into the SVGs it draws, hence 'unsafe-inline' for styles only; scripts
# come from our own static files and nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

# A key is "{shard}-{id}-{16-character token}"; the token is the secret part.
_KEY = re.compile(r"\b(\d+-\d+-)[A-Za-z0-9_-]{16}(?![A-Za-z0-9_-])")

_log = logging.getLogger("dwarf.dashboard")


def redact_keys(text: str) -> str:
    """``text`` with the token of every flow or step key in it replaced by ``***``."""
    return _KEY.sub(r"\1***", text)


# --- the Host check ---


def is_loopback(host: str) -> bool:
    """True when ``host`` (a bind address or name) reaches this machine only: localhost, 127.x, ::1."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def default_allowed_hosts(bind_host: str) -> list[str]:
    """The Host names a dashboard bound to ``bind_host`` answers unless told more with ``--allow-host``.

    The bound name itself; with the loopback names when it is a loopback address (a browser may say
    "localhost" or "127.0.0.1" for either). Bound to every interface (0.0.0.0, ::), it answers the
    loopback names and this machine's host name; other names and addresses need ``--allow-host``.
    """
    name = bind_host.strip().lower()
    if name in _WILDCARDS:
        machine = socket.gethostname().lower()
        return [*LOOPBACK_NAMES, *([machine] if _split_host(machine, bare_ipv6=True) else [])]
    if is_loopback(name):
        return [name, *(loopback for loopback in LOOPBACK_NAMES if loopback != name)]
    return [name]


@dataclass(frozen=True)
class _HostName:
    name: str
    port: int | None  # None: any port


# A host name or IPv4 address: letters, digits, dots, dashes, underscores (some internal names have them).
_NAME = re.compile(r"[a-z0-9_.-]+")
_PORT = re.compile(r"[0-9]{1,5}")


def _split_host(text: str, *, bare_ipv6: bool) -> _HostName | None:
    """``name``, ``name:port``, ``[v6]`` or ``[v6]:port`` (and, in a setting, a bare ``v6``) lower-cased,
    without a trailing dot; None when it is none of these."""
    text = text.strip().lower()
    port_text = ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        name, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                return None
            port_text = rest[1:]
        try:
            name = str(ipaddress.IPv6Address(name))  # one spelling of each address: [0::1] is [::1]
        except ValueError:
            return None
    elif text.count(":") > 1:
        if not bare_ipv6:
            return None
        try:
            name = str(ipaddress.IPv6Address(text))
        except ValueError:
            return None
    else:
        name, _, port_text = text.partition(":")
        if ":" in text and not port_text:
            return None
        name = name.rstrip(".")
        if not name or not _NAME.fullmatch(name):
            return None
    port: int | None = None
    if port_text:
        if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
            return None
        port = int(port_text)
    return _HostName(name, port)


class AllowedHosts:
    """The Host header values the dashboard answers to.

    Each entry is a name or address (``dash.example.com``, ``10.0.0.5``, ``::1``), optionally with a port
    (``dash.example.com:8443``, ``[::1]:8080``); without a port it matches any. ``*`` matches everything.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.entries = tuple(entries)
        if isinstance(entries, str) or not self.entries:
            raise ValueError("allowed hosts must be a non-empty list of host names (or '*')")
        self.any = "*" in self.entries
        self._names: set[_HostName] = set()
        for entry in self.entries:
            if entry == "*":
                continue
            parsed = _split_host(entry, bare_ipv6=True) if isinstance(entry, str) else None
            if parsed is None:
                raise ValueError(f"not a host name: {entry!r} (expected a name, an address, or '*')")
            self._names.add(parsed)

    def allows(self, host_header: str) -> bool:
        """True when a request with this ``Host`` header value may be answered."""
        if self.any:
            return True
        parsed = _split_host(host_header, bare_ipv6=False)
        if parsed is None:
            return False
        return _HostName(parsed.name, None) in self._names or (
            parsed.port is not None and parsed in self._names
        )


class HostCheck:
    """Answers 400 to a request without exactly one allowed ``Host`` header, before anything else runs."""

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            response = PlainTextResponse(
                "This dashboard does not answer requests for this host name. If you reached it by a name "
                "you trust, allow that name: dwarf serve --allow-host NAME (create_app(allowed_hosts=...)).",
                status_code=400,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        hosts = [value for name, value in scope["headers"] if name == b"host"]
        if len(hosts) != 1:
            return self.allowed.any and len(hosts) == 0
        return self.allowed.allows(hosts[0].decode("latin-1"))


# --- the token ---


def check_token(token: str) -> None:
    """ValueError unless ``token`` can travel as a bearer token and a Basic password: non-empty printable
    ASCII without spaces (a random string such as ``secrets.token_urlsafe(32)`` is ideal)."""
    if not token or not all("!" <= char <= "~" for char in token):
        raise ValueError("the dashboard token must be non-empty printable ASCII without spaces")


class TokenAuth:
    """Asks every request for the token: ``Authorization: Bearer TOKEN``, or HTTP Basic with the token as
    the password and any user name (so that a browser prompts for it and then sends it on its own).

    Compared in constant time on digests, so neither the token's content nor its length leaks by timing.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        check_token(token)
        self.app = app
        self._digest = hashlib.sha256(token.encode()).digest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            response = PlainTextResponse(
                "This dashboard needs its token: as the password of the login prompt (any user name), or "
                "as an 'Authorization: Bearer' header.",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="dwarf", charset="UTF-8"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = _credential(value)
                break
        # Always compare, even with nothing given (the token is never empty, so that never matches).
        return hmac.compare_digest(hashlib.sha256(given).digest(), self._digest)


def _credential(header: bytes) -> bytes:
    """The token an Authorization header carries (bearer token, or Basic password), or b""."""
    scheme, _, rest = header.strip().partition(b" ")
    rest = rest.strip()
    if scheme.lower() == b"bearer":
        return rest
    if scheme.lower() == b"basic":
        try:
            decoded = base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            return b""
        _, colon, password = decoded.partition(b":")
        return password if colon else b""
    return b""


# --- headers, errors and cross-site posts ---


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


class UnexpectedErrors:
    """A bare 500 for an exception nothing else handled, inside ``SecurityHeaders`` so it has the headers.

    Starlette's own last-resort handler sits outside every middleware; its answer would lack them. The
    traceback goes to the ``dwarf.dashboard`` logger with key tokens redacted (an exception's message can
    quote a key from the request).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as error:
            _log.error(
                "dashboard request failed: %s", redact_keys("".join(traceback.format_exception(error)))
            )
            if started:  # too late for another answer; the server closes the connection
                raise
            response = PlainTextResponse("The dashboard failed to answer this request.", status_code=500)
            await response(scope, receive, send)


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
