"""Issue 14, the admin's side: where each role lands, pages that follow a finished round,
polling that stops, comparisons on their own queue with a cancel and a time left,
fine-tuning defaults and costs, and the CLI's migrate and reset-password."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from models import Project, SimulationRun, SimulationStatus, utcnow
from models.db import session_scope
from models.simulation import cancel_simulation
from tests.admin_helpers import finish_round
from tests.helpers import (
    NO_PG,
    PASSWORD,
    LoggedIn,
    add_round,
    base_env,
    csrf_token,
    fresh_postgres_database,
    make_user,
)
from webapp.bootstrap import create_project

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def admin(app, settings):
    make_user(settings, "boss", "admin")
    return LoggedIn(app.test_client(), "boss")


def _project(settings, name: str = "p") -> int:
    with session_scope(settings.database_url) as s:
        return create_project(s, name, "pbc8").id


# --- where each role lands ---------------------------------------------------------

def test_each_role_lands_where_its_work_is(app, settings):
    for name, role, landing in [("ada", "admin", "/admin/"), ("cara", "curator", "/curate/"),
                                ("pat", "pathologist", "/label/")]:
        make_user(settings, name, role)
        client = app.test_client()
        token = csrf_token(client.get("/auth/login").text)
        response = client.post("/auth/login", data={
            "username": name, "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302
        assert client.get(response.location).location == landing, role


# --- pages follow a finished round -------------------------------------------------

def test_a_polled_round_row_stops_polling_and_announces_the_end(admin, settings):
    pid = _project(settings)
    queued = add_round(settings, pid, status="queued")
    row = admin.get(f"/admin/rounds/{queued}/row")
    # Waiting in the queue: polled, but rarely; the poll is marked for the access log.
    assert row.status_code == 200 and 'hx-trigger="every 5s"' in row.text
    assert "X-Hemaloop-Poll" in row.text and "HX-Trigger" not in row.headers
    with session_scope(settings.database_url) as s:
        from models import TrainingRound

        rnd = s.get(TrainingRound, queued)
        # Running, with a fresh heartbeat (or the page recovers it as lost).
        rnd.status, rnd.worker, rnd.started_at = "running", "w@host", utcnow()
        rnd.heartbeat_at = utcnow()
    assert 'hx-trigger="every 2s"' in admin.get(f"/admin/rounds/{queued}/row").text

    # The card and the round page, as loaded while the round runs.
    card = admin.get("/admin/").text
    assert "none yet" in card and f'hx-trigger="project-{pid}-round-finished from:body"' in card
    page = admin.get(f"/admin/rounds/{queued}").text
    assert f'hx-trigger="round-{queued}-finished from:body"' in page
    assert "Confusion matrix" not in page

    version = finish_round(settings, queued)
    row = admin.get(f"/admin/rounds/{queued}/row")
    assert row.status_code == 286  # htmx: stop polling (the finished row is still swapped in)
    assert "every" not in row.text and "succeeded" in row.text
    assert set(json.loads(row.headers["HX-Trigger"])) == {
        f"round-{queued}-finished", f"project-{pid}-round-finished"}
    # What those events fetch: the card's figures and the round's metrics.
    figures = admin.get(f"/admin/projects/{pid}/figures").text
    assert f"v{version} (round {queued})" in figures and "test accuracy 75.0%" in figures
    result = admin.get(f"/admin/rounds/{queued}/result").text
    assert "Confusion matrix" in result and "accuracy <strong>75.0%" in result
    assert "hx-trigger" not in result  # finished: it listens no more


def test_a_polled_import_status_polls_like_a_round_and_stops_when_done(admin, settings):
    """The import page's status fragment: polled rarely while queued and often while
    running, each poll marked for the access log; once the job has ended, 286 (htmx
    stops) and a fragment that polls no more."""
    from models import ImportJob, ImportStatus

    pid = _project(settings)
    with session_scope(settings.database_url) as s:
        job = ImportJob(project_id=pid, source="cells.zip", upload_dir="uploads/job-x")
        s.add(job)
        s.flush()
        job_id = job.id
    url = f"/admin/imports/{job_id}/status"
    status = admin.get(url)
    assert status.status_code == 200 and 'hx-trigger="every 5s"' in status.text
    assert "X-Hemaloop-Poll" in status.text
    with session_scope(settings.database_url) as s:
        s.get(ImportJob, job_id).status = ImportStatus.RUNNING
    status = admin.get(url)
    assert status.status_code == 200 and 'hx-trigger="every 2s"' in status.text
    assert "X-Hemaloop-Poll" in status.text
    with session_scope(settings.database_url) as s:
        job = s.get(ImportJob, job_id)
        job.status, job.finished_at = ImportStatus.SUCCEEDED, utcnow()
        job.report = {"imported": 3, "duplicates": 0, "rejected": [], "labeled": 0}
    status = admin.get(url)
    assert status.status_code == 286 and 'id="n-imported">3<' in status.text
    assert "hx-trigger" not in status.text and "hx-get" not in status.text
    assert "X-Hemaloop-Poll" not in status.text


def test_every_polling_element_marks_its_polls():
    """Every template element that polls (hx-trigger="every ...") sends the
    X-Hemaloop-Poll header, which keeps polls out of the access log."""
    templates = REPO / "webapp" / "templates"
    # A tag: '<name', then anything but angle brackets, Jinja's {{ }} / {% %} allowed.
    tag = re.compile(r"<[a-zA-Z][\w-]*(?:[^<>{]|\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}|\{)*>", re.S)
    polling = []
    for path in sorted(templates.rglob("*.html")):
        for element in tag.findall(path.read_text()):
            if 'hx-trigger="every' in element:
                polling.append(path.relative_to(templates))
                assert "hx-headers='{\"X-Hemaloop-Poll\": \"1\"}'" in element, (path, element)
    assert {str(p) for p in polling} >= {"admin/_round_row.html", "admin/_comparison.html",
                                         "admin/_import_status.html"}


# --- strategy comparisons --------------------------------------------------------------

def test_comparisons_go_to_their_own_queue(settings):
    from webapp.cli import worker_command
    from worker.celery_app import RUN_ROUND, RUN_SIMULATION, make_celery

    routes = make_celery(settings).conf.task_routes
    assert routes[RUN_SIMULATION]["queue"] == "simulate" != routes[RUN_ROUND]["queue"]
    command = worker_command("simulate", prefix="simulate")
    assert command[command.index("-Q") + 1] == "simulate"
    node = command[command.index("-n") + 1]
    assert node.startswith("simulate-") and node.endswith("@%h")


def _comparison(admin, pid: int, **fields) -> int:
    data = {"strategies": ["random", "margin"], "initial": "20", "batch": "20", "rounds": "10",
            "repeats": "3", **fields}
    response = admin.post(f"/admin/projects/{pid}/comparisons", htmx=False, data=data)
    assert response.status_code == 302, response.text
    return int(response.headers["Location"].rsplit("/", 1)[1])


def test_a_queued_comparison_is_cancelled_and_never_runs(admin, settings):
    from worker.simulation_runs import run_simulation_row

    pid = _project(settings)
    run_id = _comparison(admin, pid)
    live = admin.get(f"/admin/comparisons/{run_id}", headers={"HX-Request": "true"})
    assert live.status_code == 200 and 'hx-trigger="every 5s"' in live.text
    assert "Cancel" in live.text
    cancelled = admin.post(f"/admin/comparisons/{run_id}/cancel")
    assert cancelled.status_code == 286 and "cancelled" in cancelled.text
    assert "hx-trigger" not in cancelled.text
    assert run_simulation_row(settings, run_id) is None  # a late delivery does nothing
    again = admin.post(f"/admin/comparisons/{run_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.text
    polled = admin.get(f"/admin/comparisons/{run_id}", headers={"HX-Request": "true"})
    assert polled.status_code == 286


def test_a_running_comparison_reports_time_left_and_stops_when_cancelled(admin, settings):
    """The worker's progress callback: overall progress, time left from the phase's
    measured rate, and a cancel seen at the next report (between two rounds)."""
    from worker.simulation_runs import SimulationCancelled, _Progress

    pid = _project(settings)
    run_id = _comparison(admin, pid)
    with session_scope(settings.database_url) as s:
        s.get(SimulationRun, run_id).status = SimulationStatus.RUNNING
    progress = _Progress(settings, run_id)
    progress(0, 10, "random repeat 1: 20 labels, accuracy 0.500")
    time.sleep(1.1)
    progress(2, 10, "random repeat 1: 60 labels, accuracy 0.600")
    with session_scope(settings.database_url) as s:
        run = s.get(SimulationRun, run_id)
        assert run.progress == pytest.approx(0.2 + 0.8 * 0.2)
        # 2 rounds in ~1.1 s, 8 to go: about 4.4 s.
        assert 3.5 < run.eta_seconds < 8
    page = admin.get(f"/admin/comparisons/{run_id}", headers={"HX-Request": "true"})
    assert "s left" in page.text and 'hx-trigger="every 2s"' in page.text

    with session_scope(settings.database_url) as s:
        assert cancel_simulation(s, s.get(SimulationRun, run_id))
    time.sleep(1.1)
    with pytest.raises(SimulationCancelled):
        progress(3, 10, "random repeat 1: 80 labels, accuracy 0.610")
    with session_scope(settings.database_url) as s:
        run = s.get(SimulationRun, run_id)
        assert run.status == SimulationStatus.CANCELLED and run.progress < 0.4


# --- fine-tuning: default and cost ---------------------------------------------------

def test_new_projects_train_the_head_only_until_a_gpu_worker_is_known(admin, settings):
    pid = _project(settings, "cpu-only")
    with session_scope(settings.database_url) as s:
        assert s.get(Project, pid).fine_tune_blocks == 0
    page = admin.get(f"/admin/projects/{pid}/settings").text
    assert "Not measured yet" in page

    add_round(settings, pid, status="succeeded", worker="celery@cpu-box",
              config={"precision": "float32", "fine_tune_blocks": 2},
              timings={"fine_tune_s": 1380.0, "total_s": 1560.0})
    add_round(settings, pid, status="succeeded", worker="celery@cpu-box",
              config={"precision": "float32", "fine_tune_blocks": 0}, timings={"total_s": 150.0})
    page = admin.get(f"/admin/projects/{pid}/settings").text
    assert "celery@cpu-box" in page and "(CPU)" in page
    assert "fine-tuning 2 blocks took 23.0 min of a 26.0 min round" in page
    assert "a head-only round took 2.5 min" in page
    with session_scope(settings.database_url) as s:
        assert create_project(s, "still-cpu", "pbc8").fine_tune_blocks == 0

    # Mixed precision forced on (HEMALOOP_MIXED_PRECISION=on) on a CPU: the worker says
    # it saw no GPU, and that is what counts.
    add_round(settings, pid, status="succeeded", worker="celery@forced",
              config={"gpu": False, "precision": "mixed_float16", "fine_tune_blocks": 2},
              timings={"fine_tune_s": 1200.0, "total_s": 1300.0})
    assert "celery@forced</strong> (CPU)" in admin.get(f"/admin/projects/{pid}/settings").text
    with session_scope(settings.database_url) as s:
        assert create_project(s, "forced-cpu", "pbc8").fine_tune_blocks == 0

    # A GPU worker that trains in float32 (mixed precision off): known by its "gpu".
    add_round(settings, pid, status="succeeded", worker="celery@gpu-box",
              config={"gpu": True, "precision": "float32", "fine_tune_blocks": 2},
              timings={"fine_tune_s": 40.0, "total_s": 70.0})
    assert "celery@gpu-box</strong> (GPU)" in admin.get(f"/admin/projects/{pid}/settings").text
    with session_scope(settings.database_url) as s:
        assert create_project(s, "gpu-era", "pbc8").fine_tune_blocks == 2

    # A round from before workers recorded "gpu": its mixed precision still says GPU.
    add_round(settings, pid, status="succeeded", worker="celery@old-gpu",
              config={"precision": "mixed_float16", "fine_tune_blocks": 2},
              timings={"fine_tune_s": 40.0, "total_s": 70.0})
    assert "celery@old-gpu</strong> (GPU)" in admin.get(f"/admin/projects/{pid}/settings").text
    with session_scope(settings.database_url) as s:
        assert create_project(s, "asked", "pbc8", fine_tune_blocks=0).fine_tune_blocks == 0


# --- the CLI -------------------------------------------------------------------------------

def _cli(args, env, input=None):
    from webapp.cli import main

    return CliRunner().invoke(main, args, env=env, input=input)


def _migrate_says_what_it_did(env: dict, url: str) -> None:
    from migrations.runner import downgrade, head_revision

    head = head_revision()
    first = _cli(["migrate"], env)
    assert first.exit_code == 0, first.output
    assert first.stdout.strip() == f"created the database schema (revision {head})"
    again = _cli(["migrate"], env)
    assert again.stdout.strip() == f"database already at the latest schema ({head}); nothing to do"
    downgrade(url, "0004")
    upgraded = _cli(["migrate"], env)
    assert upgraded.stdout.strip() == f"upgraded the database schema from revision 0004 to {head}"


def test_migrate_says_what_it_did_sqlite(tmp_path):
    env = base_env(tmp_path)
    _migrate_says_what_it_did(env, f"sqlite:///{tmp_path / 'instance' / 'hemaloop.sqlite'}")


@pytest.mark.postgres
def test_migrate_says_what_it_did_postgresql(tmp_path):
    if not os.environ.get("HEMALOOP_TEST_DATABASE_URL"):
        pytest.skip(NO_PG)
    with fresh_postgres_database(migrate=False) as url:
        _migrate_says_what_it_did(base_env(tmp_path, HEMALOOP_DATABASE_URL=url), url)


def test_reset_password_prints_a_new_one_once(app, settings, tmp_path):
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    make_user(settings, "admin", "admin")
    result = _cli(["reset-password", "admin"], env)
    assert result.exit_code == 0, result.output
    new = result.stdout.rsplit("password (shown once): ", 1)[1].strip()
    assert len(new) >= 12 and new != PASSWORD

    client = app.test_client()
    token = csrf_token(client.get("/auth/login").text)
    old = client.post("/auth/login", data={"username": "admin", "password": PASSWORD,
                                           "csrf_token": token})
    assert old.status_code == 401
    LoggedIn(app.test_client(), "admin", new)  # asserts the login works

    chosen = _cli(["reset-password", "admin", "--password-stdin"], env,
                  input="a-chosen-password\n")
    assert chosen.exit_code == 0 and "shown once" not in chosen.stdout
    LoggedIn(app.test_client(), "admin", "a-chosen-password")
    unknown = _cli(["reset-password", "nobody"], env)
    assert unknown.exit_code != 0 and "no user named 'nobody'" in unknown.stderr
    short = _cli(["reset-password", "admin", "--password-stdin"], env, input="short\n")
    assert short.exit_code != 0 and "at least 8 characters" in short.stderr
    LoggedIn(app.test_client(), "admin", "a-chosen-password")  # a refusal changes nothing


# --- the access log ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_gunicorn_leaves_polling_out_of_the_access_log(tmp_path, sqlite_url):
    """A real gunicorn with the app's logger class: a poll leaves no access line, a page does."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEMALOOP_")}
    env.update(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url), PYTHONPATH=str(REPO))
    log = tmp_path / "access.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--access-logfile", str(log), "--logger-class",
         "webapp.access_log.QuietPollingLogger", "webapp.wsgi:app"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/auth/login", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.3)
        poll = urllib.request.Request(base + "/auth/login?polled=1",
                                      headers={"X-Hemaloop-Poll": "1", "HX-Request": "true"})
        urllib.request.urlopen(poll, timeout=5)
        urllib.request.urlopen(base + "/auth/login?plain=1", timeout=5)
        deadline = time.monotonic() + 10
        while "plain=1" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    text = log.read_text()
    assert "plain=1" in text and "polled=1" not in text


