"""Training rounds on the worker side: failures end visibly, lost rounds are failed,
a real Celery worker runs rounds through Redis, and a restarted worker cleans up."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
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
from tests.helpers import (
    REDIS_URL, REPO, TWO_CLASSES, LoggedIn, add_round, base_env, make_user, running_worker,
    small_demo_copy,
)
from tests.helpers import trainable_project as _trainable_project
from webapp.bootstrap import create_project
from webapp.ingest import import_path
from worker.celery_app import make_celery
from worker.rounds import fail_lost_rounds, run_round

# --- helpers -----------------------------------------------------------------------

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


@pytest.mark.slow
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
    # Its worker's name is the one a worker starting now has: that alone is no
    # sign it is lost (two workers on one host shared a name; issue 11).
    same_name = add_round(settings, pids[0], worker="celery@restarted", heartbeat_at=now,
                          **running)
    stale = add_round(settings, pids[1], worker="celery@stale",
                       **{**running, "heartbeat_at": old})
    no_beat = add_round(settings, pids[2], worker="celery@silent", **running)
    fresh = add_round(settings, pids[3], worker="celery@busy", heartbeat_at=now, **running)
    queued = add_round(settings, pids[4])
    done = add_round(settings, pids[5], status=RoundStatus.SUCCEEDED, worker="celery@restarted",
                      heartbeat_at=old, finished_at=old)
    untouched = {r: _row(_round(settings, r)) for r in (same_name, fresh, queued, done)}

    assert fail_lost_rounds(settings) == 2

    rnd = _round(settings, stale)
    assert rnd.status == RoundStatus.FAILED
    assert rnd.error == (f"No progress from worker celery@stale for over "
                         f"{settings.round_stale_seconds} s; the worker is presumed lost.")
    assert _round(settings, no_beat).status == RoundStatus.FAILED
    for r, row in untouched.items():
        assert _row(_round(settings, r)) == row

    # Nothing left to fail; the busy ones stay running.
    assert fail_lost_rounds(settings) == 0
    assert _round(settings, fresh).status == RoundStatus.RUNNING
    assert _round(settings, same_name).status == RoundStatus.RUNNING


def test_admin_pages_only_read(app, client, settings):
    """Issue 12: GET requests do not write.  The admin page and the round row's poll
    show a round whose worker vanished as it is; Celery beat recovers it."""
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    old = utcnow() - timedelta(hours=2)
    lost = add_round(settings, pid, status=RoundStatus.RUNNING, worker="celery@gone",
                     started_at=old, heartbeat_at=old, attempts=1, attempt_token="a" * 32)
    before = _row(_round(settings, lost)) + (_round(settings, lost).attempt_token,)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(client, "boss")
    assert admin.get("/admin/").status_code == 200
    row = admin.get(f"/admin/rounds/{lost}/row")
    assert row.status_code == 200
    assert 'data-status="running"' in row.text and 'hx-trigger="every 2s"' in row.text
    assert admin.get(f"/api/rounds/{lost}").status_code == 200
    assert _row(_round(settings, lost)) + (_round(settings, lost).attempt_token,) == before


@pytest.mark.slow
def test_beat_task_recovers_lost_rounds_through_a_real_worker(settings):
    """The beat's recovery task, sent by name to a real worker on the default queue: a
    lost round with a delivery left is queued again (sent to the train queue), one
    past its last attempt is failed with the reason; a live round is left alone."""
    from celery.contrib.testing.worker import start_worker

    import worker.tasks  # noqa: F401
    from worker.celery_app import DEFAULT_QUEUE, RECOVER_ROUNDS, make_celery

    celery_app = make_celery(settings)
    entry = celery_app.conf.beat_schedule["recover-rounds"]
    assert entry["task"] == RECOVER_ROUNDS and entry["schedule"] == settings.schedule_seconds
    assert celery_app.conf.task_routes[RECOVER_ROUNDS] == {"queue": DEFAULT_QUEUE}
    with session_scope(settings.database_url) as s:
        pids = [create_project(s, f"p{i}", "pbc8").id for i in range(3)]
    old = utcnow() - timedelta(seconds=settings.round_stale_seconds + 60)
    now = utcnow()
    lost = dict(status=RoundStatus.RUNNING, worker="celery@gone", started_at=old,
                heartbeat_at=old, attempt_token="b" * 32)
    again = add_round(settings, pids[0], attempts=1, **lost)
    given_up = add_round(settings, pids[1], attempts=2, **lost)
    live = add_round(settings, pids[2], status=RoundStatus.RUNNING, worker="celery@busy",
                     started_at=old, heartbeat_at=now, attempts=1, attempt_token="c" * 32)
    live_row = _row(_round(settings, live))

    with start_worker(celery_app, pool="solo", perform_ping_check=False,
                      queues=[DEFAULT_QUEUE], shutdown_timeout=60):
        celery_app.send_task(RECOVER_ROUNDS)
        deadline = time.monotonic() + 60
        while _round(settings, given_up).status == RoundStatus.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        while _round(settings, again).celery_task_id is None:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    rnd = _round(settings, again)
    assert rnd.status == RoundStatus.QUEUED and rnd.attempt_token is None
    assert any("presumed lost. Queued again" in w for w in rnd.warnings)
    rnd = _round(settings, given_up)
    assert rnd.status == RoundStatus.FAILED and rnd.attempt_token is None
    assert rnd.error == ("No progress from worker celery@gone for over "
                         f"{settings.round_stale_seconds} s; the worker is presumed lost.")
    assert _row(_round(settings, live)) == live_row


# --- a real Celery worker -------------------------------------------------------------------

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
        worker_command(name=name) + ["--without-heartbeat", "--without-mingle",
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


@pytest.mark.slow
def test_worker_killed_mid_round_is_recovered_on_restart(tmp_path, sqlite_url):
    """Fault test (issue 11): `celery -A worker.main worker` (what `hemaloop worker`
    runs) is killed (SIGKILL) while it trains.  Once the round's heartbeat is older
    than HEMALOOP_ROUND_STALE_SECONDS, a worker starting (under a new name, as every
    worker does) queues the round again at start-up, and the round then succeeds once;
    it never stays running.  Another worker's live round is left alone.

    (The in-process ``running_worker`` does not send worker_ready: Celery's
    TestWorkController replaces the hook that sends it, so this needs the real command.)
    """
    from worker.celery_app import make_celery
    from worker.launch import create_round, enqueue_round

    stale_s = 10
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                   HEMALOOP_ROUND_STALE_SECONDS=str(stale_s))
    settings = load_settings(env)
    src = small_demo_copy(tmp_path / "cells", per_class=4, classes=["neutrophil", "platelet"])
    with session_scope(settings.database_url) as s:
        project = create_project(s, "p", "pbc8", test_share=0.0, train_on_reference=True,
                                 fine_tune_blocks=0)
        import_path(s, settings.storage_dir, project, src, max_pixels=settings.max_image_pixels)
        other = create_project(s, "other", "pbc8")
        pid, other_id = project.id, other.id
    with session_scope(settings.database_url) as s:
        rnd = create_round(s, s.get(Project, pid), trigger="cli")
        enqueue_round(s, make_celery(settings), rnd)
        round_id = rnd.id

    first = f"hemaloop-test-{uuid.uuid4().hex[:8]}@localhost"
    log_path = tmp_path / "worker.log"
    proc = _start_worker(env, first, log_path)
    try:
        _wait_until(lambda: _round(settings, round_id).status == RoundStatus.RUNNING,
                    proc, log_path)
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = _round(settings, round_id)
    assert killed.status == RoundStatus.RUNNING and killed.worker == first
    lost_token = killed.attempt_token
    assert lost_token
    # Not stale yet: a worker starting now would leave it alone.  Wait until it is.
    deadline = killed.heartbeat_at + timedelta(seconds=stale_s + 1)
    time.sleep(max(0.0, (deadline - utcnow()).total_seconds()))
    # Another project's round, running and beating on another worker: not lost.
    now = utcnow()
    theirs = add_round(settings, other_id, worker="celery@elsewhere", status=RoundStatus.RUNNING,
                       started_at=now, heartbeat_at=now, phase="training")

    second = f"hemaloop-test-{uuid.uuid4().hex[:8]}@localhost"
    proc = _start_worker(env, second, log_path)
    try:
        _wait_until(lambda: _round(settings, round_id).status.is_finished, proc, log_path)
    finally:
        _stop(proc)
    rnd = _round(settings, round_id)
    assert rnd.status == RoundStatus.SUCCEEDED, (rnd.error, log_path.read_text()[-3000:])
    assert rnd.attempts == 2 and rnd.worker == second
    assert rnd.attempt_token not in (None, lost_token)
    assert any("presumed lost. Queued again" in w for w in rnd.warnings)
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(ModelVersion.id))
                        .where(ModelVersion.round_id == round_id)) == 1
    assert _round(settings, theirs).status == RoundStatus.RUNNING


def _start_default_worker(env: dict, log_path: Path) -> subprocess.Popen:
    """`hemaloop worker` as an operator starts it: no name given on the command line."""
    from webapp.cli import worker_command

    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("HEMALOOP_")}
    proc_env.update(env, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        worker_command() + ["--without-heartbeat", "--without-mingle", "--without-gossip"],
        cwd=REPO, env=proc_env, stdout=log_path.open("a"), stderr=subprocess.STDOUT)


def _pause_outside_a_write(proc: subprocess.Popen, sqlite_url: str) -> None:
    """SIGSTOP ``proc`` at a moment it holds no write lock on the SQLite file (a
    paused writer would lock every other process out); retried until so."""
    path = sqlite_url.split(":///", 1)[1]
    for _ in range(100):
        proc.send_signal(signal.SIGSTOP)
        con = sqlite3.connect(path, timeout=0.2)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            return
        except sqlite3.OperationalError:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            con.close()
    raise AssertionError("the worker kept the database locked")


@pytest.mark.slow
def test_second_worker_on_the_same_host_leaves_a_running_round_alone(tmp_path, sqlite_url):
    """Issue 11, defect 1: a second `hemaloop worker` on the same machine started while a
    round runs.  It must not take the live round for a lost one: the round finishes
    once, there is one model file, and the row says succeeded.

    The round on 8 cells takes seconds, less than a worker's start, so the first
    worker is paused (SIGSTOP, outside any write to the database) from the moment
    it holds the round until the second is up: a live worker in a long step, as
    far as the second can tell (its heartbeat is seconds old, not stale)."""
    from worker.celery_app import make_celery
    from worker.launch import create_round, enqueue_round

    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url)
    settings = load_settings(env)
    src = small_demo_copy(tmp_path / "cells", per_class=4, classes=["neutrophil", "platelet"])
    with session_scope(settings.database_url) as s:
        project = create_project(s, "p", "pbc8", test_share=0.0, train_on_reference=True,
                                 fine_tune_blocks=0)
        import_path(s, settings.storage_dir, project, src, max_pixels=settings.max_image_pixels)
        pid = project.id
        rnd = create_round(s, s.get(Project, pid), trigger="cli")
        enqueue_round(s, make_celery(settings), rnd)
        round_id = rnd.id

    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _start_default_worker(env, first_log)
    second = None
    try:
        _wait_until(lambda: _round(settings, round_id).status == RoundStatus.RUNNING,
                    first, first_log)
        _pause_outside_a_write(first, sqlite_url)
        try:
            second = _start_default_worker(env, second_log)
            _wait_until(lambda: " ready." in second_log.read_text(), second, second_log)
            # The second worker is up and has done its start-up checks; the round still runs.
            assert _round(settings, round_id).status == RoundStatus.RUNNING
        finally:
            first.send_signal(signal.SIGCONT)
        rnd = _wait_finished(settings, round_id, timeout=600)
        # Give a second attempt, if one was started, the time to publish or fail.
        time.sleep(3)
    finally:
        for proc in (first, second):
            if proc is not None:
                _stop(proc)
    rnd = _round(settings, round_id)
    logs = first_log.read_text()[-3000:] + second_log.read_text()[-3000:]
    assert rnd.status == RoundStatus.SUCCEEDED, (rnd.error, logs)
    assert rnd.attempts == 1, logs
    with session_scope(settings.database_url) as s:
        versions = s.scalars(select(ModelVersion).where(ModelVersion.round_id == round_id)).all()
    assert len(versions) == 1 and versions[0].is_active
    files = sorted(p.name for p in (settings.storage_dir / "models" / f"project-{pid}")
                   .glob("*.keras"))
    assert files == [Path(versions[0].artifact_path).name]
    # Two workers on one host, two names.
    names = {re.search(r"(\S+@\S+) v\d", log.read_text()).group(1)
             for log in (first_log, second_log) if re.search(r"(\S+@\S+) v\d", log.read_text())}
    assert len(names) == 2, names
