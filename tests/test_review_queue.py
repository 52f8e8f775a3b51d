"""Frozen review queues on a real database: built by the project's strategy in SQL,
switched atomically, followed by the labeling queue, refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select, update

from models import (
    Image, ModelVersion, Prediction, Project, QueueStatus, ReviewQueue, ReviewQueueItem, Split,
    TrainingRound, utcnow,
)
from models.db import session_scope
from webapp.bootstrap import create_project
from webapp.label.queue import ranked
from worker.ml import embeddings
from worker.ml.selection import BatchTooLarge, UnknownStrategy
from worker.publish import prediction_rows
from models.open_slots import refresh_open_slots
from worker.review_queue import build_review_queue, current_queue

K = 8


def _pool(settings, n: int, *, strategy: str = "margin", round_size: int = 20,
          random_share: float = 0.1, seed: int = 0, with_embeddings: bool = False) -> tuple[int, int]:
    """A project with ``n`` pool cells inserted in bulk, an active model version and
    a prediction per cell (random probabilities).  Returns (project id, version id)."""
    rng = np.random.default_rng(seed)
    now = utcnow()
    with session_scope(settings.database_url) as s:
        project = create_project(s, f"p{seed}", "pbc8", test_share=0.0)
        project.al_strategy, project.al_round_size = strategy, round_size
        project.review_random_share = random_share
        s.flush()
        pid, class_ids = project.id, [c.id for c in project.classes]
        keys = rng.random(n)
        s.execute(Image.__table__.insert(), [
            {"project_id": pid, "sha256": f"{seed:04d}{i:060d}", "storage_path": f"x/{i}.jpg",
             "width": 8, "height": 8, "original_name": f"{i}.jpg", "source": "t",
             "split": Split.POOL, "shuffle_key": float(keys[i]), "created_at": now}
            for i in range(n)])
        refresh_open_slots(s, project)  # Core inserts skip the ORM's hook
        rnd = TrainingRound(project_id=pid, trigger="cli", warnings=[], config={}, timings={},
                            status="succeeded")
        s.add(rnd)
        s.flush()
        version = ModelVersion(project_id=pid, round_id=rnd.id, artifact_path=f"m/{pid}.keras",
                               class_ids=class_ids, input_size=75, backbone_weights="none",
                               is_active=True, feature_key="k")
        s.add(version)
        s.flush()
        vid = version.id
        ids = list(s.scalars(select(Image.id).where(Image.project_id == pid).order_by(Image.id)))
        probs = rng.dirichlet(np.full(K, 0.3), size=n).astype(np.float32)
        for start in range(0, n, 20_000):
            s.execute(Prediction.__table__.insert(),
                      prediction_rows(vid, ids[start:start + 20_000], probs[start:start + 20_000],
                                      class_ids))
    if with_embeddings:
        vectors = embeddings.project(rng.normal(size=(n, 16)).astype(np.float32))
        embeddings.save(embeddings.embeddings_path(settings.storage_dir / f"m/{pid}.keras"),
                        np.asarray(ids), vectors)
    return pid, vid


def _items(settings, queue_id: int) -> list[tuple[int, bool]]:
    with session_scope(settings.database_url) as s:
        return [(r.image_id, r.is_random) for r in s.scalars(
            select(ReviewQueueItem).where(ReviewQueueItem.queue_id == queue_id)
            .order_by(ReviewQueueItem.position))]


@pytest.mark.slow
def test_a_100k_pool_ranks_in_sql_and_the_labeling_queue_follows(settings):
    pid, vid = _pool(settings, 100_000, strategy="margin", round_size=50, random_share=0.1)
    qid = build_review_queue(settings, pid, trigger="admin", seed=1)
    items = _items(settings, qid)
    assert len(items) == 50 and len({i for i, _ in items}) == 50
    picked = [i for i, rnd in items if not rnd]
    assert len(picked) == 45 and sum(rnd for _, rnd in items) == 5
    with session_scope(settings.database_url) as s:
        smallest = list(s.scalars(select(Prediction.image_id)
                                  .where(Prediction.model_version_id == vid)
                                  .order_by(Prediction.margin, Prediction.image_id).limit(45)))
        assert picked == smallest  # the strategy's picks, most uncertain first
        queue = current_queue(s, pid)
        assert queue.id == qid and queue.status == QueueStatus.READY and queue.n_items == 50
        project = s.get(Project, pid)
        # Readers see the frozen queue in its order, then everything else.
        shown = [image.id for image, _ in ranked(s, project, 60)]
        assert shown[:50] == [i for i, _ in items]
        rest = list(s.scalars(select(Prediction.image_id)
                              .where(Prediction.model_version_id == vid,
                                     Prediction.image_id.not_in([i for i, _ in items]))
                              .order_by(Prediction.entropy.desc()).limit(10)))
        assert shown[50:] == rest


def test_queue_order_review_then_uncertain_then_unscored_then_skipped(settings):
    """The labeling queue in its segments: the frozen review round, then the rest most
    uncertain first, then cells imported after the round (no prediction yet) in import
    order, and the reader's skipped cells last."""
    pid, vid = _pool(settings, 30, strategy="margin", round_size=5, random_share=0.0)
    qid = build_review_queue(settings, pid, trigger="admin", seed=1)
    review = [i for i, _ in _items(settings, qid)]
    with session_scope(settings.database_url) as s:
        s.execute(Image.__table__.insert(), [
            {"project_id": pid, "sha256": f"new{k:061d}", "storage_path": f"x/new{k}.jpg",
             "width": 8, "height": 8, "original_name": f"new{k}.jpg", "source": "t",
             "split": Split.POOL, "shuffle_key": 0.9 - k / 10, "created_at": utcnow()}
            for k in range(2)])
        refresh_open_slots(s, s.get(Project, pid))
    with session_scope(settings.database_url) as s:
        entropy = dict(s.execute(select(Prediction.image_id, Prediction.entropy)
                                 .where(Prediction.model_version_id == vid)).all())
        new = list(s.scalars(select(Image.id).where(Image.project_id == pid,
                                                    Image.id.not_in(list(entropy)))
                             .order_by(Image.shuffle_key)))
        scored = sorted((i for i in entropy if i not in review), key=lambda i: -entropy[i])
        skipped = [review[0], scored[0]]
        shown = [image.id for image, _ in ranked(s, s.get(Project, pid), 40, skipped=skipped)]
        # The segments run as one UNION ALL under an outer LIMIT: a LIMIT that
        # ends inside any segment takes exactly the head of the whole order.
        heads = {n: [image.id for image, _ in ranked(s, s.get(Project, pid), n, skipped=skipped)]
                 for n in (1, 3, 4, 10, 29, 30, 31)}
    assert len(new) == 2 and len(shown) == 32
    assert shown == (review[1:] + scored[1:] + new
                     + sorted(skipped, key=lambda i: -entropy[i]))
    assert heads == {n: shown[:n] for n in heads}


