"""Self-supervised pretraining of the InceptionV3 backbone on unlabeled cells (SimSiam).

Where no ImageNet weights can be had (air-gapped labs, these machines), the
backbone starts from random initialisation and its pooled features barely
separate the classes.  SimSiam (Chen & He, 2021) learns from the pool alone:
two augmented views of each cell go through the same encoder (backbone ->
pooled features -> projector), a small predictor maps one view's projection
onto the other's, and the loss is the negative cosine similarity between the
prediction and the *stop-gradient* of the other projection, symmetrised.  No
labels, no negative pairs, no momentum encoder; the stop-gradient is what
keeps it from collapsing to a constant.

The augmentations suit stained blood-cell images: a cell has no "up", so the
whole dihedral group (flips, 90-degree turns) is free; random resized crops
(kept large: the class lives in the nucleus shape, which a tiny crop loses);
and colour jitter of the size that separates two labs' stains (brightness,
contrast, saturation, a small hue shift), never so much that eosinophil
granules stop being orange.

What comes out is a backbone weights file in the layout of Keras' own ImageNet
``..._notop.h5`` (layer order, legacy HDF5), so `network.load_backbone_weights`
and every path that accepts an ImageNet ``.h5`` accept it as it is.  Runs
without Celery: worker/pretraining.py drives it from a database row, the
CLI and bench/pretrain_pbc.py call it directly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from worker.ml.data import image_batches
from worker.ml.network import BACKBONE_LAYER, MIN_INPUT_SIZE, load_backbone_weights

# Fewer cells than this cannot make a batch of two views worth the name, and
# BatchNorm statistics over fewer than 4 samples are noise.
MIN_CELLS = 8
MIN_BATCH = 4


class PretrainError(RuntimeError):
    """The pool or the settings do not allow a pretraining run (a message for the admin)."""


class PretrainCancelled(Exception):
    """The cancel check said stop; nothing was saved."""


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 10
    input_size: int = 96
    batch_size: int = 32
    # SGD with momentum and a cosine schedule, as in the paper; the paper's
    # base rate 0.05 x batch/256 is for hundreds of epochs, so the rate here
    # is not scaled down for small batches (short CPU runs would learn nothing).
    learning_rate: float = 0.05
    weight_decay: float = 1e-4
    # Smaller than the paper's 2048: the projector and predictor are a few
    # percent of the compute, and a CPU worker should spend it on the backbone.
    projection_dim: int = 512
    predictor_dim: int = 128
    # Stop after this many optimizer steps or seconds (whichever first), at
    # a step boundary; the weights so far are saved.  None: all epochs.
    max_steps: int | None = None
    max_seconds: float | None = None
    seed: int = 0
    # Trace the training step into a graph (tf.function)?  Tracing InceptionV3's
    # gradient costs about 25 s on 2 CPU cores, as much as ten eager steps, so
    # None (auto) runs short jobs eagerly and traces anything longer.
    compiled: bool | None = None

    def check(self) -> None:
        if self.input_size < MIN_INPUT_SIZE:
            raise PretrainError(f"The image size must be at least {MIN_INPUT_SIZE} px for "
                                f"InceptionV3, not {self.input_size}.")
        if self.epochs < 1:
            raise PretrainError("Pretraining needs at least one epoch.")
        if self.batch_size < MIN_BATCH:
            raise PretrainError(f"The batch size must be at least {MIN_BATCH}.")


@dataclass
class PretrainResult:
    weights_path: Path
    steps: int
    epochs_done: float
    seconds: float
    # One value per epoch (the mean over its steps), and the last steps' mean
    # if the run stopped mid-epoch at its step or time budget.
    loss_history: list[float] = field(default_factory=list)
    # The standard deviation of the L2-normalised projections, per epoch:
    # 1/sqrt(projection_dim) when the outputs spread over the sphere, 0 when
    # they collapsed to one point (the failure SimSiam's stop-gradient prevents).
    collapse_std: list[float] = field(default_factory=list)
    cells: int = 0
    unreadable: int = 0


# progress(step, total_steps, loss): the loss is the running mean of the epoch.
ProgressFn = Callable[[int, int, float], None]


# ---------------------------------------------------------------- augmentation
def _random_resized_crop(x: tf.Tensor, size: int, scale=(0.35, 1.0), ratio=(0.75, 1.333)):
    """One random crop per image (area share ``scale``, aspect ``ratio``), resized to ``size``."""
    n = tf.shape(x)[0]
    area = tf.random.uniform([n], *scale)
    log_r = tf.random.uniform([n], math.log(ratio[0]), math.log(ratio[1]))
    r = tf.exp(log_r)
    h = tf.minimum(tf.sqrt(area / r), 1.0)
    w = tf.minimum(tf.sqrt(area * r), 1.0)
    y0 = tf.random.uniform([n]) * (1.0 - h)
    x0 = tf.random.uniform([n]) * (1.0 - w)
    boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
    return tf.image.crop_and_resize(x, boxes, tf.range(n), [size, size])


def _per_image(n, p: float) -> tf.Tensor:
    return tf.random.uniform([n, 1, 1, 1]) < p


def _dihedral(x: tf.Tensor) -> tf.Tensor:
    """Any of the 8 flips and quarter turns, chosen per image (a cell has no 'up')."""
    n = tf.shape(x)[0]
    x = tf.where(_per_image(n, 0.5), tf.reverse(x, axis=[2]), x)
    x = tf.where(_per_image(n, 0.5), tf.reverse(x, axis=[1]), x)
    # A transpose with the flips above gives the quarter turns; square images only.
    return tf.where(_per_image(n, 0.5), tf.transpose(x, [0, 2, 1, 3]), x)


def _colour_jitter(x: tf.Tensor, strength: float = 1.0) -> tf.Tensor:
    """Brightness, contrast, saturation and a small hue shift per image, in [0, 1].

    Sized for stain variation between slides and scanners (a Wright-Giemsa
    purple stays purple): far milder than the ImageNet recipe's 0.8 jitter.
    """
    n = tf.shape(x)[0]
    apply = _per_image(n, 0.8)
    b = tf.random.uniform([n, 1, 1, 1], -0.15, 0.15) * strength
    c = 1.0 + tf.random.uniform([n, 1, 1, 1], -0.3, 0.3) * strength
    s = 1.0 + tf.random.uniform([n, 1, 1, 1], -0.3, 0.3) * strength
    hue = tf.random.uniform([n, 1, 1], -0.04, 0.04) * strength
    y = x + b
    mean = tf.reduce_mean(y, axis=[1, 2, 3], keepdims=True)
    y = (y - mean) * c + mean
    grey = tf.reduce_mean(y, axis=3, keepdims=True)
    y = tf.clip_by_value((y - grey) * s + grey, 0.0, 1.0)
    hsv = tf.image.rgb_to_hsv(y)
    h = tf.math.floormod(hsv[..., 0] + hue, 1.0)
    y = tf.image.hsv_to_rgb(tf.stack([h, hsv[..., 1], hsv[..., 2]], axis=-1))
    return tf.where(apply, y, x)


def augment(batch: tf.Tensor, size: int) -> tf.Tensor:
    """One augmented view of a batch in InceptionV3's [-1, 1] scaling (as data.load_image gives)."""
    x = (batch + 1.0) * 0.5
    x = _random_resized_crop(x, size)
    x = _dihedral(x)
    x = _colour_jitter(x)
    return x * 2.0 - 1.0


