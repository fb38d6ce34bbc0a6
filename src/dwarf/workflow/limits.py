"""Concurrency and rate limits per fairness key or task URL: the records of ``Engine.limit`` and
``Engine.list_limits`` (docs/limits.md), and the checks of their arguments.

A limit names a key in a scope: a fairness key (the ``FlowOptions.fairness_key`` of flows; '' is the
flows without one) or a task URL (the steps that run that task, whatever their flow). ``concurrency``
caps how many of the key's steps run at once, ``rate`` how many start per second, with bursts of up to
``burst`` starts. Limits live in the database and every claim of every replica obeys them.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from dwarf.errors import BadRequestError
from dwarf.workflow.jsonvalue import check_text
from dwarf.workflow.taskref import TASK_URLS_ATTRIBUTE

__all__ = ["MAX_CONCURRENCY", "MAX_LIMIT_KEY_BYTES", "MAX_RATE", "Limit", "LimitScope", "LimitSpec"]

MAX_LIMIT_KEY_BYTES = 1024
"""The longest key a limit may name, in UTF-8 bytes (the scope and key are one primary-key entry)."""
MAX_CONCURRENCY = 1_000_000
"""The largest concurrency limit (a larger one is a typo, not a limit)."""
MAX_RATE = 1_000_000.0
"""The largest rate, in step starts per second; also the largest burst."""


class LimitScope(enum.StrEnum):
    """What a limit's key names."""

    FAIRNESS_KEY = "fairness_key"
    """The steps of the flows created with this ``FlowOptions.fairness_key`` ('' for flows without one)."""
    TASK_URL = "task_url"
    """The steps that run the task at this URL, in any flow."""


@dataclass(frozen=True)
class Limit:
    """A limit as one shard holds it (``Engine.list_limits``), and how close its key is to it now.

    ``concurrency`` is the most steps of the key that run at once (None: no such limit); ``rate`` the most
    step starts per second (None: no such limit), in bursts of up to ``burst`` starts. ``running`` is how
    many of the key's steps run now under the limit (0 without a concurrency limit), ``tokens`` how many
    starts the rate allows right now (0 without a rate). Each shard (database) holds and enforces its own
    copy: with several shards, each runs up to ``concurrency`` steps of the key.
    """

    scope: LimitScope
    key: str
    concurrency: int | None = None
    rate: float | None = None
    burst: int | None = None
    running: int = 0
    tokens: float = 0.0
    shard: int = 1

    @property
    def at_limit(self) -> bool:
        """Whether no step of the key may start right now (all its slots taken, or no token left)."""
        full = self.concurrency is not None and self.running >= self.concurrency
        return full or (self.rate is not None and self.tokens < 1.0)

    def describe(self) -> str:
        """One line for people: ``fairness key 'acme': at most 5 running (5 now), 10/s (burst 20)``."""
        parts = []
        if self.concurrency is not None:
            parts.append(f"at most {self.concurrency:,} running ({self.running:,} now)")
        if self.rate is not None:
            parts.append(f"{self.rate:g}/s (burst {self.burst or 1:,})")
        return f"{self.subject()}: {', '.join(parts)}"

    def subject(self) -> str:
        """What the limit applies to, for people: ``fairness key 'acme'`` or ``task URL 'https://...'``."""
        what = "fairness key" if self.scope == LimitScope.FAIRNESS_KEY else "task URL"
        return f"{what} {self.key!r}"

    @classmethod
    def of(cls, row: dict[str, Any], shard: int) -> Limit:
        """The limit of a dwarf_limits row read with its slot count and tokens (``_limit_columns``)."""
        concurrency = int(row["concurrency"])
        rate = float(row["rate"])
        return cls(
            scope=LimitScope(row["scope"]),
            key=str(row["limit_key"]),
            concurrency=concurrency if concurrency > 0 else None,
            rate=rate if rate > 0 else None,
            burst=int(row["burst"]) if rate > 0 else None,
            running=int(row["running"]),
            tokens=float(row["tokens"]),
            shard=shard,
        )


@dataclass(frozen=True)
class LimitSpec:
    """The checked arguments of ``Engine.limit``/``clear_limit``: scope and key, and what the limit
    allows (0 for no concurrency limit, no rate)."""

    scope: LimitScope
    key: str
    concurrency: int = 0
    rate: float = 0.0
    burst: int = 0

    @classmethod
    def target(cls, key: Any, scope: LimitScope | str | None) -> LimitSpec:
        """The scope and key a limit call names; BadRequestError for anything else.

        ``key`` may be a task registered on a host (``@host.task``) instead of its URL: the scope is then
        the task URL's. Without ``scope``, a string key is a fairness key.
        """
        if callable(key) and not isinstance(key, str):
            urls = getattr(key, TASK_URLS_ATTRIBUTE, ())
            name = getattr(key, "__qualname__", None) or type(key).__name__
            if not isinstance(urls, tuple) or len(urls) != 1 or not isinstance(urls[0], str):
                raise BadRequestError(
                    f"{name} is not a task registered under one URL: pass its task URL as a string"
                )
            if scope is not None and scope != LimitScope.TASK_URL:
                raise BadRequestError(f"a task ({name}) names a task URL: its scope is 'task_url'")
            key, scope = urls[0], LimitScope.TASK_URL
        try:
            resolved = LimitScope(LimitScope.FAIRNESS_KEY if scope is None else scope)
        except ValueError:
            raise BadRequestError(
                f"unknown limit scope {scope!r}: use 'fairness_key' or 'task_url'"
            ) from None
        if not isinstance(key, str):
            raise BadRequestError(f"a limit's key must be a string, not {type(key).__name__}")
        check_text(key, "a limit's key")
        if len(key.encode("utf-8")) > MAX_LIMIT_KEY_BYTES:
            raise BadRequestError(f"a limit's key must be at most {MAX_LIMIT_KEY_BYTES} bytes (UTF-8)")
        if resolved == LimitScope.TASK_URL and not key:
            raise BadRequestError("a task URL limit needs the task's URL: the key must not be empty")
        return cls(resolved, key)

    def allowing(self, concurrency: Any, rate: Any, burst: Any) -> LimitSpec:
        """This target with what its limit allows; BadRequestError for values out of range."""
        if concurrency is None and rate is None:
            raise BadRequestError("set a concurrency, a rate or both (clear_limit removes a limit)")
        count = 0
        if concurrency is not None:
            if isinstance(concurrency, bool) or not isinstance(concurrency, int):
                raise BadRequestError("concurrency must be an integer")
            if not 1 <= concurrency <= MAX_CONCURRENCY:
                raise BadRequestError(f"concurrency must be from 1 to {MAX_CONCURRENCY:,}")
            count = concurrency
        per_second = 0.0
        size = 0
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
                raise BadRequestError("rate must be a finite number of step starts per second")
            if not 0 < rate <= MAX_RATE:
                raise BadRequestError(f"rate must be more than 0 and at most {MAX_RATE:,.0f} per second")
            per_second = float(rate)
            # By default a second's worth of starts may come at once (at least one).
            size = max(1, math.ceil(per_second))
        if burst is not None:
            if rate is None:
                raise BadRequestError("burst belongs to a rate: set rate too")
            if isinstance(burst, bool) or not isinstance(burst, int):
                raise BadRequestError("burst must be an integer")
            if not 1 <= burst <= MAX_RATE:
                raise BadRequestError(f"burst must be from 1 to {MAX_RATE:,.0f}")
            size = burst
        return LimitSpec(self.scope, self.key, count, per_second, size)
