"""Imports started from the browser: the uploaded files wait on disk under the
instance folder, a worker imports them and records progress and the report here."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class ImportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        return self in (ImportStatus.SUCCEEDED, ImportStatus.FAILED)


class ImportJob(Base):
    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            index=True)
    status: Mapped[ImportStatus] = mapped_column(
        Enum(ImportStatus, name="import_status",
             values_callable=lambda e: [m.value for m in e], native_enum=False, length=10),
        default=ImportStatus.QUEUED)
    # What the admin uploaded, for the page ("cells.zip", "12 files").
    source: Mapped[str] = mapped_column(String(200))
    # The upload's folder, relative to the instance folder; removed when the job ends.
    upload_dir: Mapped[str] = mapped_column(String(500))
    # The admin's answer: class-folder names are correct labels (train_on_reference).
    trust_labels: Mapped[bool] = mapped_column(default=False)
    files_total: Mapped[int] = mapped_column(default=0)
    files_done: Mapped[int] = mapped_column(default=0)
    # ImportReport.as_dict() plus "labeled" once the job ends (also when it aborted).
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A message for the admin, never an exception's text.
    error: Mapped[str | None] = mapped_column(Text)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    @property
    def progress(self) -> float:
        return self.files_done / self.files_total if self.files_total else 0.0
