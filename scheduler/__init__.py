"""Continuous batching over a paged KV cache: pure Python, no torch."""

from scheduler.block_manager import BlockManager
from scheduler.scheduler import ScheduledSeq, Scheduler, SchedulerConfig, SchedulerOutput
from scheduler.sequence import Sequence, SequenceStatus

__all__ = [
    "BlockManager",
    "ScheduledSeq",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerOutput",
    "Sequence",
    "SequenceStatus",
]
