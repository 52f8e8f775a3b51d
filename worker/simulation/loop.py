"""The simulated loop: train, score, select, reveal; repeat.

Each round does what a production round does on cached features: the head
fitted and calibrated by the function rounds call (worker/ml/head.py:
validation split, training, temperature), calibrated probabilities for the pool, and
the next batch chosen by worker/ml/selection.  The oracle reveals the chosen
cells' labels.  The test split is fixed for the whole run, so every strategy
and repeat is scored on the same cells.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from worker.ml import calibration, embeddings
from worker.ml.head import HEAD_DROPOUT, HeadFit, fit_calibrated_head
from worker.ml.selection import Candidates, check_request, select_batch
from worker.ml.selection.bald import DEFAULT_PASSES, mc_dropout_probs


@dataclass(frozen=True)
class CurvePoint:
    strategy: str
    repeat: int
    labels: int
    accuracy: float
    macro_f1: float


@dataclass(frozen=True)
class HeadConfig:
    epochs: int = 30
    batch_size: int = 32
    mc_passes: int = DEFAULT_PASSES


@dataclass
class Head:
    """A trained head on raw features: logits = x @ kernel + bias, calibrated by temperature."""

    kernel: np.ndarray
    bias: np.ndarray
    temperature: float

    def probs(self, x: np.ndarray) -> np.ndarray:
        return calibration.softmax(x @ self.kernel + self.bias, self.temperature)


def train_round_head(x: np.ndarray, y: np.ndarray, num_classes: int, config: HeadConfig,
                     seed: int) -> Head:
    """The production round's head: the same fit-and-calibrate call as a round's."""
    import keras

    fitted = fit_calibrated_head(x, y, num_classes,
                                 HeadFit(epochs=config.epochs),
                                 seed=seed)
    # The simulator builds hundreds of small models in one process.
    keras.backend.clear_session()
    kernel, bias = fitted.weights
    return Head(kernel, bias, fitted.temperature)


def evaluate(head: Head, x: np.ndarray, y: np.ndarray, class_names: list[str]) -> tuple[float, float]:
    from worker.ml.evaluate import classification_metrics

    m = classification_metrics(y, head.probs(x).argmax(1), class_names)
    return float(m["accuracy"]), float(m["macro_f1"])


def candidates_for(strategy: str, head: Head | None, x_pool: np.ndarray, emb_pool: np.ndarray,
                   emb_labeled: np.ndarray, class_counts: np.ndarray, config: HeadConfig,
                   rng: np.random.Generator) -> Candidates:
    """What the strategy needs, computed only when it needs it."""
    from worker.ml.selection import get_strategy

    needs = get_strategy(strategy).needs
    c = Candidates(n=len(x_pool), embeddings=emb_pool, labeled_embeddings=emb_labeled,
                   class_counts=class_counts)
    if head is not None:
        c.probs = head.probs(x_pool)
        if "mc_probs" in needs:
            c.mc_probs = mc_dropout_probs(x_pool, head.kernel, head.bias, rate=HEAD_DROPOUT,
                                          passes=config.mc_passes,
                                          temperature=head.temperature, rng=rng)
    return c


def full_pool_accuracy(features: np.ndarray, labels: np.ndarray, pool: np.ndarray,
                       test: np.ndarray, class_names: list[str], config: HeadConfig,
                       seed: int = 0) -> tuple[float, float]:
    """Accuracy and macro-F1 of a model trained on every pool label: the ceiling."""
    head = train_round_head(features[pool], labels[pool], len(class_names), config, seed)
    return evaluate(head, features[test], labels[test], class_names)


def simulate(features: np.ndarray, labels: np.ndarray, pool: np.ndarray, test: np.ndarray,
             class_names: list[str], strategies: Sequence[str], *, initial: int, batch: int,
             rounds: int, repeats: int, config: HeadConfig = HeadConfig(),
             stop_at: float | None = None,
             progress: Callable[[int, int, str], None] | None = None) -> list[CurvePoint]:
    """Curves for each strategy and repeat: accuracy after N0, N0 + B, … labels.

    ``stop_at``: a repeat ends once its accuracy reaches this (a benchmark that
    only asks "how many labels to reach A" need not run the rest).
    """
    for name in strategies:
        check_request(name, initial, len(pool))
        check_request(name, batch, len(pool) - initial)
    k = len(class_names)
    x_test, y_test = features[test], labels[test]
    # The embeddings strategies see: PCA of the pool's backbone features,
    # as each round stores beside its model.
    emb_all = embeddings.project(features[pool])
    points: list[CurvePoint] = []
    total = len(strategies) * repeats * (rounds + 1)
    done = 0
    for name in strategies:
        for rep in range(repeats):
            rng = np.random.default_rng(1000 + rep)
            labeled = np.zeros(len(pool), dtype=bool)
            head: Head | None = None
            step = initial
            for rnd in range(rounds + 1):
                rows = np.flatnonzero(~labeled)
                step = min(step, len(rows))
                if step == 0:
                    break
                c = candidates_for(name, head, features[pool[rows]], emb_all[rows],
                                   emb_all[labeled], np.bincount(labels[pool[labeled]],
                                                                 minlength=k), config, rng)
                labeled[rows[select_batch(name, c, step, rng)]] = True  # the oracle reveals
                chosen = pool[labeled]
                head = train_round_head(features[chosen], labels[chosen], k, config,
                                        seed=rep * 100 + rnd)
                acc, f1 = evaluate(head, x_test, y_test, class_names)
                points.append(CurvePoint(name, rep, int(labeled.sum()), acc, f1))
                step = batch
                done += 1
                if stop_at is not None and acc >= stop_at:
                    break
                if progress is not None:
                    progress(done, total, f"{name} repeat {rep + 1}: {int(labeled.sum())} labels, "
                                          f"accuracy {acc:.3f}")
            done = (strategies.index(name) * repeats + rep + 1) * (rounds + 1)
    return points
