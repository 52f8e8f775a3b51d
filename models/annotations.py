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
    UNUSABLE = "unusable"  # out of focus, overlapping, artefact
    EXCLUDED = "excluded"  # a curator's decision: the cell is dropped for good


class Origin(enum.StrEnum):
    READER = "reader"  # a person in the labeling page
    REFERENCE = "reference"  # came with an import (class folder names)
    CURATOR = "curator"  # a curator settling a cell; the latest one is final


class Kind(enum.StrEnum):
    LABEL = "label"  # a class or flag chosen for one cell
    VERIFY = "verify"  # a model suggestion confirmed in the bulk-verification grid
    RETRACT = "retract"  # an undo: voids the row named by retracts_id
    # A suggestion marked wrong in the bulk-verification grid: names the rejected
    # class in suggested_class_id and no class of its own.  Not a vote.
    REJECT = "reject"


DECISION_SHAPE = (
    "(kind = 'retract' AND label_class_id IS NULL AND flag IS NULL AND retracts_id IS NOT NULL) "
    "OR (kind = 'reject' AND label_class_id IS NULL AND flag IS NULL AND retracts_id IS NULL "
    "AND suggested_class_id IS NOT NULL AND model_version_id IS NOT NULL) "
    "OR (kind NOT IN ('retract', 'reject') AND retracts_id IS NULL "
    "AND (label_class_id IS NULL) <> (flag IS NULL))")


class Annotation(Base):
    __tablename__ = "annotations"
    __table_args__ = (
        # A decision names a class or a flag, never both; an undo names neither
        # and points at the row it voids; a rejection names the suggestion it rejects.
        CheckConstraint(DECISION_SHAPE, name="decision_shape"),
        CheckConstraint("duration_ms IS NULL OR duration_ms >= 0", name="duration_positive"),
        # A retried or double-submitted request carries the same submission id.
        UniqueConstraint("user_id", "submission_id"),
        Index("ix_annotations_image_created", "image_id", "created_at"),
        # A reader's session: counters, undo, cells per hour.
        Index("ix_annotations_user_created", "user_id", "created_at"),
        # "Has this reader decided on this cell?", asked of every cell the queue
        # offers: one index probe, however many cells the reader has labeled.
        Index("ix_annotations_user_image", "user_id", "image_id"),
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
    kind: Mapped[Kind] = mapped_column(
        Enum(Kind, name="annotation_kind", values_callable=lambda e: [m.value for m in e],
             native_enum=False, length=10),
        default=Kind.LABEL,
    )
    retracts_id: Mapped[int | None] = mapped_column(ForeignKey("annotations.id"), index=True)
    # A curator's reason for a resolution (optional).
    note: Mapped[str | None] = mapped_column(String(2000))
