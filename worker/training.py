"""What a training round does, step by step (train_round runs these over one RoundState).

1. ``start``: gather the labels (models/labels.py decides which count), refuse a
   round that cannot learn, plan the phases for the time-left estimate.
2. ``build_network``: InceptionV3 -> GAP -> Dropout -> Dense, or warm-start from
   the active model.
3. ``read_features``: the head's input for every cell the round needs, for the
   project's feature sources (backbone features, cell descriptors or both,
   each through its cache: worker/head_inputs.py), standardised with the
   numbers the model stores (fitted now on a fresh model's cells).
4. ``split_labels`` and ``train_head``: phase 1, the head on cached features (a
   frozen base), fitted and calibrated by worker/ml/head.py's
   ``fit_calibrated_head`` (validation split, training, temperature, then the
   head refitted on every label unless phase 2 follows): the same function the
   simulator calls.
5. ``fine_tune_if_better``: phase 2 (when the project asks): unfreeze the top
   blocks, fine-tune on augmented images at a low rate, keep it only if the
   validation loss fell, then re-extract features with the new backbone (cached
   under this attempt's own key).
6. ``evaluate``: the head's temperature (fitted again on the validation split
   when fine-tuning changed the backbone), validation figures from the model that
   did not see those cells; metrics and calibration error on the
   test split; calibrated predictions for every
   undecided pool cell.
7. ``save_and_publish``: save the model under this attempt's name and publish
   version, predictions and results in one transaction (only while the attempt
   owns the round: worker/round_state.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from models import Image, ModelVersion, Project, Split, TrainingRound
from models.feature_sources import uses_backbone
from models.db import session_scope
from models.labels import labeled_images, unlabeled_pool
from models.settings import Settings

from .backbone import SEED, configured_key, pristine_key
from .backbone_choice import project_settings
from .launch import RoundError, check_trainable
from .head_inputs import version_sources
from .ml.head import MIN_VALIDATION_FOR_TEMPERATURE, VALIDATION_FRACTION
from .ml.head import temperature as head_temperature
from .publish import publish
from .round_state import AttemptSuperseded, Cancelled, Progress

log = logging.getLogger(__name__)


@dataclass
class RoundData:
    """Everything a round reads from the database, read once."""

    project_id: int
    class_ids: list[int]
    class_names: list[str]
    min_per_class: int
    fine_tune_blocks: int
    warm_start: bool
    feature_sources: str
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
            feature_sources=project.feature_sources,
            train=[(x.image_id, x.label_class_id) for x in train],
            test=[(x.image_id, x.label_class_id) for x in test],
            pool=[i for i, _ in pool],
            images=images,
            active=active,
            warnings=list(rnd.warnings or []),
        )


def configured_backbone_key(settings: Settings) -> str:
    """The pristine backbone the settings ask for now, without building it."""
    from worker.ml.weights import WeightsError

    try:
        return configured_key(settings.backbone_weights, settings.input_size)
    except WeightsError as exc:
        raise RoundError(str(exc)) from exc


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
        elif version_sources(active) != data.feature_sources:
            reason = (f"the feature sources changed ({version_sources(active)} -> "
                      f"{data.feature_sources})")
        elif active.input_size != settings.input_size:
            reason = f"the input size changed ({active.input_size} -> {settings.input_size})"
        elif (old_key is not None and uses_backbone(data.feature_sources)
              and old_key != configured_backbone_key(settings)):
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
            data.class_ids, settings.input_size, settings.backbone_weights, seed=SEED,
            sources=data.feature_sources)
    except WeightsError as exc:
        raise RoundError(str(exc)) from exc
    warnings.extend(weight_warnings)
    return clf, round_feature_key(clf, settings), None


def round_feature_key(clf, settings: Settings) -> str:
    """A fresh classifier's feature key: its pristine backbone's, or the descriptors'
    for a descriptors-only head (which has no backbone)."""
    if clf.has_image_input:
        return pristine_key(clf, settings.input_size)
    from worker.ml.descriptors import descriptor_key

    return descriptor_key("cell")


def cached_features(settings: Settings, clf, key: str, data: RoundData, image_ids: list[int],
                    progress: Progress):
    """The raw parts the head reads for ``image_ids`` (worker/head_inputs.py): from the
    caches, computing (and caching) the rest.

    Returns (Parts, failures as (image id, reason)).
    """
    from .head_inputs import read_parts

    counts = {}

    def missing(n: int) -> None:
        counts["missing"] = n
        progress.units(n)  # cached cells cost (next to) nothing

    backbone_key = key if clf.has_image_input else None
    parts = read_parts(
        settings.storage_dir / "features", clf.sources, backbone_key,
        [data.images[i][0] for i in image_ids],
        lambda rows: [settings.storage_dir / data.images[image_ids[r]][1] for r in rows],
        lambda: clf, settings.batch_size, on_missing=missing,
        progress=lambda done, total: progress(
            done / max(total, 1),
            f"reading cells: {done}/{total} ({len(image_ids) - counts['missing']} cached)"),
    )
    return parts, [(image_ids[r], why) for r, why in parts.failures]


def _unreadable_warning(settings: Settings, failed: list[tuple[int, str]]) -> str:
    """Name the unreadable cells as the user knows them: id and original file name."""
    with session_scope(settings.database_url) as s:
        names = dict(s.execute(select(Image.id, Image.original_name)
                               .where(Image.id.in_([i for i, _ in failed[:3]]))).all())
    examples = "; ".join(f"cell {i} ({names.get(i, '?')}): {why}" for i, why in failed[:3])
    return f"{len(failed)} image(s) could not be read and were skipped, e.g. {examples}"


@dataclass
class RoundState:
    """One round's state as its steps fill it in (train_round runs the steps in order)."""

    settings: Settings
    round_id: int
    progress: Progress
    data: RoundData
    fine_tune: bool
    t0: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # build_network
    clf: Any = None
    feature_key: str = ""
    parent_id: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    # read_features: each cell once (a trusted reference label puts a pool cell
    # in both the training set and the pool), its row in feats.
    image_ids: list[int] = field(default_factory=list)
    row_of: dict[int, int] = field(default_factory=dict)
    parts: Any = None  # the raw parts (worker/head_inputs.Parts); feats is the head input
    feats: np.ndarray | None = None
    ok: np.ndarray | None = None
    # split_labels
    index_of: dict[int, int] = field(default_factory=dict)
    train_rows: np.ndarray | None = None
    y_all: np.ndarray | None = None
    # train_head (the validation split and temperature come with the head), fine_tune_if_better
    fit: np.ndarray | None = None
    val: np.ndarray | None = None
    val_logits: np.ndarray | None = None
    temperature: float = 1.0
    history: dict[str, Any] = field(default_factory=dict)
    fine_tune_info: dict[str, Any] = field(default_factory=dict)
    # evaluate
    metrics: dict[str, Any] = field(default_factory=dict)
    n_test: int = 0
    pool_ids: list[int] = field(default_factory=list)
    probs: np.ndarray | None = None

    @property
    def names(self) -> dict[int, str]:
        return dict(zip(self.data.class_ids, self.data.class_names))

    def phase(self, name: str, message: str) -> None:
        self.progress.phase(*self.spans[name], message, name=name)

    @property
    def spans(self) -> dict[str, tuple[float, float]]:
        """Where the progress bar's time goes, by step."""
        ft = self.fine_tune
        return {"build": (0.0, 0.03), "features": (0.03, 0.45 if ft else 0.85),
                "head": (0.45, 0.5) if ft else (0.85, 0.95), "fine_tune": (0.5, 0.8),
                "refeature": (0.8, 0.95), "publish": (0.95, 1.0)}

    def train_paths(self) -> list[Path]:
        return [self.settings.storage_dir / self.data.images[self.image_ids[r]][1]
                for r in self.train_rows]


