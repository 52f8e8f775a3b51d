"""What a training round does, step by step.

1. Gather the labels (models/labels.py decides which count) and refuse a round
   that cannot learn.
2. Build InceptionV3 -> GAP -> Dropout -> Dense, or warm-start from the active
   model.
3. Backbone features for every cell the round needs, from the feature cache
   where possible.
4. Phase 1: the head on cached features (a frozen base).
5. Phase 2 (when the project asks): unfreeze the top blocks, fine-tune on
   augmented images at a low rate, then re-extract features with the new
   backbone (and cache them under this round's key).
6. Temperature scaling on the validation split; metrics and calibration error
   on the test split; calibrated predictions for every undecided pool cell.
7. Save the model atomically and publish version, predictions and results in
   one transaction.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from models import Image, ModelVersion, Project, Split, TrainingRound
from models.db import session_scope
from models.labels import labeled_images, unlabeled_pool
from models.settings import Settings

from .launch import RoundError, check_trainable
from .publish import publish
from .round_state import AttemptSuperseded, Cancelled, Progress

log = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.15
MIN_VALIDATION_FOR_TEMPERATURE = 10
SEED = 0


@dataclass
class RoundData:
    """Everything a round reads from the database, read once."""

    project_id: int
    class_ids: list[int]
    class_names: list[str]
    min_per_class: int
    fine_tune_blocks: int
    warm_start: bool
    train: list[tuple[int, int]]  # (image id, class id)
    test: list[tuple[int, int]]
    pool: list[int]
    images: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (sha256, path)
    active: ModelVersion | None = None
    # Warnings already on the round (e.g. "queued again after a lost worker").
    warnings: list[str] = field(default_factory=list)


def load_round_data(settings: Settings, round_id: int) -> RoundData:
    with session_scope(settings.database_url) as s:
        rnd = s.get(TrainingRound, round_id)
        project = s.get(Project, rnd.project_id)
        train = labeled_images(s, project, Split.POOL)
        test = labeled_images(s, project, Split.TEST)
        pool = unlabeled_pool(s, project)
        # By project, not by a list of ids: a pool can outgrow SQL's parameter limits.
        images = {i: (sha, path) for i, sha, path in s.execute(
            select(Image.id, Image.sha256, Image.storage_path)
            .where(Image.project_id == project.id))}
        active = s.scalar(select(ModelVersion).where(
            ModelVersion.project_id == project.id, ModelVersion.is_active))
        return RoundData(
            project_id=project.id,
            class_ids=[c.id for c in project.classes],
            class_names=[c.name for c in project.classes],
            min_per_class=project.min_labels_per_class,
            fine_tune_blocks=project.fine_tune_blocks,
            warm_start=project.warm_start,
            train=[(x.image_id, x.label_class_id) for x in train],
            test=[(x.image_id, x.label_class_id) for x in test],
            pool=[i for i, _ in pool],
            images=images,
            active=active,
            warnings=list(rnd.warnings or []),
        )


@lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _backbone_key(source: str | None, input_size: int) -> str:
    import tensorflow as tf

    from worker.ml.feature_store import backbone_key

    digest = None
    if source not in (None, "imagenet"):
        stat = Path(source).stat()
        digest = _file_digest(source, stat.st_size, stat.st_mtime)
    return backbone_key(source, input_size, seed=SEED, weights_digest=digest,
                        tf_version=tf.__version__)


def pristine_key(clf, input_size: int) -> str:
    return _backbone_key(clf.weights_source, input_size)


def configured_backbone_key(settings: Settings) -> str:
    """The pristine backbone the settings ask for now, without building it."""
    from worker.ml.weights import WeightsError, resolve_backbone_weights

    try:
        source, _, _ = resolve_backbone_weights(settings.backbone_weights)
    except WeightsError as exc:
        raise RoundError(str(exc)) from exc
    return _backbone_key(source, settings.input_size)


def lineage_backbone_key(version) -> str | None:
    """The pristine backbone a model version descends from (None if unknown).

    A fine-tuned version's feature key names its own backbone ("round12"), so
    the pristine one is kept in its config; versions from before that was
    recorded fall back to their feature key when it names a pristine backbone.
    """
    key = (version.config or {}).get("backbone_key")
    if key:
        return key
    if version.feature_key and version.feature_key.startswith(("imagenet-", "random-", "file-")):
        return version.feature_key
    return None


def build_classifier(settings: Settings, data: RoundData, warnings: list[str]):
    """(classifier, feature key, parent version id): warm from the active model if we can.

    Not when the configured backbone weights changed since the active model
    was trained: warm-starting would carry the old backbone forward for ever
    and the new weights would never be used.
    """
    from worker.ml.backend import CellClassifier
    from worker.ml.weights import WeightsError

    active = data.active
    if data.warm_start and active is not None:
        reason = None
        old_key = lineage_backbone_key(active)
        if active.class_ids != data.class_ids:
            reason = "the project's classes changed"
        elif active.input_size != settings.input_size:
            reason = f"the input size changed ({active.input_size} -> {settings.input_size})"
        elif old_key is not None and old_key != configured_backbone_key(settings):
            reason = (f"the backbone weights changed ({active.backbone_weights} -> "
                      f"{settings.backbone_weights})")
        else:
            try:
                clf = CellClassifier.load(settings.storage_dir / active.artifact_path)
                return clf, active.feature_key, active.id
            except Exception as exc:  # noqa: BLE001 - a bad artifact must not stop training
                log.warning("cannot load model %s for warm start: %r", active.id, exc)
                reason = f"its saved model could not be loaded ({type(exc).__name__})"
        warnings.append(f"Not warm-started from model v{active.id}: {reason}; trained from "
                        "the backbone weights instead.")
    try:
        clf, weight_warnings = CellClassifier.create(
            data.class_ids, settings.input_size, settings.backbone_weights, seed=SEED)
    except WeightsError as exc:
        raise RoundError(str(exc)) from exc
    warnings.extend(weight_warnings)
    return clf, pristine_key(clf, settings.input_size), None


def cached_features(settings: Settings, clf, key: str, data: RoundData, image_ids: list[int],
                    progress: Progress) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]], int]:
    """Features for ``image_ids``: from the cache, computing (and caching) the rest.

    Returns (features, ok mask, failures, how many came from the cache).
    """
    from worker.ml.feature_store import FeatureStore
    from worker.ml.network import FEATURE_DIM

    store = FeatureStore(settings.storage_dir / "features", key)
    shas = [data.images[i][0] for i in image_ids]
    feats, found = store.get_many(shas, FEATURE_DIM)
    missing = np.flatnonzero(~found)
    progress.units(len(missing))  # cached cells cost (next to) nothing
    failures: list[tuple[int, str]] = []
    ok = found.copy()
    if len(missing):
        computed, computed_ok = clf.features(
            [settings.storage_dir / data.images[image_ids[i]][1] for i in missing],
            settings.batch_size, failures=failures,
            progress=lambda done, total: progress(
                done / max(total, 1),
                f"reading cells: {done}/{total} ({len(image_ids) - len(missing)} cached)"),
        )
        feats[missing] = computed
        ok[missing] = computed_ok
        store.put_many(shas, feats, missing[computed_ok])
        failures = [(image_ids[missing[i]], why) for i, why in failures]
    return feats, ok, failures, int(found.sum())


def _unreadable_warning(settings: Settings, failed: list[tuple[int, str]]) -> str:
    """Name the unreadable cells as the user knows them: id and original file name."""
    with session_scope(settings.database_url) as s:
        names = dict(s.execute(select(Image.id, Image.original_name)
                               .where(Image.id.in_([i for i, _ in failed[:3]]))).all())
    examples = "; ".join(f"cell {i} ({names.get(i, '?')}): {why}" for i, why in failed[:3])
    return f"{len(failed)} image(s) could not be read and were skipped, e.g. {examples}"


def fine_tune_if_better(settings: Settings, clf, data: RoundData, image_ids: list[int],
                        train_rows: np.ndarray, y_all: np.ndarray, fit: np.ndarray,
                        val: np.ndarray, feats: np.ndarray, progress: Progress,
                        history: dict, metrics_out: dict) -> bool:
    """Phase 2, kept only if it lowers the validation loss below phase 1's.

    Early stopping picks the best fine-tuning epoch, but even that can be worse
    than the head alone (a small set, a randomly initialised backbone); then
    the phase-1 weights are put back.
    """
    from worker.ml import calibration

    paths = [settings.storage_dir / data.images[image_ids[r]][1] for r in train_rows]
    before = clf.model.get_weights()
    loss_before = calibration.nll(clf.logits_features(feats[train_rows[val]]), y_all[val], 1.0)
    history["fine_tune"] = clf.fine_tune(
        [paths[i] for i in fit], y_all[fit], [paths[i] for i in val], y_all[val],
        blocks=data.fine_tune_blocks, epochs=settings.fine_tune_epochs,
        batch_size=settings.batch_size, seed=SEED,
        progress=lambda ep, total, logs: progress(
            ep / max(total, 1), f"fine-tuning: epoch {ep}/{total}, loss {logs.get('loss', 0):.3f}",
            force=True),
        should_stop=progress.cancelled,
    )
    val_feats, _ = clf.features([paths[i] for i in val], settings.batch_size)
    loss_after = calibration.nll(clf.logits_features(val_feats), y_all[val], 1.0)
    kept = loss_after < loss_before
    if not kept:
        clf.model.set_weights(before)
    metrics_out.update(kept=bool(kept), blocks=data.fine_tune_blocks,
                       val_loss_before=float(loss_before), val_loss_after=float(loss_after))
    return kept


def train_round(settings: Settings, round_id: int, progress: Progress) -> None:
    from worker.ml import calibration, embeddings, precision
    from worker.ml.evaluate import classification_metrics
    from worker.ml.train import (
        TrainingCancelled, stratified_validation_split, wants_validation,
    )

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    data = load_round_data(settings, round_id)
    names = dict(zip(data.class_ids, data.class_names))
    check_trainable(label_counts_of(data.train), names, data.min_per_class)
    fine_tune = data.fine_tune_blocks > 0 and settings.fine_tune_epochs > 0
    # Where the progress bar's time goes, by step.
    spans = {"build": (0.0, 0.03), "features": (0.03, 0.45 if fine_tune else 0.85),
             "head": (0.45, 0.5) if fine_tune else (0.85, 0.95), "fine_tune": (0.5, 0.8),
             "refeature": (0.8, 0.95), "publish": (0.95, 1.0)}

    progress.plan(round_plan(settings, data, fine_tune))
    progress.phase(*spans["build"], "building the network", name="build")
    policy = precision.configure(settings.mixed_precision)
    warnings: list[str] = list(data.warnings)
    clf, feature_key, parent_id = build_classifier(settings, data, warnings)
    config = {
        "input_size": settings.input_size, "backbone_weights": clf.backbone_weights,
        "batch_size": settings.batch_size, "head_epochs": settings.head_epochs,
        "fine_tune_blocks": data.fine_tune_blocks if fine_tune else 0,
        "fine_tune_epochs": settings.fine_tune_epochs if fine_tune else 0,
        "warm_start_from": parent_id, "precision": policy, "classes": data.class_names,
        # Which pristine backbone this model descends from, for later warm starts.
        "backbone_key": (lineage_backbone_key(data.active) if parent_id else None) or feature_key,
    }
    progress.record(warnings=warnings, config=config)
    timings["build_s"] = time.perf_counter() - t0
    progress.check()

    # Each cell once (a trusted reference label puts a pool cell in both the
    # training set and the pool).
    image_ids = list(dict.fromkeys([i for i, _ in data.train + data.test] + data.pool))
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    progress.phase(*spans["features"], "reading cells", name="features")
    t = time.perf_counter()
    feats, ok, failures, timings["features_cached"] = cached_features(
        settings, clf, feature_key, data, image_ids, progress)
    timings["features_s"] = time.perf_counter() - t
    if failures:
        warnings.append(_unreadable_warning(settings, failures))
        progress.record(warnings=warnings)

    index_of = {cid: k for k, cid in enumerate(data.class_ids)}
    train_rows = np.array([row_of[i] for i, _ in data.train if ok[row_of[i]]], dtype=np.int64)
    y_all = np.array([index_of[c] for i, c in data.train if ok[row_of[i]]], dtype=np.int64)
    check_trainable(label_counts_of([(0, data.class_ids[k]) for k in y_all]), names,
                    data.min_per_class)
    if wants_validation(y_all):
        fit, val = stratified_validation_split(y_all, VALIDATION_FRACTION, SEED)
    else:
        fit, val = np.arange(len(y_all)), np.zeros(0, dtype=np.int64)
        warnings.append("Too few labels for a validation split: no early stopping, "
                        "and suggestions are not calibrated (temperature 1).")

    progress.phase(*spans["head"], "training the classifier head", name="head")
    t = time.perf_counter()
    history: dict[str, Any] = {}
    fine_tune_info: dict[str, Any] = {}
    try:
        head = clf.fit_head(
            feats[train_rows[fit]], y_all[fit], epochs=settings.head_epochs,
            batch_size=settings.batch_size, warm=parent_id is not None,
            validation=(feats[train_rows[val]], y_all[val]),
            progress=lambda ep, total, logs: progress(
                ep / max(total, 1), f"head: epoch {ep}/{total}, loss {logs.get('loss', 0):.3f}",
                force=True),
            should_stop=progress.cancelled,
        )
        history["head"] = head.history
        timings["head_s"] = time.perf_counter() - t

        if fine_tune and not len(val):
            warnings.append("Fine-tuning skipped: it needs a validation split to tell whether "
                            "it helped, and there are too few labels for one.")
        elif fine_tune:
            progress.phase(*spans["fine_tune"], "fine-tuning the top blocks", name="fine_tune")
            t = time.perf_counter()
            kept = fine_tune_if_better(settings, clf, data, image_ids, train_rows, y_all, fit,
                                       val, feats, progress, history, metrics_out=fine_tune_info)
            timings["fine_tune_s"] = time.perf_counter() - t
            if kept:
                # The backbone changed: its features are this attempt's own
                # (another attempt at the round never shares or overwrites them).
                feature_key = attempt_feature_key(round_id, progress.token)
                progress.phase(*spans["refeature"], "re-reading cells with the fine-tuned backbone",
                               name="refeature")
                t = time.perf_counter()
                feats, ok2, _, _ = cached_features(settings, clf, feature_key, data, image_ids,
                                                   progress)
                ok &= ok2
                timings["refeature_s"] = time.perf_counter() - t
            else:
                progress.skip("refeature")
                warnings.append(
                    "Fine-tuning did not improve the validation loss "
                    f"({fine_tune_info['val_loss_before']:.3f} before, "
                    f"{fine_tune_info['val_loss_after']:.3f} after); the head-only model was kept.")
    except TrainingCancelled as exc:
        # Stopped on request: by the admin, or because this attempt was superseded.
        if progress.superseded():
            raise AttemptSuperseded(round_id) from exc
        raise Cancelled() from exc

    progress.phase(*spans["publish"], "evaluating and ranking", name="publish")
    logits = clf.logits_features(feats)
    y_val, val_rows = y_all[val], train_rows[val]
    metrics: dict[str, Any] = {"history": history,
                               "epochs_run": len(history["head"].get("loss", []))}
    if fine_tune_info:
        metrics["fine_tune"] = fine_tune_info
    temperature = 1.0
    if len(val) >= MIN_VALIDATION_FOR_TEMPERATURE:
        temperature = calibration.fit_temperature(logits[val_rows], y_val)
    elif len(val):
        warnings.append(f"Only {len(val)} validation cells: suggestions are not calibrated.")
    if len(val):
        metrics["validation"] = {
            "n": int(len(val)), "temperature": temperature,
            "accuracy": float((logits[val_rows].argmax(1) == y_val).mean()),
            "ece_uncalibrated": calibration.expected_calibration_error(
                calibration.softmax(logits[val_rows]), y_val),
            "ece": calibration.expected_calibration_error(
                calibration.softmax(logits[val_rows], temperature), y_val),
        }
    test_rows = np.array([row_of[i] for i, _ in data.test if ok[row_of[i]]], dtype=np.int64)
    if len(test_rows):
        y_test = np.array([index_of[c] for i, c in data.test if ok[row_of[i]]])
        p_test = calibration.softmax(logits[test_rows], temperature)
        metrics["test"] = classification_metrics(y_test, p_test.argmax(1), data.class_names)
        metrics["test"]["ece"] = calibration.expected_calibration_error(p_test, y_test)
    else:
        warnings.append("The test split has no labeled cells; no test metrics.")
    fit_rows = train_rows[fit]
    metrics["train_accuracy"] = float((logits[fit_rows].argmax(1) == y_all[fit]).mean())

    # The labeled pool cells are scored too (their logits are here already): the
    # curator's queue lists final labels a confident model contradicts, and the
    # newest model is the one to ask.  The test split never gets suggestions.
    pool_ids = [i for i in dict.fromkeys(data.pool + [i for i, _ in data.train])
                if ok[row_of[i]]]
    pool_rows = np.array([row_of[i] for i in pool_ids], dtype=np.int64)
    probs = calibration.softmax(logits[pool_rows], temperature) if len(pool_rows) \
        else np.zeros((0, len(data.class_ids)), dtype=np.float32)

    progress.check()
    # Written under this attempt's own name: another attempt at the round (one
    # given up on and still running somewhere) never overwrites the file a
    # published version points at.
    artifact = attempt_artifact(data.project_id, round_id, progress.token)
    t = time.perf_counter()
    (settings.storage_dir / artifact).parent.mkdir(parents=True, exist_ok=True)
    published = False
    try:
        clf.save(settings.storage_dir / artifact)
        seen = np.flatnonzero(ok)
        embeddings.save(embeddings.embeddings_path(settings.storage_dir / artifact),
                        np.asarray(image_ids)[seen], embeddings.project(feats[seen]))
        timings["save_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        publish(settings, round_id, data.project_id, token=progress.token, version_values=dict(
            artifact_path=str(artifact), class_ids=data.class_ids, input_size=clf.input_size,
            backbone_weights=clf.backbone_weights, metrics=metrics, temperature=temperature,
            n_train=int(len(y_all)), config=config, feature_key=feature_key,
            parent_version_id=parent_id,
        ), pool_ids=pool_ids, probs=probs, round_values=dict(
            warnings=warnings, timings=timings, n_train=int(len(y_all)),
            n_test=int(len(test_rows)),
        ))
        published = True
    finally:
        if not published:
            remove_artifact(settings, artifact)
    next_review_round(settings, data.project_id)


def attempt_artifact(project_id: int, round_id: int, token: str | None) -> Path:
    """The model file of one attempt at a round, relative to the storage directory."""
    suffix = f"-{token[:12]}" if token else ""
    return Path("models") / f"project-{project_id}" / f"round-{round_id}{suffix}.keras"


def attempt_feature_key(round_id: int, token: str | None) -> str:
    """The feature-cache key of a backbone one attempt fine-tuned."""
    return f"round{round_id}-{token[:12]}" if token else f"round{round_id}"


def remove_artifact(settings: Settings, artifact: Path) -> None:
    """Drop an unpublished attempt's model, its sidecar and its embeddings."""
    from worker.ml import embeddings

    path = settings.storage_dir / artifact
    for f in (path, path.with_suffix(".json"), embeddings.embeddings_path(path)):
        f.unlink(missing_ok=True)


