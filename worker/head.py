"""The head's validation split and its calibration: one policy for rounds and the simulator.

A round (worker/training.py) and the strategy simulator (worker/simulation/loop.py)
hold out the same share of the labels for early stopping and temperature scaling,
and fit a temperature only from the same number of validation cells, so the
simulator's curves describe the loop the rounds really run.
"""

from __future__ import annotations

import numpy as np

VALIDATION_FRACTION = 0.15
MIN_VALIDATION_FOR_TEMPERATURE = 10


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
