"""dwarf: a durable, embeddable workflow-orchestration engine on SQLite and PostgreSQL.

The workflow types are imported eagerly; the engine (and with it the database drivers) only when one of
its names is first touched, so ``import dwarf.workflow`` stays free of the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dwarf.codecs import AESGCMCodec, BlobStore, Codec, ZlibCodec
from dwarf.errors import (
    BadRequestError,
    CodecError,
    ConflictError,
    DwarfError,
    EngineStateError,
    FlowExistsError,
    InvalidGraphError,
    NotFoundError,
    StateTooLargeError,
    StateValidationError,
    StoreError,
    SubgraphError,
)
from dwarf.workflow import (
    DEADLINE_REASON,
    END,
    KEEP_FOREVER,
    TIMED_OUT,
    CatchUp,
    Flow,
    FlowActivity,
    FlowOptions,
    FlowOutcome,
    FlowStep,
    FlowSummary,
    FlowWait,
    Graph,
    IdempotencyPolicy,
    Limit,
    LimitScope,
    Query,
    Reducer,
    Retry,
    Schedule,
    ShardSummary,
    Status,
    WaitReason,
    current_baggage,
)

if TYPE_CHECKING:
    from dwarf.engine import Engine, Host, SchedulerTuning, TestProxy
    from dwarf.sync import SyncEngine

__all__ = [
    "DEADLINE_REASON",
    "END",
    "KEEP_FOREVER",
    "TIMED_OUT",
    "AESGCMCodec",
    "BadRequestError",
    "BlobStore",
    "CatchUp",
    "Codec",
    "CodecError",
    "ConflictError",
    "DwarfError",
    "Engine",
    "EngineStateError",
    "Flow",
    "FlowActivity",
    "FlowExistsError",
    "FlowOptions",
    "FlowOutcome",
    "FlowStep",
    "FlowSummary",
    "FlowWait",
    "Graph",
    "Host",
    "IdempotencyPolicy",
    "InvalidGraphError",
    "Limit",
    "LimitScope",
    "NotFoundError",
    "Query",
    "Reducer",
    "Retry",
    "Schedule",
    "SchedulerTuning",
    "ShardSummary",
    "StateTooLargeError",
    "StateValidationError",
    "Status",
    "StoreError",
    "SubgraphError",
    "SyncEngine",
    "TestProxy",
    "WaitReason",
    "ZlibCodec",
    "current_baggage",
]

_ENGINE_NAMES = frozenset({"Engine", "Host", "SchedulerTuning", "TestProxy"})


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:
        from dwarf import engine

        return getattr(engine, name)
    if name == "SyncEngine":
        from dwarf.sync import SyncEngine

        return SyncEngine
    raise AttributeError(f"module 'dwarf' has no attribute {name!r}")
