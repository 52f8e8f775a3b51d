"""The head's fit and calibration: one procedure for rounds and the simulator.

A round (worker/training.py, through ``CellClassifier.fit_head``) and the
strategy simulator (worker/simulation/loop.py) both call
``fit_calibrated_head``: the same validation split, the same head training
(worker/ml/train.py: softmax regression on standardised features with balanced
class weights and an L2 penalty, fitted to its optimum by L-BFGS) and the same
temperature rule, so the simulator's curves describe the loop the rounds
really run and cannot drift from it.

The validation cells do two jobs and then go back in: the head fitted without
them gives the temperature and honest validation figures (its logits on them
are kept as ``val_logits``), and then the head is fitted again on every label,
warm-started from the first fit, so the model a lab publishes learns from all
the cells its readers labeled.  The temperature carries over: the refit moves
the weights little (same penalty per label, 15 % more labels).  On pbc-dev's
descriptors this lifts test accuracy from 0.946 to the figure in
docs/benchmarks.md ("Every label in the final head").  A round that fine-tunes
asks for no refit: fine-tuning still needs the held-out cells to judge itself.

NumPy only at import time (TensorFlow is imported when a head is fitted).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

VALIDATION_FRACTION = 0.15
MIN_VALIDATION_FOR_TEMPERATURE = 10
# The classifier's Dropout rate (worker/ml/network.py builds it with this).
# (Used by MC-dropout at inference; the convex fit itself needs no dropout.)
HEAD_DROPOUT = 0.3
# The head's L2 penalty on standardised features (inverse of logistic
# regression's C): 1.0 measured best of 0.3/1/3 on pbc-dev's descriptors.
HEAD_L2 = 1.0


@dataclass(frozen=True)
class HeadFit:
    """How a head is trained: what a round's settings and the simulator's config give."""

    epochs: int  # bounds the fit: each is a few L-BFGS iterations (worker/ml/train.py)
    l2: float = HEAD_L2


@dataclass
class CalibratedHead:
    """A fitted head on raw features and its temperature; ``fit``/``val`` index the labels."""

    weights: list[np.ndarray]  # [Dense kernel (d x k), bias (k)], float32
    temperature: float
    history: dict[str, list[float]]
    epochs_run: int
    fit: np.ndarray
    val: np.ndarray
    # The held-out head's logits on the validation cells (before the refit on all
    # labels): what validation figures are computed from.  [0, k] without validation.
    val_logits: np.ndarray
    refitted: bool = False


def validation_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows); no validation rows when there are too few labels."""
    from worker.ml.train import stratified_validation_split, wants_validation

    if wants_validation(y):
        return stratified_validation_split(y, VALIDATION_FRACTION, seed)
    return np.arange(len(y)), np.zeros(0, dtype=np.int64)


def temperature(val_logits: np.ndarray, y_val: np.ndarray) -> float:
    """Temperature scaling on the validation cells; 1 (uncalibrated) with too few."""
    from worker.ml import calibration

    if len(y_val) >= MIN_VALIDATION_FOR_TEMPERATURE:
        return calibration.fit_temperature(val_logits, y_val)
    return 1.0


def fit_calibrated_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    config: HeadFit,
    *,
    seed: int,
    initial: list[np.ndarray] | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    refit: bool = True,
) -> CalibratedHead:
    """Split off validation, train the head on the rest, fit its temperature on
    validation; then (``refit``) train it again on all the labels.

    ``labels`` index the classes (0..num_classes-1).  ``initial`` (a head's
    [kernel, bias] on raw features) warm-starts training; ``progress`` hears
    each epoch; ``should_stop`` cancels (worker.ml.train.TrainingCancelled).
    """
    from worker.ml.train import train_head

    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    fit, val = validation_split(labels, seed)
    result = train_head(
        features[fit], labels[fit], num_classes,
        epochs=config.epochs, l2=config.l2, seed=seed, progress=progress,
        should_stop=should_stop, initial=initial,
        validation=(features[val], labels[val]),
    )
    kernel, bias = result.weights
    val_logits = features[val] @ kernel + bias
    weights, refitted = result.weights, False
    if refit and len(val):
        # Quiet (progress heard the first fit), still cancellable; no second
        # validation split: every label is fitted.
        again = train_head(
            features, labels, num_classes, epochs=config.epochs, l2=config.l2, seed=seed,
            should_stop=should_stop, initial=result.weights,
            validation=(features[:0], labels[:0]),
        )
        weights, refitted = again.weights, True
    return CalibratedHead(
        weights=weights,
        temperature=temperature(val_logits, labels[val]),
        history=result.history,
        epochs_run=result.epochs_run,  # the fit its history describes
        fit=fit,
        val=val,
        val_logits=val_logits,
        refitted=refitted,
    )
