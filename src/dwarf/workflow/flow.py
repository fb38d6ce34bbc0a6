"""The ``Flow`` carrier a task receives: its view of the state, its changes and its control signals.

A task reads the step's input state merged with its own changes so far (field by field, or as a typed
model with ``state_as``), writes changes (``set``, ``delete``, ``clear``, ``set_from``), appends to array
fields (``append``) and may signal the engine (``goto``, ``sleep``, ``retry``, ``interrupt``,
``wait_for_signal``, ``subgraph``). After the task returns (or raises ``Park``) the engine reads the
outcome through the engine-facing properties (``changes``, ``appends``, ``goto_target``,
``sleep_seconds``, ``retry_delay``, ``interrupt_payload``, ``park_timeout``, ``signal_wait``,
``subgraph_request``); a host's retry policy also reads ``retry_asked``.
docs/tasks.md is the contract.

Decisions where the spec is silent (following the reference unless marked):

- A field whose value is None (JSON null) reads as absent everywhere: ``has`` is False, ``get`` returns
  the default, the typed getters their zero value, and ``snapshot`` leaves it out.
- Typed getters never raise: a value of the wrong type reads as the zero value. ``get_int`` takes ints
  and integral floats (``3.0`` -> 3) but not ``3.5``, not the string ``"3"`` and not bools; ``get_float``
  takes any number but no string; ``get_strs`` returns ``[]`` unless the value is an array of strings
  (**Python:** the reference would return a partial list with blanks). ``get_duration`` reads a number
  as seconds (**Python:** the reference reads nanoseconds, the unit of a Go duration), or a string in Go
  syntax (``"1h30m"``, ``"1.5s"``, ``"100ms"``, ``"-2m"``) or ISO 8601 (``"PT1H30M"``, ``"P2D"``; no
  years or months, whose length varies).
- **Python:** ``sleep`` and ``retry`` delays are clamped to a century so that now + delay stays a valid
  datetime.
- ``retry`` treats a multiplier <= 0 as 1 and a ``max_delay`` <= 0 as no cap; a call that gives up also
  cancels a retry requested earlier in the same run. The horizon test is "later than"
  (docs/tasks.md#retry-with-backoff); the reference gives up already when the next attempt would
  land exactly on the horizon.
- ``append`` records only the new items (``appends``), so a list that grows a little per step is not
  stored whole by every step. A field this step already set or deleted is the exception: its pending
  change is simply extended, since that change carries the whole value anyway. A later ``set``,
  ``delete`` or ``clear`` of the field replaces the items with the whole value. Every read sees state,
  then changes, then appended items, which is also the order in which the engine applies them
  (``reducers.apply_output``). A field that holds something other than an array refuses ``append`` with
  TypeError even when no items are given, so the mistake shows whether or not there was anything to add.
- A step parks at most once: ``interrupt``, ``wait_for_signal`` and ``subgraph`` after another of them
  in the same step (requested now or answered earlier), or a second request of the same kind, raise
  BadRequestError.
- **Python:** a timed wait (``interrupt(..., timeout=...)``, ``wait_for_signal(..., timeout=...)``) that
  is not answered in time returns ``{"timedOut": True}`` (``TIMED_OUT``); a negative timeout counts as
  zero and timeouts are clamped to a century, as sleeps are (docs/waits.md).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from dwarf.errors import BadRequestError, SubgraphError
from dwarf.workflow.durations import Duration, to_seconds
from dwarf.workflow.jsonvalue import (
    canonical_json,
    check_json,
    check_text,
    checked_json_object,
    json_copy,
    json_copy_object,
    json_kind,
)
from dwarf.workflow.typed import model_values, state_view

__all__ = ["TIMED_OUT", "Flow", "Park", "ParkKind"]

ParkKind = Literal["interrupt", "signal", "subgraph"]

TIMED_OUT = "timedOut"
"""The field of the answer a timed wait returns when its timeout passed first: ``{"timedOut": True}``."""

MAX_SIGNAL_NAME_LENGTH = 255
"""The longest signal name, in characters (a name, not a message: the data goes in the signal's data)."""

_Model = TypeVar("_Model")

# Longer delays mean "never" in practice; the clamp keeps the engine's now + delay inside datetime's range.
_LONGEST_DELAY_SECONDS = 100 * 365.25 * 86400.0


class Park(BaseException):
    """Raised by ``Flow.interrupt`` and ``Flow.subgraph`` to park the step until it can continue.

    It derives from BaseException, not Exception, so that a task's ``except Exception`` does not swallow
    it; the engine catches it and parks the step (``kind`` says on what). A task should let it propagate.
    """

    def __init__(self, kind: ParkKind) -> None:
        # args stays (kind,) so that copying or pickling the exception rebuilds it correctly.
        super().__init__(kind)
        self.kind: ParkKind = kind

    def __str__(self) -> str:
        waiting_for = {"interrupt": "resume", "signal": "a signal"}.get(self.kind, "the child flow")
        return f"step parked by {self.kind}: waiting for {waiting_for}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise BadRequestError(f"a state field name must be a non-empty string, not {key!r}")
    # The same rule as for object keys inside values (check_json): it must have a UTF-8 form.
    check_json({key: None}, "the state field name")


def _clamped_delay(seconds: float) -> float:
    return min(max(seconds, 0.0), _LONGEST_DELAY_SECONDS)


def _timeout_seconds(timeout: Duration | None) -> float | None:
    return None if timeout is None else _clamped_delay(to_seconds(timeout, what="timeout"))


def check_signal_name(name: Any) -> str:
    """``name`` if it can name a signal (a non-empty text of at most 255 characters); BadRequestError
    otherwise."""
    if not isinstance(name, str) or not name:
        raise BadRequestError(f"a signal name must be a non-empty string, not {name!r}")
    if len(name) > MAX_SIGNAL_NAME_LENGTH:
        raise BadRequestError(f"a signal name must be at most {MAX_SIGNAL_NAME_LENGTH} characters long")
    check_text(name, "the signal name")
    return name


class Flow:
    """What a task receives: the state it reads and writes and the signals it sends to the engine.

    Example task::

        async def charge(flow: Flow) -> None:
            amount = flow.get_float("amount")
            try:
                receipt = await payments.charge(amount)
            except payments.Unavailable:
                if flow.retry(1.0, 2.0, 60.0, 3600.0):
                    return
                raise
            flow.set("receipt", receipt)

    The engine constructs it; tasks never do. ``share_state=True`` keeps the given state (a shallow
    copy) instead of a deep copy, for a caller that never mutates a state it handed over.
    """

    __slots__ = (
        "_appends",
        "_attempt",
        "_changes",
        "_created_at",
        "_flow_key",
        "_goto_target",
        "_interrupt_payload",
        "_now",
        "_park_timeout",
        "_resume_data",
        "_retry_asked",
        "_retry_delay",
        "_signal_wait",
        "_sleep_seconds",
        "_state",
        "_step_created_at",
        "_step_key",
        "_subgraph_error",
        "_subgraph_request",
        "_subgraph_result",
        "_updated_at",
        "_waited_signal",
    )

    def __init__(
        self,
        *,
        flow_key: str,
        step_key: str,
        attempt: int,
        created_at: datetime,
        updated_at: datetime,
        step_created_at: datetime,
        state: Mapping[str, Any],
        changes: Mapping[str, Any] | None = None,
        appends: Mapping[str, list[Any]] | None = None,
        resume_data: Mapping[str, Any] | None = None,
        subgraph_result: Mapping[str, Any] | None = None,
        subgraph_error: str = "",
        waited_signal: str = "",
        now: Callable[[], datetime] = _utc_now,
        share_state: bool = False,
    ) -> None:
        self._flow_key = flow_key
        self._step_key = step_key
        self._attempt = attempt
        self._created_at = created_at
        self._updated_at = updated_at
        self._step_created_at = step_created_at
        self._now = now
        # A copy, so that nothing the caller holds can change under the task or vice versa. The engine
        # shares its state instead (share_state): it never mutates a state it handed over, nothing here
        # mutates one either, and every read hands out a copy; a deep copy would cost every step time
        # in proportion to the whole state, however little the task reads.
        self._state: dict[str, Any] = dict(state) if share_state else json_copy_object(state)
        # The delta: a value per set field, None per deleted field. It starts with what an earlier run of
        # this step recorded before parking, which the task sees and which stays part of the result.
        self._changes: dict[str, Any] = json_copy_object(changes) if changes else {}
        # Items appended to array fields, per field, in call order: what an earlier run of this step
        # recorded before parking, then this run's. A field never has an empty entry here.
        self._appends: dict[str, list[Any]] = _restored_appends(appends, self._state, self._changes)
        self._resume_data: dict[str, Any] | None = (
            None if resume_data is None else json_copy_object(resume_data)
        )
        self._subgraph_result: dict[str, Any] | None = (
            None if subgraph_result is None else json_copy_object(subgraph_result)
        )
        self._subgraph_error = subgraph_error
        # The signal this step waited for when it parked ("" for an interrupt): whose answer resume_data is.
        self._waited_signal = waited_signal
        self._goto_target: str | None = None
        self._sleep_seconds = 0.0
        self._retry_delay: float | None = None
        self._retry_asked = False
        self._interrupt_payload: dict[str, Any] | None = None
        self._subgraph_request: tuple[str, dict[str, Any]] | None = None
        self._signal_wait: str | None = None
        self._park_timeout: float | None = None

    def __repr__(self) -> str:
        return f"Flow(flow_key={self._flow_key!r}, step_key={self._step_key!r}, attempt={self._attempt})"

    # --- identity and timing ---

    @property
    def flow_key(self) -> str:
        """The key of the flow this task runs in (for logs or calling back into the engine)."""
        return self._flow_key

    @property
    def step_key(self) -> str:
        """The key of this step."""
        return self._step_key

    @property
    def attempt(self) -> int:
        """0 on the first run of this step, incremented by each retry."""
        return self._attempt

    @property
    def created_at(self) -> datetime:
        """When the flow was created."""
        return self._created_at

    @property
    def updated_at(self) -> datetime:
        """When the flow last changed status."""
        return self._updated_at

    @property
    def step_created_at(self) -> datetime:
        """When this step was first created; kept across retries, it anchors ``retry``'s horizon."""
        return self._step_created_at

    # --- reading state ---

    def _base(self, key: str) -> Any:
        """The value of ``key`` before this step's appended items (state, then changes), not copied."""
        if key in self._changes:
            return self._changes[key]
        return self._state.get(key)

    def _lookup(self, key: str) -> Any:
        """The merged value of ``key``; None when absent, deleted or null.

        Not a copy: an unappended value is the stored object itself, and an appended one is a new list
        whose elements are still shared. Callers that hand a value out copy it.
        """
        base = self._base(key)
        items = self._appends.get(key)
        if items is None:
            return base
        # A new list every time: extending the state's list in place would change the step's input.
        return [*base, *items] if base is not None else list(items)

    def get(self, key: str, default: Any = None) -> Any:
        """Return a copy of the field's value, or ``default`` when it is absent (or null)."""
        value = self._lookup(key)
        return default if value is None else json_copy(value)

    def get_str(self, key: str) -> str:
        """The field as a string; "" when absent or not a string."""
        value = self._lookup(key)
        return value if isinstance(value, str) else ""

    def get_int(self, key: str) -> int:
        """The field as an int; 0 when absent or not an integral number (``3.0`` reads as 3)."""
        value = self._lookup(key)
        if isinstance(value, bool):
            return 0
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return 0

    def get_float(self, key: str) -> float:
        """The field as a float; 0.0 when absent or not a number."""
        value = self._lookup(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return 0.0
        try:
            return float(value)
        except OverflowError:
            # An int beyond float's range (JSON allows it) has no float reading.
            return 0.0

    def get_bool(self, key: str) -> bool:
        """The field as a bool; False when absent or not a boolean (no truthiness of other types)."""
        return self._lookup(key) is True

    def get_strs(self, key: str) -> list[str]:
        """The field as a list of strings; [] when absent or not an array of strings only."""
        value = self._lookup(key)
        if isinstance(value, list) and all(isinstance(element, str) for element in value):
            return list(value)
        return []

    def get_duration(self, key: str) -> timedelta:
        """The field as a timedelta: a number of seconds, or a Go (``"1h30m"``, ``"100ms"``) or ISO 8601
        (``"PT1H30M"``) duration string. Zero when absent or unreadable."""
        value = self._lookup(key)
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value
        elif isinstance(value, str):
            seconds = parse_duration_text(value)
        if seconds is None:
            return timedelta(0)
        try:
            return timedelta(seconds=seconds)
        except OverflowError:
            # Longer than a timedelta can hold (about 2.7 million years), or an int beyond float range.
            return timedelta(0)

    def has(self, key: str) -> bool:
        """True when the field is present with a non-null value."""
        return self._lookup(key) is not None

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the merged state (input, this task's changes, then its appended items), without
        null fields."""
        merged = {key: self._lookup(key) for key in _unique(self._state, self._changes, self._appends)}
        return json_copy_object({key: value for key, value in merged.items() if value is not None})

    def state_as(self, model: type[_Model]) -> _Model:
        """The merged state (``snapshot``) as an instance of ``model``: a TypedDict (a dict of the keys it
        declares), a dataclass (built from its fields) or a pydantic model (``model_validate``).

        Fields the model does not declare are left out; values are copies, so changing the view changes
        nothing until ``set_from`` writes it back. Raises StateValidationError, naming every field that
        does not fit (missing and required, or of another type), and BadRequestError for a model whose
        annotations cannot be checked; docs/tasks.md#typed-state lists the types and the limits.
        """
        view: _Model = state_view(model, self.snapshot())
        return view

    def set_from(self, model: Any) -> None:
        """Write a model's fields back as changes: a dataclass or pydantic instance, or a mapping (a
        TypedDict). Only fields whose value differs from the merged state are recorded, so writing back
        a view with one field changed records one change; a field whose value is None is deleted.

        Raises BadRequestError, recording nothing, when a value is not JSON (as ``set`` does).
        """
        values = model_values(model)
        for key, value in values.items():
            _check_key(key)
            check_json(value, f"the value of state field {key!r}")
        for key, value in values.items():
            current = self._lookup(key)
            if value is None:
                if current is not None:
                    self.delete(key)
            elif current is None or canonical_json(current) != canonical_json(value):
                self.set(key, value)

    # --- writing state ---

    def set(self, key: str, value: Any) -> None:
        """Record ``value`` (a copy) as the field's new value; ``None`` deletes the field.

        For a field with a reducer, write this task's contribution (a delta), not a total. Raises
        BadRequestError, recording nothing, when the value is not JSON (NaN, a set, bytes, a datetime, a
        dict with non-string keys, ...).
        """
        _check_key(key)
        check_json(value, f"the value of state field {key!r}")
        self._changes[key] = json_copy(value)
        # The change carries the whole value now, items appended before it included.
        self._appends.pop(key, None)

    def append(self, key: str, *items: Any) -> None:
        """Add ``items`` (copies) to the end of the array field ``key``; an absent field starts empty.

        The step records only the items, not the whole list, so a list that grows by a little every step
        costs a little per step. For a field set or deleted earlier in this step the pending change is
        extended instead. Raises TypeError when the field holds something other than an array, and
        BadRequestError when an item is not JSON (as ``set`` does); either way nothing is recorded.
        Appending no items changes nothing.
        """
        _check_key(key)
        base = self._base(key)
        if base is not None and not isinstance(base, list):
            raise TypeError(
                f"cannot append to state field {key!r}: it holds {_a_json_kind(base)}, not an array"
            )
        # Checked as the list they extend, so that the nesting limit counts the array level too.
        new_items = list(items)
        check_json(new_items, f"the list of items appended to state field {key!r}")
        if not new_items:
            return
        copied: list[Any] = json_copy(new_items)
        if key in self._changes:
            # The pending change is the whole value: keep it whole (None, a deletion, starts empty). The
            # current value includes items appended before the change was restored, if any.
            current = self._lookup(key)
            self._changes[key] = [*(current or []), *copied]
            self._appends.pop(key, None)
        else:
            self._appends.setdefault(key, []).extend(copied)

    def delete(self, *keys: str) -> None:
        """Delete the fields: they read as absent from now on and the step's changes record the deletion."""
        for key in keys:
            _check_key(key)
        for key in keys:
            self._changes[key] = None
            self._appends.pop(key, None)

    def clear(self) -> None:
        """Delete every field of the state, e.g. before building a fresh state from a few kept values."""
        # Fields that exist only through this step's appends are deleted too.
        for key in _unique(self._state, self._changes, self._appends):
            self._changes[key] = None
        self._appends.clear()

    # --- control signals ---

    def goto(self, task_name: str) -> None:
        """Continue with node ``task_name`` (a goto transition of this node) instead of evaluating the
        transitions. The last call wins."""
        if not isinstance(task_name, str) or not task_name:
            raise BadRequestError(f"goto needs a non-empty node name, not {task_name!r}")
        self._goto_target = task_name

    def sleep(self, duration: Duration) -> None:
        """Let the next step(s) start no earlier than ``duration`` from now (a durable not-before time).
        A negative duration is zero; the last call wins."""
        self._sleep_seconds = _clamped_delay(to_seconds(duration, what="sleep duration"))

    def retry(
        self, initial_delay: Duration, multiplier: float, max_delay: Duration, give_up_after: Duration
    ) -> bool:
        """Ask to run this task again after ``min(initial_delay * multiplier**attempt, max_delay)``.

        Returns True when the retry is scheduled: the task should then return normally. Returns False,
        requesting nothing, when the next attempt would start later than ``give_up_after`` after the step
        was first created: the task should then raise its error. ``max_delay`` <= 0 means no cap, a
        ``multiplier`` <= 0 counts as 1, ``give_up_after`` <= 0 means no horizon. The attempt sees the
        changes of the one before it.
        """
        initial = max(to_seconds(initial_delay, what="initial_delay"), 0.0)
        # An int is always finite (math.isfinite would overflow on a huge one); only a float can be nan/inf.
        if isinstance(multiplier, bool) or not isinstance(multiplier, int | float):
            raise BadRequestError(f"retry multiplier must be a number, not {multiplier!r}")
        if isinstance(multiplier, float) and not math.isfinite(multiplier):
            raise BadRequestError(f"retry multiplier must be finite, not {multiplier!r}")
        cap = to_seconds(max_delay, what="max_delay")
        horizon = to_seconds(give_up_after, what="give_up_after")
        self._retry_asked = True

        delay = 0.0
        if initial > 0:
            try:
                factor = float(multiplier) if multiplier > 0 else 1.0
                delay = initial * factor**self._attempt
            except OverflowError:
                # A long run of retries grows past float range: it is capped or clamped just below.
                delay = math.inf
        if cap > 0:
            delay = min(delay, cap)
        delay = _clamped_delay(delay)

        if horizon > 0:
            elapsed = (self._now() - self._step_created_at).total_seconds()
            if elapsed + delay > horizon:
                self._retry_delay = None
                return False
        self._retry_delay = delay
        return True

    def interrupt(
        self, payload: Mapping[str, Any] | None = None, *, timeout: Duration | None = None
    ) -> dict[str, Any]:
        """Park the flow until ``Engine.resume``, then return the resume data.

        On the first run this raises ``Park`` (let it propagate): the flow becomes interrupted with
        ``payload`` for the caller to see. When the step re-runs after a resume the same call returns a
        copy of the resume data, which is not merged into the state. Changes made before interrupting are
        kept. ``payload`` must be a JSON object (BadRequestError otherwise).

        With a ``timeout`` (a timedelta or seconds), an interrupt nobody resumed in time is resumed by the
        engine with ``{"timedOut": True}``: set a state field from it for a ``when`` to branch on. A
        resume after that raises ConflictError (docs/waits.md#timed-interrupts).
        """
        if self._resume_data is not None:
            if self._waited_signal:
                raise BadRequestError(
                    f"cannot interrupt: this step already waited for signal {self._waited_signal!r}"
                )
            return json_copy_object(self._resume_data)
        self._check_not_parked("interrupt")
        if self._interrupt_payload is not None:
            raise BadRequestError("cannot interrupt: this step already requested an interrupt")
        seconds = _timeout_seconds(timeout)
        self._interrupt_payload = checked_json_object(payload, "the interrupt payload")
        self._park_timeout = seconds
        raise Park("interrupt")

    def wait_for_signal(self, name: str, timeout: Duration | None = None) -> dict[str, Any]:
        """Park the step until ``Engine.signal(flow_key, name, data)``, then return the signal's data.

        On the first run this raises ``Park`` (let it propagate); the flow stays running (a signal is an
        event, not a person's answer: ``wait`` does not return). A signal sent before the step waits is
        kept and taken at once; each signal wakes one waiting step, the oldest, anywhere in the flow's
        tree. When the step re-runs the same call returns a copy of the data. With a ``timeout`` the call
        returns ``{"timedOut": True}`` when no signal came in time (docs/waits.md#signals).
        """
        check_signal_name(name)
        if self._resume_data is not None:
            if self._waited_signal == name:
                return json_copy_object(self._resume_data)
            if self._waited_signal:
                raise BadRequestError(
                    f"cannot wait for signal {name!r}: this step waited for signal {self._waited_signal!r}"
                )
            raise BadRequestError("cannot wait for a signal: this step already parked for an interrupt")
        self._check_not_parked("wait for a signal")
        if self._interrupt_payload is not None:
            raise BadRequestError("cannot wait for a signal: this step already requested an interrupt")
        seconds = _timeout_seconds(timeout)
        self._signal_wait = name
        self._park_timeout = seconds
        raise Park("signal")

    def _check_not_parked(self, what: str) -> None:
        """BadRequestError if this step parked for a subgraph or a signal already (a step parks once)."""
        if self._subgraph_request is not None or self._subgraph_result is not None or self._subgraph_error:
            raise BadRequestError(f"cannot {what}: this step already parked for a subgraph")
        if self._signal_wait is not None:
            raise BadRequestError(f"cannot {what}: this step already waits for a signal")

    def subgraph(self, workflow_url: str, input: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run the workflow at ``workflow_url`` as a child flow and return its final state.

        On the first run this raises ``Park`` (let it propagate): a child flow starts with exactly
        ``input`` as its state and this step waits. When the child completes the step re-runs and the
        same call returns a copy of the child's final state; when the child failed it raises
        SubgraphError with the child's error.
        """
        if self._subgraph_error:
            raise SubgraphError(self._subgraph_error)
        if self._subgraph_result is not None:
            return json_copy_object(self._subgraph_result)
        if self._interrupt_payload is not None or (self._resume_data is not None and not self._waited_signal):
            raise BadRequestError("cannot start a subgraph: this step already parked for an interrupt")
        if self._signal_wait is not None:
            raise BadRequestError("cannot start a subgraph: this step already waits for a signal")
        if self._waited_signal:
            raise BadRequestError("cannot start a subgraph: this step already waited for a signal")
        if self._subgraph_request is not None:
            raise BadRequestError("cannot start a subgraph: this step already requested one")
        if not isinstance(workflow_url, str) or not workflow_url:
            raise BadRequestError(f"subgraph needs a non-empty workflow URL, not {workflow_url!r}")
        self._subgraph_request = (workflow_url, checked_json_object(input, "the subgraph input"))
        raise Park("subgraph")

    # --- what the engine reads after the task ---

    @property
    def changes(self) -> dict[str, Any]:
        """The step's delta: the value of each set field and None for each deleted field (a copy)."""
        return json_copy_object(self._changes)

    @property
    def appends(self) -> dict[str, list[Any]]:
        """The items ``append`` added to each field not also in ``changes``, in call order (a copy).

        The engine applies them after ``changes`` (``reducers.apply_output``).
        """
        copied: dict[str, list[Any]] = json_copy_object(self._appends)
        return copied

    @property
    def goto_target(self) -> str | None:
        """The node named by ``goto``, or None."""
        return self._goto_target

    @property
    def sleep_seconds(self) -> float:
        """The requested sleep in seconds; 0 for none."""
        return self._sleep_seconds

    @property
    def retry_delay(self) -> float | None:
        """Seconds until the next attempt when ``retry`` returned True; None when no retry is requested."""
        return self._retry_delay

    @property
    def retry_asked(self) -> bool:
        """True when the task called ``retry`` in this run, whatever it answered: a host's retry policy
        (``dwarf.workflow.retry.Retry``) then leaves the decision to the task."""
        return self._retry_asked

    @property
    def interrupt_payload(self) -> dict[str, Any] | None:
        """The payload of the interrupt that parked the step, or None."""
        return None if self._interrupt_payload is None else json_copy_object(self._interrupt_payload)

    @property
    def park_timeout(self) -> float | None:
        """Seconds until the interrupt or signal wait that parked the step times out; None for no timeout."""
        return self._park_timeout

    @property
    def signal_wait(self) -> str | None:
        """The name of the signal the step waits for (``wait_for_signal``), or None."""
        return self._signal_wait

    @property
    def subgraph_request(self) -> tuple[str, dict[str, Any]] | None:
        """(workflow URL, child input) of the subgraph that parked the step, or None."""
        if self._subgraph_request is None:
            return None
        url, child_input = self._subgraph_request
        return url, json_copy_object(child_input)


def _unique(*key_sources: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(key for source in key_sources for key in source))


def _a_json_kind(value: Any) -> str:
    kind = json_kind(value)
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _restored_appends(
    appends: Mapping[str, list[Any]] | None, state: Mapping[str, Any], changes: Mapping[str, Any]
) -> dict[str, list[Any]]:
    """A copy of the appended items an earlier run of the step recorded, checked against the fields.

    Flow.append can only record items for an absent or array field, so anything else means the stored
    step is damaged: ValueError says so here rather than the task meeting a broken read later. Empty
    entries are dropped (appending nothing is no change).
    """
    if not appends:
        return {}
    restored: dict[str, list[Any]] = {}
    for key, items in appends.items():
        if not isinstance(items, list | tuple):
            raise ValueError(
                f"the appended items of state field {key!r} are {_a_json_kind(items)}, not an array"
            )
        base = changes[key] if key in changes else state.get(key)
        if base is not None and not isinstance(base, list):
            raise ValueError(
                f"items were appended to state field {key!r}, which holds {_a_json_kind(base)}, not an array"
            )
        if items:
            restored[key] = json_copy(list(items))
    return restored


# --- duration strings ---

_GO_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign, as Go writes it
    "\u03bcs": 1e-6,  # Greek small mu, which Go accepts too
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# Longer units first so that "ms" is not read as "m" followed by a stray "s".
_GO_PART = re.compile(rf"({_NUMBER})(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_GO_DURATION = re.compile(rf"[+-]?(?:{_NUMBER}(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h))+")
_ISO_DURATION = re.compile(
    rf"([+-])?P(?:({_NUMBER})W)?(?:({_NUMBER})D)?(?:T(?:({_NUMBER})H)?(?:({_NUMBER})M)?(?:({_NUMBER})S)?)?",
    re.IGNORECASE,
)


def parse_duration_text(text: str) -> float | None:
    """Seconds in a Go (``"1h30m"``, ``"-1.5s"``, ``"0"``) or ISO 8601 (``"PT1H30M"``, ``"P1W2D"``)
    duration string, or None when it is neither."""
    text = text.strip()
    seconds: float
    if text in ("0", "+0", "-0"):
        return 0.0
    if _GO_DURATION.fullmatch(text):
        seconds = sum(float(number) * _GO_UNIT_SECONDS[unit] for number, unit in _GO_PART.findall(text))
        if text.startswith("-"):
            seconds = -seconds
    else:
        match = _ISO_DURATION.fullmatch(text)
        # "P" and "PT" alone match the pattern but say nothing.
        if match is None or not any(match.groups()[1:]) or text.upper().endswith("T"):
            return None
        weeks, days, hours, minutes, secs = (float(part) if part else 0.0 for part in match.groups()[1:])
        seconds = (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 + secs
        if match.group(1) == "-":
            seconds = -seconds
    return seconds
