"""Scheduled retraining: Celery beat's task starts a round for a project once it has
gained K new training labels since its last round, through the same path as the
admin's button (so one round at a time per project, and the same refusals)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from models import Image, ModelVersion, Project, RoundStatus, TrainingRound, User
from models.db import session_scope
from models.settings import load_settings
from tests.helpers import DEMO_DIR, base_env, make_user, running_worker
from webapp.bootstrap import create_project
from webapp.ingest import import_path
from models.base import utcnow
from webapp.label.decisions import Decision, record
from webapp.label.leases import try_lease
from worker.celery_app import (
    DEFAULT_QUEUE, RUN_ROUND, SCHEDULE_ROUNDS, TRAIN_QUEUE, make_celery,
)
from worker.launch import create_round
from worker.rounds import finish
from worker.schedule import schedule_rounds


def _project(settings, tmp_path: Path, name: str, every: int | None, n_cells: int = 8,
             **kw) -> tuple[int, list[int]]:
    """A project with ``n_cells`` unlabeled demo cells; returns (id, image ids)."""
    folder = tmp_path / f"src-{name}"
    folder.mkdir()
    files = sorted((DEMO_DIR / "lymphocyte").iterdir())[:n_cells // 2] + \
        sorted((DEMO_DIR / "neutrophil").iterdir())[:n_cells - n_cells // 2]
    for f in files:
        shutil.copy(f, folder / f.name)
    with session_scope(settings.database_url) as s:
        project = create_project(s, name, "pbc8", test_share=0.0, fine_tune_blocks=0,
                                 retrain_after_new_labels=every, **kw)
        assert import_path(s, settings.storage_dir, project, folder,
                           max_pixels=settings.max_image_pixels).imported == n_cells
        s.flush()
        ids = list(s.scalars(select(Image.id).where(Image.project_id == project.id)
                             .order_by(Image.id)))
        return project.id, ids


class Reader:
    """Labels cells as a pathologist would, through the labeling page's own code."""

    def __init__(self, settings, name: str = "reader"):
        self.settings = settings
        self.user_id = make_user(settings, name, "pathologist")

    def label(self, project_id: int, image_ids: list[int], *classes: str) -> None:
        with session_scope(self.settings.database_url) as s:
            project, user = s.get(Project, project_id), s.get(User, self.user_id)
            for k, image_id in enumerate(image_ids):
                # The page leases a cell when it shows it; a decision needs that lease.
                assert try_lease(s, project, image_id, user.id, 0, utcnow())
                record(s, project, image_id, user,
                       Decision(classes[k % len(classes)], 800, None, None, None))


def _rounds(settings, project_id: int) -> list[TrainingRound]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(TrainingRound).where(TrainingRound.project_id == project_id)
                              .order_by(TrainingRound.id)))


def _take(celery_app, queue_name: str) -> tuple[str, list]:
    """The next message on a queue (taken off it): (task name, args)."""
    with celery_app.connection_for_read() as conn:
        queue = conn.SimpleQueue(queue_name)
        try:
            message = queue.get(timeout=10)
            message.ack()
        finally:
            queue.close()
    return message.headers["task"], message.payload[0]


def test_beat_runs_the_schedule_on_the_default_queue(settings):
    app = make_celery(settings)
    entry = app.conf.beat_schedule["schedule-rounds"]
    assert entry["task"] == SCHEDULE_ROUNDS and entry["schedule"] == settings.schedule_seconds
    assert app.conf.task_routes[SCHEDULE_ROUNDS] == {"queue": DEFAULT_QUEUE}
    assert app.conf.task_routes[RUN_ROUND] == {"queue": TRAIN_QUEUE}


