"""Training rounds as the worker runs them (worker.rounds.run_round on real databases,
real InceptionV3 at 75 px with random weights): two-phase fine-tuning, the feature
cache, warm starts, calibration, cancelling, bad weights files, one round at a time
per project, and progress with an ETA."""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from models import (
    Image, LabelClass, ModelVersion, Prediction, Project, RoundStatus, Split, TrainingRound,
    utcnow,
)
from models.db import get_sessionmaker, session_scope
from models.settings import load_settings
from tests.helpers import DEMO_DIR, LoggedIn, add_round, base_env, make_user
from webapp.bootstrap import create_project
from webapp.ingest import import_path
from worker.launch import RoundBusy, cancel_round, create_round
from worker.rounds import Cancelled, Progress, finish, run_round

TWO = ["lymphocyte", "neutrophil"]
FIVE = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
UNLABELED_FROM = "platelet"  # a class none of the projects here labels


# --- helpers ---------------------------------------------------------------------------------

def _settings(tmp_path: Path, url: str, **extra: str):
    """Small and quick: 3 head epochs, 1 fine-tuning epoch (for projects that ask)."""
    env = {"HEMALOOP_HEAD_EPOCHS": "3", "HEMALOOP_FINE_TUNE_EPOCHS": "1", **extra}
    return load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=url, **env))


def _copy(dest: Path, cls: str, start: int, stop: int) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((DEMO_DIR / cls).iterdir())[start:stop]:
        shutil.copy(f, dest / f.name)


def make_project(settings, tmp_path: Path, name: str, classes: list[str], per_class: int, *,
                 test_per_class: int = 0, unlabeled: int = 0, fine_tune_blocks: int = 0,
                 **kw) -> int:
    """Real demo cells: ``per_class`` reference-labeled pool cells of each class (trusted
    for training), ``test_per_class`` more in the test split, and ``unlabeled`` cells
    without a label (platelets) to rank."""
    root = tmp_path / f"src-{name}"
    for cls in classes:
        _copy(root / f"{name}-train" / cls, cls, 0, per_class)
        if test_per_class:
            _copy(root / f"{name}-test" / cls, cls, per_class, per_class + test_per_class)
    if unlabeled:
        _copy(root / f"{name}-unlabeled", UNLABELED_FROM, 0, unlabeled)
    # These tests are about the backbone (its cache, weights files, fine-tuning);
    # tests/test_feature_sources.py runs rounds on descriptors and both.
    kw.setdefault("feature_sources", "backbone")
    with session_scope(settings.database_url) as s:
        project = create_project(s, name, "pbc8", test_share=0.0, train_on_reference=True,
                                 fine_tune_blocks=fine_tune_blocks, **kw)
        for folder in sorted(root.iterdir()):
            report = import_path(s, settings.storage_dir, project, folder,
                                 max_pixels=settings.max_image_pixels)
            assert not report.rejected and report.imported == len(list(folder.rglob("*.*")))
        s.execute(update(Image).where(Image.source == f"{name}-test").values(split=Split.TEST))
        return project.id


def new_round(settings, project_id: int, trigger: str = "cli") -> int:
    with session_scope(settings.database_url) as s:
        return create_round(s, s.get(Project, project_id), trigger=trigger).id


def get_round(settings, round_id: int) -> TrainingRound:
    with session_scope(settings.database_url) as s:
        return s.get(TrainingRound, round_id)


def version_of(settings, round_id: int) -> ModelVersion | None:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(ModelVersion).where(ModelVersion.round_id == round_id))


def run(settings, project_id: int, **kw) -> tuple[TrainingRound, ModelVersion | None]:
    """Create a round the admin's way and run it as the worker would."""
    round_id = new_round(settings, project_id)
    status = run_round(settings, round_id, **kw)
    rnd = get_round(settings, round_id)
    assert rnd.status == status
    return rnd, version_of(settings, round_id)


def active_versions(settings, project_id: int) -> list[int]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(ModelVersion.id).where(
            ModelVersion.project_id == project_id, ModelVersion.is_active)))


