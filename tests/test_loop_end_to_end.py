"""The whole loop once: login -> label -> start a round -> a real worker runs it -> re-ranked queue."""

from __future__ import annotations

import re
import time

import pytest
from datetime import timedelta

from sqlalchemy import func, select, update

from models import (Annotation, Lease, ModelVersion, Origin, Prediction, Project, RoundStatus,
                    TrainingRound, utcnow)
from models.db import session_scope
from tests.helpers import LoggedIn, make_user, running_worker
from worker.celery_app import make_celery

pytestmark = pytest.mark.slow

LABELS = ["basophil", "eosinophil", "lymphocyte", "neutrophil"]


def _label_some(reader: LoggedIn, project_id: int, n: int) -> list[int]:
    page = reader.get(f"/label/{project_id}")
    assert page.status_code == 200
    html = page.text
    labeled = []
    for i in range(n):
        image_id = int(re.search(r'data-image-id="(\d+)"', html).group(1))
        submission = re.search(r'name="submission_id" value="(\w+)"', html).group(1)
        response = reader.post(f"/label/{project_id}/cells/{image_id}", data={
            "choice": LABELS[i % len(LABELS)], "submission_id": submission, "duration_ms": "900"})
        assert response.status_code == 200, response.text
        html = response.text
        labeled.append(image_id)
    return labeled


def _wait_for(settings, round_id: int, timeout: float = 240) -> TrainingRound:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(settings.database_url) as s:
            rnd = s.get(TrainingRound, round_id)
            if rnd.status.is_finished:
                return rnd
        time.sleep(0.5)
    raise AssertionError(f"round {round_id} did not finish in {timeout} s")


def test_label_train_rerank(app, client, settings, demo_project):
    with session_scope(settings.database_url) as s:
        # The review round the worker freezes after the round ranks by entropy
        # alone (no random share), so the whole queue is in entropy order.
        project = s.get(Project, demo_project)
        project.al_strategy, project.review_random_share = "entropy", 0.0
    make_user(settings, "path1", "pathologist")
    make_user(settings, "boss", "admin")
    reader = LoggedIn(client, "path1")
    labeled = _label_some(reader, demo_project, 12)
    assert len(set(labeled)) == 12  # the queue never showed a cell twice

    admin = LoggedIn(app.test_client(), "boss")
    response = admin.post(f"/admin/projects/{demo_project}/rounds")
    assert response.status_code == 200, response.text
    round_id = int(re.search(r'id="round-(\d+)"', response.text).group(1))
    assert 'hx-trigger="every 5s"' in response.text  # live status while queued

    # The worker's own Celery app, as `hemaloop worker` builds it (the webapp's only sends).
    with running_worker(make_celery(settings)):
        rnd = _wait_for(settings, round_id)
    assert rnd.status == RoundStatus.SUCCEEDED, rnd.error
    assert rnd.progress == 1.0 and rnd.n_train == 12 and rnd.worker

    row = admin.get(f"/admin/rounds/{round_id}/row")
    assert "succeeded" in row.text and "hx-trigger" not in row.text  # polling stops
    assert row.status_code == 286

    with session_scope(settings.database_url) as s:
        version = s.scalar(select(ModelVersion).where(ModelVersion.round_id == round_id))
        assert version.is_active
        assert (settings.storage_dir / version.artifact_path).is_file()
        test = version.metrics["test"]
        assert test["n"] > 0 and 0 <= test["accuracy"] <= 1
        assert len(test["confusion_matrix"]) == 8
        n_pred = s.scalar(select(func.count(Prediction.id))
                          .where(Prediction.model_version_id == version.id))
        n_reader = s.scalar(select(func.count(Annotation.id))
                            .where(Annotation.origin == Origin.READER))
        # Labeled cells are scored too (for the curator), but are not in the queue.
        entropies = s.scalars(select(Prediction.entropy).where(
            Prediction.model_version_id == version.id,
            Prediction.image_id.not_in(labeled))).all()
        scored = set(s.scalars(select(Prediction.image_id)
                               .where(Prediction.model_version_id == version.id)))
    assert n_reader == 12
    assert n_pred == rnd.n_scored > 0
    # The labeled cells too: the curator's queue asks the newest model about them.
    assert set(labeled) <= scored

    # The queue now follows the ranking: highest entropy first, with suggestions.
    queue = reader.get(f"/api/projects/{demo_project}/queue?limit=5").json
    assert queue["order"] == "entropy" and queue["model_version_id"] == version.id
    shown = [c["entropy"] for c in queue["cells"]]
    assert shown == sorted(shown, reverse=True)
    assert shown[0] == pytest.approx(max(entropies))
    assert not set(c["image_id"] for c in queue["cells"]) & set(labeled)

    # The reader still holds the cell leased before the round; once that lease has run
    # out (a closed tab), the page follows the new ranking.
    with session_scope(settings.database_url) as s:
        s.execute(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))
    page = reader.get(f"/label/{demo_project}")
    top = queue["cells"][0]
    assert f'data-image-id="{top["image_id"]}"' in page.text
    assert f'id="suggestion-name">{top["suggestion"]}<' in page.text
    # A model this small is weak: its suggestion shows as tentative, confidence and all.
    assert re.search(r'id="suggestion-confidence">(\(confidence )?\d+%', page.text)