def train_round(settings: Settings, round_id: int, progress: Progress) -> None:
    from worker.ml.train import TrainingCancelled

    st = start(settings, round_id, progress)
    build_network(st)
    read_features(st)
    split_labels(st)
    try:
        train_head(st)
        fine_tune_if_better(st)
    except TrainingCancelled as exc:
        # Stopped on request: by the admin, or because this attempt was superseded.
        if progress.superseded():
            raise AttemptSuperseded(round_id) from exc
        raise Cancelled() from exc
    evaluate(st)
    progress.check()
    save_and_publish(st)
    next_review_round(settings, st.data.project_id)


def start(settings: Settings, round_id: int, progress: Progress) -> RoundState:
    """Read the round's data once; refuse a round that cannot learn; plan its phases."""
    data = load_round_data(settings, round_id)
    settings = project_settings(settings, data.project_id)  # the project's chosen backbone
    check_trainable(label_counts_of(data.train), dict(zip(data.class_ids, data.class_names)),
                    data.min_per_class)
    fine_tune = (data.fine_tune_blocks > 0 and settings.fine_tune_epochs > 0
                 and uses_backbone(data.feature_sources))
    st = RoundState(settings, round_id, progress, data, fine_tune, warnings=list(data.warnings))
    if data.fine_tune_blocks > 0 and not uses_backbone(data.feature_sources):
        st.warnings.append("Fine-tuning skipped: this project's head reads cell descriptors "
                           "only, so there is no backbone to fine-tune.")
    progress.plan(round_plan(settings, data, fine_tune))
    return st


