"""Running a Keras model over image files in batches."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from worker.ml.data import image_batches

# One compiled forward pass per (model, input size). `model.predict` rebuilds
# its data pipeline on every call, which dominates when called batch by
# batch; a tf.function with a [None, s, s, 3] signature is traced once.
_compiled: "weakref.WeakKeyDictionary[keras.Model, dict[int, Callable]]" = (
    weakref.WeakKeyDictionary()
)


def compiled_forward(model: keras.Model, input_size: int) -> Callable[[np.ndarray], tf.Tensor]:
    """An inference-mode (dropout off, BatchNorm frozen) forward pass of `model`."""
    per_size = _compiled.setdefault(model, {})
    if input_size not in per_size:
        signature = [tf.TensorSpec([None, input_size, input_size, 3], tf.float32)]

        # A weak reference, so the cached function does not keep its own
        # dictionary key (the model) alive forever.
        model_ref = weakref.ref(model)

        @tf.function(input_signature=signature)
        def forward(images: tf.Tensor) -> tf.Tensor:
            return model_ref()(images, training=False)

        per_size[input_size] = forward
    return per_size[input_size]


def apply_to_images(
    model: keras.Model,
    paths: Sequence[str | Path],
    input_size: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
    failures: list[tuple[int, str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return `(outputs float32 [n, d], ok bool [n])`; rows of unreadable images are zero.

    `progress(done, total)` runs after each batch; `done` counts failed files
    too, so it reaches `total` at the end.
    """
    total = len(paths)
    outputs = np.zeros((total, int(model.output.shape[-1])), dtype=np.float32)
    ok = np.zeros(total, dtype=bool)
    forward = compiled_forward(model, input_size)
    done = 0
    for batch, indices in image_batches(paths, input_size, batch_size, failures):
        outputs[indices] = forward(batch).numpy()
        ok[indices] = True
        done = max(indices) + 1
        if progress is not None:
            progress(done, total)
    if progress is not None and done < total:
        progress(total, total)  # trailing files all failed: still report completion
    return outputs, ok


def extract_features(
    extractor: keras.Model,
    paths: Sequence[str | Path],
    input_size: int,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
    failures: list[tuple[int, str]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Backbone features `[n, 2048]` (zeros where an image failed) and the ok mask.

    `extractor` is `network.backbone_of(model)`.
    """
    return apply_to_images(extractor, paths, input_size, batch_size, progress, failures)
