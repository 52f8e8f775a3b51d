"""The model registry: every round's version listed with its metrics, one active version
per project, activation and rollback from the admin page (which sends a score task),
scoring the pool with a stored version, and the project settings form."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import (
    Image, ModelVersion, Prediction, Project, ReviewQueueItem, RoundStatus, Split, TrainingRound,
    utcnow,
)
from models.db import session_scope
from models.labels import unlabeled_pool
from models.settings import load_settings
from tests.helpers import DEMO_DIR, LoggedIn, base_env, make_user
from webapp.bootstrap import create_project
from webapp.ingest import import_path
from worker.celery_app import SCORE_QUEUE, SCORE_VERSION
from worker.launch import create_round
from worker.activation import activate
from worker.rounds import run_round
from worker.scoring import score_version

TWO = ["lymphocyte", "neutrophil"]


def _copy(dest: Path, cls: str, start: int, stop: int) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((DEMO_DIR / cls).iterdir())[start:stop]:
        shutil.copy(f, dest / f.name)
    return dest


def _import(settings, project_id: int, folder: Path) -> list[int]:
    with session_scope(settings.database_url) as s:
        project = s.get(Project, project_id)
        before = set(s.scalars(select(Image.id).where(Image.project_id == project_id)))
        report = import_path(s, settings.storage_dir, project, folder,
                             max_pixels=settings.max_image_pixels)
        assert report.imported and not report.rejected
    with session_scope(settings.database_url) as s:
        after = set(s.scalars(select(Image.id).where(Image.project_id == project_id)))
    return sorted(after - before)


def _project(settings, tmp_path: Path) -> int:
    """4 reference-labeled cells of two classes (trusted), 2 of each in the test split,
    2 unlabeled platelets."""
    with session_scope(settings.database_url) as s:
        # The backbone's feature cache is what this checks (tests/test_feature_sources.py
        # rescoring a descriptors-and-backbone model).
        project = create_project(s, "reg", "pbc8", test_share=0.0, train_on_reference=True,
                                 fine_tune_blocks=0, feature_sources="backbone")
        # Review rounds ranked by entropy alone: the labeling queue's whole order is
        # then the entropy order, whichever segment a cell is in.
        project.al_strategy, project.review_random_share = "entropy", 0.0
        s.flush()
        pid = project.id
    for cls in TWO:
        _copy(tmp_path / "train" / cls, cls, 0, 4)
        _copy(tmp_path / "test" / cls, cls, 4, 6)
    _import(settings, pid, tmp_path / "train")
    test_ids = _import(settings, pid, tmp_path / "test")
    with session_scope(settings.database_url) as s:
        for image in s.scalars(select(Image).where(Image.id.in_(test_ids))):
            image.split = Split.TEST
    _import(settings, pid, _copy(tmp_path / "unlabeled", "platelet", 0, 2))
    return pid


def _run(settings, project_id: int) -> ModelVersion:
    with session_scope(settings.database_url) as s:
        round_id = create_round(s, s.get(Project, project_id), trigger="admin").id
    assert run_round(settings, round_id) == RoundStatus.SUCCEEDED
    with session_scope(settings.database_url) as s:
        return s.scalar(select(ModelVersion).where(ModelVersion.round_id == round_id))


def _active(settings, project_id: int) -> list[int]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(ModelVersion.id).where(
            ModelVersion.project_id == project_id, ModelVersion.is_active)))


def _predictions(settings, version_id: int) -> dict[int, Prediction]:
    with session_scope(settings.database_url) as s:
        return {p.image_id: p for p in s.scalars(
            select(Prediction).where(Prediction.model_version_id == version_id))}


def _pool(settings, project_id: int) -> list[int]:
    with session_scope(settings.database_url) as s:
        return [i for i, _ in unlabeled_pool(s, s.get(Project, project_id))]


def _take_score_task(celery_app) -> list:
    """The next message on the score queue (taken off it): its task's args."""
    with celery_app.connection_for_read() as conn:
        queue = conn.SimpleQueue(SCORE_QUEUE)
        try:
            message = queue.get(timeout=10)
            message.ack()
        finally:
            queue.close()
    assert message.headers["task"] == SCORE_VERSION
    args, _kwargs, _embed = message.payload
    return args


# --- two rounds, the models page, rollback and re-scoring ------------------------------------

