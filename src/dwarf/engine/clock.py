"""Database times, stored as epoch seconds in the database's clock, as timezone-aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["optional_utc", "utc"]


def utc(seconds: float) -> datetime:
    """An epoch-seconds column value as an aware UTC datetime."""
    return datetime.fromtimestamp(float(seconds), UTC)


def optional_utc(seconds: float | None) -> datetime | None:
    """Like ``utc`` for a nullable column (None stays None)."""
    return None if seconds is None else utc(seconds)
