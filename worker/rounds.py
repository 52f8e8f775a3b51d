"""One training round, start to finish, recorded on its database row.

The Celery task is a thin shell around :func:`run_round`; this module opens
its own short sessions (one per step, never one for the worker's life) and
makes sure a round always ends ``succeeded`` or ``failed`` with a message an
admin can act on.  TensorFlow is imported lazily, inside the steps that need it.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sqlalchemy import select, update

from models import (
    Image, ModelVersion, Prediction, Project, RoundStatus, Split, TrainingRound, utcnow,
)
from models.db import session_scope
from models.labels import label_counts, labeled_images, unlabeled_pool
from models.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0
# Where the round's wall time goes, for the progress bar: features dominate.
PHASES = {"features": (0.02, 0.70), "train": (0.70, 0.90), "score": (0.90, 1.0)}


class RoundError(Exception):
    """A failure whose message is meant for the admin (not an internal error)."""


class RoundRefused(RoundError):
    """The round cannot start with the labels the project has."""


def check_trainable(counts: dict[int, int], class_names: dict[int, str], min_per_class: int) -> None:
    """Refuse a round that could not learn anything useful."""
    usable = {c: n for c, n in counts.items() if n >= min_per_class}
    if len(usable) < 2:
        have = ", ".join(f"{class_names[c]}: {n}" for c, n in sorted(counts.items())) or "none"
        raise RoundRefused(
            f"Training needs at least {min_per_class} label(s) in each of at least two classes; "
            f"labels so far: {have}."
        )


class _Progress:
    """Writes phase/progress/heartbeat to the round row, at most once a second."""

    def __init__(self, settings: Settings, round_id: int):
        self.settings, self.round_id, self._last = settings, round_id, 0.0

    def __call__(self, phase: str, fraction: float, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < HEARTBEAT_EVERY_S:
            return
        self._last = now
        lo, hi = PHASES.get(phase, (0.0, 1.0))
        with session_scope(self.settings.database_url) as s:
            s.execute(
                update(TrainingRound)
                .where(TrainingRound.id == self.round_id)
                .values(progress=lo + (hi - lo) * min(max(fraction, 0.0), 1.0),
                        phase=message[:200], heartbeat_at=utcnow())
            )

    def cancelled(self) -> bool:
        with session_scope(self.settings.database_url) as s:
            status = s.scalar(select(TrainingRound.status).where(TrainingRound.id == self.round_id))
        return status == RoundStatus.CANCELLED


def _claim(settings: Settings, round_id: int, worker: str) -> bool:
    """queued -> running, atomically; False when another delivery already took it."""
    with session_scope(settings.database_url) as s:
        now = utcnow()
        claimed = s.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id, TrainingRound.status == RoundStatus.QUEUED)
            .values(status=RoundStatus.RUNNING, started_at=now, heartbeat_at=now,
                    worker=worker[:200], phase="starting", progress=0.0)
        ).rowcount
    return bool(claimed)


def _finish(settings: Settings, round_id: int, **values: Any) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(
            update(TrainingRound)
            .where(TrainingRound.id == round_id)
            .values(finished_at=utcnow(), heartbeat_at=utcnow(), **values)
        )


def run_round(settings: Settings, round_id: int, worker: str = "local") -> RoundStatus:
    """Run a queued round; returns its final status. Never raises for round failures."""
    if not _claim(settings, round_id, worker):
        log.info("round %s is not queued any more; nothing to do", round_id)
        return RoundStatus(_status(settings, round_id))
    progress = _Progress(settings, round_id)
    try:
        _train_and_score(settings, round_id, progress)
    except RoundError as exc:
        log.warning("round %s failed: %s", round_id, exc)
        _finish(settings, round_id, status=RoundStatus.FAILED, error=str(exc), phase="failed")
        return RoundStatus.FAILED
    except _Cancelled:
        _finish(settings, round_id, status=RoundStatus.CANCELLED, phase="cancelled")
        return RoundStatus.CANCELLED
    except Exception as exc:  # noqa: BLE001 - every failure must end on the row
        log.exception("round %s crashed", round_id)
        _finish(
            settings, round_id, status=RoundStatus.FAILED, phase="failed",
            error=f"Unexpected error in the worker ({type(exc).__name__}); "
                  f"the worker log has the details for round {round_id}.",
        )
        return RoundStatus.FAILED
    return RoundStatus.SUCCEEDED


def _status(settings: Settings, round_id: int) -> str:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(TrainingRound.status).where(TrainingRound.id == round_id))


class _Cancelled(Exception):
    pass


def _train_and_score(settings: Settings, round_id: int, progress: _Progress) -> None:
    from worker.ml import embeddings
    from worker.ml.backend import CellClassifier
    from worker.ml.evaluate import classification_metrics
    from worker.ml.train import TrainingCancelled
    from worker.ml.weights import WeightsError

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with session_scope(settings.database_url) as s:
        rnd = s.get(TrainingRound, round_id)
        project = s.get(Project, rnd.project_id)
        classes = list(project.classes)
        train = labeled_images(s, project, Split.POOL)
        test = labeled_images(s, project, Split.TEST)
        pool = unlabeled_pool(s, project)
        min_per_class = project.min_labels_per_class
        project_id = project.id
    class_ids = [c.id for c in classes]
    names = {c.id: c.name for c in classes}
    check_trainable(label_counts(train), names, min_per_class)
    index_of = {cid: i for i, cid in enumerate(class_ids)}

    progress("features", 0.0, "building the network", force=True)
    try:
        clf, warnings = CellClassifier.create(class_ids, settings.input_size, settings.backbone_weights)
    except WeightsError as exc:
        raise RoundError(str(exc)) from exc
    config = {
        "input_size": settings.input_size, "backbone_weights": clf.backbone_weights,
        "batch_size": settings.batch_size, "head_epochs": settings.head_epochs,
        "classes": [names[c] for c in class_ids],
    }
    _record(settings, round_id, warnings=warnings, config=config)
    timings["build_s"] = time.perf_counter() - t0

    # One backbone pass over every image the round needs: training, test and
    # pool cells, each once (a trusted reference label puts a pool cell in both
    # the training set and the pool).  The head trains on these cached features
    # (a frozen base); evaluation and scoring reuse them.
    rel_paths = {x.image_id: x.storage_path for x in train + test}
    rel_paths.update(pool)
    image_ids = list(rel_paths)
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    failures: list[tuple[int, str]] = []
    t = time.perf_counter()
    feats, ok = clf.features(
        [settings.storage_dir / rel_paths[i] for i in image_ids], settings.batch_size,
        failures=failures,
        progress=lambda done, total: progress(
            "features", done / max(total, 1), f"reading cells: {done}/{total}"),
    )
    timings["features_s"] = time.perf_counter() - t
    if failures:
        warnings = warnings + [_unreadable_warning(settings, [(image_ids[r], why) for r, why in failures])]
        _record(settings, round_id, warnings=warnings)
    tr = np.array([row_of[x.image_id] for x in train if ok[row_of[x.image_id]]], dtype=np.int64)
    te = np.array([row_of[x.image_id] for x in test if ok[row_of[x.image_id]]], dtype=np.int64)
    pool_ids = [i for i, _ in pool if ok[row_of[i]]]
    po = np.array([row_of[i] for i in pool_ids], dtype=np.int64)
    label_of = {row_of[x.image_id]: x.label_class_id for x in train + test}
    y_train = np.array([index_of[label_of[r]] for r in tr], dtype=np.int64)
    check_trainable(
        {class_ids[k]: int(v) for k, v in zip(*np.unique(y_train, return_counts=True))},
        names, min_per_class,
    )

    t = time.perf_counter()
    epochs = settings.head_epochs
    try:
        result = clf.fit_head(
            feats[tr], y_train, epochs=epochs, batch_size=settings.batch_size,
            progress=lambda ep, total, logs: progress(
                "train", ep / max(total, 1),
                f"training: epoch {ep}/{total}, loss {logs.get('loss', float('nan')):.3f}",
                force=True),
            should_stop=progress.cancelled,
        )
    except TrainingCancelled as exc:
        raise _Cancelled() from exc
    timings["train_s"] = time.perf_counter() - t

    progress("score", 0.0, "evaluating on the test split", force=True)
    metrics: dict[str, Any] = {"epochs_run": result.epochs_run}
    class_names = [names[c] for c in class_ids]
    if len(te):
        y_test = np.array([index_of[label_of[r]] for r in te])
        p_test = clf.predict_features(feats[te])
        metrics["test"] = classification_metrics(y_test, p_test.argmax(1), class_names)
    else:
        warnings = warnings + ["The test split has no labeled cells; no test metrics."]
    p_train = clf.predict_features(feats[tr])
    metrics["train_accuracy"] = float((p_train.argmax(1) == y_train).mean())
    metrics["history"] = result.history

    t = time.perf_counter()
    probs = clf.predict_features(feats[po]) if len(po) else np.zeros((0, len(class_ids)))
    timings["score_s"] = time.perf_counter() - t

    artifact = Path("models") / f"project-{project_id}" / f"round-{round_id}.keras"
    t = time.perf_counter()
    (settings.storage_dir / artifact).parent.mkdir(parents=True, exist_ok=True)
    clf.save(settings.storage_dir / artifact)
    seen = np.flatnonzero(ok)
    embeddings.save(embeddings.embeddings_path(settings.storage_dir / artifact),
                    np.asarray(image_ids)[seen], embeddings.project(feats[seen]))
    timings["save_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    _publish(settings, round_id, project_id, clf, class_ids, artifact, metrics, pool_ids, probs,
             warnings=warnings, timings=timings, n_train=len(tr), n_test=len(te))


def _unreadable_warning(settings: Settings, failed: list[tuple[int, str]]) -> str:
    """Name the unreadable cells as the user knows them: id and original file name."""
    with session_scope(settings.database_url) as s:
        names = dict(s.execute(select(Image.id, Image.original_name)
                               .where(Image.id.in_([i for i, _ in failed[:3]]))).all())
    examples = "; ".join(f"cell {i} ({names.get(i, '?')}): {why}" for i, why in failed[:3])
    return f"{len(failed)} image(s) could not be read and were skipped, e.g. {examples}"


def _record(settings: Settings, round_id: int, **values: Any) -> None:
    with session_scope(settings.database_url) as s:
        s.execute(update(TrainingRound).where(TrainingRound.id == round_id).values(**values))


def prediction_rows(model_version_id: int, image_ids: list[int], probs: np.ndarray,
                    class_ids: list[int]) -> list[dict[str, Any]]:
    from worker.ml.uncertainty import uncertainty_scores

    if not len(image_ids):
        return []
    scores = uncertainty_scores(probs)
    top = probs.argmax(1)
    now = utcnow()
    keys = [str(c) for c in class_ids]
    return [
        {
            "model_version_id": model_version_id, "image_id": int(image_id),
            "probabilities": {k: round(float(p), 6) for k, p in zip(keys, probs[i])},
            "predicted_class_id": class_ids[int(top[i])],
            "confidence": float(scores["confidence"][i]), "entropy": float(scores["entropy"][i]),
            "margin": float(scores["margin"][i]),
            "least_confidence": float(scores["least_confidence"][i]), "created_at": now,
        }
        for i, image_id in enumerate(image_ids)
    ]


def _publish(settings: Settings, round_id: int, project_id: int, clf, class_ids: list[int],
             artifact: Path, metrics: dict, pool_ids: list[int], probs: np.ndarray,
             **round_values: Any) -> None:
    """Store the version, its predictions and the round's result in one transaction,
    so the labeling queue switches from the old ranking to the new one at once."""
    with session_scope(settings.database_url) as s:
        status = s.scalar(select(TrainingRound.status).where(TrainingRound.id == round_id))
        if status == RoundStatus.CANCELLED:
            raise _Cancelled()
        version = ModelVersion(
            project_id=project_id, round_id=round_id, artifact_path=str(artifact),
            class_ids=class_ids, input_size=clf.input_size,
            backbone_weights=clf.backbone_weights, metrics=metrics, is_active=False,
        )
        s.add(version)
        s.flush()
        rows = prediction_rows(version.id, pool_ids, probs, class_ids)
        for start in range(0, len(rows), 2000):
            s.execute(Prediction.__table__.insert(), rows[start:start + 2000])
        s.execute(update(ModelVersion).where(ModelVersion.project_id == project_id)
                  .values(is_active=False))
        version.is_active = True
        s.execute(
            update(TrainingRound).where(TrainingRound.id == round_id).values(
                status=RoundStatus.SUCCEEDED, progress=1.0, phase="done",
                finished_at=utcnow(), heartbeat_at=utcnow(), n_scored=len(rows), **round_values)
        )


def fail_lost_rounds(settings: Settings, worker: str | None = None,
                     now_fn: Callable = utcnow) -> int:
    """Mark rounds whose worker is gone as failed; returns how many.

    A round is lost when its worker restarted (same name, still 'running') or
    its heartbeat is older than the stale limit.  Runs at worker start-up and
    whenever the admin page lists rounds, so no round stays 'running' forever.
    """
    stale_before = now_fn() - timedelta(seconds=settings.round_stale_seconds)
    with session_scope(settings.database_url) as s:
        running = s.scalars(
            select(TrainingRound).where(TrainingRound.status == RoundStatus.RUNNING)
        ).all()
        lost = 0
        for rnd in running:
            restarted = worker is not None and rnd.worker == worker
            stale = rnd.heartbeat_at is None or rnd.heartbeat_at < stale_before
            if restarted or stale:
                rnd.status = RoundStatus.FAILED
                rnd.finished_at = now_fn()
                rnd.phase = "failed"
                rnd.error = (
                    "The worker running this round stopped (restarted or killed) before it finished."
                    if restarted else
                    f"No progress from worker {rnd.worker or '?'} for over "
                    f"{settings.round_stale_seconds} s; the worker is presumed lost."
                )
                lost += 1
    return lost