def test_poll_filter_keeps_posts_and_errors():
    from webapp.access_log import is_polling

    assert is_polling("GET", [("X-HEMALOOP-POLL", "1")])
    assert not is_polling("POST", [("X-HEMALOOP-POLL", "1")])  # Cancel inside a polled row
    assert not is_polling("GET", [("HX-REQUEST", "true")])


def test_settings_pages_render_checkboxes_beside_their_labels(admin, settings):
    pid = _project(settings)
    reading = admin.get(f"/admin/projects/{pid}/reading").text
    assert '<fieldset class="checks"><legend>Contested classes' in reading
    assert 'type="checkbox"' in reading and "<select multiple" not in reading
    page = admin.get(f"/admin/projects/{pid}/active-learning").text
    assert "required" not in page.split("Strategies to compare", 1)[1].split("</fieldset>")[0]
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(SimulationRun.id)) is None


# --- plots: titles, axis titles, units ----------------------------------------------------------

def test_agreement_page_splits_kappa_and_alpha_and_titles_its_axes(app, settings, tmp_path):
    import re

    from tests.reading_helpers import two_readers_disputing_a_curators_cells

    pid, _, _ = two_readers_disputing_a_curators_cells(app, settings, tmp_path)
    curator = LoggedIn(app.test_client(), "cara")
    page = curator.get(f"/curate/projects/{pid}/agreement").text
    pairs = page.split('id="pair-kappa"', 1)[1].split("</figure>", 1)[0]
    classes = page.split('id="class-alpha"', 1)[1].split("</figure>", 1)[0]
    assert "Cohen&#39;s kappa per reader pair" in pairs and "ann vs bob" in pairs
    assert "class " not in pairs and "monocyte" not in pairs
    assert "Krippendorff&#39;s alpha per class" in classes and ">monocyte<" in classes
    assert "ann vs bob" not in classes
    for chart in (pairs, classes):
        assert re.search(r">-1<.*>0<.*>1<", chart, re.S)  # a tick-labelled axis
        assert "0: chance" in chart  # its title, with what the scale means
    heat = page.split('id="reader-confusion"', 1)[1].split("</figure>", 1)[0]
    assert "one reader's vote" in heat and "the other reader's vote" in heat
    assert "pairs of votes" in heat


