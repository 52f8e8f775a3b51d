"""Backbone pretraining as an admin action (issue 15): the Pretraining page starts a
run, a real worker pretrains on the project's pool with progress on the row, the
admin chooses the new backbone, and the next round starts from it (new feature
cache key, no warm start).  Cancel, refusals and failures end on the row with a
message for the admin, and bad form input loses nothing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from models import (
    BackboneChoice, ModelVersion, PretrainingRun, PretrainingStatus, Project, ProjectBackbone,
    RoundStatus,
)
from models.db import session_scope
from tests.helpers import (
    LoggedIn, add_round, make_user, running_worker, small_demo_copy, trainable_project,
)
from webapp.bootstrap import create_project
from webapp.ingest import import_path
from worker.celery_app import make_celery

pytestmark = pytest.mark.slow


@pytest.fixture
def admin(app, settings):
    make_user(settings, "boss", "admin")
    return LoggedIn(app.test_client(), "boss")


def _row(settings, run_id: int) -> PretrainingRun:
    with session_scope(settings.database_url) as s:
        return s.get(PretrainingRun, run_id)


def _wait(settings, run_id: int, until, timeout: float = 240) -> PretrainingRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _row(settings, run_id)
        if until(run):
            return run
        time.sleep(0.3)
    raise AssertionError(f"pretraining run {run_id} never reached the state waited for")


def _start(admin, project_id: int, **data) -> int:
    form = {"epochs": "1", "image_size": "75", "batch_size": "4", **data}
    response = admin.post(f"/admin/projects/{project_id}/pretraining", htmx=False, data=form)
    assert response.status_code == 302, response.text
    return int(response.headers["Location"].rsplit("/", 1)[1])


def test_a_worker_pretrains_a_backbone_and_the_admin_chooses_it(app, admin, settings, tmp_path):
    pid = trainable_project(settings, tmp_path)  # 12 pool cells, 8 of them labeled
    page = admin.get(f"/admin/projects/{pid}/pretraining")
    assert page.status_code == 200 and "No pretraining yet" in page.text
    run_id = _start(admin, pid)
    live = admin.get(f"/admin/pretraining/{run_id}", headers={"HX-Request": "true"})
    assert live.status_code == 200 and "queued" in live.text and "hx-trigger" in live.text
    # The worker's own Celery app, as `hemaloop worker` builds it (the webapp's only sends).
    with running_worker(make_celery(settings)):
        run = _wait(settings, run_id, lambda r: r.status.is_finished)
    assert run.status == PretrainingStatus.SUCCEEDED, run.error
    assert run.progress == 1.0 and run.stats["steps"] == 3 and run.stats["cells"] == 12
    assert len(run.loss_history) == 1 and -1 <= run.loss_history[0] <= 1
    assert run.started_at and run.finished_at and run.heartbeat_at
    assert (settings.storage_dir / run.weights_path).is_file()
    done = admin.get(f"/admin/pretraining/{run_id}", headers={"HX-Request": "true"})
    assert done.status_code == 286  # finished: polling stops
    assert "Use this backbone for the next round" in done.text and "<svg" in done.text

    chosen = admin.post(f"/admin/projects/{pid}/backbone", htmx=False,
                        data={"backbone": f"run-{run_id}"}, follow_redirects=True)
    assert chosen.status_code == 200 and f"starts from pretraining run {run_id}" in chosen.text
    with session_scope(settings.database_url) as s:
        row = s.get(ProjectBackbone, pid)
        assert (row.choice, row.pretraining_run_id) == (BackboneChoice.PRETRAINED, run_id)
    assert "The project's next round uses this backbone" in admin.get(
        f"/admin/pretraining/{run_id}").text

    # Back to random initialisation, then to ImageNet: the next round follows.
    from worker.backbone_choice import project_settings

    for value, weights in (("random", "none"), ("imagenet", "imagenet")):
        admin.post(f"/admin/projects/{pid}/backbone", htmx=False, data={"backbone": value})
        assert project_settings(settings, pid).backbone_weights == weights


def test_the_cold_start_and_the_next_round_use_the_chosen_backbone(sqlite_settings, tmp_path):
    """A backbone file as a succeeded run leaves it (another initialisation than the
    rounds' random one), chosen for the project: the review queue's cold start and the
    round read features under its key, never the random backbone's."""
    from worker.backbone import source_key
    from worker.ml.network import build_classifier
    from worker.ml.pretrain import save_backbone_weights
    from worker.review_queue import build_review_queue
    from worker.rounds import run_round

    settings = sqlite_settings
    pid = trainable_project(settings, tmp_path)
    weights = settings.storage_dir / "backbones" / "pretrain-1.h5"
    save_backbone_weights(build_classifier(2, 75, None, seed=5).get_layer("backbone"), weights)
    with session_scope(settings.database_url) as s:
        run = PretrainingRun(project_id=pid, epochs=1, image_size=75, loss_history=[-0.5],
                             stats={"epochs_done": 1}, status=PretrainingStatus.SUCCEEDED,
                             weights_path="backbones/pretrain-1.h5")
        s.add(run)
        s.flush()
        s.add(ProjectBackbone(project_id=pid, choice=BackboneChoice.PRETRAINED,
                              pretraining_run_id=run.id))
        project = s.get(Project, pid)
        project.al_round_size = 4
        project.feature_sources = "backbone"  # a backbone to choose (descriptors are the default)

    assert build_review_queue(settings, pid, trigger="admin", seed=0) is not None
    features = settings.storage_dir / "features"
    new_key, random_key = source_key(str(weights), 75), source_key(None, 75)
    assert any((features / new_key).rglob("*.npy")) and not (features / random_key).exists()
    round_id = add_round(settings, pid)
    assert run_round(settings, round_id, worker="w") == RoundStatus.SUCCEEDED
    assert not (features / random_key).exists()
    with session_scope(settings.database_url) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.round_id == round_id))
        assert version.backbone_weights == str(weights) and version.feature_key == new_key


