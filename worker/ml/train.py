"""Training the softmax head on cached features (backbone, descriptors or both)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from scipy.optimize import minimize
from scipy.special import logsumexp

from worker.ml.head import HEAD_L2, VALIDATION_FRACTION
from worker.ml.network import HEAD_LAYER

# Validation split rules: below these, a held-out set is too small to say
# anything and would only take examples away from training.
MIN_LABELS_FOR_VALIDATION = 20
MIN_PER_CLASS_FOR_VALIDATION = 2
# L-BFGS iterations that make one reported "epoch" of the head's fit.
LBFGS_STEPS_PER_EPOCH = 5
# Features whose spread is below this fraction of the largest one are treated
# as constant when standardising (see `standardisation`).
CONSTANT_FEATURE_STD = 1e-6


class TrainingCancelled(Exception):
    """`should_stop` asked training to stop; no result is produced."""


@dataclass
class HeadTrainingResult:
    weights: list[np.ndarray]  # [Dense kernel (d x k), bias (k)], float32, for raw features
    history: dict[str, list[float]]
    epochs_run: int


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Balanced weights n / (k * count_c), k = classes present; absent classes get 1.0."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)[:num_classes]
    present = int(np.count_nonzero(counts))
    weights: dict[int, float] = {}
    for c in range(num_classes):
        if counts[c] == 0:
            weights[c] = 1.0
        else:
            weights[c] = float(len(labels) / (present * counts[c]))
    return weights


def stratified_validation_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices `(train, validation)`: about `fraction` of each class, at least one,
    always leaving at least one example of each class for training."""
    rng = np.random.default_rng(seed)
    train_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(1, round(fraction * len(members))), len(members) - 1)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(val_parts))


def wants_validation(labels: np.ndarray) -> bool:
    counts = np.bincount(labels)
    present = counts[counts > 0]
    return (
        len(labels) >= MIN_LABELS_FOR_VALIDATION
        and present.min() >= MIN_PER_CLASS_FOR_VALIDATION
    )


