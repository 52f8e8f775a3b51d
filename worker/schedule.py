"""Scheduled retraining: a round once a project has gained K new labels.

Celery beat calls this every HEMALOOP_SCHEDULE_SECONDS; the rounds it starts
take the same path as the admin's button (worker/launch.py), so the same
checks and the one-round-per-project rule apply.
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import select

from models import Project, Split, TrainingRound
from models.db import session_scope
from models.labels import label_counts, labeled_images
from models.settings import Settings

from .launch import RoundRefused, active_round, create_round, enqueue_round

log = logging.getLogger(__name__)


def new_labels(session, project: Project) -> tuple[int, int]:
    """(training labels now, labels gained since the project's latest round)."""
    now = sum(label_counts(labeled_images(session, project, Split.POOL)).values())
    last = session.scalar(select(TrainingRound).where(TrainingRound.project_id == project.id)
                          .order_by(TrainingRound.id.desc()).limit(1))
    return now, now - ((last.labels_at_start or 0) if last else 0)


def schedule_rounds(settings: Settings, celery: Celery) -> list[int]:
    """Start a round for every project that is due; returns the new round ids."""
    started = []
    with session_scope(settings.database_url) as s:
        projects = s.scalars(select(Project).where(
            Project.retrain_after_new_labels.is_not(None)).order_by(Project.id)).all()
        for project in projects:
            if active_round(s, project.id) is not None:
                continue
            _, gained = new_labels(s, project)
            if gained < project.retrain_after_new_labels:
                continue
            try:
                rnd = create_round(s, project, trigger="schedule")
            except RoundRefused as exc:
                log.info("project %s is due but cannot train yet: %s", project.name, exc)
                continue
            enqueue_round(s, celery, rnd)
            log.info("scheduled round %s for project %s (%d new labels)",
                     rnd.id, project.name, gained)
            started.append(rnd.id)
    return started
