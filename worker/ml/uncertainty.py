"""Per-example uncertainty scores from predicted class probabilities."""

from __future__ import annotations

import numpy as np

# Keeps log(0) finite for classes the softmax drove to exactly zero.
ENTROPY_EPS = 1e-12


def uncertainty_scores(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Scores for `probs` of shape [n, k] (rows summing to 1), each of shape [n].

    - "confidence": top probability (higher = more certain)
    - "entropy": Shannon entropy in nats (higher = more uncertain)
    - "margin": top1 - top2 probability (SMALLER = more uncertain)
    - "least_confidence": 1 - top probability (higher = more uncertain)
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 1:
        raise ValueError(f"probs must be [n, k] with k >= 1, got shape {probs.shape}")
    ordered = np.sort(probs, axis=1)
    top1 = ordered[:, -1]
    top2 = ordered[:, -2] if probs.shape[1] > 1 else np.zeros_like(top1)
    clipped = np.clip(probs, ENTROPY_EPS, 1.0)
    entropy = -(probs * np.log(clipped)).sum(axis=1)
    return {
        "confidence": top1,
        "entropy": np.maximum(entropy, 0.0),
        "margin": top1 - top2,
        "least_confidence": 1.0 - top1,
    }