class ProgressAndCancel(keras.callbacks.Callback):
    """Reports each finished epoch and stops `fit` when asked to."""

    def __init__(
        self,
        epochs: int,
        progress: Callable[[int, int, dict], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        super().__init__()
        self.epochs = epochs
        self.progress = progress
        self.should_stop = should_stop
        self.cancelled = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.progress is not None:
            self.progress(epoch + 1, self.epochs, {k: float(v) for k, v in (logs or {}).items()})
        if self.should_stop is not None and self.should_stop():
            self.cancelled = True
            self.model.stop_training = True


def standardisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation, 1 where a feature is (nearly) constant.

    "Nearly": a constant float32 column can come out with a rounding-error std
    (~1e-17); dividing by that would give a huge folded weight that blows up
    as soon as the feature moves at prediction time.
    """
    mean = features.mean(axis=0, dtype=np.float64)
    std = features.std(axis=0, dtype=np.float64)
    std[std <= CONSTANT_FEATURE_STD * std.max(initial=0.0)] = 1.0
    return mean, std


def fold_standardisation(
    kernel: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> list[np.ndarray]:
    """Dense weights on raw features equal to `kernel`, `bias` on standardised ones:
    ((x - mean) / std) @ K + b == x @ (K / std) + (b - (mean / std) @ K)."""
    scaled = kernel.astype(np.float64) / std[:, None]
    folded_bias = bias.astype(np.float64) - mean @ scaled
    return [scaled.astype(np.float32), folded_bias.astype(np.float32)]


def unfold_standardisation(
    kernel: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> list[np.ndarray]:
    """The inverse of `fold_standardisation`: raw-feature weights -> standardised ones."""
    kernel = np.asarray(kernel, dtype=np.float64)
    scaled = kernel * std[:, None]
    return [scaled.astype(np.float32), (np.asarray(bias, np.float64) + mean @ kernel).astype(np.float32)]


def head_model(feature_dim: int, num_classes: int, dropout: float) -> keras.Model:
    """Dropout -> Dense(softmax): the classifier's head on its own, same layer names."""
    inputs = keras.Input(shape=(feature_dim,), name="features")
    x = keras.layers.Dropout(dropout, name="dropout")(inputs)
    # Zero initial weights: softmax regression needs no symmetry breaking, and
    # a random kernel on 2048 standardised features starts with logits of
    # spread ~1.4 that a few hundred labels' few dozen steps cannot wash out
    # (noise, not signal, in the small-label heads active learning starts with).
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", name=HEAD_LAYER, dtype="float32",
        kernel_initializer="zeros",
    )(x)
    return keras.Model(inputs, outputs, name="head_only")


def train_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    epochs: int,
    l2: float = HEAD_L2,
    seed: int = 0,
    progress: Callable[[int, int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    initial: list[np.ndarray] | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> HeadTrainingResult:
    """Fit the head on cached features; equivalent to training on a frozen backbone.

    The head is a softmax regression on standardised features, so its loss
    (class-balanced cross-entropy plus ``l2 / 2 * |kernel|^2``) is convex: it is
    fitted to its optimum by full-batch L-BFGS rather than by epochs of Adam.
    On pbc-dev's descriptors that is 0.946 test accuracy against Adam's 0.910
    with dropout and early stopping, in a tenth of the time
    (docs/benchmarks.md, "A convex head").  One "epoch" here is
    ``LBFGS_STEPS_PER_EPOCH`` L-BFGS iterations: ``epochs`` bounds the work, and
    ``progress`` hears each one; a fit that converges earlier stops there.

    The returned weights apply to raw features (the standardisation used for
    training is folded into them), so they drop straight into the classifier.
    `initial` (a head's [kernel, bias] on raw features, e.g. the active model's)
    starts the optimiser there instead of at zero.  `validation` (features,
    labels) is only reported (``val_loss``, ``val_accuracy``); without it a
    stratified share of the labels is held out when there are enough of them.

    Raises TrainingCancelled if `should_stop()` returns True (checked before
    training and after each epoch).
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or len(features) != len(labels):
        raise ValueError(
            "features must be [n, d] with n == len(labels); "
            f"got {features.shape} and {labels.shape}"
        )
    if len(labels) == 0:
        raise ValueError("cannot train the head without labelled examples")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes})")
    if epochs < 1:
        raise ValueError(f"epochs must be positive, got {epochs}")
    if not np.isfinite(features).all():
        # One NaN would make every weight NaN and every prediction with it.
        bad = int((~np.isfinite(features).all(axis=1)).sum())
        raise ValueError(f"{bad} feature rows hold NaN or infinite values; "
                         "the head cannot be fitted on them")
    if should_stop is not None and should_stop():
        raise TrainingCancelled()

    train_x, train_y = features, labels
    val_x = val_y = None
    if validation is not None and len(validation[1]):
        val_x = np.asarray(validation[0], dtype=np.float32)
        val_y = np.asarray(validation[1], dtype=np.int64)
    elif validation is None and wants_validation(labels):
        train_idx, val_idx = stratified_validation_split(labels, VALIDATION_FRACTION, seed)
        train_x, train_y = features[train_idx], labels[train_idx]
        val_x, val_y = features[val_idx], labels[val_idx]

    # Fit on standardised features, then fold the scaling into the Dense
    # weights so the head still applies to raw features.  Without it the
    # penalty and the optimiser would see badly scaled features: a randomly
    # initialised backbone gives pooled features around 1e-4 whose differences
    # between classes are tiny in absolute terms.
    mean, std = standardisation(train_x)
    x = ((train_x - mean) / std).astype(np.float64)
    dim = x.shape[1]
    if initial is not None:
        start = np.concatenate([a.astype(np.float64).ravel() for a in
                                unfold_standardisation(*initial, mean, std)])
    else:
        start = np.zeros(dim * num_classes + num_classes)
    weights = class_weights(train_y, num_classes)
    sample_weight = np.array([weights[c] for c in train_y.tolist()]) / len(train_y)
    onehot = np.eye(num_classes)[train_y]
    val_std = None if val_x is None else ((val_x - mean) / std).astype(np.float64)

    def split(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return w[: dim * num_classes].reshape(dim, num_classes), w[dim * num_classes:]

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        kernel, bias = split(w)
        logits = x @ kernel + bias
        log_z = logsumexp(logits, axis=1)
        nll = float(sample_weight @ (log_z - (logits * onehot).sum(1)))
        grad_logits = (np.exp(logits - log_z[:, None]) - onehot) * sample_weight[:, None]
        # The penalty is scaled by 1/n like the loss: the same strength per label.
        penalty = l2 / len(train_y)
        loss = nll + 0.5 * penalty * float((kernel ** 2).sum())
        grad = np.concatenate([(x.T @ grad_logits + penalty * kernel).ravel(),
                               grad_logits.sum(0)])
        return loss, grad

    def logs_of(w: np.ndarray) -> dict[str, float]:
        kernel, bias = split(w)
        logs = _loss_and_accuracy(x @ kernel + bias, train_y, sample_weight * len(train_y))
        if val_std is not None:
            val_logs = _loss_and_accuracy(val_std @ kernel + bias, val_y, None)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        return logs

    history: dict[str, list[float]] = {}
    state = {"iterations": 0, "epoch": 0, "cancelled": False}

    def end_of_epoch(w: np.ndarray) -> None:
        state["epoch"] += 1
        for key, value in logs_of(w).items():
            history.setdefault(key, []).append(value)
        if progress is not None:
            progress(state["epoch"], epochs, {k: v[-1] for k, v in history.items()})
        if should_stop is not None and should_stop():
            state["cancelled"] = True
            raise StopIteration  # scipy ends the fit at this iterate

    def after_step(w: np.ndarray) -> None:
        state["iterations"] += 1
        if state["iterations"] % LBFGS_STEPS_PER_EPOCH == 0:
            end_of_epoch(w)

    fit = minimize(objective, start, jac=True, method="L-BFGS-B", callback=after_step,
                   options={"maxiter": epochs * LBFGS_STEPS_PER_EPOCH})
    if state["cancelled"]:
        raise TrainingCancelled()
    if state["iterations"] % LBFGS_STEPS_PER_EPOCH or state["epoch"] == 0:
        end_of_epoch(fit.x)  # converged part-way through an epoch: report where it ended
        if state["cancelled"]:
            raise TrainingCancelled()
    if not np.isfinite(fit.x).all():
        raise ValueError("the head's fit diverged (non-finite weights)")
    kernel, bias = split(fit.x)
    return HeadTrainingResult(
        weights=fold_standardisation(kernel.astype(np.float32), bias.astype(np.float32),
                                     mean, std),
        history=history,
        epochs_run=state["epoch"],
    )


def _loss_and_accuracy(logits: np.ndarray, labels: np.ndarray,
                       sample_weight: np.ndarray | None) -> dict[str, float]:
    """Mean cross-entropy (weighted as in training when weights are given) and accuracy."""
    nll = logsumexp(logits, axis=1) - logits[np.arange(len(labels)), labels]
    loss = float(np.average(nll, weights=sample_weight))
    return {"loss": loss, "accuracy": float((logits.argmax(1) == labels).mean())}


def install_head(model: keras.Model, head_weights: list[np.ndarray]) -> None:
    """Put trained head weights into the full classifier."""
    model.get_layer(HEAD_LAYER).set_weights(head_weights)