# ----------------------------------------------------------------------- model
def build_backbone(input_size: int, weights: Path | str | None = None) -> keras.Model:
    """InceptionV3 without top, as network.build_classifier builds it (optionally loaded)."""
    backbone = keras.applications.InceptionV3(
        include_top=False, weights=None, input_shape=(input_size, input_size, 3),
        name=BACKBONE_LAYER)
    if weights is not None:
        load_backbone_weights(backbone, Path(weights))
    return backbone


def _mlp(dims: Sequence[int], last_bn: bool, name: str) -> keras.Sequential:
    layers: list[keras.layers.Layer] = []
    for i, d in enumerate(dims):
        last = i == len(dims) - 1
        layers.append(keras.layers.Dense(d, use_bias=last and not last_bn))
        if not last or last_bn:
            # The projector's output BN has no affine part (the paper's choice).
            layers.append(keras.layers.BatchNormalization(center=not last, scale=not last))
        if not last:
            layers.append(keras.layers.ReLU())
    return keras.Sequential(layers, name=name)


class SimSiam:
    """Backbone + pooling + projector (encoder f) and predictor h."""

    def __init__(self, backbone: keras.Model, config: PretrainConfig):
        self.backbone = backbone
        self.config = config
        d = config.projection_dim
        self.projector = _mlp([d, d, d], last_bn=True, name="projector")
        self.predictor = _mlp([config.predictor_dim, d], last_bn=False, name="predictor")
        self.pool = keras.layers.GlobalAveragePooling2D()
        size = config.input_size
        self.projector.build((None, backbone.output_shape[-1]))
        self.predictor.build((None, d))
        self.backbone(tf.zeros([1, size, size, 3]), training=False)
        self.variables = (backbone.trainable_variables + self.projector.trainable_variables
                          + self.predictor.trainable_variables)

    def encode(self, x, training: bool):
        return self.projector(self.pool(self.backbone(x, training=training)), training=training)


