"""The exception hierarchy every dwarf operation raises.

Each error carries an HTTP-like ``status_code`` so that a host exposing the engine over a transport can map
it without a lookup table of its own.
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "CodecError",
    "ConflictError",
    "DwarfError",
    "EngineStateError",
    "FlowExistsError",
    "InvalidGraphError",
    "NotFoundError",
    "StateTooLargeError",
    "StateValidationError",
    "StoreError",
    "SubgraphError",
]


class DwarfError(Exception):
    """Base class of every error dwarf raises on purpose."""

    status_code: int = 500


class BadRequestError(DwarfError):
    """The caller passed something unusable: non-JSON state, a bad option, a child key for a root one."""

    status_code = 400


class InvalidGraphError(BadRequestError):
    """A graph definition breaks one of the validation rules, or an expression does not parse."""


class StateValidationError(BadRequestError):
    """A flow's state does not fit the model a task asked for with ``Flow.state_as``: a required field is
    missing or a value has the wrong type. Raised inside the task, it fails the step like any error."""


class NotFoundError(DwarfError):
    """The key is unknown, malformed, deleted or carries the wrong token: callers cannot tell which."""

    status_code = 404


class ConflictError(DwarfError):
    """The flow is in the wrong status for the operation, e.g. resuming a flow that is not interrupted."""

    status_code = 409


class FlowExistsError(ConflictError):
    """A create with ``idempotency_policy="fail"`` met a flow of the same workflow URL holding its
    idempotency key. ``flow_key`` is that flow's key: the idempotency key stands for it (see
    docs/flows.md#idempotent-create). The message names the flow by its token-free correlation id."""

    def __init__(self, message: str, flow_key: str) -> None:
        super().__init__(message)
        self.flow_key = flow_key


class EngineStateError(DwarfError):
    """The engine is in the wrong lifecycle phase: not started, already stopped, or a setter after startup."""

    status_code = 503


class SubgraphError(DwarfError):
    """Raised in a parent task by ``Flow.subgraph`` when the child flow failed; carries the child's error."""

    status_code = 500


class StoreError(DwarfError):
    """The database failed a statement or could not be reached; the driver's exception is ``__cause__``.

    ``transient`` says whether the same work may succeed later unchanged (an outage, a lock or deadlock, a
    full disk) or never will (the database refuses the values themselves, e.g. text it cannot encode).
    The message names the database without credentials and never carries a key's token.
    """

    status_code = 503

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class StateTooLargeError(BadRequestError):
    """A value the engine was about to store (a state, changes, a payload, resume data, baggage) is
    larger than the engine's ``max_state_size``; nothing was written. From ``create``, ``resume``,
    ``fork`` and ``continue_thread`` it reaches the caller; from a step it fails the step, routed like any
    task error (see docs/codecs.md#the-size-guard). ``size`` and ``limit`` are in characters of JSON text,
    ``what`` names the value."""

    status_code = 413

    def __init__(self, message: str, *, what: str = "", size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.what = what
        self.size = size
        self.limit = limit


class CodecError(DwarfError):
    """A stored value cannot be decoded: it was written by a codec or key this engine does not have, it
    fails its integrity check, or its offloaded blob cannot be fetched. ``codec_id`` names the codec (and
    key) that wrote it, e.g. ``"aesgcm.2024-06"``; messages never carry key material or the value.
    ``transient`` is true when a later attempt may succeed (the blob store failed)."""

    status_code = 500

    def __init__(self, message: str, *, codec_id: str = "", transient: bool = False) -> None:
        super().__init__(message)
        self.codec_id = codec_id
        self.transient = transient
