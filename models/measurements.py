"""What a haematologist measures on a cell, for the curator's page (issue 15).

``cell_measurements`` holds, per cell, a handful of the descriptor values
(worker/ml/descriptors) in units a person reads: the nucleus's area in pixels
of the stored image (µm² follow from the project's ``microns_per_pixel``, so
changing that setting needs no recomputation), its lobes, the share of the
cell it fills, its shape and its chromatin.  One row per cell; a row of
another ``descriptor_version``, or one that failed, counts as missing and is
redone by the next describe run.  ``describe_runs`` records each run (status,
progress, failures) for the admin's page and the CLI's progress bar.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class CellMeasurement(Base):
    __tablename__ = "cell_measurements"

    # One row per cell: a new descriptor version overwrites it.
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"),
                                          primary_key=True)
    # Denormalised for the per-class ranges, which read a whole project's rows.
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    descriptor_version: Mapped[int]
    # Why the cell could not be measured (an unreadable file), for the admin;
    # never an exception's text.  The values are None then.
    error: Mapped[str | None] = mapped_column(Text)
    nucleus_found: Mapped[bool | None]
    # Whether a layer of cytoplasm was found around the nucleus: without one
    # the cell mask is the nucleus and the nucleus-to-cell ratio reads ~1.
    cytoplasm_found: Mapped[bool | None]
    # Areas in pixels of the stored image (not the 128 px working square).
    nucleus_area_px: Mapped[float | None]
    cell_area_px: Mapped[float | None]
    nucleus_lobes: Mapped[int | None]
    nucleus_to_cell: Mapped[float | None]
    nucleus_circularity: Mapped[float | None]
    nucleus_solidity: Mapped[float | None]
    # Chromatin: mean darkness (0-1) and GLCM contrast inside the nucleus.
    chromatin_density: Mapped[float | None]
    chromatin_contrast: Mapped[float | None]
    measured_at: Mapped[datetime] = mapped_column(default=utcnow)


class DescribeStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        return self in (DescribeStatus.SUCCEEDED, DescribeStatus.FAILED)


class DescribeRun(Base):
    __tablename__ = "describe_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    status: Mapped[DescribeStatus] = mapped_column(
        Enum(DescribeStatus, name="describe_status",
             values_callable=lambda e: [m.value for m in e], native_enum=False, length=10),
        default=DescribeStatus.QUEUED)
    # "import", "admin" or "cli".
    trigger: Mapped[str] = mapped_column(String(20), default="admin")
    descriptor_version: Mapped[int | None]
    cells_total: Mapped[int] = mapped_column(default=0)
    cells_done: Mapped[int] = mapped_column(default=0)
    # Cells that could not be measured (their rows say why); the run goes on.
    cells_failed: Mapped[int] = mapped_column(default=0)
    # A message for the admin, never an exception's text.
    error: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Written with the progress: a running run silent for longer than
    # HEMALOOP_ROUND_STALE_SECONDS lost its worker and no longer blocks a new one.
    heartbeat_at: Mapped[datetime | None]

    @property
    def progress(self) -> float:
        return self.cells_done / self.cells_total if self.cells_total else 0.0
