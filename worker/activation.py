"""Switching a project's active model: one row at a time, no model loaded.

Apart from worker/publish.py (which also scores the pool, with worker.ml) so the
admin's activate and rollback buttons reach it without the web process
importing any of worker/ml (the import contracts in pyproject.toml).
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import ModelVersion, utcnow


def activate(session: Session, version: ModelVersion) -> None:
    """Make ``version`` its project's only active model (the caller commits)."""
    session.execute(update(ModelVersion)
                    .where(ModelVersion.project_id == version.project_id,
                           ModelVersion.id != version.id, ModelVersion.is_active)
                    .values(is_active=False))
    # Flushed first: the partial unique index allows one active row at a time.
    session.flush()
    version.is_active = True
    version.activated_at = utcnow()
