"""The strategy registry and :func:`select_batch`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.strategies import STRATEGY_NAMES
from worker.ml.uncertainty import uncertainty_scores

from .bald import bald_scores
from .diversity import k_center_greedy, kmeans_representatives
from .errors import BatchTooLarge, SelectionError, UnknownStrategy

# hybrid: the diverse batch is drawn from this many times B most uncertain cells.
HYBRID_CANDIDATES_PER_PICK = 10
COLD_START = "kmeans"


@dataclass
class Candidates:
    """What a strategy may look at, one row per unlabeled candidate cell.

    ``probs`` is None before any model exists (cold start).  ``embeddings``
    are unit-length PCA projections of the backbone features (the head's
    input); ``labeled_embeddings`` the same for cells already labeled.
    ``mc_probs`` [T, n, k] are MC-dropout passes (BALD only).
    ``class_counts`` [k] counts training labels per model output.
    """

    n: int
    probs: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    labeled_embeddings: np.ndarray | None = None
    mc_probs: np.ndarray | None = None
    class_counts: np.ndarray | None = None


@dataclass(frozen=True)
class Strategy:
    name: str
    pick: Callable[[Candidates, int, np.random.Generator], np.ndarray]
    # Inputs the strategy reads besides probs: "embeddings", "mc_probs", "class_counts".
    needs: frozenset[str] = frozenset()
    # Uncertainty-only strategies can be ranked in SQL over the whole pool: by this
    # column of the stored predictions, most uncertain first (descending, or
    # ascending where a small score means unsure, as the margin's does).
    sql_score: str | None = None
    sql_ascending: bool = False


def _top(scores: np.ndarray, batch: int) -> np.ndarray:
    """Rows of the ``batch`` highest scores, highest first (ties by row: stable)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return order[:batch].astype(np.int64)


def _need(c: Candidates, attr: str, strategy: str) -> np.ndarray:
    value = getattr(c, attr)
    if value is None:
        raise SelectionError(f"Strategy {strategy!r} needs {attr.replace('_', ' ')}.")
    return value


def _random(c: Candidates, batch: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(c.n, size=batch, replace=False).astype(np.int64)


def _least_confidence(c: Candidates, batch: int, rng: np.random.Generator) -> np.ndarray:
    return _top(uncertainty_scores(_need(c, "probs", "least_confidence"))["least_confidence"],
                batch)


def _margin(c: Candidates, batch: int, rng: np.random.Generator) -> np.ndarray:
    return _top(-uncertainty_scores(_need(c, "probs", "margin"))["margin"], batch)


def _entropy(c: Candidates, batch: int, rng: np.random.Generator) -> np.ndarray:
    return _top(uncertainty_scores(_need(c, "probs", "entropy"))["entropy"], batch)


def _bald(c: Candidates, batch: int, rng: np.random.Generator) -> np.ndarray:
    return _top(bald_scores(_need(c, "mc_probs", "bald")), batch)


def _coreset(c: Candidates, batch: int, rng: np.random.Generator) -> np.ndarray:
    return k_center_greedy(_need(c, "embeddings", "coreset"), batch,
                           seeds=c.labeled_embeddings, rng=rng)


def _hybrid(c: Candidates, batch: int, rng: np.random.Generator) -> np.ndarray:
    probs = _need(c, "probs", "hybrid")
    emb = _need(c, "embeddings", "hybrid")
    uncertainty = 1.0 - uncertainty_scores(probs)["margin"]
    top = _top(uncertainty, min(c.n, HYBRID_CANDIDATES_PER_PICK * batch))
    picked = kmeans_representatives(emb[top], batch, rng, weights=uncertainty[top])
    chosen = top[picked]
    # Most uncertain first within the batch, so a reader who stops early has
    # still seen the most useful cells.
    return chosen[np.argsort(-uncertainty[chosen], kind="stable")]


def _class_balanced(c: Candidates, batch: int, rng: np.random.Generator) -> np.ndarray:
    """Quotas per predicted class, in inverse proportion to its labels (+1), each
    filled with that class's most uncertain cells; what a class cannot fill goes
    to the most uncertain cells overall."""
    probs = _need(c, "probs", "class_balanced")
    counts = np.asarray(_need(c, "class_counts", "class_balanced"), dtype=np.float64)
    uncertainty = 1.0 - uncertainty_scores(probs)["margin"]
    predicted = probs.argmax(axis=1)
    inverse = 1.0 / (counts + 1.0)
    share = inverse / inverse.sum() * batch
    quota = np.floor(share).astype(int)
    # Largest remainders get the seats floor() left over.
    for k in np.argsort(-(share - quota), kind="stable")[: batch - quota.sum()]:
        quota[k] += 1
    chosen: list[int] = []
    taken = np.zeros(c.n, dtype=bool)
    for k in np.argsort(counts, kind="stable"):  # rarest class first
        rows = np.flatnonzero(predicted == k)
        rows = rows[np.argsort(-uncertainty[rows], kind="stable")][: quota[k]]
        chosen.extend(int(r) for r in rows)
        taken[rows] = True
    if len(chosen) < batch:
        rest = [int(r) for r in _top(uncertainty, c.n) if not taken[r]]
        chosen.extend(rest[: batch - len(chosen)])
    out = np.asarray(chosen, dtype=np.int64)
    return out[np.argsort(-uncertainty[out], kind="stable")]


_IMPLEMENTED = {s.name: s for s in [
    Strategy("random", _random),
    Strategy("least_confidence", _least_confidence, sql_score="least_confidence"),
    Strategy("margin", _margin, sql_score="margin", sql_ascending=True),
    Strategy("entropy", _entropy, sql_score="entropy"),
    Strategy("bald", _bald, frozenset({"mc_probs"})),
    Strategy("coreset", _coreset, frozenset({"embeddings"})),
    Strategy("hybrid", _hybrid, frozenset({"embeddings"})),
    Strategy("class_balanced", _class_balanced, frozenset({"class_counts"})),
]}
if set(_IMPLEMENTED) != set(STRATEGY_NAMES):
    raise ImportError(f"strategies implemented {sorted(_IMPLEMENTED)} differ from "
                      f"models/strategies.py's {sorted(STRATEGY_NAMES)}")
# In the one list's order (the admin form's).
STRATEGIES: dict[str, Strategy] = {name: _IMPLEMENTED[name] for name in STRATEGY_NAMES}


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise UnknownStrategy(name, STRATEGIES) from None


def check_request(name: str, batch: int, pool: int) -> Strategy:
    """The strategy, or a clear error for an unknown name or a batch the pool can't fill."""
    strategy = get_strategy(name)
    if batch < 1:
        raise SelectionError(f"The round size must be at least 1, got {batch}.")
    if batch > pool:
        raise BatchTooLarge(batch, pool)
    return strategy


def cold_start(c: Candidates, batch: int, rng: np.random.Generator) -> np.ndarray:
    """A diverse first batch before any model: k-means representatives of the pool."""
    return kmeans_representatives(_need(c, "embeddings", "the cold start"), batch, rng)


def select_batch(name: str, candidates: Candidates, batch: int,
                 rng: np.random.Generator) -> np.ndarray:
    """Rows of ``candidates`` to label next (``batch`` distinct rows, best first)."""
    strategy = check_request(name, batch, candidates.n)
    if strategy.name != "random" and candidates.probs is None:
        return cold_start(candidates, batch, rng)
    chosen = strategy.pick(candidates, batch, rng)
    assert len(set(chosen.tolist())) == len(chosen) == batch, (strategy.name, len(chosen))
    return chosen
