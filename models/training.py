"""Training rounds, the model versions they produce, and their predictions."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow
from .job_status import JobStatus


RoundStatus = JobStatus  # queued, running, succeeded, failed, cancelled


ACTIVE_ROUND_STATUSES = ("queued", "running")


def time_left_text(seconds: float | None) -> str | None:
    """The worker's estimate (eta_seconds) as people read it; one wording for the
    admin page and the CLI, so the two never disagree."""
    if seconds is None:
        return None
    if seconds >= 90:
        return f"about {math.ceil(seconds / 60)} min left"
    return f"about {round(seconds)} s left"


class TrainingRound(Base):
    __tablename__ = "training_rounds"
    __table_args__ = (
        Index("ix_training_rounds_project_status", "project_id", "status"),
        # One round at a time per project, enforced by the database itself so
        # two admins (or an admin and the scheduler) cannot both start one.
        Index(
            "uq_training_rounds_one_active", "project_id", unique=True,
            sqlite_where=text("status IN ('queued', 'running')"),
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    status: Mapped[RoundStatus] = mapped_column(
        Enum(RoundStatus, name="round_status", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=12),
        default=RoundStatus.QUEUED,
    )
    progress: Mapped[float] = mapped_column(default=0.0)  # 0..1
    phase: Mapped[str] = mapped_column(String(200), default="queued")
    # 'admin', 'cli' or 'schedule'; triggered_by names the person when there is one.
    trigger: Mapped[str] = mapped_column(String(20))
    triggered_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Updated as the round makes progress; a stale heartbeat means a lost worker.
    heartbeat_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    n_train: Mapped[int | None]
    n_test: Mapped[int | None]
    n_scored: Mapped[int | None]
    # Training labels the project had when the round was created: the
    # scheduler counts new labels from here.
    labels_at_start: Mapped[int | None]
    eta_seconds: Mapped[float | None]
    # Deliveries of this round to a worker (a lost worker's round is retried once).
    attempts: Mapped[int] = mapped_column(default=0)
    # The attempt that owns the row now (a new one per claim; cleared when the
    # round is recovered from a lost worker).  Progress, the round's end and
    # its model are written only by the attempt holding this token, so an
    # attempt that was given up on cannot overwrite its successor's work.
    attempt_token: Mapped[str | None] = mapped_column(String(32))

    @property
    def time_left(self) -> str | None:
        """The stored estimate of time left, while the round runs (worker/eta.py)."""
        return None if self.status.is_finished else time_left_text(self.eta_seconds)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        Index("ix_model_versions_project_active", "project_id", "is_active"),
        Index(
            "uq_model_versions_one_active", "project_id", unique=True,
            sqlite_where=text("is_active"), postgresql_where=text("is_active"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    round_id: Mapped[int] = mapped_column(ForeignKey("training_rounds.id"), unique=True)
    # Relative to the storage directory.
    artifact_path: Mapped[str] = mapped_column(String(500))
    # Output order of the network: label-class ids, one per softmax unit.
    class_ids: Mapped[list[int]] = mapped_column(JSON)
    input_size: Mapped[int]
    backbone_weights: Mapped[str] = mapped_column(String(500))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Temperature fitted on validation; suggestions and uncertainty use
    # softmax(logits / temperature).
    temperature: Mapped[float] = mapped_column(default=1.0)
    n_train: Mapped[int] = mapped_column(default=0)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Which backbone its cached features belong to: a pristine backbone's key
    # ("imagenet-299") is shared across rounds; a fine-tuned one is its own.
    feature_key: Mapped[str] = mapped_column(String(120), default="")
    parent_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    is_active: Mapped[bool] = mapped_column(default=False)
    activated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Prediction(Base):
    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("model_version_id", "image_id"),
        # The labeling queue walks these in order of uncertainty.
        Index("ix_predictions_version_entropy", "model_version_id", "entropy"),
        # Review queues rank by the project's strategy in SQL (ORDER BY … LIMIT).
        Index("ix_predictions_version_margin", "model_version_id", "margin"),
        Index("ix_predictions_version_least_confidence", "model_version_id", "least_confidence"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE")
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    # Class id -> probability, for every class of the model.
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    predicted_class_id: Mapped[int] = mapped_column(ForeignKey("label_classes.id"))
    confidence: Mapped[float]
    entropy: Mapped[float]
    margin: Mapped[float]
    least_confidence: Mapped[float]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
