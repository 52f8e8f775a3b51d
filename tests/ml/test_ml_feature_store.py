"""The backbone feature cache: files per image and backbone, never an exception for a
missing or damaged file, and the keys that say which backbone features belong to."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from worker.ml.feature_store import FeatureStore, backbone_key, prune

DIM = 8


def _sha(i: int) -> str:
    return hashlib.sha256(f"cell-{i}".encode()).hexdigest()


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    return FeatureStore(tmp_path / "features", "random-s0-tfx-75")


def test_put_and_get_round_trip(store):
    shas = [_sha(i) for i in range(5)]
    feats = np.random.default_rng(0).normal(size=(5, DIM)).astype(np.float32)
    assert store.put_many(shas, feats, [0, 2, 4]) == 3

    got, found = store.get_many(shas, DIM)
    assert got.dtype == np.float32 and got.shape == (5, DIM)
    assert found.tolist() == [True, False, True, False, True]
    np.testing.assert_array_equal(got[found], feats[[0, 2, 4]])
    assert not got[~found].any()  # missing rows are zero
    # Files live under the key, by content hash; no temporary files left behind.
    files = sorted(p.relative_to(store.folder) for p in store.folder.rglob("*") if p.is_file())
    assert files == sorted(Path(s[:2]) / f"{s}.npy" for s in (shas[0], shas[2], shas[4]))

    # Another key (another backbone) sees none of them.
    other = FeatureStore(store.root, "imagenet-75")
    assert not other.get_many(shas, DIM)[1].any()
    # Overwriting replaces.
    store.put_many(shas, feats[::-1].copy(), [0])
    np.testing.assert_array_equal(store.get_many(shas[:1], DIM)[0][0], feats[4])


def test_float64_rows_are_stored_as_float32(store):
    shas = [_sha(0)]
    store.put_many(shas, np.array([[0.1] * DIM]), [0])
    got, found = store.get_many(shas, DIM)
    assert found.all() and got.dtype == np.float32
    np.testing.assert_allclose(got[0], 0.1, rtol=1e-6)


def _pickled(path):
    with open(path, "wb") as fh:
        np.save(fh, np.array([{"x": 1}], dtype=object), allow_pickle=True)


DAMAGE = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:40]),
    "garbage": lambda path: path.write_bytes(b"\x93NUMPY garbage"),
    # What a crash between writing and flushing can leave after the rename.
    "empty": lambda path: path.write_bytes(b""),
    "wrong length": lambda path: np.save(path, np.ones(DIM + 1, dtype=np.float32)),
    "pickled object": _pickled,
    "a directory": lambda path: (path.unlink(), path.mkdir()),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_or_wrong_files_count_as_not_found(store, damage):
    shas = [_sha(i) for i in range(3)]
    store.put_many(shas, np.ones((3, DIM), dtype=np.float32), range(3))
    DAMAGE[damage](store._path(shas[1]))

    got, found = store.get_many(shas + [_sha(9)], DIM)
    assert found.tolist() == [True, False, True, False]
    assert not got[1].any() and got[[0, 2]].all()
    # Stored again, it is found again.
    if damage != "a directory":
        store.put_many(shas, np.full((3, DIM), 2.0, dtype=np.float32), [1])
        assert store.get_many(shas, DIM)[1].all()


def test_get_from_a_store_that_does_not_exist(tmp_path):
    store = FeatureStore(tmp_path / "nowhere", "imagenet-299")
    got, found = store.get_many([_sha(1), _sha(2)], DIM)
    assert got.shape == (2, DIM) and not found.any()
    assert store.get_many([], DIM)[0].shape == (0, DIM)


@pytest.mark.parametrize("key", ["", "../escape", "a/b", ".hidden", "-dash", "x" * 121,
                                 "round 1", "key\n", "/abs"])
def test_unsafe_keys_are_refused(tmp_path, key):
    with pytest.raises(ValueError, match="unsafe feature key"):
        FeatureStore(tmp_path, key)
    assert list(tmp_path.iterdir()) == []


def test_prune_keeps_the_given_keys(tmp_path):
    root = tmp_path / "features"
    for key in ("imagenet-299", "round3", "round7", "file-abc-75"):
        s = FeatureStore(root, key)
        s.put_many([_sha(1)], np.ones((1, DIM)), [0])
    (root / "notes.txt").write_text("not a feature set")
    (root / ".partial").mkdir()  # not a key a store could have written

    removed = prune(root, {"imagenet-299", "round7", "never-written"})
    assert sorted(removed) == ["file-abc-75", "round3"]
    assert sorted(p.name for p in root.iterdir()) == [".partial", "imagenet-299", "notes.txt",
                                                      "round7"]
    assert FeatureStore(root, "round7").get_many([_sha(1)], DIM)[1].all()
    assert prune(root, {"imagenet-299", "round7"}) == []
    assert prune(tmp_path / "missing", set()) == []


def test_backbone_keys():
    assert backbone_key("imagenet", 299) == "imagenet-299"
    assert backbone_key("imagenet", 299, seed=5, tf_version="2.21.0") == "imagenet-299"
    assert backbone_key(None, 75, tf_version="2.21.0") == "random-s0-tf2.21.0-75"
    assert backbone_key(None, 75, seed=3, tf_version="2.21.0") == "random-s3-tf2.21.0-75"
    assert backbone_key(None, 75) == "random-s0-tfx-75"
    digest = hashlib.sha256(b"weights").hexdigest()
    assert backbone_key("/w/backbone.h5", 150, weights_digest=digest) == f"file-{digest[:16]}-150"
    with pytest.raises(ValueError, match="digest"):
        backbone_key("/w/backbone.h5", 150)
    # Different inputs never share features; every key is a usable store key.
    keys = {backbone_key("imagenet", 299), backbone_key("imagenet", 75),
            backbone_key(None, 75, tf_version="2.21.0"),
            backbone_key(None, 299, tf_version="2.21.0"),
            backbone_key(None, 75, seed=1, tf_version="2.21.0"),
            backbone_key("/w.h5", 75, weights_digest=digest)}
    assert len(keys) == 6
    for key in keys:
        FeatureStore(Path("/tmp"), key)


@pytest.mark.slow
def test_random_init_is_deterministic_so_its_features_are_cacheable(tmp_path):
    """Two builds with the same seed give the same features (and the same key).  This
    is what lets a round read random-init features cached by an earlier round, or by
    another worker."""
    tf = pytest.importorskip("tensorflow", reason="needs TensorFlow (the cpu or gpu extra)")
    from PIL import Image

    from worker.ml.backend import CellClassifier
    from worker.training import SEED, pristine_key

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        pixels = rng.integers(0, 256, (75, 75, 3), dtype=np.uint8)
        paths.append(tmp_path / f"cell{i}.png")
        Image.fromarray(pixels).save(paths[-1])

    features = []
    for _ in range(2):
        clf, _ = CellClassifier.create([1, 2], 75, "none", seed=SEED)
        f, ok = clf.features(paths, batch_size=3)
        assert ok.all() and np.isfinite(f).all()
        features.append(f)
        assert pristine_key(clf, 75) == backbone_key(None, 75, seed=SEED,
                                                     tf_version=tf.__version__)
    np.testing.assert_array_equal(features[0], features[1])
    # Not trivially equal: the cells' features differ from each other.
    assert not np.allclose(features[0][0], features[0][1])
