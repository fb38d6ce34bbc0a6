"""``Retry``: the declarative retry policy of a task registered on a ``LocalHost``
(docs/tasks.md#a-retry-policy-per-task).

``@host.task("charge", retry=Retry(attempts=5))`` makes the host catch what the handler raises and, while
attempts remain and the error is one the policy retries, schedule the next attempt exactly as
``flow.retry`` would, with the policy's delay, before letting the error propagate; the engine then records
the attempt as retried, with the error's text. When the attempts are used up the error fails the step as
usual (onError routing or a failed flow).

Decisions:

- Attempts are counted with ``flow.attempt`` (0 on the first run, one more per retry of any kind), so
  the count is the same on every replica and survives restarts; wall time, queueing included, plays no
  part. ``attempts`` is the total number of runs: ``attempts=1`` never retries.
- The delay after attempt ``n`` (0-based) is ``min(initial_delay * backoff ** n, max_delay)``: the first
  retry waits ``initial_delay``. ``max_delay`` is a real cap, so ``max_delay=0`` retries at once (unlike
  ``flow.retry``, where 0 means no cap).
- An exception retries when it is an instance of one of ``retry_on`` (default: any ``Exception``) and of
  none of ``give_up_on``. The default ``give_up_on`` holds the errors a retry cannot cure:
  ``BadRequestError`` (a value that is not JSON, a state that does not fit its model, a bad argument to
  the engine: the same input fails the same way) and ``SubgraphError`` (the child flow failed, and a
  retried step would only meet that same failure again). Pass ``give_up_on=()`` to retry everything.
- A task that calls ``flow.retry`` itself has decided: whether it returns or raises, and whatever
  ``flow.retry`` answered, the policy stays out of that run.
- ``Park`` (interrupt, subgraph) is no error and never retries; neither does a run stopped at its time
  budget, which the engine cancels rather than letting the handler raise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dwarf.errors import BadRequestError, SubgraphError
from dwarf.workflow.durations import Duration, to_seconds

__all__ = ["Retry"]

_ErrorTypes = tuple[type[Exception], ...]


@dataclass(frozen=True, slots=True)
class Retry:
    """How often and how soon a failing task runs again: ``attempts`` runs in all, waiting
    ``min(initial_delay * backoff ** attempt, max_delay)`` after each failed one (delays in seconds or as
    timedeltas, stored as seconds), for the exceptions of ``retry_on`` that are not in ``give_up_on``.

    BadRequestError when a value is out of range: ``attempts`` < 1, a delay negative or not finite,
    ``backoff`` below 1 or not finite, or an error type that is not an Exception class.
    """

    attempts: int = 3
    initial_delay: Duration = 1.0
    backoff: float = 2.0
    max_delay: Duration = 60.0
    retry_on: _ErrorTypes = (Exception,)
    give_up_on: _ErrorTypes = (BadRequestError, SubgraphError)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise BadRequestError(f"Retry attempts must be an int of at least 1, not {self.attempts!r}")
        for name in ("initial_delay", "max_delay"):
            seconds = to_seconds(getattr(self, name), what=f"Retry {name}")
            if seconds < 0:
                raise BadRequestError(f"Retry {name} must not be negative, not {seconds!r}")
            object.__setattr__(self, name, seconds)
        backoff = self.backoff
        if isinstance(backoff, bool) or not isinstance(backoff, int | float):
            raise BadRequestError(f"Retry backoff must be a number, not {backoff!r}")
        if not math.isfinite(backoff) or backoff < 1:
            raise BadRequestError(f"Retry backoff must be finite and at least 1, not {backoff!r}")
        object.__setattr__(self, "backoff", float(backoff))
        object.__setattr__(self, "retry_on", _error_types(self.retry_on, "retry_on"))
        object.__setattr__(self, "give_up_on", _error_types(self.give_up_on, "give_up_on"))

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait after the failed run number ``attempt`` (0-based) before the next one."""
        initial = to_seconds(self.initial_delay)
        cap = to_seconds(self.max_delay)
        try:
            delay = initial * self.backoff ** max(attempt, 0)
        except OverflowError:
            return cap
        return min(delay, cap)

    def retries(self, error: BaseException, attempt: int) -> bool:
        """Whether run ``attempt`` (0-based), which raised ``error``, is followed by another one."""
        return (
            attempt + 1 < self.attempts
            and isinstance(error, self.retry_on)
            and not isinstance(error, self.give_up_on)
        )


def _error_types(value: Any, what: str) -> _ErrorTypes:
    """``value`` as a tuple of Exception classes (a single class is accepted); BadRequestError otherwise."""
    items = (value,) if isinstance(value, type) else value
    if not isinstance(items, tuple | list) or not all(
        isinstance(item, type) and issubclass(item, Exception) for item in items
    ):
        raise BadRequestError(f"Retry {what} must be a tuple of Exception classes, not {value!r}")
    return tuple(items)
