"""Selection strategies on crafted inputs: each picks what it claims to, bad requests fail clearly."""

from __future__ import annotations

import numpy as np
import pytest

from models.strategies import DEFAULT_STRATEGY, STRATEGY_NAMES
from worker.ml import selection
from worker.ml.selection import (
    BatchTooLarge, Candidates, STRATEGIES, UnknownStrategy, select_batch,
)
from worker.ml.selection.bald import bald_scores, mc_dropout_probs
from worker.ml.selection.diversity import k_center_greedy, kmeans_representatives

RNG = np.random.default_rng


def _blobs(centres: int = 4, per: int = 25, dim: int = 8, seed: int = 0):
    rng = RNG(seed)
    means = rng.normal(scale=10, size=(centres, dim))
    x = np.concatenate([m + rng.normal(size=(per, dim)) for m in means]).astype(np.float32)
    return x, np.repeat(np.arange(centres), per)


def _full(n: int = 100, k: int = 4, seed: int = 0) -> Candidates:
    rng = RNG(seed)
    probs = rng.dirichlet(np.full(k, 0.5), size=n)
    return Candidates(n=n, probs=probs, embeddings=rng.normal(size=(n, 6)).astype(np.float32),
                      labeled_embeddings=rng.normal(size=(5, 6)).astype(np.float32),
                      mc_probs=rng.dirichlet(np.ones(k), size=(5, n)),
                      class_counts=np.array([10, 1, 5, 0]))


def test_the_registry_matches_the_names_the_models_know():
    assert tuple(STRATEGIES) == STRATEGY_NAMES
    assert selection.DEFAULT_STRATEGY == DEFAULT_STRATEGY in STRATEGIES


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_every_strategy_returns_b_distinct_rows(name):
    rows = select_batch(name, _full(), 17, RNG(1))
    assert len(rows) == 17 and len(set(rows.tolist())) == 17
    assert rows.min() >= 0 and rows.max() < 100


def test_an_unknown_strategy_is_a_value_error_listing_the_known_ones():
    with pytest.raises(UnknownStrategy) as err:
        select_batch("vibes", _full(), 3, RNG(0))
    assert isinstance(err.value, ValueError)
    assert "'vibes'" in str(err.value)
    assert all(name in str(err.value) for name in STRATEGY_NAMES)


def test_a_round_larger_than_the_pool_is_refused():
    with pytest.raises(BatchTooLarge, match="round size 101 is larger than the pool of 100"):
        select_batch("margin", _full(), 101, RNG(0))
    with pytest.raises(ValueError, match="at least 1"):
        select_batch("margin", _full(), 0, RNG(0))


def test_uncertainty_strategies_pick_the_least_certain_rows():
    probs = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0],
                      [0.34, 0.33, 0.33], [0.9, 0.05, 0.05]])
    c = Candidates(n=5, probs=probs)
    assert select_batch("least_confidence", c, 1, RNG(0)).tolist() == [3]
    assert select_batch("entropy", c, 1, RNG(0)).tolist() == [3]
    # Margin: rows 2 (0.5 vs 0.5) and 3 (0.34 vs 0.33) are closest to a tie.
    assert select_batch("margin", c, 2, RNG(0)).tolist() == [2, 3]


def test_bald_prefers_disagreement_between_passes_over_agreed_uncertainty():
    agreed = np.tile([[0.5, 0.5]], (10, 1))                     # always 50/50
    disagree = np.array([[0.95, 0.05], [0.05, 0.95]] * 5)        # confident, but flip-flops
    mc = np.stack([agreed, disagree], axis=1)                     # [T=10, n=2, k=2]
    scores = bald_scores(mc)
    assert scores[1] > 0.3 > scores[0] - 1e-9
    assert select_batch("bald", Candidates(n=2, probs=mc.mean(0), mc_probs=mc), 1,
                        RNG(0)).tolist() == [1]