def test_the_queue_api_names_the_current_review_queue(settings, app):
    from tests.helpers import LoggedIn, make_user

    pid, _ = _pool(settings, 50, strategy="margin", round_size=5)
    make_user(settings, "reader", "pathologist")
    reader = LoggedIn(app.test_client(), "reader")
    assert reader.get(f"/api/projects/{pid}/queue?limit=3").json["review_queue_id"] is None
    qid = build_review_queue(settings, pid, trigger="admin")
    body = reader.get(f"/api/projects/{pid}/queue?limit=5").json
    assert body["review_queue_id"] == qid
    assert [c["image_id"] for c in body["cells"]] == [i for i, _ in _items(settings, qid)]


def test_the_queue_stays_frozen_until_rebuilt_and_the_switch_is_atomic(settings):
    pid, vid = _pool(settings, 300, strategy="entropy", round_size=10)
    first = build_review_queue(settings, pid, trigger="round", seed=1)
    order = [i for i, _ in _items(settings, first)]
    with session_scope(settings.database_url) as s:
        # The model's scores change under the reader: the queue does not.
        s.execute(update(Prediction).where(Prediction.model_version_id == vid)
                  .values(entropy=func.random()))
        assert [im.id for im, _ in ranked(s, s.get(Project, pid), 10)] == order
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).al_strategy = "least_confidence"
    second = build_review_queue(settings, pid, trigger="admin", seed=2)
    with session_scope(settings.database_url) as s:
        current = s.scalars(select(ReviewQueue.id).where(ReviewQueue.project_id == pid,
                                                         ReviewQueue.is_current)).all()
        assert current == [second]
        assert s.get(ReviewQueue, first).status == QueueStatus.READY  # kept, not current
        assert [im.id for im, _ in ranked(s, s.get(Project, pid), 10)] == \
            [i for i, _ in _items(settings, second)]


@pytest.mark.parametrize("strategy", ["hybrid", "coreset", "class_balanced", "random"])
def test_strategies_that_read_embeddings_or_counts_build_a_queue(settings, strategy):
    pid, _ = _pool(settings, 400, strategy=strategy, round_size=20, with_embeddings=True)
    qid = build_review_queue(settings, pid, trigger="admin", seed=3)
    items = _items(settings, qid)
    assert len(items) == 20 and len({i for i, _ in items}) == 20


