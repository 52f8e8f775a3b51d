"""Cell embeddings: PCA projection, atomic save/load, nearest neighbours."""

import numpy as np

from worker.ml import embeddings


def test_projection_keeps_neighbours_and_unit_length():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 300)) * 5
    labels = np.repeat(np.arange(3), 40)
    feats = centres[labels] + rng.normal(size=(120, 300))
    vecs = embeddings.project(feats, dims=16)
    assert vecs.shape == (120, 16)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    rows, sims = embeddings.nearest(vecs[0], vecs, k=10)
    assert rows[0] == 0 and sims[0] >= sims[-1]
    assert (labels[rows] == labels[0]).all()  # neighbours come from the same cluster
    # Restricted to candidates of another cluster: only those come back.
    other = np.flatnonzero(labels == 2)
    rows, _ = embeddings.nearest(vecs[0], vecs, k=5, candidates=other)
    assert set(rows) <= set(other) and len(rows) == 5


def test_save_load_round_trip_and_edge_cases(tmp_path):
    path = embeddings.embeddings_path(tmp_path / "round-1.keras")
    assert path.name == "round-1.embeddings.npz"
    vecs = embeddings.project(np.eye(5, 8), dims=4)
    embeddings.save(path, np.arange(10, 15), vecs)
    ids, loaded = embeddings.load(path)
    assert ids.tolist() == [10, 11, 12, 13, 14]
    assert np.allclose(loaded, vecs, atol=1e-3)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left
    assert embeddings.project(np.zeros((0, 8))).shape == (0, 0)
    rows, sims = embeddings.nearest(vecs[0], vecs, k=0)
    assert len(rows) == 0 and len(sims) == 0
