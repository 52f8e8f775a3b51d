"""Training rounds on the worker side: failures end visibly, lost rounds are failed,
a real Celery worker runs rounds through Redis, and a restarted worker cleans up."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models import (
    Annotation, Image, ModelVersion, Project, Prediction, RoundStatus, TrainingRound, utcnow,
)
from models.db import session_scope
from models.settings import load_settings
from tests.conftest import (
    DEMO_DIR, NO_REDIS, REDIS_URL, REPO, LoggedIn, add_round, base_env, make_user,
    running_worker,
    small_demo_copy,
)
from webapp.bootstrap import create_project
from webapp.ingest import import_path
from worker.celery_app import make_celery
from worker.rounds import fail_lost_rounds, run_round

TWO_CLASSES = ["lymphocyte", "neutrophil"]


# --- helpers -----------------------------------------------------------------------

@pytest.fixture
def sqlite_settings(tmp_path, sqlite_url):
    return load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url))


def _trainable_project(settings, tmp_path: Path, name: str = "tiny") -> int:
    """4 reference-labeled cells in each of two classes (trusted for training), plus
    4 unlabeled cells to rank.  Small, so a round takes seconds."""
    labeled = small_demo_copy(tmp_path / f"{name}-labeled", per_class=4, classes=TWO_CLASSES)
    flat = tmp_path / f"{name}-unlabeled"
    flat.mkdir()
    for f in sorted((DEMO_DIR / "monocyte").iterdir())[:4]:
        shutil.copy(f, flat / f.name)
    with session_scope(settings.database_url) as s:
        project = create_project(s, name, "pbc8", test_share=0.0, train_on_reference=True)
        for src in (labeled, flat):
            report = import_path(s, settings.storage_dir, project, src,
                                 max_pixels=settings.max_image_pixels)
            assert report.imported == (8 if src is labeled else 4)
        return project.id




def _round(settings, round_id: int) -> TrainingRound:
    with session_scope(settings.database_url) as s:
        return s.get(TrainingRound, round_id)


def _row(rnd: TrainingRound) -> tuple:
    return (rnd.status, rnd.error, rnd.phase, rnd.progress, rnd.worker, rnd.started_at,
            rnd.finished_at, rnd.heartbeat_at, rnd.warnings, rnd.n_train, rnd.n_scored)


def _wait_finished(settings, round_id: int, timeout: float = 300) -> TrainingRound:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rnd = _round(settings, round_id)
        if rnd.status.is_finished:
            return rnd
        time.sleep(0.5)
    raise AssertionError(f"round {round_id} did not finish in {timeout} s")


# --- run_round, called directly ------------------------------------------------------------

@pytest.mark.slow
def test_round_survives_missing_files_and_names_them(settings, tmp_path):
    pid = _trainable_project(settings, tmp_path)
    with session_scope(settings.database_url) as s:
        labeled_ids = set(s.scalars(select(Annotation.image_id)))
        images = s.scalars(select(Image).where(Image.project_id == pid).order_by(Image.id)).all()
    gone_train = next(i for i in images if i.id in labeled_ids)
    gone_pool = next(i for i in images if i.id not in labeled_ids)
    for image in (gone_train, gone_pool):
        (settings.storage_dir / image.storage_path).unlink()

    round_id = add_round(settings, pid)
    assert run_round(settings, round_id, worker="test-worker") == RoundStatus.SUCCEEDED
    rnd = _round(settings, round_id)
    assert rnd.status == RoundStatus.SUCCEEDED and rnd.error is None, rnd.error
    assert rnd.worker == "test-worker" and rnd.progress == 1.0
    # Every pool cell no reader decided on is ranked, reference-labeled ones included
    # (readers confirm them); the two unreadable ones are not.
    assert rnd.n_train == 7 and rnd.n_scored == 10
    (warning,) = [w for w in rnd.warnings if "could not be read and were skipped" in w]
    for image in (gone_train, gone_pool):
        assert f"cell {image.id} ({image.original_name}): file not found" in warning

    with session_scope(settings.database_url) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.round_id == round_id))
        assert version.is_active
        predicted = set(s.scalars(select(Prediction.image_id)
                                  .where(Prediction.model_version_id == version.id)))
    assert len(predicted) == 10 and not predicted & {gone_pool.id, gone_train.id}

    # Delivered again (a redelivery after a lost ack): nothing runs twice.
    before = _row(rnd)
    assert run_round(settings, round_id, worker="other-worker") == RoundStatus.SUCCEEDED
    assert _row(_round(settings, round_id)) == before
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(ModelVersion.id))) == 1


@pytest.mark.slow
def test_missing_file_warning_counts_each_image_once(sqlite_settings, tmp_path):
    """A reference-labeled pool cell is both a training cell and a cell to rank
    (train_on_reference); when its file is missing it is still one image."""
    settings = sqlite_settings
    pid = _trainable_project(settings, tmp_path)
    with session_scope(settings.database_url) as s:
        gone = s.scalar(select(Image).join(Annotation).order_by(Image.id).limit(1))
    (settings.storage_dir / gone.storage_path).unlink()
    round_id = add_round(settings, pid)
    assert run_round(settings, round_id, worker="w") == RoundStatus.SUCCEEDED
    (warning,) = [w for w in _round(settings, round_id).warnings if "could not be read" in w]
    assert warning == ("1 image(s) could not be read and were skipped, e.g. "
                       f"cell {gone.id} ({gone.original_name}): file not found")


def test_round_with_one_class_fails_with_the_reason(settings, tmp_path):
    src = small_demo_copy(tmp_path / "one-class", per_class=3, classes=["neutrophil"])
    with session_scope(settings.database_url) as s:
        project = create_project(s, "one", "pbc8", test_share=0.0, train_on_reference=True)
        assert import_path(s, settings.storage_dir, project, src,
                           max_pixels=settings.max_image_pixels).imported == 3
        pid = project.id
    round_id = add_round(settings, pid)

    assert run_round(settings, round_id, worker="w1") == RoundStatus.FAILED
    rnd = _round(settings, round_id)
    assert rnd.status == RoundStatus.FAILED and rnd.phase == "failed"
    assert rnd.error == ("Training needs at least 1 label(s) in each of at least two classes; "
                         "labels so far: neutrophil: 3.")
    assert rnd.finished_at is not None and rnd.worker == "w1"
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(ModelVersion.id))) == 0

    # The same round id again: a no-op that reports the status it already has.
    before = _row(rnd)
    assert run_round(settings, round_id, worker="w2") == RoundStatus.FAILED
    assert _row(_round(settings, round_id)) == before


def test_round_claimed_by_another_worker_is_left_alone(settings, tmp_path):
    src = small_demo_copy(tmp_path / "cells", per_class=1, classes=TWO_CLASSES)
    with session_scope(settings.database_url) as s:
        project = create_project(s, "p", "pbc8", test_share=0.0, train_on_reference=True)
        import_path(s, settings.storage_dir, project, src, max_pixels=settings.max_image_pixels)
        pid = project.id
    beat = utcnow() - timedelta(seconds=5)
    round_id = add_round(settings, pid, status=RoundStatus.RUNNING, worker="celery@first",
                          started_at=beat, heartbeat_at=beat, phase="training", progress=0.5)
    before = _row(_round(settings, round_id))
    assert run_round(settings, round_id, worker="celery@second") == RoundStatus.RUNNING
    assert _row(_round(settings, round_id)) == before

    cancelled = add_round(settings, pid, status=RoundStatus.CANCELLED)
    assert run_round(settings, cancelled, worker="celery@second") == RoundStatus.CANCELLED
    assert _round(settings, cancelled).worker is None


# --- fail_lost_rounds ---------------------------------------------------------------------

def test_fail_lost_rounds(settings, tmp_path):
    # One project per round: a project can only have one round queued or running.
    with session_scope(settings.database_url) as s:
        pids = [create_project(s, f"p{i}", "pbc8").id for i in range(6)]
    now = utcnow()
    old = now - timedelta(seconds=settings.round_stale_seconds + 60)
    running = dict(status=RoundStatus.RUNNING, started_at=old, phase="training", progress=0.4)
    restarted = add_round(settings, pids[0], worker="celery@restarted", heartbeat_at=now,
                           **running)
    stale = add_round(settings, pids[1], worker="celery@stale",
                       **{**running, "heartbeat_at": old})
    no_beat = add_round(settings, pids[2], worker="celery@silent", **running)
    fresh = add_round(settings, pids[3], worker="celery@busy", heartbeat_at=now, **running)
    queued = add_round(settings, pids[4])
    done = add_round(settings, pids[5], status=RoundStatus.SUCCEEDED, worker="celery@restarted",
                      heartbeat_at=old, finished_at=old)
    untouched = {r: _row(_round(settings, r)) for r in (fresh, queued, done)}

    assert fail_lost_rounds(settings, worker="celery@restarted") == 3

    rnd = _round(settings, restarted)
    assert rnd.status == RoundStatus.FAILED and rnd.phase == "failed" and rnd.finished_at
    assert "stopped (restarted or killed) before it finished" in rnd.error
    rnd = _round(settings, stale)
    assert rnd.status == RoundStatus.FAILED
    assert rnd.error == (f"No progress from worker celery@stale for over "
                         f"{settings.round_stale_seconds} s; the worker is presumed lost.")
    assert _round(settings, no_beat).status == RoundStatus.FAILED
    for r, row in untouched.items():
        assert _row(_round(settings, r)) == row

    # Nothing left to fail; another worker's restart does not touch the busy one.
    assert fail_lost_rounds(settings, worker="celery@other") == 0
    assert _round(settings, fresh).status == RoundStatus.RUNNING


def test_admin_pages_requeue_a_lost_round_once(app, client, settings):
    """A round whose worker vanished is sent again once; the admin sees why."""
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    old = utcnow() - timedelta(hours=2)
    lost = add_round(settings, pid, status=RoundStatus.RUNNING, worker="celery@gone",
                      started_at=old, heartbeat_at=old, attempts=1)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(client, "boss")
    row = admin.get(f"/admin/rounds/{lost}/row")
    assert row.status_code == 200
    assert 'data-status="queued"' in row.text and "Queued again" in row.text
    assert 'hx-trigger="every 2s"' in row.text  # still followed live
    rnd = _round(settings, lost)
    assert rnd.status == RoundStatus.QUEUED and rnd.celery_task_id  # really sent again


def test_admin_pages_fail_stale_rounds(app, client, settings):
    """After its last attempt, a lost round is failed with the reason."""
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    old = utcnow() - timedelta(hours=2)
    stale = add_round(settings, pid, status=RoundStatus.RUNNING, worker="celery@gone",
                       started_at=old, heartbeat_at=old, attempts=2)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(client, "boss")
    row = admin.get(f"/admin/rounds/{stale}/row")
    assert row.status_code == 200
    assert 'data-status="failed"' in row.text and "presumed lost" in row.text
    assert "hx-trigger" not in row.text  # a finished row stops polling
    assert _round(settings, stale).status == RoundStatus.FAILED


# --- a real Celery worker -------------------------------------------------------------------

@pytest.fixture
def redis_db():
    """The test Redis database, emptied before and after (only that database)."""
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    import redis

    conn = redis.Redis.from_url(REDIS_URL)
    if conn.connection_pool.connection_kwargs.get("db", 0) == 0:
        pytest.skip("refusing to flush Redis database 0: point HEMALOOP_TEST_REDIS_URL "
                    "at a spare database, e.g. redis://127.0.0.1:6379/15")
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.mark.slow
@pytest.mark.redis
def test_round_through_redis_and_a_real_worker(tmp_path, sqlite_url, redis_db):
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_BROKER_URL=REDIS_URL))
    app = create_app(settings)
    app.config["TESTING"] = True
    pid = _trainable_project(settings, tmp_path)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")

    response = admin.post(f"/admin/projects/{pid}/rounds")
    assert response.status_code == 200, response.text
    round_id = int(re.search(r'id="round-(\d+)"', response.text).group(1))
    rnd = _round(settings, round_id)
    assert rnd.status == RoundStatus.QUEUED and rnd.celery_task_id
    assert redis_db.llen("train") == 1  # the message waits in Redis, on the train queue

    # The worker's own Celery app, as `hemaloop worker` builds it (the webapp's only sends).
    with running_worker(make_celery(settings)):
        rnd = _wait_finished(settings, round_id)
    assert rnd.status == RoundStatus.SUCCEEDED, rnd.error
    assert rnd.worker and rnd.started_at and rnd.finished_at
    assert rnd.n_train == 8 and rnd.n_scored == 12
    assert redis_db.llen("train") == 0

    status = admin.get(f"/api/rounds/{round_id}").json
    assert status["status"] == "succeeded" and status["progress"] == 1.0
    queue = admin.get(f"/api/projects/{pid}/queue").json
    assert queue["order"] == "entropy" and len(queue["cells"]) == 12


def _start_worker(env: dict, name: str, log_path: Path) -> subprocess.Popen:
    from webapp.cli import worker_command

    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("HEMALOOP_")}
    proc_env.update(env, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        worker_command() + ["-n", name, "--without-heartbeat", "--without-mingle",
                            "--without-gossip"],
        cwd=REPO, env=proc_env, stdout=log_path.open("a"), stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_until(predicate, proc, log_path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)


def test_worker_killed_mid_round_is_recovered_on_restart(tmp_path, sqlite_url):
    """`celery -A worker.main worker` (what `hemaloop worker` runs) is killed (SIGKILL)
    while it trains; started again under the same name, its worker_ready handler
    queues the round again and the round then succeeds.  Another worker's running
    round is left alone.

    (The in-process ``running_worker`` does not send worker_ready: Celery's
    TestWorkController replaces the hook that sends it, so this needs the real command.)
    """
    from worker.celery_app import make_celery
    from worker.launch import create_round, enqueue_round

    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url)
    settings = load_settings(env)
    src = small_demo_copy(tmp_path / "cells", per_class=4, classes=["neutrophil", "platelet"])
    with session_scope(settings.database_url) as s:
        project = create_project(s, "p", "pbc8", test_share=0.0, train_on_reference=True,
                                 fine_tune_blocks=0)
        import_path(s, settings.storage_dir, project, src, max_pixels=settings.max_image_pixels)
        other = create_project(s, "other", "pbc8")
        pid, other_id = project.id, other.id
    now = utcnow()
    theirs = add_round(settings, other_id, worker="celery@elsewhere", status=RoundStatus.RUNNING,
                        started_at=now, heartbeat_at=now, phase="training")
    with session_scope(settings.database_url) as s:
        rnd = create_round(s, s.get(Project, pid), trigger="cli")
        enqueue_round(s, make_celery(settings), rnd)
        round_id = rnd.id

    name = f"hemaloop-test-{uuid.uuid4().hex[:8]}@localhost"
    log_path = tmp_path / "worker.log"
    proc = _start_worker(env, name, log_path)
    try:
        _wait_until(lambda: _round(settings, round_id).status == RoundStatus.RUNNING,
                    proc, log_path)
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = _round(settings, round_id)
    assert killed.status == RoundStatus.RUNNING and killed.worker == name

    proc = _start_worker(env, name, log_path)
    try:
        _wait_until(lambda: _round(settings, round_id).status.is_finished, proc, log_path)
    finally:
        _stop(proc)
    rnd = _round(settings, round_id)
    assert rnd.status == RoundStatus.SUCCEEDED, (rnd.error, log_path.read_text()[-3000:])
    assert rnd.attempts == 2 and rnd.worker == name
    assert any("Queued again" in w for w in rnd.warnings)
    assert _round(settings, theirs).status == RoundStatus.RUNNING
