"""The append-only annotation history.

Rows are never updated or deleted: a changed mind is a new row, and the
current label of a cell is derived from its latest rows.  A row either names
a class or carries a flag ('ambiguous', 'unusable'), never both.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, Enum, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class Flag(enum.StrEnum):
    AMBIGUOUS = "ambiguous"
    UNUSABLE = "unusable"


class Origin(enum.StrEnum):
    READER = "reader"  # a person in the labeling page
    REFERENCE = "reference"  # came with an import (class folder names)


class Annotation(Base):
    __tablename__ = "annotations"
    __table_args__ = (
        CheckConstraint(
            "(label_class_id IS NULL) <> (flag IS NULL)", name="class_xor_flag"
        ),
        CheckConstraint("duration_ms IS NULL OR duration_ms >= 0", name="duration_positive"),
        # A retried or double-submitted request carries the same submission id.
        UniqueConstraint("user_id", "submission_id"),
        Index("ix_annotations_image_created", "image_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    origin: Mapped[Origin] = mapped_column(
        Enum(Origin, name="annotation_origin", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=10)
    )
    source: Mapped[str | None] = mapped_column(String(200))
    label_class_id: Mapped[int | None] = mapped_column(ForeignKey("label_classes.id"))
    flag: Mapped[Flag | None] = mapped_column(
        Enum(Flag, name="annotation_flag", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=10)
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_ms: Mapped[int | None]
    # What the reader was shown, so agreement with the model can be studied.
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    suggested_class_id: Mapped[int | None] = mapped_column(ForeignKey("label_classes.id"))
    submission_id: Mapped[str | None] = mapped_column(String(64))
