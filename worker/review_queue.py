"""Building a review round's frozen queue, and the atomic switch to it.

1. A ``building`` queue row is added (its id names the new queue).
2. The project's strategy chooses B cells (worker/ml/selection, the code the
   simulator measures); a random share of B is drawn uniformly from the rest
   of the pool and mixed in at random positions.
3. Its items are written under the new id (readers still follow the old one).
4. One transaction flips ``is_current`` from the old queue to the new one.

Ranking never loads every prediction: uncertainty-only strategies are one
``ORDER BY <score> LIMIT B`` over an index on (model version, score); the
others read the ``CANDIDATE_CAP`` most uncertain cells (ORDER BY entropy
LIMIT M) and run on those alone.  Before any model (cold start) the first
batch is k-means representatives of the pool's features (the project's feature
sources, worker/head_inputs.py).
"""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy import func, select, update

from models import Image, ModelVersion, Prediction, Project, Split, utcnow
from models.db import session_scope
from models.labels import NEEDS_READERS, label_counts, labeled_images
from models.review import QueueStatus, ReviewQueue, ReviewQueueItem
from models.settings import Settings

log = logging.getLogger(__name__)

# Strategies that need more than one score per cell look at this many of the
# most uncertain cells (the simulator's pools are smaller, so it sees the same).
CANDIDATE_CAP = 5000
INSERT_CHUNK = 5000


# Rebuilds that follow a training round or a rescoring, not a person's request.
AUTOMATIC = ("round", "scoring")


def _pending(project_id: int):
    """The project's cells a review round may hold: those that still need a reader
    (with k = 2, a cell with one vote too)."""
    return Image.project_id == project_id, NEEDS_READERS


def _top_by_sql(s, project_id: int, version_id: int, order, limit: int,
                with_probs: bool = False) -> list:
    cols = [Image.id, Prediction.probabilities] if with_probs else [Image.id]
    return s.execute(
        select(*cols).join(Prediction, Prediction.image_id == Image.id)
        .where(Prediction.model_version_id == version_id, *_pending(project_id))
        .order_by(order, Image.id).limit(limit)).all()


def _choose_with_model(settings: Settings, s, project: Project, version: ModelVersion,
                       strategy: str, k: int, rng: np.random.Generator) -> list[int]:
    from worker.ml import embeddings as emb
    from worker.ml.selection import Candidates, get_strategy, select_batch

    spec = get_strategy(strategy)
    if spec.sql_score is not None:  # one ORDER BY over the index on (version, score)
        column = getattr(Prediction, spec.sql_score)
        order = column.asc() if spec.sql_ascending else column.desc()
        return [r.id for r in _top_by_sql(s, project.id, version.id, order, k)]
    if strategy == "random":
        return list(s.scalars(select(Image.id).where(*_pending(project.id))
                              .order_by(func.random()).limit(k)))
    rows = _top_by_sql(s, project.id, version.id, Prediction.entropy.desc(),
                       max(CANDIDATE_CAP, 10 * k), with_probs=True)
    ids = np.array([r.id for r in rows], dtype=np.int64)
    keys = [str(c) for c in version.class_ids]
    probs = np.array([[r.probabilities.get(key, 0.0) for key in keys] for r in rows],
                     dtype=np.float32).reshape(len(rows), len(keys))
    labeled = labeled_images(s, project, Split.POOL)
    counts = label_counts(labeled)
    c = Candidates(n=len(ids), probs=probs,
                   class_counts=np.array([counts.get(cid, 0) for cid in version.class_ids]))
    needs = spec.needs
    if "embeddings" in needs:
        stored_ids, vectors = emb.load(emb.embeddings_path(settings.storage_dir
                                                          / version.artifact_path))
        row_of = {int(i): r for r, i in enumerate(stored_ids)}
        keep = np.array([int(i) in row_of for i in ids], dtype=bool)
        ids, c.probs, c.n = ids[keep], probs[keep], int(keep.sum())
        c.embeddings = vectors[[row_of[int(i)] for i in ids]]
        c.labeled_embeddings = vectors[[row_of[x.image_id] for x in labeled
                                        if x.image_id in row_of]]
    if "mc_probs" in needs:
        c.mc_probs = _mc_probs(settings, s, version, ids)
    if c.n == 0:
        return []
    k = min(k, c.n)
    return [int(ids[r]) for r in select_batch(strategy, c, k, rng)]