@pytest.mark.slow
def test_models_page_rollback_and_rescoring(tmp_path, sqlite_url):
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_HEAD_EPOCHS="3"))
    app = create_app(settings)
    app.config["TESTING"] = True
    pid = _project(settings, tmp_path)
    v1 = _run(settings, pid)
    v2 = _run(settings, pid)
    assert v2.parent_version_id == v1.id and _active(settings, pid) == [v2.id]

    make_user(settings, "boss", "admin")
    make_user(settings, "reader", "pathologist")
    admin = LoggedIn(app.test_client(), "boss")
    reader = LoggedIn(app.test_client(), "reader")

    page = admin.get(f"/admin/projects/{pid}/models")
    assert page.status_code == 200
    html = page.text
    assert "<svg" in html and "<polyline" in html  # test accuracy / F1 / ECE by version
    for v in (v1, v2):
        row = re.search(rf'<tr id="version-{v.id}".*?</tr>', html, re.S).group(0)
        test = v.metrics["test"]
        assert test["n"] == 4
        assert f"{test['accuracy'] * 100:.1f}%" in row
        assert f"{test['macro_f1']:.3f}" in row and f"{test['ece']:.3f}" in row
        assert f"#{v.round_id}" in row and f"<td>{v.n_train}</td>" in row
    row2 = re.search(rf'<tr id="version-{v2.id}".*?</tr>', html, re.S).group(0)
    assert "active" in row2 and f"(from v{v1.id})" in row2 and "<form" not in row2
    assert f"Roll back to v{v1.id}" in html
    assert reader.get(f"/admin/projects/{pid}/models").status_code == 403

    # Cells imported after both rounds: neither version has predictions for them.
    new_cells = _import(settings, pid, _copy(tmp_path / "later", "platelet", 2, 5))
    assert len(new_cells) == 3
    assert not set(new_cells) & set(_predictions(settings, v1.id))

    # Roll back to v1: it alone is active, and a score task for it is on the score queue.
    response = admin.post(f"/admin/models/{v1.id}/activate", htmx=False)
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/admin/projects/{pid}/models")
    assert _active(settings, pid) == [v1.id]
    with session_scope(settings.database_url) as s:
        assert s.get(ModelVersion, v1.id).activated_at is not None
    assert _take_score_task(app.extensions["celery"]) == [v1.id]
    page = admin.get(f"/admin/projects/{pid}/models").text
    assert f"Model v{v1.id} is now active; new cells are being scored." in page
    assert "Roll back to" not in page and f"Activate v{v2.id}" in page

    # What that task does: predictions for the new cells under v1.
    before = _predictions(settings, v1.id)
    assert score_version(settings, v1.id) == 3
    after = _predictions(settings, v1.id)
    assert set(after) - set(before) == set(new_cells)
    for image_id in new_cells:
        p = after[image_id]
        probs = np.array([p.probabilities[str(c)] for c in v1.class_ids])
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert p.predicted_class_id == v1.class_ids[int(probs.argmax())]
        assert p.confidence == pytest.approx(probs.max(), abs=1e-5)
        assert 0.0 <= p.entropy <= np.log(len(probs)) + 1e-6
        assert 0.0 <= p.margin <= 1.0 and p.least_confidence == pytest.approx(1 - probs.max(),
                                                                               abs=1e-5)
    for image_id, p in before.items():  # earlier predictions untouched
        assert after[image_id].id == p.id and after[image_id].entropy == p.entropy
    # Their features are cached under v1's backbone now.
    from worker.ml.feature_store import FeatureStore
    from worker.ml.network import FEATURE_DIM

    with session_scope(settings.database_url) as s:
        shas = list(s.scalars(select(Image.sha256).where(Image.id.in_(new_cells))))
    assert FeatureStore(settings.storage_dir / "features", v1.feature_key).get_many(
        shas, FEATURE_DIM)[1].all()

    # Nothing left to score; rescoring everything replaces rows with the same values.
    assert score_version(settings, v1.id) == 0
    pool = _pool(settings, pid)
    assert score_version(settings, v1.id, only_missing=False) == len(pool)
    rescored = _predictions(settings, v1.id)
    assert set(rescored) == set(after)
    for image_id, p in after.items():
        assert rescored[image_id].entropy == pytest.approx(p.entropy, abs=1e-5)
    assert score_version(settings, 10**6) == 0  # a version that does not exist

    # The labeling queue follows the re-activated version, most uncertain first.
    queue = reader.get(f"/api/projects/{pid}/queue?limit=100").json
    assert queue["model_version_id"] == v1.id and queue["order"] == "entropy"
    assert sorted(c["image_id"] for c in queue["cells"]) == sorted(pool)
    assert [c["entropy"] for c in queue["cells"]] == \
        sorted((rescored[i].entropy for i in pool), reverse=True)
    assert all(c["suggestion"] and c["confidence"] for c in queue["cells"])
    by_id = {c["image_id"]: c for c in queue["cells"]}
    for image_id in new_cells:
        assert by_id[image_id]["entropy"] == pytest.approx(rescored[image_id].entropy)

    # Forward again to v2: the queue follows at once; v2 is sent to be scored too.
    assert admin.post(f"/admin/models/{v2.id}/activate", htmx=False).status_code == 302
    assert _active(settings, pid) == [v2.id]
    assert _take_score_task(app.extensions["celery"]) == [v2.id]
    queue = reader.get(f"/api/projects/{pid}/queue?limit=100").json
    assert queue["model_version_id"] == v2.id
    # Until that task runs, the cells v2 never saw have no suggestion, and outside the
    # frozen review round (built under v1, which did see them) they come last.
    assert {c["image_id"] for c in queue["cells"] if c["entropy"] is None} == set(new_cells)
    with session_scope(settings.database_url) as s:
        review = set(s.scalars(select(ReviewQueueItem.image_id).where(
            ReviewQueueItem.queue_id == queue["review_queue_id"])))
    rest = [c["image_id"] for c in queue["cells"] if c["image_id"] not in review]
    outside = set(new_cells) - review
    assert not outside or set(rest[-len(outside):]) == outside

    # Activating the active version changes nothing; an unknown one is a 404.
    assert admin.post(f"/admin/models/{v2.id}/activate", htmx=False).status_code == 302
    assert _active(settings, pid) == [v2.id]
    assert admin.post("/admin/models/999999/activate", htmx=False).status_code == 404
    assert reader.post(f"/admin/models/{v1.id}/activate", htmx=False).status_code == 403
    assert _active(settings, pid) == [v2.id]