def test_mc_dropout_passes_vary_and_average_to_the_deterministic_head():
    rng = RNG(0)
    x = rng.normal(size=(50, 32)).astype(np.float32)
    kernel, bias = rng.normal(size=(32, 3)).astype(np.float32), np.zeros(3, np.float32)
    mc = mc_dropout_probs(x, kernel, bias, rate=0.3, passes=200, rng=rng)
    assert mc.shape == (200, 50, 3) and np.allclose(mc.sum(-1), 1, atol=1e-5)
    assert mc.std(axis=0).mean() > 0.01
    logits = x @ kernel
    exact = np.exp(logits - logits.max(1, keepdims=True))
    exact /= exact.sum(1, keepdims=True)
    assert (mc.mean(0).argmax(1) == exact.argmax(1)).mean() > 0.85


def test_coreset_picks_the_cell_farthest_from_everything_labeled():
    emb = np.array([[0, 0], [0.1, 0], [5, 5], [0, 0.2]], dtype=np.float32)
    c = Candidates(n=4, probs=np.full((4, 2), 0.5), embeddings=emb,
                   labeled_embeddings=np.array([[0, 0.05]], dtype=np.float32))
    assert select_batch("coreset", c, 1, RNG(0)).tolist() == [2]
    assert k_center_greedy(emb, 4, rng=RNG(0)).shape == (4,)


def test_hybrid_spreads_its_batch_over_the_uncertain_cells():
    x, blob = _blobs(centres=2, per=30)
    # The 20 most uncertain cells, 10 per blob, are all ties: a diverse pair spans both blobs.
    probs = np.tile([0.9, 0.1], (len(x), 1))
    probs[:10] = probs[30:40] = [0.5, 0.5]
    rows = select_batch("hybrid", Candidates(n=len(x), probs=probs, embeddings=x), 2, RNG(0))
    assert set(blob[rows]) == {0, 1}


def test_class_balanced_favours_cells_predicted_as_rare_classes():
    n = 40
    probs = np.zeros((n, 3))
    probs[:30] = [0.55, 0.45, 0.0]    # predicted common class 0, very uncertain
    probs[30:] = [0.0, 0.2, 0.8]      # predicted rare class 2, fairly sure
    c = Candidates(n=n, probs=probs, class_counts=np.array([100, 100, 1]))
    rows = select_batch("class_balanced", c, 10, RNG(0))
    assert (rows >= 30).sum() >= 8   # the rare class gets almost the whole batch
    assert (select_batch("margin", c, 10, RNG(0)) < 30).all()  # plain margin would not


def test_cold_start_takes_one_representative_per_cluster_not_random_cells():
    x, blob = _blobs(centres=5, per=40)
    rows = select_batch("margin", Candidates(n=len(x), embeddings=x), 5, RNG(0))
    assert sorted(blob[rows].tolist()) == [0, 1, 2, 3, 4]
    assert len(kmeans_representatives(x, 5, RNG(1))) == 5
    # random stays random before a model too (no embeddings needed)
    assert len(select_batch("random", Candidates(n=len(x)), 5, RNG(0))) == 5


def test_a_name_without_a_strategy_stops_the_import_and_says_where_the_names_live(monkeypatch):
    """The registry is checked against models/strategies.py's list when it loads (a
    fresh copy of the module here, so the real one stays as it is)."""
    import importlib.util
    import sys

    import models.strategies
    from worker.ml.selection import strategies

    monkeypatch.setattr(models.strategies, "STRATEGY_NAMES", STRATEGY_NAMES + ("oracle",))
    spec = importlib.util.spec_from_file_location("worker.ml.selection._strategies_copy",
                                                  strategies.__file__)
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, copy)  # dataclasses look their module up
    with pytest.raises(ImportError) as err:
        spec.loader.exec_module(copy)
    assert "models/strategies.py's" in str(err.value) and "'oracle'" in str(err.value)
