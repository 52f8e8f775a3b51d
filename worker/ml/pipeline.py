"""tf.data input pipeline for fine-tuning on images, with blood-cell augmentation.

Cells have no up or down: any rotation and both flips are label-preserving.
Small shifts and zoom cover the analyser's centring; brightness, contrast,
saturation and hue jitter cover stain and lamp variation between slides and
labs.  Decoding and augmentation run inside tf.data so they overlap the
training step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
# Decoded images are kept in memory (as uint8) across epochs when they fit in
# this much: decoding JPEGs every epoch would otherwise compete with training
# for a small machine's cores.
CACHE_LIMIT_BYTES = 1 << 30


def augmentation(seed: int = 0) -> keras.Sequential:
    """Geometric augmentation on [0, 255] images (batched)."""
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 1),  # ±180°
        keras.layers.RandomTranslation(0.05, 0.05, fill_mode="reflect", seed=seed + 2),
        keras.layers.RandomZoom(0.1, fill_mode="reflect", seed=seed + 3),
    ], name="cell_augmentation")


def _stain_jitter(images: tf.Tensor) -> tf.Tensor:
    x = images / 255.0
    x = tf.image.random_brightness(x, 0.08)
    x = tf.image.random_contrast(x, 0.85, 1.15)
    x = tf.image.random_saturation(x, 0.85, 1.15)
    x = tf.image.random_hue(x, 0.03)
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def _decode(path: tf.Tensor, input_size: int) -> tf.Tensor:
    raw = tf.io.read_file(path)
    image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), (input_size, input_size),
                            method="bilinear", antialias=True)
    image.set_shape((input_size, input_size, 3))
    return image


def preprocess(images: tf.Tensor) -> tf.Tensor:
    """InceptionV3's preprocessing ("tf" mode): [0, 255] -> [-1, 1]."""
    return images / 127.5 - 1.0


def image_dataset(paths: Sequence[str | Path], labels: np.ndarray, input_size: int,
                  batch_size: int, *, augment: bool, shuffle: bool, seed: int = 0,
                  descriptors: np.ndarray | None = None) -> tf.data.Dataset:
    """(image, label) batches; with ``descriptors`` (raw, one row per path),
    ({"image": ..., "descriptors": ...}, label) batches for a two-input classifier.

    The files must be readable (a round passes only cells whose features it
    could compute), so the batch count is known and Keras can show epochs.
    Augmentation changes the image only: the descriptors were measured once
    on the unaugmented cell (stain and shape do not depend on its rotation).
    """
    from worker.ml.network import DESCRIPTOR_INPUT, IMAGE_INPUT

    aux = (np.zeros((len(paths), 0), dtype=np.float32) if descriptors is None
           else np.asarray(descriptors, dtype=np.float32))
    if len(aux) != len(paths):
        raise ValueError("one descriptor row per image is needed")
    ds = tf.data.Dataset.from_tensor_slices(
        ([str(p) for p in paths], aux, np.asarray(labels, dtype=np.int32)))
    ds = ds.map(lambda p, d, y: (tf.cast(tf.round(_decode(p, input_size)), tf.uint8), d, y),
                num_parallel_calls=AUTOTUNE)
    if len(paths) * input_size * input_size * 3 <= CACHE_LIMIT_BYTES:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    ds = ds.map(lambda x, d, y: (tf.cast(x, tf.float32), d, y), num_parallel_calls=AUTOTUNE)
    if augment:
        geometric = augmentation(seed)
        ds = ds.map(lambda x, d, y: (_stain_jitter(geometric(x, training=True)), d, y),
                    num_parallel_calls=AUTOTUNE)
    if descriptors is None:
        ds = ds.map(lambda x, d, y: (preprocess(x), y), num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(lambda x, d, y: ({IMAGE_INPUT: preprocess(x), DESCRIPTOR_INPUT: d}, y),
                    num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)
