"""Per-project feature sources (issue 15): the setting (migration, default, admin form,
API), and rounds on cell descriptors and on both inputs run by a real worker, whose
models then score, rank (MC-dropout) and store embeddings through the same head input."""

from __future__ import annotations

import contextlib
import re
import time

import numpy as np
import pytest
from sqlalchemy import create_engine, pool, select, text
from sqlalchemy.exc import IntegrityError

from migrations.runner import downgrade, upgrade
from models import ModelVersion, Prediction, Project, TrainingRound
from models.db import session_scope
from models.feature_sources import DEFAULT_FEATURE_SOURCES
from tests.helpers import LoggedIn, fresh_postgres_database, make_user, running_worker
from webapp.bootstrap import create_project

# --- the setting ---------------------------------------------------------------------------


def test_new_projects_get_the_measured_default(settings, session):
    project = create_project(session, "fresh", "pbc8")
    assert project.feature_sources == DEFAULT_FEATURE_SOURCES == "descriptors"
    session.commit()
    project.feature_sources = "colour"
    with pytest.raises(IntegrityError):  # the database's CHECK refuses an unknown name
        session.commit()
    session.rollback()
    assert session.get(Project, project.id).feature_sources == "descriptors"


@contextlib.contextmanager
def _empty(kind: str, tmp_path):
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
    else:
        with fresh_postgres_database(migrate=False) as url:
            yield url


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_migration_0012_keeps_existing_projects_on_the_backbone(kind, tmp_path):
    with _empty(kind, tmp_path) as url:
        upgrade(url, "0011")
        engine = create_engine(url, poolclass=pool.NullPool)
        try:
            with engine.begin() as conn:
                conn.execute(text(
                    "INSERT INTO projects (name, description, test_share, train_on_reference, "
                    "min_labels_per_class, fine_tune_blocks, warm_start, readers_per_cell, "
                    "contested_class_ids, agreement_share, suggestion_min_accuracy, "
                    "blind_reading, lease_minutes, created_at) VALUES ('old', '', 0.1, false, "
                    "1, 0, true, 1, '[]', 0, 0.7, false, 10, CURRENT_TIMESTAMP)"))
            upgrade(url)
            with engine.connect() as conn:
                assert conn.execute(text("SELECT feature_sources FROM projects")).scalar() \
                    == "backbone"
            downgrade(url, "0011")
            with engine.connect() as conn:
                assert conn.execute(text("SELECT name FROM projects")).scalar() == "old"
            upgrade(url)
        finally:
            engine.dispose()


def test_admin_sees_and_changes_the_feature_sources(app, settings, demo_project):
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    page = admin.get(f"/admin/projects/{demo_project}/settings")
    assert page.status_code == 200
    assert 'name="feature_sources"' in page.text
    assert re.search(r'<option selected value="descriptors">|<option value="descriptors" '
                     r'selected>', page.text)
    form = {"min_labels_per_class": "1", "fine_tune_blocks": "0", "warm_start": "y",
            "feature_sources": "both"}
    saved = admin.post(f"/admin/projects/{demo_project}/settings", data=form)
    assert saved.status_code == 302
    bad = admin.post(f"/admin/projects/{demo_project}/settings",
                     data={**form, "feature_sources": "colour"})
    assert bad.status_code == 400 and "Not a valid choice" in bad.text
    with session_scope(settings.database_url) as s:
        assert s.get(Project, demo_project).feature_sources == "both"
    # A new project's form offers it too, preset to the default.
    new = admin.get("/admin/projects/new")
    assert 'name="feature_sources"' in new.text


def test_the_api_shows_a_projects_feature_sources(app, settings, demo_project):
    from webapp.api.v1.serialize import project_json

    with session_scope(settings.database_url) as s:
        assert project_json(s.get(Project, demo_project))["feature_sources"] == "descriptors"
    spec = app.test_client().get("/api/v1/openapi.json").json
    project = spec["components"]["schemas"]["ProjectOut"]
    assert project["properties"]["feature_sources"]["enum"] == ["backbone", "descriptors", "both"]


# --- rounds on a real worker ---------------------------------------------------------------