def test_a_round_is_scheduled_after_k_new_labels(settings, tmp_path):
    celery_app = make_celery(settings)
    reader = Reader(settings)
    manual, manual_cells = _project(settings, tmp_path, "manual", None)
    pid, cells = _project(settings, tmp_path, "due", 3, n_cells=12)
    reader.label(manual, manual_cells, "lymphocyte", "neutrophil")  # plenty, but not scheduled

    assert schedule_rounds(settings, celery_app) == []
    reader.label(pid, cells[:2], "lymphocyte", "neutrophil")
    assert schedule_rounds(settings, celery_app) == []  # 2 new labels < 3
    reader.label(pid, cells[2:3], "lymphocyte")

    started = schedule_rounds(settings, celery_app)
    (rnd,) = _rounds(settings, pid)
    assert started == [rnd.id]
    assert rnd.trigger == "schedule" and rnd.triggered_by_id is None
    assert rnd.status == RoundStatus.QUEUED and rnd.labels_at_start == 3
    assert rnd.celery_task_id  # really sent
    assert _take(celery_app, TRAIN_QUEUE) == (RUN_ROUND, [rnd.id])
    assert _rounds(settings, manual) == []

    # Nothing more while that round is queued or running, however many labels arrive.
    assert schedule_rounds(settings, celery_app) == []
    with session_scope(settings.database_url) as s:
        s.execute(update(TrainingRound).where(TrainingRound.id == rnd.id)
                  .values(status=RoundStatus.RUNNING))
    reader.label(pid, cells[3:5], "neutrophil")
    assert schedule_rounds(settings, celery_app) == []
    assert len(_rounds(settings, pid)) == 1

    # Finished: labels are counted from the round's start (3), so 2 are new; one more is due.
    finish(settings, rnd.id, status=RoundStatus.SUCCEEDED)
    assert schedule_rounds(settings, celery_app) == []
    reader.label(pid, cells[5:6], "lymphocyte")
    started = schedule_rounds(settings, celery_app)
    assert len(started) == 1
    second = _rounds(settings, pid)[-1]
    assert second.id == started[0] and second.labels_at_start == 6
    assert _take(celery_app, TRAIN_QUEUE) == (RUN_ROUND, [second.id])

    # A failed round counts as the last round too, and so does one an admin started:
    # the schedule waits for K labels after it.
    finish(settings, second.id, status=RoundStatus.FAILED, error="x")
    reader.label(pid, cells[6:8], "lymphocyte")
    with session_scope(settings.database_url) as s:
        admin_round = create_round(s, s.get(Project, pid), trigger="admin")
        assert admin_round.labels_at_start == 8
        admin_round_id = admin_round.id
    finish(settings, admin_round_id, status=RoundStatus.SUCCEEDED)
    assert schedule_rounds(settings, celery_app) == []
    assert [r.trigger for r in _rounds(settings, pid)] == ["schedule", "schedule", "admin"]


def test_a_due_project_that_cannot_train_is_skipped(settings, tmp_path):
    celery_app = make_celery(settings)
    reader = Reader(settings)
    mono, mono_cells = _project(settings, tmp_path, "mono", 2)  # first in line
    picky, picky_cells = _project(settings, tmp_path, "picky", 2, min_labels_per_class=2)
    fine, fine_cells = _project(settings, tmp_path, "fine", 2)
    reader.label(mono, mono_cells[:4], "lymphocyte")  # due, but one class only
    reader.label(picky, picky_cells[:3], "lymphocyte", "neutrophil", "lymphocyte")
    reader.label(fine, fine_cells[:2], "lymphocyte", "neutrophil")

    started = schedule_rounds(settings, celery_app)
    assert _rounds(settings, mono) == [] and _rounds(settings, picky) == []
    (rnd,) = _rounds(settings, fine)
    assert started == [rnd.id] and rnd.celery_task_id
    # Still skipped on the next beat, without a crash, until it can train.
    assert schedule_rounds(settings, celery_app) == []
    # Once it has two classes it is scheduled like any other.
    reader.label(mono, mono_cells[4:5], "neutrophil")
    started = schedule_rounds(settings, celery_app)
    (mono_round,) = _rounds(settings, mono)
    assert started == [mono_round.id] and mono_round.labels_at_start == 5
    assert _rounds(settings, picky) == []


def _wait(predicate, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.2)


@pytest.mark.slow
def test_beat_task_through_a_real_worker_trains_a_round(tmp_path, sqlite_url):
    """The beat's task, sent by name to a real worker: it schedules the round, and the
    same worker (train queue) runs it to a new active model."""
    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_HEAD_EPOCHS="2"))
    celery_app = make_celery(settings)
    reader = Reader(settings)
    pid, cells = _project(settings, tmp_path, "beat", 2, n_cells=6)
    reader.label(pid, cells[:2], "lymphocyte", "neutrophil")

    def finished() -> bool:
        rounds = _rounds(settings, pid)
        return bool(rounds) and rounds[0].status.is_finished

    with running_worker(celery_app):
        celery_app.send_task(SCHEDULE_ROUNDS)
        _wait(finished)
    (rnd,) = _rounds(settings, pid)
    assert rnd.status == RoundStatus.SUCCEEDED, rnd.error
    assert rnd.trigger == "schedule" and rnd.worker and rnd.celery_task_id
    assert rnd.n_train == 2 and rnd.n_scored == 6  # the labeled cells are scored too
    with session_scope(settings.database_url) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.round_id == rnd.id))
        assert version.is_active