def _negative_cosine(p: tf.Tensor, z: tf.Tensor) -> tf.Tensor:
    z = tf.stop_gradient(z)  # the one thing that keeps SimSiam from collapsing
    p = tf.math.l2_normalize(p, axis=1)
    z = tf.math.l2_normalize(z, axis=1)
    return -tf.reduce_mean(tf.reduce_sum(p * z, axis=1))


EAGER_STEPS = 30


def _make_step(model: SimSiam, optimizer: keras.optimizers.Optimizer, size: int,
               compiled: bool = True):
    def step(batch):
        v1, v2 = augment(batch, size), augment(batch, size)
        with tf.GradientTape() as tape:
            z1, z2 = model.encode(v1, True), model.encode(v2, True)
            p1, p2 = model.predictor(z1, training=True), model.predictor(z2, training=True)
            loss = 0.5 * _negative_cosine(p1, z2) + 0.5 * _negative_cosine(p2, z1)
        grads = tape.gradient(loss, model.variables)
        optimizer.apply_gradients(zip(grads, model.variables))
        spread = tf.reduce_mean(tf.math.reduce_std(tf.math.l2_normalize(z1, axis=1), axis=0))
        return loss, spread
    return tf.function(step, reduce_retracing=True, autograph=False) if compiled else step


