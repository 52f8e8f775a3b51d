"""The admin's active-learning page: strategy settings, queue rebuild, strategy
comparisons run by a real worker with live progress, and their refusals."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from models import Project, SimulationRun, SimulationStatus
from models.db import session_scope
from tests.helpers import LoggedIn, make_user, running_worker, small_demo_copy
from webapp.bootstrap import create_project
from webapp.ingest import import_path
from worker.celery_app import make_celery


@pytest.fixture
def admin(app, settings):
    make_user(settings, "boss", "admin")
    return LoggedIn(app.test_client(), "boss")


def test_strategy_settings_are_saved_and_bad_ones_refused(admin, settings, demo_project):
    page = admin.get(f"/admin/projects/{demo_project}/active-learning")
    assert page.status_code == 200 and "class balanced" in page.text
    assert "No review queue yet" in page.text
    ok = admin.post(f"/admin/projects/{demo_project}/active-learning/strategy", htmx=False, data={
        "al_strategy": "hybrid", "al_round_size": "12", "review_random_share": "0.2"})
    assert ok.status_code == 302
    with session_scope(settings.database_url) as s:
        p = s.get(Project, demo_project)
        assert (p.al_strategy, p.al_round_size, p.review_random_share) == ("hybrid", 12, 0.2)
    bad = admin.post(f"/admin/projects/{demo_project}/active-learning/strategy", htmx=False, data={
        "al_strategy": "vibes", "al_round_size": "0", "review_random_share": "0.9"})
    assert bad.status_code == 400
    assert "Not a valid choice" in bad.text and "Traceback" not in bad.text
    rebuild = admin.post(f"/admin/projects/{demo_project}/review-queue", htmx=False,
                         follow_redirects=True)
    assert "being rebuilt" in rebuild.text


def _wait(settings, run_id: int, timeout: float = 300) -> SimulationRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(settings.database_url) as s:
            run = s.get(SimulationRun, run_id)
            if run.status in (SimulationStatus.SUCCEEDED, SimulationStatus.FAILED):
                return run
        time.sleep(0.5)
    raise AssertionError("comparison never finished")


@pytest.mark.slow
def test_a_comparison_runs_on_a_worker_and_shows_its_plot(app, admin, settings, demo_project):
    response = admin.post(f"/admin/projects/{demo_project}/comparisons", htmx=False, data={
        "strategies": ["random", "entropy"], "initial": "8", "batch": "4", "rounds": "1",
        "repeats": "1"})
    assert response.status_code == 302
    run_id = int(response.headers["Location"].rsplit("/", 1)[1])
    live = admin.get(f"/admin/comparisons/{run_id}", headers={"HX-Request": "true"})
    assert 'hx-trigger="every 5s"' in live.text and "queued" in live.text
    # The worker's own Celery app, as `hemaloop worker` builds it (the webapp's only sends).
    with running_worker(make_celery(settings)):
        run = _wait(settings, run_id)
    assert run.status == SimulationStatus.SUCCEEDED, run.error
    assert set(run.result["labels_to_target"]) == {"random", "entropy"}
    page = admin.get(f"/admin/comparisons/{run_id}")
    assert "<svg" in page.text and "Labels to reach the target" in page.text
    assert "hx-trigger" not in page.text  # finished: polling stops


def test_a_project_with_one_class_is_refused_naming_it(app, admin, settings, tmp_path):
    from worker.simulation_runs import run_simulation_row

    src = small_demo_copy(tmp_path / "one", per_class=6, classes=["monocyte"])
    with session_scope(settings.database_url) as s:
        project = create_project(s, "solo", "pbc8", test_share=0.0)
        import_path(s, settings.storage_dir, project, src, max_pixels=settings.max_image_pixels)
        pid = project.id
    response = admin.post(f"/admin/projects/{pid}/comparisons", htmx=False, data={
        "strategies": ["random"], "initial": "2", "batch": "2", "rounds": "1", "repeats": "1"})
    run_id = int(response.headers["Location"].rsplit("/", 1)[1])
    assert run_simulation_row(settings, run_id) == SimulationStatus.FAILED
    assert run_simulation_row(settings, run_id) is None  # a duplicate delivery does nothing
    page = admin.get(f"/admin/comparisons/{run_id}")
    assert "at least 2 classes; found monocyte: 6" in page.text
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(SimulationRun.status)) == SimulationStatus.FAILED
