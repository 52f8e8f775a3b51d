"""Projects and their ordered label classes."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.feature_sources import DEFAULT_FEATURE_SOURCES, EXISTING_PROJECTS_SOURCES
from models.strategies import DEFAULT_STRATEGY

from .base import Base, utcnow
from .review import DEFAULT_RANDOM_SHARE, DEFAULT_ROUND_SIZE

if TYPE_CHECKING:
    from .training import ModelVersion


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint("test_share >= 0 AND test_share < 1", name="test_share_range"),
        CheckConstraint("min_labels_per_class >= 1", name="min_labels_positive"),
        CheckConstraint("fine_tune_blocks >= 0 AND fine_tune_blocks <= 11", name="fine_tune_blocks_range"),
        CheckConstraint("retrain_after_new_labels IS NULL OR retrain_after_new_labels >= 1",
                        name="retrain_after_positive"),
        CheckConstraint("readers_per_cell >= 1", name="readers_per_cell_positive"),
        CheckConstraint("contested_readers IS NULL OR contested_readers >= 1",
                        name="contested_readers_positive"),
        CheckConstraint("agreement_share >= 0 AND agreement_share <= 1",
                        name="agreement_share_range"),
        CheckConstraint("lease_minutes >= 1", name="lease_minutes_positive"),
        CheckConstraint("feature_sources IN ('backbone', 'descriptors', 'both')",
                        name="feature_sources_known"),
        CheckConstraint("suggestion_min_accuracy >= 0 AND suggestion_min_accuracy <= 1",
                        name="suggestion_min_accuracy_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    description: Mapped[str] = mapped_column(String(2000), default="")
    # Share of imported pool images held out as the test split (never trained on).
    test_share: Mapped[float] = mapped_column(default=0.1)
    # Whether labels that came with an import (e.g. an analyser's
    # pre-classification) count as training labels, or only readers' labels do.
    train_on_reference: Mapped[bool] = mapped_column(default=False)
    # A class needs this many training labels to be learned; rounds refuse to
    # start when fewer than two classes reach it.
    min_labels_per_class: Mapped[int] = mapped_column(default=1)
    # Scheduled retraining: start a round once this many training labels were
    # added since the last round (None: only rounds an admin starts).
    retrain_after_new_labels: Mapped[int | None]
    # Phase 2 of training unfreezes this many of InceptionV3's top blocks
    # (0: the head alone is trained, on cached features).
    # Head only unless asked: webapp/bootstrap.create_project picks 2 where a GPU worker is known.
    fine_tune_blocks: Mapped[int] = mapped_column(default=0)
    # Start each round's network from the active model's weights.
    warm_start: Mapped[bool] = mapped_column(default=True)
    # What the classifier head reads (models/feature_sources.py): backbone
    # features, cell descriptors or both.  Existing rows keep "backbone".
    feature_sources: Mapped[str] = mapped_column(String(20), default=DEFAULT_FEATURE_SOURCES,
                                                 server_default=EXISTING_PROJECTS_SOURCES)
    # Reading: k readers must agree before a cell's label is final (or a
    # curator settles it).
    readers_per_cell: Mapped[int] = mapped_column(default=1)
    # A higher k for cells a reader puts in one of the contested classes, and
    # for a random share of cells kept for measuring agreement.
    contested_readers: Mapped[int | None]
    contested_class_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    agreement_share: Mapped[float] = mapped_column(default=0.0)
    # A model whose measured test accuracy is below this (or that has no
    # calibration data yet) shows its suggestions as tentative, so a weak
    # model's "88%" does not look trustworthy.
    suggestion_min_accuracy: Mapped[float] = mapped_column(default=0.7)
    # Readers do not see the model's suggestion (no anchoring).
    blind_reading: Mapped[bool] = mapped_column(default=False)
    # How long a cell shown to a reader stays theirs (a closed tab frees it).
    lease_minutes: Mapped[int] = mapped_column(default=10)
    # Active learning (models/review.py): which cells the next review round
    # shows, how many, and the share of them drawn at random.
    al_strategy: Mapped[str] = mapped_column(String(30), default=DEFAULT_STRATEGY,
                                             server_default=DEFAULT_STRATEGY)
    al_round_size: Mapped[int] = mapped_column(default=DEFAULT_ROUND_SIZE,
                                               server_default=str(DEFAULT_ROUND_SIZE))
    review_random_share: Mapped[float] = mapped_column(
        default=DEFAULT_RANDOM_SHARE, server_default=str(DEFAULT_RANDOM_SHARE))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The scanner's pixel size, for nucleus areas in µm² on the curator's page
    # (None: areas are shown in pixels only).
    microns_per_pixel: Mapped[float | None]

    classes: Mapped[list[LabelClass]] = relationship(
        back_populates="project", order_by="LabelClass.position", cascade="all, delete-orphan"
    )
    # The model serving suggestions (at most one: uq_model_versions_one_active).
    # Read-only here; activation goes through worker/publish.py.  The label
    # routes load it with the project in one query (webapp/label/routes.py).
    active_version: Mapped[ModelVersion | None] = relationship(
        primaryjoin="and_(ModelVersion.project_id == Project.id, ModelVersion.is_active)",
        viewonly=True, uselist=False,
    )

    def class_by_name(self, name: str) -> LabelClass | None:
        return next((c for c in self.classes if c.name == name), None)


class LabelClass(Base):
    __tablename__ = "label_classes"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        UniqueConstraint("project_id", "hotkey"),
        UniqueConstraint("project_id", "position"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    position: Mapped[int]
    name: Mapped[str] = mapped_column(String(60))
    hotkey: Mapped[str] = mapped_column(String(1))
    colour: Mapped[str] = mapped_column(String(7))

    project: Mapped[Project] = relationship(back_populates="classes")

    def __repr__(self) -> str:
        return f"<LabelClass {self.name}>"