def build_network(st: RoundState) -> None:
    from worker.ml import precision

    settings, data = st.settings, st.data
    st.phase("build", "building the network")
    policy = precision.configure(settings.mixed_precision)
    st.clf, st.feature_key, st.parent_id = build_classifier(settings, data, st.warnings)
    st.config = {
        "input_size": settings.input_size, "backbone_weights": st.clf.backbone_weights,
        "batch_size": settings.batch_size, "head_epochs": settings.head_epochs,
        "fine_tune_blocks": data.fine_tune_blocks if st.fine_tune else 0,
        "fine_tune_epochs": settings.fine_tune_epochs if st.fine_tune else 0,
        "warm_start_from": st.parent_id, "precision": policy, "classes": data.class_names,
        # Whether TensorFlow saw a GPU: what models/fine_tune_cost.py reads to pick
        # new projects' fine-tuning default (the precision alone can be forced).
        "gpu": precision.gpu_count() > 0,
        # Which pristine backbone this model descends from, for later warm starts.
        "backbone_key": (lineage_backbone_key(data.active) if st.parent_id else None)
        or st.feature_key,
        # What the head reads (worker/head_inputs.py): scoring and review read it back.
        "feature_sources": st.clf.sources,
    }
    if st.clf.sources != "backbone":
        from worker.ml.descriptors import DESCRIPTOR_VERSION

        # The descriptor input is only valid for descriptors of this version.
        st.config["descriptor_version"] = DESCRIPTOR_VERSION
    st.progress.record(warnings=st.warnings, config=st.config)
    st.timings["build_s"] = time.perf_counter() - st.t0
    st.progress.check()


def read_features(st: RoundState) -> None:
    data = st.data
    st.image_ids = list(dict.fromkeys([i for i, _ in data.train + data.test] + data.pool))
    st.row_of = {image_id: row for row, image_id in enumerate(st.image_ids)}
    st.phase("features", "reading cells")
    t = time.perf_counter()
    st.parts, failures = cached_features(st.settings, st.clf, st.feature_key, data,
                                         st.image_ids, st.progress)
    st.ok, st.timings["features_cached"] = st.parts.ok, st.parts.cached
    if st.parent_id is None:
        # A fresh model: each part's standardisation from the round's training and
        # pool cells (no labels used; the test split stays unseen), kept in the model.
        from .head_inputs import fitted_head_input

        fit_rows = [st.row_of[i] for i in dict.fromkeys(
            [i for i, _ in data.train] + data.pool) if st.ok[st.row_of[i]]]
        _, stats = fitted_head_input(st.clf.sources, st.parts, np.asarray(fit_rows, np.int64))
        st.clf.set_standardisation(stats)
    st.feats = st.clf.head_input(st.parts.parts)
    st.feats[~st.ok] = 0.0
    st.timings["features_s"] = time.perf_counter() - t
    if failures:
        st.warnings.append(_unreadable_warning(st.settings, failures))
        st.progress.record(warnings=st.warnings)


def split_labels(st: RoundState) -> None:
    """The readable training cells and their labels (class indices)."""
    data, ok, row_of = st.data, st.ok, st.row_of
    st.index_of = {cid: k for k, cid in enumerate(data.class_ids)}
    st.train_rows = np.array([row_of[i] for i, _ in data.train if ok[row_of[i]]],
                             dtype=np.int64)
    st.y_all = np.array([st.index_of[c] for i, c in data.train if ok[row_of[i]]],
                        dtype=np.int64)
    check_trainable(label_counts_of([(0, data.class_ids[k]) for k in st.y_all]), st.names,
                    data.min_per_class)


