"""Cell images: one row per stored file, deduplicated by content."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Split(enum.StrEnum):
    POOL = "pool"  # labeled by readers, trained on, ranked for review
    TEST = "test"  # held out for evaluation, never trained on


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("project_id", "sha256"),
        # The labeling queue's random order before any model exists.
        Index("ix_images_queue", "project_id", "split", "shuffle_key"),
        # The labeling queue walks only cells that still need a reader.
        Index("ix_images_open_queue", "project_id", "shuffle_key", "id",
              sqlite_where=text("open_slots > 0"), postgresql_where=text("open_slots > 0")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    # Relative to the storage directory, so the store can move.
    storage_path: Mapped[str] = mapped_column(String(500))
    width: Mapped[int]
    height: Mapped[int]
    original_name: Mapped[str] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(200))
    split: Mapped[Split] = mapped_column(
        Enum(Split, name="image_split", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=10)
    )
    # Uniform random number fixed at import: a stable shuffled order.
    shuffle_key: Mapped[float]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Readers the cell still needs: a cache of models/labels.py that
    # models/open_slots.py keeps current (see there).
    open_slots: Mapped[int] = mapped_column(default=0, server_default="0")
