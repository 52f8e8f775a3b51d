"""BALD with MC dropout over cached backbone features (Gal, Islam & Ghahramani 2017).

The head is Dropout -> Dense(softmax) on the pooled backbone features, so a
stochastic forward pass is a dropout mask on the features followed by one
matrix product.  Done here in NumPy: it is exactly what Keras' Dropout layer
does with ``training=True`` (inverted dropout: keep with probability 1 - rate,
scale kept units by 1 / (1 - rate)), without T TensorFlow calls per chunk.
"""

from __future__ import annotations

import numpy as np

from worker.ml.uncertainty import ENTROPY_EPS

DEFAULT_PASSES = 20


def mc_dropout_probs(features: np.ndarray, kernel: np.ndarray, bias: np.ndarray, *,
                     rate: float, passes: int = DEFAULT_PASSES, temperature: float = 1.0,
                     rng: np.random.Generator | None = None) -> np.ndarray:
    """Class probabilities of ``passes`` stochastic forward passes: [T, n, k]."""
    rng = rng or np.random.default_rng(0)
    x = np.asarray(features, dtype=np.float32)
    kernel = np.asarray(kernel, dtype=np.float32)
    out = np.empty((passes, len(x), kernel.shape[1]), dtype=np.float32)
    keep = 1.0 - rate
    for t in range(passes):
        mask = (rng.random(x.shape, dtype=np.float32) < keep).astype(np.float32) / keep
        z = ((x * mask) @ kernel + bias) / temperature
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        out[t] = e / e.sum(axis=1, keepdims=True)
    return out


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.clip(p, ENTROPY_EPS, 1.0))).sum(axis=-1)


def bald_scores(mc_probs: np.ndarray) -> np.ndarray:
    """Mutual information between prediction and weights: H[mean p] - mean H[p_t], [n]."""
    mc = np.asarray(mc_probs, dtype=np.float64)
    return np.maximum(_entropy(mc.mean(axis=0)) - _entropy(mc).mean(axis=0), 0.0)
