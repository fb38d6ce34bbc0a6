"""The durable engine: ``Engine``, the ``Host`` protocol it talks to, and the in-process ``TestProxy``."""

from dwarf.engine.engine import Engine
from dwarf.engine.host import Host
from dwarf.engine.reencode import ReencodeReport
from dwarf.engine.testproxy import TaskHandler, TestProxy
from dwarf.engine.tuning import SchedulerTuning
from dwarf.workflow.records import ShardSummary

__all__ = ["Engine", "Host", "ReencodeReport", "SchedulerTuning", "ShardSummary", "TaskHandler", "TestProxy"]
