"""Self-supervised pretraining of a project's backbone, and which backbone its rounds use (issue 15).

A ``PretrainingRun`` is an admin's request to pretrain the InceptionV3 backbone
on the project's own unlabeled pool (SimSiam, worker/pretraining.py); a
succeeded run leaves a weights file under the storage directory.  A project's
``ProjectBackbone`` row says which backbone its next round starts from: the
installation's setting (no row), random initialisation, ImageNet, or one of
its pretraining runs.  A table of its own rather than columns on ``projects``,
so the choice can name a run (a foreign key) without a cycle between the two
tables.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, String, Text, select, text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, utcnow
from .job_status import JobStatus


PretrainingStatus = JobStatus  # queued, running, succeeded, failed, cancelled


ACTIVE = "status IN ('queued', 'running')"


class PretrainingRun(Base):
    __tablename__ = "pretraining_runs"
    __table_args__ = (
        # One run at a time per project, enforced by the database: two admins
        # pressing Start together (or the CLI beside the page) cannot both
        # queue hours of GPU work.  The check in the page only words the refusal.
        Index("uq_pretraining_runs_one_active", "project_id", unique=True,
              sqlite_where=text(ACTIVE), postgresql_where=text(ACTIVE)),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    status: Mapped[PretrainingStatus] = mapped_column(
        Enum(PretrainingStatus, name="pretraining_status",
             values_callable=lambda e: [m.value for m in e], native_enum=False, length=10),
        default=PretrainingStatus.QUEUED)
    epochs: Mapped[int]
    image_size: Mapped[int]
    batch_size: Mapped[int] = mapped_column(default=32)
    progress: Mapped[float] = mapped_column(default=0.0)
    phase: Mapped[str] = mapped_column(String(200), default="queued")
    # Mean SimSiam loss per finished epoch (negative cosine: -1 is perfect agreement).
    loss_history: Mapped[list[float]] = mapped_column(JSON, default=list)
    # Cells used, unreadable cells, steps, seconds, projection spread.
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Relative to the storage directory; set when the run succeeded.
    weights_path: Mapped[str | None] = mapped_column(String(500))
    # A message for the admin, never an exception's text.
    error: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    eta_seconds: Mapped[float | None]
    # The worker's last report: a run silent for longer than
    # HEMALOOP_ROUND_STALE_SECONDS lost its worker.
    heartbeat_at: Mapped[datetime | None]


class BackboneChoice(enum.StrEnum):
    SETTING = "setting"  # HEMALOOP_BACKBONE_WEIGHTS (what a project without a row uses)
    RANDOM = "random"
    IMAGENET = "imagenet"
    PRETRAINED = "pretrained"  # the weights of ``pretraining_run_id``


class ProjectBackbone(Base):
    __tablename__ = "project_backbones"

    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True)
    choice: Mapped[BackboneChoice] = mapped_column(
        Enum(BackboneChoice, name="backbone_choice",
             values_callable=lambda e: [m.value for m in e], native_enum=False, length=10),
        default=BackboneChoice.SETTING)
    pretraining_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("pretraining_runs.id", ondelete="SET NULL"))
    chosen_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    chosen_at: Mapped[datetime] = mapped_column(default=utcnow)


def active_run_id(session: Session, project_id: int) -> int | None:
    """The project's queued or running run, if any (at most one: the index)."""
    return session.scalar(select(PretrainingRun.id).where(
        PretrainingRun.project_id == project_id,
        PretrainingRun.status.in_([PretrainingStatus.QUEUED, PretrainingStatus.RUNNING])))


def fail_lost_pretraining(session: Session, stale_seconds: float) -> int:
    """Fail running pretraining runs whose worker has not reported for ``stale_seconds``."""
    from datetime import timedelta

    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    done = session.execute(update(PretrainingRun).where(
        PretrainingRun.status == PretrainingStatus.RUNNING,
        PretrainingRun.heartbeat_at < cutoff)
        .values(status=PretrainingStatus.FAILED, phase="worker lost", eta_seconds=None,
                finished_at=utcnow(),
                error=f"No progress from the worker for over {stale_seconds:.0f} s; it is "
                      "presumed lost. Start the pretraining again."))
    session.commit()
    return done.rowcount


def cancel_pretraining(session: Session, run: PretrainingRun) -> bool:
    """Mark a queued or running run cancelled; False when it has already ended.

    A queued run is then never claimed; a running one stops before its next
    step (worker/pretraining.py asks the row between steps).
    """
    done = session.execute(update(PretrainingRun).where(
        PretrainingRun.id == run.id,
        PretrainingRun.status.in_([PretrainingStatus.QUEUED, PretrainingStatus.RUNNING]))
        .values(status=PretrainingStatus.CANCELLED, phase="cancelled", eta_seconds=None,
                finished_at=utcnow()))
    session.commit()
    session.refresh(run)
    return done.rowcount == 1