def train_head(st: RoundState) -> None:
    """Phase 1: the head on cached features (a frozen base), fitted and calibrated
    as the simulator does it (worker/ml/head.py), which also makes the validation split."""
    settings, progress = st.settings, st.progress
    st.phase("head", "training the classifier head")
    t = time.perf_counter()
    head = st.clf.fit_head(
        st.feats[st.train_rows], st.y_all, epochs=settings.head_epochs,
        seed=SEED, warm=st.parent_id is not None,
        progress=lambda ep, total, logs: progress(
            ep / max(total, 1), f"head: epoch {ep}/{total}, loss {logs.get('loss', 0):.3f}",
            force=True),
        should_stop=progress.cancelled,
        # Fine-tuning judges itself on the held-out cells: the head it starts
        # from must not have seen them.
        refit=not st.fine_tune,
    )
    st.fit, st.val, st.temperature = head.fit, head.val, head.temperature
    st.val_logits = head.val_logits
    if not len(st.val):
        st.warnings.append("Too few labels for a validation split: suggestions are not "
                           "calibrated (temperature 1).")
    st.history["head"] = head.history
    st.timings["head_s"] = time.perf_counter() - t


def fine_tune_if_better(st: RoundState) -> None:
    """Phase 2 (when the project asks), kept only if it lowers the validation loss
    below phase 1's; then the cells are read again with the new backbone.

    Early stopping picks the best fine-tuning epoch, but even that can be worse
    than the head alone (a small set, a randomly initialised backbone); then
    the phase-1 weights are put back.
    """
    from worker.ml import calibration

    if not st.fine_tune:
        return
    if not len(st.val):
        st.warnings.append("Fine-tuning skipped: it needs a validation split to tell whether "
                           "it helped, and there are too few labels for one.")
        return
    settings, clf, progress, data = st.settings, st.clf, st.progress, st.data
    fit, val, y_all = st.fit, st.val, st.y_all
    st.phase("fine_tune", "fine-tuning the top blocks")
    t = time.perf_counter()
    paths = st.train_paths()
    before = clf.model.get_weights()
    loss_before = calibration.nll(clf.logits_features(st.feats[st.train_rows[val]]),
                                  y_all[val], 1.0)
    # A two-input head keeps its descriptor input: each cell's cached raw descriptors.
    descriptors = st.parts.parts.get("descriptors")
    train_desc = descriptors[st.train_rows] if descriptors is not None else None
    st.history["fine_tune"] = clf.fine_tune(
        [paths[i] for i in fit], y_all[fit], [paths[i] for i in val], y_all[val],
        blocks=data.fine_tune_blocks, epochs=settings.fine_tune_epochs,
        batch_size=settings.batch_size, seed=SEED,
        train_descriptors=None if train_desc is None else train_desc[fit],
        val_descriptors=None if train_desc is None else train_desc[val],
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
    st.fine_tune_info.update(kept=bool(kept), blocks=data.fine_tune_blocks,
                             val_loss_before=float(loss_before),
                             val_loss_after=float(loss_after))
    st.timings["fine_tune_s"] = time.perf_counter() - t
    if not kept:
        progress.skip("refeature")
        st.warnings.append(
            "Fine-tuning did not improve the validation loss "
            f"({loss_before:.3f} before, {loss_after:.3f} after); the head-only model was kept.")
        return
    # The backbone changed: its features are this attempt's own (another
    # attempt at the round never shares or overwrites them).
    st.feature_key = attempt_feature_key(st.round_id, progress.token)
    st.phase("refeature", "re-reading cells with the fine-tuned backbone")
    t = time.perf_counter()
    st.parts, _ = cached_features(settings, clf, st.feature_key, data, st.image_ids, progress)
    st.ok &= st.parts.ok
    st.feats = clf.head_input(st.parts.parts)
    st.feats[~st.ok] = 0.0
    st.timings["refeature_s"] = time.perf_counter() - t


def evaluate(st: RoundState) -> None:
    """Temperature on validation, metrics on the test split, calibrated pool predictions."""
    from worker.ml import calibration
    from worker.ml.evaluate import classification_metrics

    data, ok, row_of = st.data, st.ok, st.row_of
    st.phase("publish", "evaluating and ranking")
    logits = st.clf.logits_features(st.feats)
    val, fit, y_all, train_rows = st.val, st.fit, st.y_all, st.train_rows
    y_val, val_rows = y_all[val], train_rows[val]
    metrics: dict[str, Any] = {"history": st.history,
                               "epochs_run": len(st.history["head"].get("loss", []))}
    if st.fine_tune_info:
        metrics["fine_tune"] = st.fine_tune_info
    temperature = st.temperature
    # Validation figures come from the head that did not see those cells: the
    # head fitted before the refit on all labels, or the fine-tuned model.
    val_logits = st.val_logits
    if st.fine_tune_info.get("kept"):
        # The backbone changed: the head's logits did too; the same rule again.
        val_logits = logits[val_rows]
        temperature = head_temperature(val_logits, y_val)
    if 0 < len(val) < MIN_VALIDATION_FOR_TEMPERATURE:
        st.warnings.append(f"Only {len(val)} validation cells: suggestions are not calibrated.")
    if len(val):
        metrics["validation"] = {
            "n": int(len(val)), "temperature": temperature,
            "accuracy": float((val_logits.argmax(1) == y_val).mean()),
            "ece_uncalibrated": calibration.expected_calibration_error(
                calibration.softmax(val_logits), y_val),
            "ece": calibration.expected_calibration_error(
                calibration.softmax(val_logits, temperature), y_val),
        }
    test_rows = np.array([row_of[i] for i, _ in data.test if ok[row_of[i]]], dtype=np.int64)
    if len(test_rows):
        y_test = np.array([st.index_of[c] for i, c in data.test if ok[row_of[i]]])
        p_test = calibration.softmax(logits[test_rows], temperature)
        metrics["test"] = classification_metrics(y_test, p_test.argmax(1), data.class_names)
        metrics["test"]["ece"] = calibration.expected_calibration_error(p_test, y_test)
    else:
        st.warnings.append("The test split has no labeled cells; no test metrics.")
    fit_rows = train_rows[fit]
    metrics["train_accuracy"] = float((logits[fit_rows].argmax(1) == y_all[fit]).mean())

    # The labeled pool cells are scored too (their logits are here already): the
    # curator's queue lists final labels a confident model contradicts, and the
    # newest model is the one to ask.  The test split never gets suggestions.
    st.pool_ids = [i for i in dict.fromkeys(data.pool + [i for i, _ in data.train])
                   if ok[row_of[i]]]
    pool_rows = np.array([row_of[i] for i in st.pool_ids], dtype=np.int64)
    st.probs = calibration.softmax(logits[pool_rows], temperature) if len(pool_rows) \
        else np.zeros((0, len(data.class_ids)), dtype=np.float32)
    st.temperature, st.metrics, st.n_test = temperature, metrics, int(len(test_rows))


def save_and_publish(st: RoundState) -> None:
    """Save the model atomically and publish version, predictions and results at once."""
    from worker.ml import embeddings

    settings, data, clf = st.settings, st.data, st.clf
    # Written under this attempt's own name: another attempt at the round (one
    # given up on and still running somewhere) never overwrites the file a
    # published version points at.
    artifact = attempt_artifact(data.project_id, st.round_id, st.progress.token)
    t = time.perf_counter()
    (settings.storage_dir / artifact).parent.mkdir(parents=True, exist_ok=True)
    published = False
    try:
        clf.save(settings.storage_dir / artifact)
        seen = np.flatnonzero(st.ok)
        embeddings.save(embeddings.embeddings_path(settings.storage_dir / artifact),
                        np.asarray(st.image_ids)[seen], embeddings.project(st.feats[seen]))
        st.timings["save_s"] = time.perf_counter() - t
        st.timings["total_s"] = time.perf_counter() - st.t0
        n_train = int(len(st.y_all))
        publish(settings, st.round_id, data.project_id, token=st.progress.token,
                version_values=dict(
                    artifact_path=str(artifact), class_ids=data.class_ids,
                    input_size=clf.input_size, backbone_weights=clf.backbone_weights,
                    metrics=st.metrics, temperature=st.temperature, n_train=n_train,
                    config=st.config, feature_key=st.feature_key,
                    parent_version_id=st.parent_id),
                pool_ids=st.pool_ids, probs=st.probs,
                round_values=dict(warnings=st.warnings, timings=st.timings, n_train=n_train,
                                  n_test=st.n_test))
        published = True
    finally:
        if not published:
            remove_artifact(settings, artifact)


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
# Cell descriptors of one uncached cell (docs/benchmarks.md, "Cell descriptors").
DESCRIPTORS_S_PER_CELL = 0.03
HEAD_S_PER_SAMPLE_EPOCH = 2e-5


def round_plan(settings: Settings, data: RoundData, fine_tune: bool):
    """The round's phases as work to do, for the time-left estimate."""
    from .eta import Phase

    forward = FORWARD_S_PER_CELL_299 * (settings.input_size / 299) ** 2 \
        if uses_backbone(data.feature_sources) else 0.0
    if data.feature_sources != "backbone":
        forward += DESCRIPTORS_S_PER_CELL
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

