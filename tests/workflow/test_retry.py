"""The ``Retry`` policy value (docs/tasks.md#a-retry-policy-per-task): validation, delays, which errors
retry. How a host applies it is tested in tests/hosts/test_local.py and tests/engine/test_python_way.py."""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import Any

import pytest

from dwarf import BadRequestError, Retry, StateValidationError, SubgraphError
from dwarf.errors import InvalidGraphError


def test_defaults() -> None:
    policy = Retry()
    assert (policy.attempts, policy.initial_delay, policy.backoff, policy.max_delay) == (3, 1.0, 2.0, 60.0)
    assert policy.retry_on == (Exception,)
    assert policy.give_up_on == (BadRequestError, SubgraphError)


def test_it_is_a_frozen_hashable_value() -> None:
    policy = Retry(attempts=5, backoff=2.0, max_delay=60)
    assert policy == Retry(attempts=5, backoff=2, max_delay=60.0)
    assert hash(policy) == hash(Retry(attempts=5, max_delay=60))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.attempts = 6  # type: ignore[misc]


def test_delays_grow_from_the_initial_delay_and_stop_at_the_cap() -> None:
    policy = Retry(attempts=10, initial_delay=0.5, backoff=3.0, max_delay=10)
    assert [policy.delay_for(attempt) for attempt in range(5)] == [0.5, 1.5, 4.5, 10.0, 10.0]
    assert Retry(backoff=1).delay_for(7) == 1.0  # a constant delay
    assert Retry(max_delay=0).delay_for(3) == 0.0  # a real cap: at once
    assert Retry(initial_delay=0).delay_for(3) == 0.0
    assert Retry(max_delay=1e300, backoff=1e10).delay_for(10**6) == 1e300  # overflow: the cap


def test_durations_are_accepted_and_stored_as_seconds() -> None:
    policy = Retry(initial_delay=timedelta(milliseconds=250), max_delay=timedelta(minutes=2))
    assert (policy.initial_delay, policy.max_delay) == (0.25, 120.0)
    assert isinstance(policy.backoff, float)


def test_attempts_count_the_runs_in_all() -> None:
    error = RuntimeError("down")
    assert [Retry(attempts=3).retries(error, attempt) for attempt in range(4)] == [True, True, False, False]
    assert not Retry(attempts=1).retries(error, 0)


def test_which_errors_retry() -> None:
    default = Retry()
    assert default.retries(ConnectionError(), 0)
    assert not default.retries(BadRequestError("bad"), 0)
    assert not default.retries(StateValidationError("does not fit"), 0)
    assert not default.retries(InvalidGraphError("no"), 0)
    assert not default.retries(SubgraphError("child failed"), 0)
    assert not default.retries(KeyboardInterrupt(), 0)  # not an Exception
    narrow = Retry(retry_on=(ConnectionError, TimeoutError), give_up_on=(ConnectionRefusedError,))
    assert narrow.retries(ConnectionResetError(), 0) and narrow.retries(TimeoutError(), 0)
    assert not narrow.retries(ConnectionRefusedError(), 0)
    assert not narrow.retries(ValueError(), 0)
    everything = Retry(give_up_on=())
    assert everything.retries(BadRequestError("bad"), 0)
    single = Retry(retry_on=OSError)  # type: ignore[arg-type]
    assert single.retry_on == (OSError,)


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"attempts": 0}, "attempts must be an int of at least 1"),
        ({"attempts": 2.0}, "attempts must be an int"),
        ({"attempts": True}, "attempts must be an int"),
        ({"initial_delay": -1}, "initial_delay must not be negative"),
        ({"initial_delay": math.inf}, "initial_delay must be finite"),
        ({"initial_delay": "1s"}, "initial_delay must be a timedelta or a number"),
        ({"max_delay": -0.5}, "max_delay must not be negative"),
        ({"max_delay": math.nan}, "max_delay must be finite"),
        ({"backoff": 0.5}, "backoff must be finite and at least 1"),
        ({"backoff": math.inf}, "backoff must be finite"),
        ({"backoff": "2"}, "backoff must be a number"),
        ({"backoff": True}, "backoff must be a number"),
        ({"retry_on": (KeyboardInterrupt,)}, "retry_on must be a tuple of Exception classes"),
        ({"retry_on": ("ValueError",)}, "retry_on must be a tuple of Exception classes"),
        ({"give_up_on": ValueError()}, "give_up_on must be a tuple of Exception classes"),
    ],
)
def test_out_of_range_values_are_refused(arguments: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BadRequestError, match=fragment):
        Retry(**arguments)