def _mc_probs(settings: Settings, s, version: ModelVersion, ids: np.ndarray) -> np.ndarray:
    """MC-dropout passes of the version's head over the candidates' cached head input."""
    from worker.head_inputs import version_features
    from worker.ml.backend import CellClassifier
    from worker.ml.network import DROPOUT_LAYER, HEAD_LAYER
    from worker.ml.selection.bald import mc_dropout_probs

    clf = CellClassifier.load(settings.storage_dir / version.artifact_path)
    rows = {i: (sha, path) for i, sha, path in s.execute(
        select(Image.id, Image.sha256, Image.storage_path)
        .where(Image.project_id == version.project_id))}
    # The version's own head input; backbone features not cached are computed,
    # not stored (as before).
    feats, _ = version_features(
        settings, version, clf, [rows[int(i)][0] for i in ids],
        lambda missing: [settings.storage_dir / rows[int(ids[r])][1] for r in missing],
        store=False)
    kernel, bias = clf.model.get_layer(HEAD_LAYER).get_weights()
    return mc_dropout_probs(feats, kernel, bias, rate=float(clf.model.get_layer(DROPOUT_LAYER).rate),
                            temperature=version.temperature)


def _choose_cold_start(settings: Settings, s, project: Project, k: int,
                       rng: np.random.Generator) -> list[int]:
    """k-means representatives of the pool's features (no model yet), for the
    project's feature sources, built as a round builds its head input."""
    from worker.backbone_choice import weights_setting
    from worker.ml import embeddings as emb
    from worker.ml.selection import Candidates, cold_start
    from worker.simulation.features import head_features

    rows = s.execute(select(Image.id, Image.sha256, Image.storage_path)
                     .where(*_pending(project.id)).order_by(Image.id)).all()
    feats, ok = head_features(
        [settings.storage_dir / r.storage_path for r in rows], [r.sha256 for r in rows],
        sources=project.feature_sources,
        cache_dir=settings.storage_dir / "features", input_size=settings.input_size,
        weights=weights_setting(s, settings, project.id), batch_size=settings.batch_size)
    good = np.flatnonzero(ok)
    picked = cold_start(Candidates(n=len(good), embeddings=emb.project(feats[good])),
                        min(k, len(good)), rng)
    return [int(rows[good[r]].id) for r in picked]