# Prior costs for the time-left estimate (worker/eta.py), on a CPU at 299 px; the
# round's own measurements replace them as it runs (a GPU is much faster).
FORWARD_S_PER_CELL_299 = 0.05
# A fine-tuning cell-epoch: augmentation, a forward pass and a backward pass
# through the unfrozen blocks.
FINE_TUNE_COST = 3.0
HEAD_S_PER_EPOCH = 0.05
HEAD_S_PER_SAMPLE_EPOCH = 2e-5


def round_plan(settings: Settings, data: RoundData, fine_tune: bool):
    """The round's phases as work to do, for the time-left estimate."""
    from .eta import Phase

    forward = FORWARD_S_PER_CELL_299 * (settings.input_size / 299) ** 2
    n_cells = len(set(i for i, _ in data.train + data.test) | set(data.pool))
    n_train = len(data.train)
    phases = [
        Phase("build", 1, 3.0, calibrates=False),
        Phase("features", n_cells, forward, kind="forward"),
        Phase("head", settings.head_epochs,
              HEAD_S_PER_EPOCH + n_train * HEAD_S_PER_SAMPLE_EPOCH),
    ]
    if fine_tune:
        phases += [
            # The epochs, then the validation cells' features once.
            Phase("fine_tune", settings.fine_tune_epochs * n_train + n_train * VALIDATION_FRACTION,
                  forward * FINE_TUNE_COST),
            Phase("refeature", n_cells, forward, kind="forward"),
        ]
    phases.append(Phase("publish", 1, 2.0 + n_cells * 1e-4, calibrates=False))
    return phases


def next_review_round(settings: Settings, project_id: int) -> None:
    """The model is published and the pool scored: freeze the next review queue.

    A failure here is recorded on the queue row and must not undo the round.
    """
    from .review_queue import build_review_queue

    try:
        build_review_queue(settings, project_id, trigger="round")
    except Exception:  # noqa: BLE001 - recorded on the queue row; the round stands
        log.warning("the review queue of project %s was not rebuilt", project_id, exc_info=True)


def label_counts_of(pairs: list[tuple[int, int]]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _, class_id in pairs:
        counts[class_id] = counts.get(class_id, 0) + 1
    return counts

