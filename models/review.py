"""Review rounds: a frozen, ordered queue of cells per project.

A queue is built once (by the project's strategy, worker/review_queue.py) and
never reordered: readers walk it in ``position`` order while the model
changes underneath.  Rebuilding writes a whole new queue under a new id and
then flips ``is_current`` in one transaction, so a reader sees the old
ranking or the new one, never a half-built one.  A small random share of
each queue (``is_random``) is drawn uniformly from the pool, so accuracy
measured on those cells is an unbiased estimate for the whole pool.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

DEFAULT_ROUND_SIZE = 50
DEFAULT_RANDOM_SHARE = 0.1


class QueueStatus(enum.StrEnum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"


class ReviewQueue(Base):
    __tablename__ = "review_queues"
    __table_args__ = (
        # One current queue per project: the pointer readers follow.
        Index("uq_review_queues_one_current", "project_id", unique=True,
              sqlite_where=text("is_current"), postgresql_where=text("is_current")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    # None: a cold-start queue (no model yet; diversity on backbone features).
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"))
    strategy: Mapped[str] = mapped_column(String(30))
    round_size: Mapped[int]
    random_share: Mapped[float]
    status: Mapped[QueueStatus] = mapped_column(
        Enum(QueueStatus, name="queue_status", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=10), default=QueueStatus.BUILDING)
    is_current: Mapped[bool] = mapped_column(default=False)
    # 'round', 'scoring', 'admin' or 'cli'.
    trigger: Mapped[str] = mapped_column(String(20))
    n_items: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    built_at: Mapped[datetime | None]


class ReviewQueueItem(Base):
    __tablename__ = "review_queue_items"
    __table_args__ = (
        # The labeling queue looks up each cell's position in the current queue.
        Index("ix_review_queue_items_image_queue", "image_id", "queue_id", unique=True),
    )

    queue_id: Mapped[int] = mapped_column(ForeignKey("review_queues.id", ondelete="CASCADE"),
                                          primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    # Drawn uniformly from the pool (the unbiased share), not by the strategy.
    is_random: Mapped[bool] = mapped_column(default=False)
