"""Flow and step keys: ``{shard}-{id}-{token}`` bearer capabilities.

A key names a row and proves the caller was given it: the random token is compared in constant time, and
every way a key can be wrong (malformed, unknown id, wrong shard, wrong token, deleted) raises the same
NotFoundError so that a caller cannot probe which ids exist.

A key is parsed strictly, in its canonical form only (the one ``format_key`` writes): ASCII digits without
sign, spaces, underscores or leading zeros, ids of at most 19 digits inside the 64-bit range, and a token
of exactly 16 characters. The length checks come before ``int()``, which refuses texts of more than 4,300
digits with a ValueError (and would accept Unicode digits and underscores).
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import string
import threading
from dataclasses import dataclass

from dwarf.errors import NotFoundError

__all__ = [
    "ParsedKey",
    "correlation_id",
    "format_key",
    "new_token",
    "parse_key",
    "redact_keys",
    "tokens_match",
]

TOKEN_LENGTH = 16
MAX_ID = 2**63 - 1
"""The largest shard number or row id a key may carry (BIGINT's largest value)."""
_MAX_DIGITS = len(str(MAX_ID))
_MAX_KEY_LENGTH = 2 * _MAX_DIGITS + 2 + TOKEN_LENGTH
_ALPHABET = string.ascii_letters + string.digits + "-_"
_TOKEN_CHARS = frozenset(_ALPHABET)


_TOKEN_BYTES = TOKEN_LENGTH * 3 // 4
_POOL_BYTES = 4096


class _RandomPool:
    """Bytes from the operating system's CSPRNG (``os.urandom``, what ``secrets`` uses), read 4 KiB at a
    time and handed out once each: a ``urandom`` call is a system call, and one per token measured about
    20 us here (in a VM), a tenth of a short step's CPU. A forked child starts with an empty pool, so
    parent and child never hand out the same bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._offset + count > len(self._buffer):
                self._buffer, self._offset = os.urandom(max(_POOL_BYTES, count)), 0
            taken = self._buffer[self._offset : self._offset + count]
            self._offset += count
            return taken

    def forget(self) -> None:
        self._buffer, self._offset = b"", 0


_pool = _RandomPool()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool.forget)


def new_token() -> str:
    """A fresh random token of 16 URL-safe characters (96 bits of CSPRNG output).

    Base64 of 12 random bytes is exactly 16 characters of ``_ALPHABET`` (what ``secrets.token_urlsafe``
    makes of them), the bytes taken from a pool refilled by ``os.urandom`` (see ``_RandomPool``).
    """
    return base64.urlsafe_b64encode(_pool.take(_TOKEN_BYTES)).decode("ascii")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    """The parts of a key. Holding one proves nothing until the token was checked against the row."""

    shard: int
    id: int
    token: str


def format_key(shard: int, row_id: int, token: str) -> str:
    """Build the key of a row."""
    return f"{shard}-{row_id}-{token}"


def correlation_id(shard: int, row_id: int) -> str:
    """The token-free ``{shard}-{id}`` that telemetry and logs carry instead of a key."""
    return f"{shard}-{row_id}"


def parse_key(key: object, what: str = "flow") -> ParsedKey:
    """Split a key; anything malformed raises NotFoundError (the same error as an unknown key)."""
    if not isinstance(key, str) or len(key) > _MAX_KEY_LENGTH:
        raise NotFoundError(f"{what} not found")
    # The token's alphabet includes "-", so split off exactly two leading fields.
    parts = key.split("-", 2)
    if len(parts) != 3:
        raise NotFoundError(f"{what} not found")
    shard_text, id_text, token = parts
    if not (_canonical_number(shard_text) and _canonical_number(id_text)):
        raise NotFoundError(f"{what} not found")
    if len(token) != TOKEN_LENGTH or not set(token) <= _TOKEN_CHARS:
        raise NotFoundError(f"{what} not found")
    shard, row_id = int(shard_text), int(id_text)
    if shard > MAX_ID or row_id > MAX_ID:
        raise NotFoundError(f"{what} not found")
    return ParsedKey(shard, row_id, token)


def _canonical_number(text: str) -> bool:
    """Whether ``text`` is a positive number as ``format_key`` writes it: 1 to 19 ASCII digits, no
    leading zero. (``str.isdigit`` alone admits Unicode digits such as "\u0661", which ``int()`` reads.)"""
    return 0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit() and text[0] != "0"


def tokens_match(given: str, stored: str) -> bool:
    """Constant-time token comparison."""
    return hmac.compare_digest(given.encode(), stored.encode())


REDACTED = "[redacted]"

# A key anywhere in a text: digits, "-", digits, "-", then exactly TOKEN_LENGTH token characters not
# followed by another one (a longer run is some other identifier, not a key). Nothing is required on the
# left ("x-1-2-<token>" is masked too): redaction errs towards masking. "(?<![0-9])" and the possessive
# "[0-9]++" keep a long text of digits and dashes linear to scan: a match starts only where a run of
# digits starts, and a run is never re-split. [0-9] rather than \d: keys are ASCII, \d is not.
_KEY_IN_TEXT = re.compile(rf"(?<![0-9])([0-9]++-[0-9]++)-[A-Za-z0-9_-]{{{TOKEN_LENGTH}}}(?![A-Za-z0-9_-])")


def redact_keys(text: str) -> str:
    """``text`` with the token of every flow or step key in it replaced by a marker.

    Errors the engine stores or exports (a flow's error, a step's, ``onErr``, span statuses) may quote a
    key, e.g. a task endpoint that echoes its request; the token is a bearer secret, so it must not travel
    on. ``"... 1-42-AbCdEfGh-_123456 ..."`` becomes ``"... 1-42-[redacted] ..."``, which keeps the
    token-free correlation id for finding the flow.
    """
    if "-" not in text:  # the common case: no key can be in it
        return text
    return _KEY_IN_TEXT.sub(lambda found: f"{found[1]}-{REDACTED}", text)
