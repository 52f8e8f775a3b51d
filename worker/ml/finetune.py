"""Phase 2 of training: unfreeze InceptionV3's top blocks, fine-tune at a low rate."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from worker.ml.network import BACKBONE_LAYER
from worker.ml.train import ProgressAndCancel, TrainingCancelled

BLOCKS = 11  # InceptionV3's blocks end in layers mixed0 .. mixed10
FINE_TUNE_LEARNING_RATE = 1e-5
PATIENCE = 3


def unfreeze_top_blocks(model: keras.Model, n_blocks: int) -> int:
    """Make the top ``n_blocks`` trainable (BatchNorm stays frozen); returns trainable weights.

    BatchNorm statistics stay as they are: with the small batches of a
    labeling project, updating them would wreck what the backbone learned.
    """
    if not 0 <= n_blocks <= BLOCKS:
        raise ValueError(f"n_blocks must be 0..{BLOCKS}, got {n_blocks}")
    backbone = model.get_layer(BACKBONE_LAYER)
    backbone.trainable = n_blocks > 0
    if n_blocks == 0:
        return 0
    names = [layer.name for layer in backbone.layers]
    boundary = -1 if n_blocks == BLOCKS else names.index(f"mixed{BLOCKS - 1 - n_blocks}")
    for i, layer in enumerate(backbone.layers):
        layer.trainable = i > boundary and not isinstance(
            layer, keras.layers.BatchNormalization)
    return len(model.trainable_weights)


def fine_tune(model: keras.Model, train: tf.data.Dataset, validation: tf.data.Dataset | None,
              *, epochs: int, class_weight: dict[int, float] | None = None,
              learning_rate: float = FINE_TUNE_LEARNING_RATE,
              progress: Callable[[int, int, dict], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              callbacks: list[keras.callbacks.Callback] | None = None) -> dict[str, list[float]]:
    """Fit the whole (partly unfrozen) classifier; best validation weights are kept.

    ``callbacks`` ride along (a benchmark's stopwatch, say).
    """
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reporter = ProgressAndCancel(epochs, progress, should_stop)
    callbacks = [reporter, *(callbacks or [])]
    if validation is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=PATIENCE, restore_best_weights=True))
    history = model.fit(train, validation_data=validation, epochs=epochs,
                        class_weight=class_weight, callbacks=callbacks, shuffle=False,
                        verbose=0)  # the dataset shuffles itself
    if reporter.cancelled:
        raise TrainingCancelled()
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}