def build_review_queue(settings: Settings, project_id: int, *, trigger: str,
                       seed: int | None = None) -> int | None:
    """Build the project's next review queue and make it current; returns its id.

    A refusal (unknown strategy; a round size larger than the pool, except
    for an automatic rebuild, which queues the rest of the pool) ends the
    queue ``failed`` with the message and raises
    :class:`worker.ml.selection.SelectionError`; the current queue stays.
    """
    from worker.ml.selection import SelectionError, check_request
    from worker.ml.weights import WeightsError

    with session_scope(settings.database_url) as s:
        project = s.get(Project, project_id)
        if project is None:
            log.warning("project %s does not exist; no review queue", project_id)
            return None
        version = s.scalar(select(ModelVersion).where(ModelVersion.project_id == project_id,
                                                      ModelVersion.is_active))
        queue = ReviewQueue(project_id=project_id, model_version_id=version.id if version else None,
                            strategy=project.al_strategy, round_size=project.al_round_size,
                            random_share=project.review_random_share, trigger=trigger)
        s.add(queue)
        s.flush()
        queue_id = queue.id
    rng = np.random.default_rng(seed if seed is not None else queue_id)
    try:
        with session_scope(settings.database_url) as s:
            project = s.get(Project, project_id)
            version = s.get(ModelVersion, version.id) if version else None
            pool = s.scalar(select(func.count(Image.id)).where(*_pending(project_id))) or 0
            b = project.al_round_size
            if trigger in AUTOMATIC and 0 < pool < b:
                # The end of a pool: an automatic rebuild queues what is left
                # (recorded as the round size); a request by a person for more
                # than the pool is refused below.
                b = s.get(ReviewQueue, queue_id).round_size = pool
            check_request(project.al_strategy, b, pool)
            n_random = int(round(project.review_random_share * b))
            k = b - n_random
            if version is None and project.al_strategy != "random":
                chosen = _choose_cold_start(settings, s, project, k, rng)
            elif version is None:
                chosen = list(s.scalars(select(Image.id).where(*_pending(project_id))
                                        .order_by(func.random()).limit(k)))
            else:
                chosen = _choose_with_model(settings, s, project, version, project.al_strategy,
                                            k, rng)
            # The unbiased share: uniform over the rest of the pool.
            extra = list(s.scalars(select(Image.id).where(*_pending(project_id),
                                                          Image.id.not_in(chosen or [-1]))
                                   .order_by(func.random()).limit(b - len(chosen))))
        items = _interleave(chosen, extra, rng)
        _write_items(settings, queue_id, items)
        _make_current(settings, project_id, queue_id, len(items))
    except SelectionError as exc:
        _fail(settings, queue_id, str(exc))  # written for users (worker/ml/selection/errors.py)
        raise
    except WeightsError as exc:
        _fail(settings, queue_id, str(exc))  # e.g. the chosen backbone's file is gone
        raise
    except Exception as exc:
        log.exception("building review queue %s failed", queue_id)
        _fail(settings, queue_id, f"Unexpected error in the worker ({type(exc).__name__})")
        raise
    return queue_id


def _interleave(chosen: list[int], extra: list[int],
                rng: np.random.Generator) -> list[tuple[int, bool]]:
    """The strategy's picks in order, the random ones at random positions among them."""
    n = len(chosen) + len(extra)
    random_at = set(rng.choice(n, size=len(extra), replace=False).tolist()) if extra else set()
    picks, randoms = iter(chosen), iter(extra)
    return [(next(randoms), True) if i in random_at else (next(picks), False) for i in range(n)]


def _write_items(settings: Settings, queue_id: int, items: list[tuple[int, bool]]) -> None:
    rows = [{"queue_id": queue_id, "position": pos, "image_id": image_id, "is_random": rnd}
            for pos, (image_id, rnd) in enumerate(items)]
    with session_scope(settings.database_url) as s:
        for start in range(0, len(rows), INSERT_CHUNK):
            s.execute(ReviewQueueItem.__table__.insert(), rows[start:start + INSERT_CHUNK])


def _make_current(settings: Settings, project_id: int, queue_id: int, n: int) -> None:
    """The atomic switch: the old queue stops and the new one starts in one commit."""
    with session_scope(settings.database_url) as s:
        s.execute(update(ReviewQueue).where(ReviewQueue.project_id == project_id,
                                            ReviewQueue.is_current)
                  .values(is_current=False))
        s.flush()  # the partial unique index allows one current queue at a time
        s.execute(update(ReviewQueue).where(ReviewQueue.id == queue_id).values(
            is_current=True, status=QueueStatus.READY, n_items=n, built_at=utcnow()))


def _fail(settings: Settings, queue_id: int, message: str) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(ReviewQueue).where(ReviewQueue.id == queue_id).values(
            status=QueueStatus.FAILED, error=message[:2000], built_at=utcnow()))


def current_queue(s, project_id: int) -> ReviewQueue | None:
    return s.scalar(select(ReviewQueue).where(ReviewQueue.project_id == project_id,
                                              ReviewQueue.is_current))


def latest_queue(s, project_id: int) -> ReviewQueue | None:
    return s.scalar(select(ReviewQueue).where(ReviewQueue.project_id == project_id)
                    .order_by(ReviewQueue.id.desc()).limit(1))


__all__ = ["build_review_queue", "current_queue", "latest_queue", "CANDIDATE_CAP"]