# ------------------------------------------------------------------------ save
def save_backbone_weights(backbone: keras.Model, path: Path) -> Path:
    """Write ``backbone``'s weights in the layout of Keras' ImageNet notop file (atomically)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from models.files import atomic_write

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as f:
            legacy_h5_format.save_weights_to_hdf5_group(f, backbone)

    atomic_write(Path(path), write, suffix=".h5", fsync=True)
    return Path(path)


# ------------------------------------------------------------------------- run
def pretrain(
    paths: Sequence[str | Path],
    out_path: Path,
    config: PretrainConfig,
    *,
    init_weights: Path | str | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> PretrainResult:
    """SimSiam on the images at ``paths``; the backbone's weights are saved to ``out_path``.

    ``should_stop()`` is asked between steps: True raises PretrainCancelled
    (nothing saved).  ``progress(step, total, loss)`` is called after every
    step; ``on_epoch(epoch, mean_loss)`` after every epoch.  Unreadable images
    are skipped (counted in the result); too few readable ones is a PretrainError.
    """
    config.check()
    paths = [Path(p) for p in paths]
    if len(paths) < MIN_CELLS:
        raise PretrainError(f"Pretraining needs at least {MIN_CELLS} cells; the pool has "
                            f"{len(paths)}.")
    # float32 whatever policy a round left in this worker process: the custom step
    # below has no loss scaling, which mixed_float16 would need.
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.set_random_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    # Views are cropped from a slightly larger decode, so a crop of the whole
    # image still has detail to resample.
    load_size = int(round(config.input_size * 1.15))
    batch_size = min(config.batch_size, len(paths))
    steps_per_epoch = max(1, len(paths) // batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)

    backbone = build_backbone(config.input_size, init_weights)
    model = SimSiam(backbone, config)
    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(total, 1))
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=config.weight_decay)
    compiled = config.compiled if config.compiled is not None else total >= EAGER_STEPS
    step_fn = _make_step(model, optimizer, config.input_size, compiled)

    result = PretrainResult(weights_path=Path(out_path), steps=0, epochs_done=0.0,
                            seconds=0.0, cells=len(paths))
    bad: set[int] = set()
    start = time.monotonic()
    done = False
    for epoch in range(config.epochs):
        order = rng.permutation(len(paths))
        order = np.array([i for i in order if i not in bad])
        losses, spreads = [], []
        failures: list[tuple[int, str]] = []
        pending: list[np.ndarray] = []
        n_pending = 0
        # Full batches only: BatchNorm with a batch of 1 or 2 at an epoch's
        # end would put noise into its statistics.
        for batch, _ in image_batches([paths[i] for i in order], load_size, batch_size,
                                      failures=failures):
            pending.append(batch)
            n_pending += len(batch)
            if n_pending < batch_size:
                continue
            stacked = np.concatenate(pending)
            pending = [stacked[batch_size:]] if len(stacked) > batch_size else []
            n_pending = len(stacked) - batch_size
            if should_stop is not None and should_stop():
                raise PretrainCancelled()
            loss, spread = step_fn(tf.constant(stacked[:batch_size]))
            loss = float(loss)
            if not math.isfinite(loss):
                raise PretrainError(f"The loss became {loss} at step {result.steps + 1}; try a "
                                    "lower learning rate.")
            losses.append(loss)
            spreads.append(float(spread))
            result.steps += 1
            if progress is not None:
                progress(result.steps, total, float(np.mean(losses)))
            over_time = (config.max_seconds is not None
                         and time.monotonic() - start >= config.max_seconds)
            if result.steps >= total or over_time:
                done = True
                break
        bad.update(int(order[i]) for i, _ in failures)
        if len(paths) - len(bad) < MIN_CELLS:
            raise PretrainError(f"Only {len(paths) - len(bad)} of {len(paths)} cells could be "
                                f"read; pretraining needs at least {MIN_CELLS}.")
        if result.steps == 0:
            raise PretrainError(f"Only {len(paths) - len(bad)} of {len(paths)} cells could be "
                                f"read, fewer than one batch of {batch_size}; use a smaller "
                                "batch size.")
        if losses:
            result.loss_history.append(float(np.mean(losses)))
            result.collapse_std.append(float(np.mean(spreads)))
        result.epochs_done = epoch + (len(losses) / steps_per_epoch if done else 1.0)
        if on_epoch is not None and losses:
            on_epoch(epoch + 1, result.loss_history[-1])
        if done:
            break
    if should_stop is not None and should_stop():
        raise PretrainCancelled()
    result.unreadable = len(bad)
    result.seconds = time.monotonic() - start
    save_backbone_weights(backbone, Path(out_path))
    return result


def pooled_features(paths: Sequence[str | Path], input_size: int,
                    weights: Path | str | None, batch_size: int = 64) -> np.ndarray:
    """Global-average-pooled backbone features [n, 2048] (zeros for unreadable images)."""
    backbone = build_backbone(input_size, weights)
    inputs = keras.Input((input_size, input_size, 3))
    extractor = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(
        backbone(inputs, training=False)))
    out = np.zeros((len(paths), backbone.output_shape[-1]), dtype=np.float32)
    for batch, idx in image_batches(list(paths), input_size, batch_size):
        out[idx] = extractor.predict_on_batch(batch)
    return out
