"""Flow and step statuses."""

from __future__ import annotations

import enum

__all__ = ["FLOW_STATUSES", "TERMINAL_STATUSES", "Status"]


class Status(enum.StrEnum):
    """The status of a flow or a step (docs/design.md#statuses)."""

    CREATED = "created"
    PENDING = "pending"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for completed, failed and cancelled: nothing about such a flow changes any more."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})

FLOW_STATUSES = (Status.RUNNING, Status.INTERRUPTED, Status.COMPLETED, Status.FAILED, Status.CANCELLED)
"""The statuses a flow can have, in the order of its life; created and pending are statuses of steps only."""
