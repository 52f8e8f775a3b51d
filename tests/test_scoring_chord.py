"""Pool scoring as a Celery chord on a real worker: chunks in parallel, then the
callback builds the next review queue.  SQLite transport + SQLite result backend
(the single-machine default) and Redis for both (production)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import delete, func, select

from models import ModelVersion, Prediction, Project, QueueStatus, ReviewQueue
from models.db import session_scope
from models.settings import load_settings
from tests.helpers import REDIS_URL, add_round, base_env, running_worker, trainable_project
from worker.celery_app import SCORE_VERSION, make_celery
from worker.rounds import run_round
from worker.scoring import plan_chunks

pytestmark = pytest.mark.slow


def _scored_project(settings, tmp_path) -> tuple[int, int]:
    """A trained tiny project whose active version has lost its predictions."""
    pid = trainable_project(settings, tmp_path)
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).al_round_size = 4
    round_id = add_round(settings, pid)
    assert run_round(settings, round_id, worker="test").value == "succeeded"
    with session_scope(settings.database_url) as s:
        vid = s.scalar(select(ModelVersion.id).where(ModelVersion.project_id == pid,
                                                     ModelVersion.is_active))
        # The round built a queue after publishing; scoring builds the next one.
        assert s.scalar(select(ReviewQueue.trigger).where(ReviewQueue.is_current)) == "round"
        s.execute(delete(Prediction).where(Prediction.model_version_id == vid))
    return pid, vid


def _wait_scored(settings, pid: int, vid: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(settings.database_url) as s:
            queue = s.scalar(select(ReviewQueue).where(ReviewQueue.project_id == pid,
                                                       ReviewQueue.trigger == "scoring"))
            if queue is not None and queue.status != QueueStatus.BUILDING:
                n = s.scalar(select(func.count(Prediction.id))
                             .where(Prediction.model_version_id == vid))
                assert n == 12
                assert queue.status == QueueStatus.READY and queue.is_current, queue.error
                assert queue.n_items == 4 and queue.model_version_id == vid
                return
        time.sleep(0.5)
    raise AssertionError("the chord's callback never built the review queue")


def _run_chord(settings, pid: int, vid: int) -> None:
    assert plan_chunks(settings, vid) == plan_chunks(settings, vid)
    assert len(plan_chunks(settings, vid)) == 6  # 12 cells in chunks of 2
    app = make_celery(settings)
    app.send_task(SCORE_VERSION, args=[vid])
    with running_worker(app):
        _wait_scored(settings, pid, vid)


def test_the_chord_scores_every_chunk_then_rebuilds_the_queue(tmp_path, sqlite_url):
    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_SCORE_CHUNK_CELLS="2"))
    assert settings.result_backend.startswith("db+sqlite:///")
    pid, vid = _scored_project(settings, tmp_path)
    _run_chord(settings, pid, vid)


@pytest.mark.redis
def test_the_chord_through_redis(tmp_path, sqlite_url, redis_db):
    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_BROKER_URL=REDIS_URL,
                                      HEMALOOP_RESULT_BACKEND=REDIS_URL,
                                      HEMALOOP_SCORE_CHUNK_CELLS="2"))
    pid, vid = _scored_project(settings, tmp_path)
    _run_chord(settings, pid, vid)