def image_shas(settings, project_id: int, split: Split | None = None) -> dict[int, str]:
    with session_scope(settings.database_url) as s:
        q = select(Image.id, Image.sha256).where(Image.project_id == project_id)
        if split is not None:
            q = q.where(Image.split == split)
        return dict(s.execute(q.order_by(Image.id)).all())




def wait_until(predicate, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)


def pristine_key(input_size: int = 75) -> str:
    import tensorflow as tf

    from worker.ml.feature_store import backbone_key
    from worker.training import SEED

    return backbone_key(None, input_size, seed=SEED, tf_version=tf.__version__)


def cached(settings, key: str, shas: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from worker.ml.feature_store import FeatureStore
    from worker.ml.network import FEATURE_DIM

    return FeatureStore(settings.storage_dir / "features", key).get_many(shas, FEATURE_DIM)


# --- calibration, the feature cache and warm starts ------------------------------------------

@pytest.mark.slow
def test_rounds_calibrate_cache_features_and_warm_start(tmp_path, sqlite_url):
    """Three head-only rounds on one project: the first computes every cell's features
    and fits a temperature; the second reads them all back and warm-starts from the
    first model; the third (after a class was added) reads them back too but may not
    warm-start."""
    from worker.ml import calibration
    from worker.ml.backend import CellClassifier

    settings = _settings(tmp_path, sqlite_url)
    # 10 labels in each of 5 classes: 2 of each held out for validation (10 in all,
    # enough to fit a temperature); 2 test cells per class; 4 cells nobody labeled.
    pid = make_project(settings, tmp_path, "cal", FIVE, 10, test_per_class=2, unlabeled=4)
    shas = image_shas(settings, pid)
    assert len(shas) == 64

    r1, v1 = run(settings, pid)
    assert r1.status == RoundStatus.SUCCEEDED, r1.error
    assert (r1.n_train, r1.n_test, r1.n_scored) == (50, 10, 54)
    assert not [w for w in r1.warnings if "calibrated" in w], r1.warnings
    assert r1.config["fine_tune_blocks"] == 0 and "fine_tune" not in v1.metrics["history"]
    assert r1.config["warm_start_from"] is None and v1.parent_version_id is None

    validation = v1.metrics["validation"]
    t = v1.temperature
    assert validation["n"] == 10 and validation["temperature"] == t
    assert calibration.T_MIN <= t <= calibration.T_MAX and t != 1.0
    assert 0.0 <= validation["ece"] <= 1.0 and 0.0 <= validation["ece_uncalibrated"] <= 1.0
    test = v1.metrics["test"]
    assert test["n"] == 10 and 0.0 <= test["ece"] <= 1.0
    assert len(test["confusion_matrix"]) == 8

    # Every cell's pristine-backbone features are in the cache now.
    key = pristine_key()
    assert v1.feature_key == key and r1.timings["features_cached"] == 0
    feats, found = cached(settings, key, list(shas.values()))
    assert found.all()

    # Suggestions are the calibrated probabilities softmax(logits / T) of the saved model.
    with session_scope(settings.database_url) as s:
        predictions = {p.image_id: p for p in s.scalars(
            select(Prediction).where(Prediction.model_version_id == v1.id))}
    pool = sorted(predictions)
    assert len(pool) == 54 and not set(pool) & set(image_shas(settings, pid, Split.TEST))
    clf = CellClassifier.load(settings.storage_dir / v1.artifact_path)
    rows = [list(shas).index(i) for i in pool]
    logits = clf.logits_features(feats[rows])
    stored = np.array([[predictions[i].probabilities[str(c)] for c in v1.class_ids]
                       for i in pool])
    np.testing.assert_allclose(stored, calibration.softmax(logits, t), atol=1e-5)
    assert np.abs(stored - calibration.softmax(logits)).max() > 1e-3  # T really applied
    np.testing.assert_allclose([predictions[i].confidence for i in pool], stored.max(1),
                               atol=1e-5)
    assert [predictions[i].predicted_class_id for i in pool] == \
        [v1.class_ids[k] for k in stored.argmax(1)]

    # Round 2: all features from the cache, warm-started from model 1.
    r2, v2 = run(settings, pid)
    assert r2.status == RoundStatus.SUCCEEDED, r2.error
    assert r2.timings["features_cached"] == 64
    assert r2.config["warm_start_from"] == v1.id and v2.parent_version_id == v1.id
    assert v2.feature_key == key
    assert not [w for w in r2.warnings if "warm-started" in w], r2.warnings
    assert active_versions(settings, pid) == [v2.id]

    # A class is added: the old head has no output for it, so no warm start; the
    # backbone is the same, so its features still come from the cache.
    with session_scope(settings.database_url) as s:
        s.add(LabelClass(project_id=pid, position=8, name="smudge", hotkey="9",
                         colour="#000000"))
    r3, v3 = run(settings, pid)
    assert r3.status == RoundStatus.SUCCEEDED, r3.error
    assert (f"Not warm-started from model v{v2.id}: the project's classes changed; trained "
            "from the backbone weights instead.") in r3.warnings
    assert r3.config["warm_start_from"] is None and v3.parent_version_id is None
    assert len(v3.class_ids) == 9 and r3.config["classes"][-1] == "smudge"
    assert r3.timings["features_cached"] == 64
    assert active_versions(settings, pid) == [v3.id]

    # The input size changed: no warm start either (checked on the step itself).
    from worker.training import build_classifier, load_round_data

    bigger = _settings(tmp_path, sqlite_url, HEMALOOP_INPUT_SIZE="80")
    data = load_round_data(bigger, r3.id)
    warnings: list[str] = []
    clf80, key80, parent = build_classifier(bigger, data, warnings)
    assert parent is None and clf80.input_size == 80 and key80 == pristine_key(80)
    assert warnings == [f"Not warm-started from model v{v3.id}: the input size changed "
                        "(75 -> 80); trained from the backbone weights instead."]
    # A project that does not want warm starts gets a fresh network without a warning.
    warnings = []
    _, key75, parent = build_classifier(settings, dataclasses.replace(data, warm_start=False),
                                        warnings)
    assert parent is None and key75 == key and warnings == []


@pytest.mark.slow
def test_new_backbone_weights_are_not_hidden_by_a_warm_start(tmp_path, sqlite_url):
    """The active model was trained from random initialisation; then the admin provides
    a weights file (or, with 'auto', drops ImageNet's file into the Keras cache).  A warm
    start from the active model would carry the old random backbone forward for ever and
    the new weights would never be used: the round must start from the new weights and
    say why it did not warm-start."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from worker.ml.backend import CellClassifier
    from worker.training import build_classifier, load_round_data

    settings = _settings(tmp_path, sqlite_url)
    pid = make_project(settings, tmp_path, "bw", TWO, 1)
    round_id = new_round(settings, pid)
    with session_scope(settings.database_url) as s:
        class_ids = [c.id for c in s.get(Project, pid).classes]
    # The active model, saved as a round saves it: random init.
    old, _ = CellClassifier.create(class_ids, 75, "none", seed=0)
    artifact = Path("models") / f"project-{pid}" / f"round-{round_id}.keras"
    (settings.storage_dir / artifact).parent.mkdir(parents=True)
    old.save(settings.storage_dir / artifact)
    with session_scope(settings.database_url) as s:
        s.execute(update(TrainingRound).where(TrainingRound.id == round_id)
                  .values(status=RoundStatus.SUCCEEDED))
        s.add(ModelVersion(project_id=pid, round_id=round_id, artifact_path=str(artifact),
                           class_ids=class_ids, input_size=75, backbone_weights="none",
                           feature_key=pristine_key(), is_active=True))
    # The new weights: a valid InceptionV3-without-top file (other values than random init).
    weights = tmp_path / "backbone.h5"
    donor, _ = CellClassifier.create(class_ids, 75, "none", seed=7)
    with h5py.File(weights, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, donor.model.get_layer("backbone"))

    configured = _settings(tmp_path, sqlite_url, HEMALOOP_BACKBONE_WEIGHTS=str(weights))
    data = load_round_data(configured, round_id)
    assert data.active is not None and data.active.backbone_weights == "none"
    warnings: list[str] = []
    clf, key, parent = build_classifier(configured, data, warnings)
    assert parent is None, "warm-started from a model trained on other backbone weights"
    assert clf.backbone_weights == configured.backbone_weights and key.startswith("file-")
    assert any(f"Not warm-started from model v{data.active.id}" in w for w in warnings)


# --- phase 2 ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_fine_tuning_round(tmp_path, sqlite_url):
    """fine_tune_blocks > 0: the top block is fine-tuned after the head, the cells are
    read again with the new backbone and cached under the round's own key, and the saved
    model is the fine-tuned one."""
    from worker.ml.backend import CellClassifier

    settings = _settings(tmp_path, sqlite_url)
    pid = make_project(settings, tmp_path, "ft", TWO, 10, test_per_class=1, unlabeled=2,
                       fine_tune_blocks=1)
    rnd, version = run(settings, pid)
    assert rnd.status == RoundStatus.SUCCEEDED, rnd.error
    assert rnd.config["fine_tune_blocks"] == 1 and rnd.config["fine_tune_epochs"] == 1
    assert version.config == rnd.config
    # Whether TensorFlow saw a GPU, recorded for the fine-tuning default.
    import tensorflow as tf

    assert rnd.config["gpu"] is (len(tf.config.list_physical_devices("GPU")) > 0)
    fine = version.metrics["history"]["fine_tune"]
    assert len(fine["loss"]) == 1 and len(fine["val_loss"]) == 1
    assert {"head_s", "fine_tune_s", "refeature_s"} <= set(rnd.timings)
    # 20 labels: 4 held out, too few to fit a temperature.
    assert "Only 4 validation cells: suggestions are not calibrated." in rnd.warnings
    assert version.temperature == 1.0 and version.metrics["validation"]["temperature"] == 1.0

    shas = image_shas(settings, pid)
    pristine, found = cached(settings, pristine_key(), list(shas.values()))
    assert found.all()  # phase 1 ran on the pristine backbone's features
    info = version.metrics["fine_tune"]
    assert set(info) >= {"kept", "val_loss_before", "val_loss_after"}
    # Phase 2 stays only when it lowered the validation loss; either way the
    # saved model and its feature key must say which backbone it has.
    assert info["kept"] == (info["val_loss_after"] < info["val_loss_before"])
    if info["kept"]:
        # The key names this round and its attempt (another attempt never shares it).
        assert version.feature_key == f"round{rnd.id}-{rnd.attempt_token[:12]}"
        tuned, found = cached(settings, version.feature_key, list(shas.values()))
        assert found.all()
        assert not np.array_equal(tuned, pristine)
    else:
        assert version.feature_key == pristine_key()
        assert any("fine-tun" in w.lower() for w in rnd.warnings)
        tuned = pristine

    with session_scope(settings.database_url) as s:
        paths = [settings.storage_dir / p for p in s.scalars(
            select(Image.storage_path).where(Image.project_id == pid).order_by(Image.id))]
    clf = CellClassifier.load(settings.storage_dir / version.artifact_path)
    assert not clf.model.get_layer("backbone").trainable
    features, ok = clf.features(paths, batch_size=32)
    assert ok.all()
    np.testing.assert_allclose(features, tuned, rtol=1e-4, atol=1e-5)


# --- cancelling ------------------------------------------------------------------------------

def test_cancelled_queued_round_is_a_no_op_for_the_worker(settings, tmp_path):
    pid = make_project(settings, tmp_path, "q", TWO, 1)
    with session_scope(settings.database_url) as s:
        rnd = create_round(s, s.get(Project, pid), trigger="admin")
        assert cancel_round(s, rnd)
        round_id = rnd.id
    rnd = get_round(settings, round_id)
    assert rnd.status == RoundStatus.CANCELLED and rnd.phase == "cancelled"

    assert run_round(settings, round_id, worker="w") == RoundStatus.CANCELLED
    rnd = get_round(settings, round_id)
    assert rnd.status == RoundStatus.CANCELLED and rnd.phase == "cancelled"
    assert rnd.worker is None and rnd.started_at is None and rnd.attempts == 0
    assert version_of(settings, round_id) is None
    with session_scope(settings.database_url) as s:
        assert not cancel_round(s, s.get(TrainingRound, round_id))  # already finished
        # The project is free for the next round.
        assert create_round(s, s.get(Project, pid), trigger="admin").status == RoundStatus.QUEUED


@pytest.mark.slow
def test_admin_cancels_a_running_round(app, client, settings, tmp_path):
    pid = make_project(settings, tmp_path, "c", TWO, 3, unlabeled=2)
    r1, v1 = run(settings, pid)
    assert r1.status == RoundStatus.SUCCEEDED, r1.error
    # Few labels: no validation split, so no temperature either.
    assert ("Too few labels for a validation split: suggestions are not calibrated "
            "(temperature 1).") in r1.warnings
    assert v1.temperature == 1.0 and "validation" not in v1.metrics

    make_user(settings, "boss", "admin")
    admin = LoggedIn(client, "boss")
    # The cancel arrives while the round runs: its network, features, head and model
    # save take seconds (the head's epochs are only a bound on its convex fit).
    slow = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url,
                                  HEMALOOP_HEAD_EPOCHS="1000"))
    round_id = new_round(settings, pid)
    outcome = {}
    worker = threading.Thread(
        target=lambda: outcome.update(status=run_round(slow, round_id, worker="thread@test")))
    worker.start()
    try:
        wait_until(lambda: get_round(settings, round_id).status != RoundStatus.QUEUED)
        response = admin.post(f"/admin/rounds/{round_id}/cancel")
    finally:
        worker.join(timeout=600)
    assert not worker.is_alive()
    assert response.status_code == 200, response.text
    assert 'data-status="cancelled"' in response.text

    assert outcome["status"] == RoundStatus.CANCELLED
    rnd = get_round(settings, round_id)
    assert rnd.status == RoundStatus.CANCELLED and rnd.phase == "cancelled"
    assert rnd.worker == "thread@test" and rnd.finished_at is not None
    assert rnd.eta_seconds is None
    assert version_of(settings, round_id) is None
    assert active_versions(settings, pid) == [v1.id]  # the old model still serves

    again = admin.post(f"/admin/rounds/{round_id}/cancel")
    assert again.status_code == 409 and f"Round {round_id} has already cancelled" in again.text


def test_cancel_does_not_overwrite_a_round_that_finished_meanwhile(settings):
    """The admin's page loaded the round while it ran; the worker finished (published a
    model) before the cancel arrived.  The finished round must stay finished: a round
    marked 'cancelled' whose model is active would contradict itself.  (On PostgreSQL
    the window is the whole publishing transaction: the cancel waits for its row lock,
    then overwrites 'succeeded'.)"""
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    now = utcnow()
    round_id = add_round(settings, pid, status=RoundStatus.RUNNING, worker="w",
                         started_at=now, heartbeat_at=now, phase="evaluating")
    admin_session = get_sessionmaker(settings.database_url)()
    try:
        rnd = admin_session.get(TrainingRound, round_id)
        assert rnd.status == RoundStatus.RUNNING
        finish(settings, round_id, status=RoundStatus.SUCCEEDED, phase="done", progress=1.0)
        cancelled = cancel_round(admin_session, rnd)
    finally:
        admin_session.close()
    assert get_round(settings, round_id).status == RoundStatus.SUCCEEDED
    assert not cancelled


def test_a_cancelling_round_whose_worker_died_gets_its_end_written(settings):
    """Cancelled while running, then the worker was killed before it noticed: the round
    is cancelled already, and the lost-round sweep writes its end instead of leaving it
    'cancelling' for ever."""
    from worker.rounds import fail_lost_rounds

    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    long_ago = utcnow() - timedelta(hours=2)
    round_id = add_round(settings, pid, status=RoundStatus.RUNNING, worker="w",
                         started_at=long_ago, heartbeat_at=long_ago, phase="features")
    with session_scope(settings.database_url) as s:
        assert cancel_round(s, s.get(TrainingRound, round_id))
    rnd = get_round(settings, round_id)
    assert rnd.phase == "cancelling" and rnd.finished_at is None
    assert fail_lost_rounds(settings) == 0  # not lost: cancelled; only its end is written
    rnd = get_round(settings, round_id)
    assert rnd.status == RoundStatus.CANCELLED and rnd.phase == "cancelled"
    assert rnd.finished_at is not None


# --- bad weights files -----------------------------------------------------------------------

@pytest.mark.slow
def test_weights_file_that_is_not_inceptionv3_fails_the_round_naming_it(tmp_path, sqlite_url):
    import h5py
    import keras

    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="tiny")])
    keras_file = tmp_path / "tiny.weights.h5"
    tiny.save_weights(keras_file)
    legacy_file = tmp_path / "not-inception.h5"  # the legacy layout Keras' own file uses
    with h5py.File(legacy_file, "w") as f:
        f.attrs["layer_names"] = np.array([b"dense"])
        f.create_group("dense").attrs["weight_names"] = np.array([b"dense/kernel:0"])
        f["dense"].create_dataset("dense/kernel:0", data=np.zeros((4, 3), np.float32))
    pid = None
    for weights in (keras_file, legacy_file):
        settings = _settings(tmp_path, sqlite_url, HEMALOOP_BACKBONE_WEIGHTS=str(weights))
        if pid is None:
            pid = make_project(settings, tmp_path, "w", TWO, 1)
        rnd, version = run(settings, pid)
        assert rnd.status == RoundStatus.FAILED and rnd.phase == "failed"
        assert rnd.error.startswith(f"Backbone weights file {settings.backbone_weights} does "
                                    "not fit an InceptionV3 without top"), rnd.error
        assert "Traceback" not in rnd.error and version is None

    # A file that disappears after start-up is named too.
    gone = tmp_path / "gone.h5"
    gone.write_bytes(b"x")
    settings = _settings(tmp_path, sqlite_url, HEMALOOP_BACKBONE_WEIGHTS=str(gone))
    gone.unlink()
    rnd, version = run(settings, pid)
    assert rnd.status == RoundStatus.FAILED and version is None
    assert rnd.error == f"Backbone weights file {settings.backbone_weights} does not exist."


# --- one round at a time ---------------------------------------------------------------------

def test_one_round_at_a_time_per_project(settings, tmp_path):
    pid = make_project(settings, tmp_path, "busy", TWO, 1)
    other = make_project(settings, tmp_path, "other", TWO, 1)
    with session_scope(settings.database_url) as s:
        first = create_round(s, s.get(Project, pid), trigger="admin")
        assert first.status == RoundStatus.QUEUED and first.labels_at_start == 2
        with pytest.raises(RoundBusy, match=f"Round {first.id} is already queued"):
            create_round(s, s.get(Project, pid), trigger="schedule")
        # Another project is not held up.
        create_round(s, s.get(Project, other), trigger="admin")
        first_id = first.id

    # The database itself refuses a second queued or running round for the project.
    for status in (RoundStatus.QUEUED, RoundStatus.RUNNING):
        with pytest.raises(IntegrityError):
            add_round(settings, pid, status=status)

    with session_scope(settings.database_url) as s:
        s.execute(update(TrainingRound).where(TrainingRound.id == first_id)
                  .values(status=RoundStatus.RUNNING))
    with session_scope(settings.database_url) as s:
        with pytest.raises(RoundBusy, match="already running"):
            create_round(s, s.get(Project, pid), trigger="admin")

    # Finished rounds, however many, do not block the next one.
    finish(settings, first_id, status=RoundStatus.SUCCEEDED)
    for status in (RoundStatus.FAILED, RoundStatus.CANCELLED, RoundStatus.FAILED):
        add_round(settings, pid, status=status)
    with session_scope(settings.database_url) as s:
        nxt = create_round(s, s.get(Project, pid), trigger="admin")
        assert nxt.status == RoundStatus.QUEUED
        active = s.scalar(select(func.count(TrainingRound.id)).where(
            TrainingRound.project_id == pid,
            TrainingRound.status.in_([RoundStatus.QUEUED, RoundStatus.RUNNING])))
        assert active == 1


# --- progress --------------------------------------------------------------------------------

def test_progress_writes_phase_fraction_and_eta(settings):
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    started = utcnow() - timedelta(seconds=1)
    round_id = add_round(settings, pid, status=RoundStatus.RUNNING, started_at=started,
                         worker="w")
    progress = Progress(settings, round_id)

    progress.phase(0.0, 0.1, "reading cells")
    rnd = get_round(settings, round_id)
    assert (rnd.progress, rnd.phase, rnd.eta_seconds) == (0.0, "reading cells", None)
    assert rnd.heartbeat_at is not None

    progress(0.4, "reading cells: 4/10", force=True)  # 4 % of the round: too early for an ETA
    rnd = get_round(settings, round_id)
    assert rnd.progress == pytest.approx(0.04) and rnd.phase == "reading cells: 4/10"
    assert rnd.eta_seconds is None

    progress(1.0, "reading cells: 10/10", force=True)  # 10 %
    rnd = get_round(settings, round_id)
    assert rnd.progress == pytest.approx(0.1)
    assert rnd.eta_seconds is not None and rnd.eta_seconds >= 0

    progress.phase(0.5, 0.9, "fine-tuning")
    progress(0.5, "x" * 300, force=True)
    rnd = get_round(settings, round_id)
    assert rnd.progress == pytest.approx(0.7) and rnd.phase == "x" * 200
    assert rnd.eta_seconds is not None and rnd.eta_seconds >= 0
    progress(7.0, "past the end", force=True)  # clamped to the phase's end
    assert get_round(settings, round_id).progress == pytest.approx(0.9)
    assert get_round(settings, round_id).status == RoundStatus.RUNNING

    assert not progress.cancelled()
    progress.check()
    with session_scope(settings.database_url) as s:
        assert cancel_round(s, s.get(TrainingRound, round_id))
    assert progress.cancelled()
    with pytest.raises(Cancelled):
        progress.check()


# --- attempts: only the attempt that owns the row writes -------------------------------------

def _hand_on(settings, round_id: int, worker: str) -> str:
    """What recovery and the next delivery do: the round is queued again with its
    token cleared, then another attempt claims it with a new token."""
    from worker.round_state import claim

    with session_scope(settings.database_url) as s:
        s.execute(update(TrainingRound).where(TrainingRound.id == round_id)
                  .values(status=RoundStatus.QUEUED, attempt_token=None))
    token = claim(settings, round_id, worker)
    assert token
    return token


def test_a_superseded_attempt_cannot_write_progress_end_or_model(settings):
    """Issue 11: an attempt given up on (its round handed to another attempt) is
    refused every write: progress, heartbeat, record, finish and publish."""
    from worker.publish import publish
    from worker.round_state import AttemptSuperseded, Heartbeat, claim, record

    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    round_id = add_round(settings, pid)
    old = claim(settings, round_id, "celery@first")
    assert old and claim(settings, round_id, "celery@again") is None  # claimed once
    stale = Progress(settings, round_id, old)
    stale.phase(0.0, 0.5, "reading cells")  # still its own: written
    assert get_round(settings, round_id).phase == "reading cells"

    new = _hand_on(settings, round_id, "celery@second")
    assert new != old
    current = Progress(settings, round_id, new)
    current.phase(0.0, 0.5, "training the classifier head")
    before = get_round(settings, round_id)
    assert (before.status, before.attempt_token, before.attempts) == (
        RoundStatus.RUNNING, new, 2)

    with pytest.raises(AttemptSuperseded):
        stale(0.9, "stale progress", force=True)
    with pytest.raises(AttemptSuperseded):
        stale.check()
    assert stale.cancelled()  # what the training loops ask: stop
    with pytest.raises(AttemptSuperseded):
        record(settings, round_id, old, warnings=["from the stale attempt"])
    assert not finish(settings, round_id, old, status=RoundStatus.FAILED, error="stale")
    with pytest.raises(AttemptSuperseded):
        publish(settings, round_id, pid, token=old, version_values=dict(
            artifact_path="models/x.keras", class_ids=[1, 2], input_size=75,
            backbone_weights="none"), pool_ids=[], probs=np.zeros((0, 2)), round_values={})
    # A heartbeat thread of the stale attempt notices too, and stops.
    beats = Progress(settings, round_id, old)
    with Heartbeat(beats, 0.05):
        assert beats.lost.wait(5)

    after = get_round(settings, round_id)
    assert (after.status, after.phase, after.progress, after.warnings, after.error,
            after.finished_at, after.attempt_token) == (
        before.status, before.phase, before.progress, before.warnings, before.error,
        before.finished_at, new)
    assert version_of(settings, round_id) is None

    # The attempt that owns the row still writes, and publishes.
    current(1.0, "nearly done", force=True)
    current.check()
    publish(settings, round_id, pid, token=new, version_values=dict(
        artifact_path="models/x.keras", class_ids=[1, 2], input_size=75,
        backbone_weights="none"), pool_ids=[], probs=np.zeros((0, 2)), round_values={})
    assert get_round(settings, round_id).status == RoundStatus.SUCCEEDED
    assert version_of(settings, round_id) is not None


def test_recovery_hands_on_only_stale_rounds_and_revokes_the_lost_attempt(settings):
    from worker.rounds import fail_lost_rounds
    from worker.round_state import AttemptSuperseded, claim

    with session_scope(settings.database_url) as s:
        pid = create_project(s, "p", "pbc8").id
    round_id = add_round(settings, pid)
    token = claim(settings, round_id, "celery@busy")
    progress = Progress(settings, round_id, token)
    progress.phase(0.0, 1.0, "training")
    # Fresh heartbeat: not lost, whatever workers start.
    assert fail_lost_rounds(settings) == 0
    assert get_round(settings, round_id).attempt_token == token
    # The stale limit later without a beat: failed (no Celery app to send it again),
    # and the attempt's token revoked.
    later = utcnow() + timedelta(seconds=settings.round_stale_seconds + 5)
    assert fail_lost_rounds(settings, now_fn=lambda: later) == 1
    rnd = get_round(settings, round_id)
    assert rnd.status == RoundStatus.FAILED and rnd.attempt_token is None
    assert "presumed lost" in rnd.error
    # The lost attempt wakes up: it can write nothing, its end included.
    with pytest.raises(AttemptSuperseded):
        progress(0.5, "still here", force=True)
    assert not finish(settings, round_id, token, status=RoundStatus.SUCCEEDED)
    assert get_round(settings, round_id).status == RoundStatus.FAILED


@pytest.mark.slow
def test_a_round_whose_attempt_is_superseded_stops_and_publishes_nothing(settings, tmp_path):
    """A real round in a thread; its row is handed to another attempt while it trains.
    It stops without writing the round's end or a model, and leaves no file behind."""
    pid = make_project(settings, tmp_path, "s", TWO, 3, unlabeled=2)
    slow = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url,
                                  HEMALOOP_HEAD_EPOCHS="1000"))
    round_id = new_round(settings, pid)
    outcome = {}
    worker = threading.Thread(
        target=lambda: outcome.update(status=run_round(slow, round_id, worker="thread@old")))
    worker.start()
    try:
        wait_until(lambda: "head: epoch" in get_round(settings, round_id).phase)
        new = _hand_on(settings, round_id, "celery@new")
    finally:
        worker.join(timeout=600)
    assert not worker.is_alive()
    # The row as the old attempt saw it when it stopped: handed back (queued) or
    # already claimed by the new attempt (running), depending on which of
    # _hand_on's two writes its refused progress write fell between (CI saw both).
    assert outcome["status"] in (RoundStatus.QUEUED, RoundStatus.RUNNING)
    rnd = get_round(settings, round_id)
    assert (rnd.status, rnd.worker, rnd.attempt_token, rnd.finished_at) == (
        RoundStatus.RUNNING, "celery@new", new, None)
    assert version_of(settings, round_id) is None
    assert not list((settings.storage_dir / "models").rglob("*.keras"))