def test_an_unknown_strategy_is_refused_by_name_and_the_current_queue_stays(settings):
    pid, _ = _pool(settings, 100, strategy="margin", round_size=10)
    good = build_review_queue(settings, pid, trigger="admin")
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).al_strategy = "most_fun"
    with pytest.raises(UnknownStrategy, match="'most_fun'.*known strategies: random, "):
        build_review_queue(settings, pid, trigger="admin")
    with session_scope(settings.database_url) as s:
        failed = s.scalar(select(ReviewQueue).order_by(ReviewQueue.id.desc()).limit(1))
        assert failed.status == QueueStatus.FAILED and "most_fun" in failed.error
        assert "margin" in failed.error
        assert current_queue(s, pid).id == good


def test_a_round_size_larger_than_the_pool_is_refused(settings):
    pid, _ = _pool(settings, 30, strategy="margin", round_size=31)
    with pytest.raises(BatchTooLarge, match="31 is larger than the pool of 30"):
        build_review_queue(settings, pid, trigger="admin")
    with session_scope(settings.database_url) as s:
        assert current_queue(s, pid) is None
        assert s.scalar(select(ReviewQueue.error)).startswith("The round size 31")


@pytest.mark.slow
def test_before_any_model_the_first_queue_is_a_diverse_cold_start(settings, demo_project):
    with session_scope(settings.database_url) as s:
        project = s.get(Project, demo_project)
        project.al_strategy, project.al_round_size, project.review_random_share = "margin", 8, 0.25
    qid = build_review_queue(settings, demo_project, trigger="admin", seed=0)
    items = _items(settings, qid)
    assert len(items) == 8 and sum(r for _, r in items) == 2
    with session_scope(settings.database_url) as s:
        queue = s.get(ReviewQueue, qid)
        assert queue.model_version_id is None and queue.is_current
        # Features were computed once and cached for later rounds.
        assert any((settings.storage_dir / "features").rglob("*.npy"))


def test_the_cli_builds_a_queue_and_reports_refusals(settings, tmp_path):
    from click.testing import CliRunner

    from tests.helpers import base_env
    from webapp.cli import main

    pid, _ = _pool(settings, 40, strategy="least_confidence", round_size=10)
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    ok = CliRunner().invoke(main, ["review-queue", "--project", "p0"], env=env)
    assert ok.exit_code == 0 and "is current" in ok.output, ok.output
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).al_round_size = 41
    refused = CliRunner().invoke(main, ["review-queue", "--project", "p0"], env=env)
    assert refused.exit_code != 0 and "round size 41 is larger than the pool of 40" in \
        refused.output


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["bald", "hybrid", "class_balanced"])
def test_after_a_real_round_model_based_strategies_build_a_queue(tmp_path, sqlite_url, strategy):
    """BALD reads the saved model's head and the cached features; hybrid the stored embeddings."""
    from models.settings import load_settings
    from tests.helpers import add_round, base_env, trainable_project
    from worker.rounds import run_round

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url))
    pid = trainable_project(settings, tmp_path)
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        project.al_strategy, project.al_round_size, project.review_random_share = strategy, 4, 0.0
    assert run_round(settings, add_round(settings, pid), worker="t").value == "succeeded"
    with session_scope(settings.database_url) as s:
        queue = current_queue(s, pid)
        assert queue.trigger == "round" and queue.strategy == strategy and queue.model_version_id
        assert queue.status == QueueStatus.READY and queue.n_items == 4
        items = s.scalars(select(ReviewQueueItem.image_id)
                          .where(ReviewQueueItem.queue_id == queue.id)).all()
        pool = set(s.scalars(select(Image.id).where(Image.project_id == pid,
                                                    Image.split == Split.POOL)))
        assert len(set(items)) == 4 and set(items) <= pool


def test_an_automatic_rebuild_near_the_end_of_the_pool_queues_what_is_left(settings):
    pid, _ = _pool(settings, 12, strategy="margin", round_size=20, random_share=0.25)
    qid = build_review_queue(settings, pid, trigger="round", seed=0)
    items = _items(settings, qid)
    assert len({i for i, _ in items}) == 12 and sum(r for _, r in items) == 3
    with session_scope(settings.database_url) as s:
        queue = s.get(ReviewQueue, qid)
        assert queue.is_current and queue.round_size == 12
