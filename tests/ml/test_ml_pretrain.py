"""SimSiam pretraining of the backbone (worker/ml/pretrain.py) on a tiny pool at 75 px.

A few eager steps on real demo cells: the loss is finite, the backbone's
weights move, the saved file loads into a fresh classifier through the same
path as a local ImageNet ``.h5``, the augmentations keep shape and range, and
the cancel check stops a run before anything is saved.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.helpers import DEMO_DIR
from worker.ml.network import build_classifier
from worker.ml.pretrain import (
    PretrainCancelled, PretrainConfig, PretrainError, augment, build_backbone, pretrain,
)

pytestmark = pytest.mark.slow

TINY = PretrainConfig(epochs=2, input_size=75, batch_size=4, max_steps=3, projection_dim=64,
                      predictor_dim=16, seed=3)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool")
    paths = []
    for class_dir in sorted(DEMO_DIR.iterdir()):
        for f in sorted(class_dir.iterdir())[:1]:
            paths.append(shutil.copy(f, out / f"{class_dir.name}-{f.name}"))
    return paths


@pytest.fixture(scope="module")
def trained(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("weights") / "simsiam.h5"
    seen = []
    result = pretrain(pool, out, TINY, progress=lambda *a: seen.append(a))
    return result, seen


def test_a_few_steps_give_a_finite_loss_and_report_progress(trained, pool):
    result, seen = trained
    assert result.steps == 3 and [s for s, _, _ in seen] == [1, 2, 3]
    assert all(total == 3 for _, total, _ in seen)
    assert all(np.isfinite(loss) and -1.0 <= loss <= 1.0 for _, _, loss in seen)
    assert len(result.loss_history) == 2  # 8 cells / batch 4: 2 steps, then 1 of the next epoch
    assert result.cells == len(pool) and result.unreadable == 0
    assert all(0 < s <= 1 for s in result.collapse_std)


def test_saved_weights_changed_and_load_into_a_fresh_classifier(trained):
    import keras

    result, _ = trained
    keras.utils.set_random_seed(TINY.seed)
    start = build_backbone(75)  # the initialisation the run started from
    # Through the ImageNet `.h5` path, at another input size: conv weights fit any.
    loaded = build_classifier(2, 80, str(result.weights_path), seed=99).get_layer("backbone")
    changed = [not np.allclose(a, b) for a, b in zip(start.get_weights(), loaded.get_weights())]
    assert sum(changed) > len(changed) // 2  # SGD moved most tensors (BN statistics too)


def test_cancel_stops_the_run_and_saves_nothing(pool, tmp_path):
    out = tmp_path / "never.h5"
    asked = []

    def should_stop() -> bool:
        asked.append(1)
        return len(asked) > 1  # after the first step

    with pytest.raises(PretrainCancelled):
        pretrain(pool, out, TINY, should_stop=should_stop)
    assert len(asked) == 2 and not out.exists()


def test_too_few_readable_cells_is_a_clear_error(pool, tmp_path):
    bad = []
    for i in range(10):
        path = tmp_path / f"broken-{i}.jpg"
        path.write_bytes(b"not a jpeg")
        bad.append(path)
    with pytest.raises(PretrainError, match="could be read"):
        pretrain(bad[:9] + pool[:1], tmp_path / "w.h5", TINY)
    with pytest.raises(PretrainError, match="fewer than one batch of 10"):
        pretrain(bad[:2] + pool, tmp_path / "w.h5",
                 PretrainConfig(epochs=1, input_size=75, batch_size=16))
    with pytest.raises(PretrainError, match="at least 8 cells"):
        pretrain(pool[:3], tmp_path / "w.h5", TINY)
    with pytest.raises(PretrainError, match="at least 75"):
        pretrain(pool, tmp_path / "w.h5", PretrainConfig(input_size=64))
    assert not (tmp_path / "w.h5").exists()


def test_augmented_views_keep_shape_and_range_and_differ():
    import tensorflow as tf

    batch = tf.random.uniform([6, 86, 86, 3], -1.0, 1.0, seed=1)
    a, b = augment(batch, 75), augment(batch, 75)
    assert a.shape == (6, 75, 75, 3)
    assert float(tf.reduce_min(a)) >= -1.0 - 1e-5 and float(tf.reduce_max(a)) <= 1.0 + 1e-5
    assert not np.allclose(a.numpy(), b.numpy())
