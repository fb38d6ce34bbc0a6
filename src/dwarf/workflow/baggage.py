"""The running flow's baggage, visible to host code through ``current_baggage()``.

Baggage is the opaque JSON value a flow was created with (``FlowOptions.baggage``): typically a tenant or
the caller's identity, which ``Host.load_graph`` and ``Host.execute_task`` need without it being part of
the workflow state. The engine enters ``baggage_scope(value)`` around those calls.

It lives in a ``contextvars.ContextVar`` rather than a thread-local so that it follows the code that runs
on behalf of one flow: asyncio tasks inherit the context they were created in, and a sync handler run in
a worker thread sees it because the engine runs it inside ``contextvars.copy_context()`` (as
``asyncio.to_thread`` does). Concurrent tasks of different flows therefore never see each other's baggage.
"""

from __future__ import annotations

import contextlib
import contextvars
from types import TracebackType
from typing import Any

from dwarf.workflow.jsonvalue import json_copy

__all__ = ["baggage_scope", "current_baggage"]

_baggage: contextvars.ContextVar[Any] = contextvars.ContextVar("dwarf_baggage", default=None)


def current_baggage() -> Any:
    """Return the running flow's baggage inside ``load_graph``/``execute_task``; None outside a flow.

    The value is a copy: a task that modifies it changes nothing that another task (or the engine) sees.
    """
    return json_copy(_baggage.get())


class _BaggageScope(contextlib.AbstractContextManager[None]):
    """Sets the baggage on entry and restores the previous value on exit (scopes nest)."""

    __slots__ = ("_token", "_value")

    def __init__(self, value: Any) -> None:
        self._value = value
        self._token: contextvars.Token[Any] | None = None

    def __enter__(self) -> None:
        if self._token is not None:
            raise RuntimeError("a baggage scope cannot be entered twice")
        self._token = _baggage.set(self._value)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # The token is only valid in the context it was made in: entering in one asyncio task and exiting
        # in another raises ValueError, which is a bug in the caller worth surfacing.
        if self._token is not None:
            _baggage.reset(self._token)
            self._token = None


def baggage_scope(value: Any) -> contextlib.AbstractContextManager[None]:
    """A context manager that makes ``value`` the current baggage while its block runs.

    ``value`` must be a JSON value (the engine checks baggage at create). Typical use by the engine::

        with baggage_scope(flow_baggage):
            await host.execute_task(url, flow)
    """
    return _BaggageScope(value)