def _round(admin: LoggedIn, settings, project_id: int) -> TrainingRound:
    response = admin.post(f"/admin/projects/{project_id}/rounds")
    assert response.status_code == 200, response.text
    round_id = int(re.search(r'id="round-(\d+)"', response.text).group(1))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with session_scope(settings.database_url) as s:
            rnd = s.get(TrainingRound, round_id)
            if rnd.status.is_finished:
                return rnd
        time.sleep(0.5)
    raise AssertionError(f"round {round_id} did not finish")


def _folders(settings) -> set[str]:
    root = settings.storage_dir / "features"
    return {p.name.split("-")[0] for p in root.iterdir()} if root.is_dir() else set()


@pytest.mark.slow
def test_rounds_on_descriptors_then_both_run_score_and_rank(app, settings, demo_project):
    from worker.celery_app import make_celery
    from worker.ml import embeddings
    from worker.ml.backend import CellClassifier
    from worker.review_queue import build_review_queue
    from worker.scoring import score_version

    with session_scope(settings.database_url) as s:
        project = s.get(Project, demo_project)
        project.train_on_reference = True  # the imported cells' labels train
        # Asked for, but there is no backbone to fine-tune on descriptors alone.
        project.fine_tune_blocks = 1
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    with running_worker(make_celery(settings)):
        first = _round(admin, settings, demo_project)
        assert first.status.value == "succeeded", first.error
        assert any("no backbone to fine-tune" in w for w in first.warnings)
        # Descriptors only: no InceptionV3 ran, so no backbone features were cached.
        assert _folders(settings) == {"descriptors"}
        with session_scope(settings.database_url) as s:
            v1 = s.scalar(select(ModelVersion).where(ModelVersion.round_id == first.id))
            assert v1.config["feature_sources"] == "descriptors"
            assert v1.config["descriptor_version"] >= 1
            project = s.get(Project, demo_project)
            project.feature_sources, project.fine_tune_blocks = "both", 0
        second = _round(admin, settings, demo_project)
    assert second.status.value == "succeeded", second.error
    assert any("feature sources changed (descriptors -> both)" in w for w in second.warnings)
    assert _folders(settings) == {"descriptors", "random"}
    with session_scope(settings.database_url) as s:
        v2 = s.scalar(select(ModelVersion).where(ModelVersion.round_id == second.id))
        assert v2.config["feature_sources"] == "both" and v2.is_active
        v2_id, artifact = v2.id, settings.storage_dir / v2.artifact_path
        round_probs = {p.image_id: p.probabilities for p in s.scalars(
            select(Prediction).where(Prediction.model_version_id == v2.id))}
    clf = CellClassifier.load(artifact)
    assert clf.sources == "both" and set(clf.standardisation.mean) == {"backbone",
                                                                       "descriptors"}
    # The embeddings the curator's similar cells and coreset/hybrid read: from the
    # head input (2,048 + descriptors), projected.
    ids, vectors = embeddings.load(embeddings.embeddings_path(artifact))
    assert len(ids) == 48 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-2)

    # Scoring again from the caches gives the round's own predictions.
    assert score_version(settings, v2_id, only_missing=False) > 0
    with session_scope(settings.database_url) as s:
        rescored = {p.image_id: p.probabilities for p in s.scalars(
            select(Prediction).where(Prediction.model_version_id == v2_id))}
    assert rescored.keys() == round_probs.keys()
    for image_id, probs in round_probs.items():
        for cls, p in probs.items():
            assert rescored[image_id][cls] == pytest.approx(p, abs=1e-4)

    # MC-dropout (bald) reads the same head input.
    with session_scope(settings.database_url) as s:
        project = s.get(Project, demo_project)
        project.al_strategy, project.review_random_share = "bald", 0.0
        project.al_round_size = 10
    assert build_review_queue(settings, demo_project, trigger="test") is not None


@pytest.mark.slow
def test_cold_start_on_descriptors_reads_no_backbone(settings, demo_project):
    from models.review import ReviewQueue
    from worker.review_queue import build_review_queue

    with session_scope(settings.database_url) as s:
        s.get(Project, demo_project).al_round_size = 10
    queue_id = build_review_queue(settings, demo_project, trigger="test")
    with session_scope(settings.database_url) as s:
        queue = s.get(ReviewQueue, queue_id)
        assert queue.status.value == "ready" and queue.model_version_id is None
    assert _folders(settings) == {"descriptors"}
