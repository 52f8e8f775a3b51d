"""The life of a cancellable background job's row (a training round, a strategy
comparison, a pretraining run): one enum, so they cannot drift apart.  Each table
keeps its own database type name (``round_status``, ``simulation_status``,
``pretraining_status``)."""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self not in {JobStatus.QUEUED, JobStatus.RUNNING}
