"""Conversion of the duration arguments the API accepts (``timedelta`` or seconds as a number)."""

from __future__ import annotations

import math
from datetime import timedelta

from dwarf.errors import BadRequestError

__all__ = ["Duration", "to_seconds", "to_timedelta"]

Duration = timedelta | float | int


def to_seconds(value: Duration | None, *, what: str = "duration") -> float:
    """Return ``value`` in seconds (None is 0); BadRequestError for a non-number or a non-finite one."""
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequestError(
            f"{what} must be a timedelta or a number of seconds, not {type(value).__name__}"
        )
    try:
        seconds = float(value)
    except OverflowError:
        # An int beyond float's range is no more a duration than infinity is.
        raise BadRequestError(f"{what} must be finite") from None
    if not math.isfinite(seconds):
        raise BadRequestError(f"{what} must be finite")
    return seconds


def to_timedelta(value: Duration | None, *, what: str = "duration") -> timedelta:
    """Return ``value`` as a timedelta; None is zero."""
    return timedelta(seconds=to_seconds(value, what=what))