# --- one active version per project -------------------------------------------------------------

def _version(session, project_id: int, active: bool) -> ModelVersion:
    rnd = TrainingRound(project_id=project_id, trigger="cli", status=RoundStatus.SUCCEEDED,
                        warnings=[], config={}, timings={}, finished_at=utcnow())
    session.add(rnd)
    session.flush()
    version = ModelVersion(project_id=project_id, round_id=rnd.id, artifact_path="x.keras",
                           class_ids=[1, 2], input_size=75, backbone_weights="none",
                           is_active=active)
    session.add(version)
    session.flush()
    return version


def test_database_allows_one_active_version_per_project(settings):
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "a", "pbc8").id
        other = create_project(s, "b", "pbc8").id
        first = _version(s, pid, active=True)
        _version(s, other, active=True)  # another project has its own
        inactive = [_version(s, pid, active=False) for _ in range(2)]
        first_id, inactive_ids = first.id, [v.id for v in inactive]

    with pytest.raises(IntegrityError):
        with session_scope(settings.database_url) as s:
            _version(s, pid, active=True)
    with pytest.raises(IntegrityError):
        with session_scope(settings.database_url) as s:
            s.get(ModelVersion, inactive_ids[0]).is_active = True
            s.flush()

    # activate() switches in one transaction, whichever way.
    for target in (inactive_ids[1], first_id, inactive_ids[0]):
        with session_scope(settings.database_url) as s:
            activate(s, s.get(ModelVersion, target))
        assert _active(settings, pid) == [target]
    assert len(_active(settings, other)) == 1


# --- the project settings form ------------------------------------------------------------------

def _project_row(settings, project_id: int) -> tuple:
    with session_scope(settings.database_url) as s:
        p = s.get(Project, project_id)
        return (p.retrain_after_new_labels, p.min_labels_per_class, p.fine_tune_blocks,
                p.warm_start, p.train_on_reference)


def test_project_settings_form(client, app, settings):
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    make_user(settings, "boss", "admin")
    make_user(settings, "reader", "pathologist")
    admin = LoggedIn(client, "boss")
    url = f"/admin/projects/{pid}/settings"
    # Head only (0 blocks) by default: no GPU worker has trained here.
    assert _project_row(settings, pid) == (None, 1, 0, True, False)

    page = admin.get(url)
    assert page.status_code == 200
    for name in ("retrain_after_new_labels", "min_labels_per_class", "fine_tune_blocks",
                 "warm_start", "train_on_reference"):
        assert f'name="{name}"' in page.text

    valid = {"retrain_after_new_labels": "25", "min_labels_per_class": "3",
             "fine_tune_blocks": "4", "train_on_reference": "y"}  # warm_start unticked
    response = admin.post(url, data=valid, htmx=False)
    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/")
    assert _project_row(settings, pid) == (25, 3, 4, False, True)
    assert "Project settings saved." in admin.get("/admin/").text

    response = admin.post(url, data={**valid, "retrain_after_new_labels": "",
                                     "fine_tune_blocks": "0", "warm_start": "y"}, htmx=False)
    assert response.status_code == 302
    saved = (None, 3, 0, True, True)
    assert _project_row(settings, pid) == saved

    bad = {
        "fine_tune_blocks": ("12", "Number must be between 0 and 11."),
        "retrain_after_new_labels": ("0", "Number must be between 1 and 1000000."),
        "min_labels_per_class": ("0", "Number must be between 1 and 10000."),
    }
    for field, (value, message) in bad.items():
        response = admin.post(url, data={**valid, field: value}, htmx=False)
        assert response.status_code == 400, field
        assert f'<div class="flash error">{message}</div>' in response.text
        assert f'value="{value}"' in response.text  # what was typed is shown again
        assert _project_row(settings, pid) == saved  # nothing saved, not even valid fields
    response = admin.post(url, data={**valid, "fine_tune_blocks": "two"}, htmx=False)
    assert response.status_code == 400 and _project_row(settings, pid) == saved

    reader = LoggedIn(app.test_client(), "reader")
    assert reader.get(url).status_code == 403
    assert reader.post(url, data=valid, htmx=False).status_code == 403
    assert _project_row(settings, pid) == saved
    assert admin.get("/admin/projects/999999/settings").status_code == 404

    # A project without models: the models page says so, without a chart.
    page = admin.get(f"/admin/projects/{pid}/models")
    assert page.status_code == 200 and "No model yet" in page.text and "<svg" not in page.text
