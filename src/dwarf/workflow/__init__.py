"""Pure workflow types: graphs, the flow carrier, reducers, expressions and the records of the API.

Importing this package never imports the engine, a database driver or OpenTelemetry, so code that only
defines graphs and tasks stays light.
"""

from dwarf.errors import SubgraphError
from dwarf.workflow.baggage import current_baggage
from dwarf.workflow.flow import TIMED_OUT, Flow, Park
from dwarf.workflow.graph import END, Graph, Node, Transition
from dwarf.workflow.limits import Limit, LimitScope
from dwarf.workflow.progress import FlowActivity, FlowWait, WaitReason
from dwarf.workflow.records import (
    DEADLINE_REASON,
    KEEP_FOREVER,
    FlowOptions,
    FlowOutcome,
    FlowStep,
    FlowSummary,
    IdempotencyPolicy,
    Query,
    ShardSummary,
)
from dwarf.workflow.reducers import Reducer
from dwarf.workflow.retry import Retry
from dwarf.workflow.schedules import CatchUp, Schedule
from dwarf.workflow.status import Status

__all__ = [
    "DEADLINE_REASON",
    "END",
    "KEEP_FOREVER",
    "TIMED_OUT",
    "CatchUp",
    "Flow",
    "FlowActivity",
    "FlowOptions",
    "FlowOutcome",
    "FlowStep",
    "FlowSummary",
    "FlowWait",
    "Graph",
    "IdempotencyPolicy",
    "Limit",
    "LimitScope",
    "Node",
    "Park",
    "Query",
    "Reducer",
    "Retry",
    "Schedule",
    "ShardSummary",
    "Status",
    "SubgraphError",
    "Transition",
    "WaitReason",
    "current_baggage",
]