def test_model_charts_have_titles_axes_and_units(admin, settings):
    pid = _project(settings)
    version = finish_round(settings, add_round(settings, pid, status="running"))
    with session_scope(settings.database_url) as s:
        from models import ModelVersion

        v = s.get(ModelVersion, version)
        v.metrics = {**v.metrics, "history": {"head": {"loss": [1.2, 0.9, 0.7],
                                                       "val_loss": [1.3, 1.0, 0.8]}}}
    models = admin.get(f"/admin/projects/{pid}/models").text
    assert "Test split by model version" in models and "model version (oldest first)" in models
    assert "score, 0 to 1" in models and ">v" in models
    rnd = admin.get(f"/admin/rounds/{v.round_id}").text
    assert "Loss per epoch" in rnd and "cross-entropy loss (nats)" in rnd and ">epoch" in rnd


def test_bootstrap_run_again_changes_nothing(app, settings, tmp_path):
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    first = _cli(["bootstrap"], env)
    assert first.exit_code == 0, first.output
    password = first.stdout.rsplit("password (shown once): ", 1)[1].strip()
    again = _cli(["bootstrap"], env)
    assert again.exit_code == 0 and "shown once" not in again.stdout
    assert "an admin account exists; left as it is" in again.stdout
    assert "hemaloop reset-password" in again.stdout
    LoggedIn(app.test_client(), "admin", password)  # the first password still works