def test_admin_cancels_a_running_run_and_nothing_is_kept(admin, settings, tmp_path):
    from worker.pretraining import run_pretraining_row

    pid = trainable_project(settings, tmp_path)
    run_id = _start(admin, pid, epochs="9")  # 27 eager steps: long enough to cancel
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(
        status=run_pretraining_row(settings, run_id, check_interval=0.0)))
    thread.start()
    try:
        _wait(settings, run_id, lambda r: r.progress > 0 or r.status.is_finished)
        cancel = admin.post(f"/admin/pretraining/{run_id}/cancel")
        assert cancel.status_code == 286 and "cancelled" in cancel.text
    finally:
        thread.join(120)
    assert outcome["status"] == PretrainingStatus.CANCELLED
    run = _row(settings, run_id)
    assert run.status == PretrainingStatus.CANCELLED and run.weights_path is None
    assert 0 < run.progress < 1
    assert not (settings.storage_dir / "backbones" / f"pretrain-{run_id}.h5").exists()
    again = admin.post(f"/admin/pretraining/{run_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.text
    # A cancelled run cannot be chosen as a backbone.
    bad = admin.post(f"/admin/projects/{pid}/backbone", htmx=False,
                     data={"backbone": f"run-{run_id}"})
    assert bad.status_code == 400 and "Not a valid choice" in bad.text


def test_refusals_and_failures_are_recorded_on_the_row(admin, settings, tmp_path, monkeypatch):
    from worker.pretraining import run_pretraining_row

    src = small_demo_copy(tmp_path / "few", per_class=1, classes=["monocyte", "lymphocyte"])
    with session_scope(settings.database_url) as s:
        project = create_project(s, "few", "pbc8", test_share=0.0)
        import_path(s, settings.storage_dir, project, src, max_pixels=settings.max_image_pixels)
        pid = project.id
    run_id = _start(admin, pid)
    assert run_pretraining_row(settings, run_id) == PretrainingStatus.FAILED
    assert run_pretraining_row(settings, run_id) is None  # a duplicate delivery does nothing
    run = _row(settings, run_id)
    assert run.error == "Pretraining needs at least 8 cells; the pool has 2."
    page = admin.get(f"/admin/projects/{pid}/pretraining")
    assert "at least 8 cells" in page.text and "Traceback" not in page.text

    # An unexpected error: its type for the admin, the traceback in the worker log.
    import worker.ml.pretrain as pretrain_module

    def broken(*args, **kwargs):
        raise OSError("disk on fire at /secret/path")

    monkeypatch.setattr(pretrain_module, "pretrain", broken)
    run_id = _start(admin, pid)
    assert run_pretraining_row(settings, run_id) == PretrainingStatus.FAILED
    run = _row(settings, run_id)
    assert run.error == "Unexpected error in the worker (OSError)" and run.finished_at


def test_bad_form_input_and_double_starts_are_refused(admin, settings, tmp_path):
    pid = trainable_project(settings, tmp_path)
    for data in ({"epochs": "0"}, {"image_size": "50"}, {"image_size": "x"},
                 {"batch_size": "2"}):
        form = {"epochs": "1", "image_size": "75", "batch_size": "4", **data}
        response = admin.post(f"/admin/projects/{pid}/pretraining", htmx=False, data=form)
        assert response.status_code == 400 and "Traceback" not in response.text
    first = _start(admin, pid)
    second = admin.post(f"/admin/projects/{pid}/pretraining", htmx=False,
                        data={"epochs": "1", "image_size": "75", "batch_size": "4"})
    assert second.status_code == 409 and f"run {first}" in second.text
    with session_scope(settings.database_url) as s:
        assert len(s.scalars(select(PretrainingRun)).all()) == 1
        assert s.get(Project, pid) is not None
    missing = admin.get("/admin/pretraining/987654")
    assert missing.status_code == 404


def test_the_database_keeps_one_active_run_per_project(settings, tmp_path):
    """Two starts at the same moment both pass the page's check; the partial
    unique index refuses the second insert (the page and the CLI word it)."""
    from click.testing import CliRunner
    from sqlalchemy.exc import IntegrityError

    from tests.helpers import base_env
    from webapp.cli import main

    pid = trainable_project(settings, tmp_path)
    with session_scope(settings.database_url) as s:
        first = PretrainingRun(project_id=pid, epochs=1, image_size=75)
        s.add(first)
        s.flush()
        first_id = first.id
    with pytest.raises(IntegrityError), session_scope(settings.database_url) as s:
        s.add(PretrainingRun(project_id=pid, epochs=1, image_size=75,
                             status=PretrainingStatus.RUNNING))
        s.flush()
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    busy = CliRunner().invoke(main, ["pretrain", "--project", "tiny", "--epochs", "1",
                                     "--size", "75", "--batch", "4"], env=env)
    assert busy.exit_code != 0 and f"run {first_id}" in busy.output
    assert "Traceback" not in busy.output
    with session_scope(settings.database_url) as s:
        assert [r.id for r in s.scalars(select(PretrainingRun))] == [first_id]
        s.get(PretrainingRun, first_id).status = PretrainingStatus.FAILED
        s.add(PretrainingRun(project_id=pid, epochs=1, image_size=75))  # a finished one frees it


def test_a_round_whose_chosen_backbone_is_gone_fails_saying_so(admin, settings, tmp_path):
    from worker.rounds import run_round

    pid = trainable_project(settings, tmp_path)
    with session_scope(settings.database_url) as s:
        run = PretrainingRun(project_id=pid, epochs=1, image_size=75,
                             status=PretrainingStatus.SUCCEEDED,
                             weights_path="backbones/pretrain-gone.h5")
        s.add(run)
        s.get(Project, pid).feature_sources = "backbone"  # a head that reads the backbone
        s.flush()
        s.add(ProjectBackbone(project_id=pid, choice=BackboneChoice.PRETRAINED,
                              pretraining_run_id=run.id))
    round_id = add_round(settings, pid)
    assert run_round(settings, round_id, worker="w") == RoundStatus.FAILED
    with session_scope(settings.database_url) as s:
        from models import TrainingRound

        error = s.get(TrainingRound, round_id).error
    assert "pretrain-gone.h5" in error and "does not exist" in error
    assert not Path(settings.storage_dir / "backbones" / "pretrain-gone.h5").exists()


def test_cli_pretrains_with_a_progress_bar_and_can_choose_the_backbone(sqlite_settings, tmp_path):
    from click.testing import CliRunner

    from tests.helpers import base_env
    from webapp.cli import main

    settings = sqlite_settings
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    pid = trainable_project(settings, tmp_path)
    missing = CliRunner().invoke(main, ["pretrain", "--project", "nope"], env=env)
    assert missing.exit_code != 0 and "no project named 'nope'" in missing.output
    small = CliRunner().invoke(main, ["pretrain", "--project", "tiny", "--size", "50"], env=env)
    assert small.exit_code != 0 and "75" in small.output
    result = CliRunner().invoke(main, ["pretrain", "--project", "tiny", "--epochs", "1",
                                       "--size", "75", "--batch", "4", "--use"], env=env)
    assert result.exit_code == 0, result.output
    assert "pretraining" in result.output and "loss" in result.output
    assert "the next round of tiny starts from this backbone" in result.output
    with session_scope(settings.database_url) as s:
        run = s.scalars(select(PretrainingRun)).one()
        assert run.status == PretrainingStatus.SUCCEEDED and run.stats["steps"] == 3
        assert s.get(ProjectBackbone, pid).pretraining_run_id == run.id
    assert str(settings.storage_dir / run.weights_path) in result.output