def test_a_comparison_whose_worker_was_lost_is_failed_with_the_reason(admin, settings):
    from datetime import timedelta

    pid = _project(settings)
    lost, alive = _comparison(admin, pid), _comparison(admin, pid)
    old = utcnow() - timedelta(hours=2)
    with session_scope(settings.database_url) as s:
        for run_id, beat in ((lost, old), (alive, utcnow())):
            run = s.get(SimulationRun, run_id)
            run.status, run.started_at, run.heartbeat_at = SimulationStatus.RUNNING, old, beat
    page = admin.get(f"/admin/comparisons/{lost}", headers={"HX-Request": "true"})
    assert page.status_code == 286 and "presumed lost" in page.text
    assert 'data-status="failed"' in page.text
    assert admin.get(f"/admin/comparisons/{alive}", headers={"HX-Request": "true"}).status_code == 200
    with session_scope(settings.database_url) as s:
        assert s.get(SimulationRun, alive).status == SimulationStatus.RUNNING


@pytest.mark.slow
def test_hemaloop_run_starts_the_web_app_and_both_workers_and_stops_them(tmp_path):
    """The real `hemaloop run`: gunicorn on the given port, the round worker and the
    comparisons' worker ready, polling out of the access log, all stopped by SIGTERM."""
    import signal

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEMALOOP_")}
    env.update(base_env(tmp_path), PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", "from webapp.cli import main; main()", "migrate"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from webapp.cli import main; main()", "run", "--port", str(port)],
        cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not ("-------------- hemaloop-" in log.read_text()
                   and "-------------- simulate-" in log.read_text()
                   and log.read_text().count(" ready.") >= 2):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        base = f"http://127.0.0.1:{port}"
        urllib.request.urlopen(urllib.request.Request(
            base + "/auth/login?polled=1", headers={"X-Hemaloop-Poll": "1"}), timeout=10)
        urllib.request.urlopen(base + "/auth/login?plain=1", timeout=10)
        deadline = time.monotonic() + 10
        while "plain=1" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log.read_text()
    assert "plain=1" in text and "polled=1" not in text
    # The workers' banners list their queues: comparisons have one of their own.
    assert ".> simulate" in text and ".> train" in text
    assert proc.returncode == 0, text
