"""``hemaloop simulate``: the real loop on a labeled folder, and its refusals."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from models.strategies import STRATEGY_NAMES
from tests.helpers import DEMO_DIR, base_env
from webapp.cli import main
from worker.simulation.curves import labels_to_reach, mean_curves
from worker.simulation.dataset import SimulationRefused, check_simulable, read_class_folders
from worker.simulation.loop import CurvePoint


def _folder(root, counts: dict[str, int]):
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for f in sorted((DEMO_DIR / name).iterdir())[:n]:
            shutil.copy(f, root / name / f.name)
    return root


def _simulate(tmp_path, *args: str):
    env = base_env(tmp_path)
    return CliRunner().invoke(main, ["simulate", *args, "--out", str(tmp_path / "out")], env=env)


def test_a_folder_with_one_class_is_refused_naming_it(tmp_path):
    data = _folder(tmp_path / "d", {"lymphocyte": 6})
    result = _simulate(tmp_path, "--data", str(data))
    assert result.exit_code != 0
    assert "at least 2 classes; found lymphocyte: 6" in result.output


def test_classes_too_small_for_the_test_split_are_named(tmp_path):
    data = _folder(tmp_path / "d", {"lymphocyte": 8, "basophil": 2, "monocyte": 1})
    result = _simulate(tmp_path, "--data", str(data), "--initial", "2", "--batch", "2")
    assert result.exit_code != 0
    assert "Classes too small for a 20% test split" in result.output
    assert "basophil (2), monocyte (1)" in result.output and "lymphocyte" not in \
        result.output.split("split")[1]


def test_an_unknown_strategy_and_an_oversized_round_are_refused(tmp_path):
    data = _folder(tmp_path / "d", {"lymphocyte": 5, "basophil": 5})
    result = _simulate(tmp_path, "--data", str(data), "--strategy", "random,guesswork")
    assert result.exit_code != 0 and "Unknown strategy 'guesswork'" in result.output
    assert all(name in result.output for name in STRATEGY_NAMES)
    with pytest.raises(SimulationRefused, match=r"\(4 \+ 5\) exceed the 8 cells"):
        check_simulable(read_class_folders(data), initial=4, batch=5)


def test_labels_to_reach_counts_the_first_crossing_per_repeat():
    pts = [CurvePoint("a", r, n, acc, 0.0) for r, curve in enumerate(
        [[(10, 0.5), (20, 0.8), (30, 0.7)], [(10, 0.6), (20, 0.7), (30, 0.9)]])
        for n, acc in curve]
    (t,) = labels_to_reach(pts, 0.75)
    assert t.per_repeat == [20, 30] and t.mean == 25 and t.sd == 5
    (never,) = labels_to_reach(pts, 0.95)
    assert never.mean is None
    (curve,) = mean_curves(pts)
    assert curve.labels == [10, 20, 30] and curve.mean[0] == pytest.approx(0.55)


@pytest.mark.slow
def test_the_loop_writes_curves_plot_and_summary(tmp_path):
    data = _folder(tmp_path / "d", {"lymphocyte": 8, "neutrophil": 8, "eosinophil": 8})
    result = _simulate(tmp_path, "--data", str(data), "--strategy", "random,margin,bald",
                       "--initial", "6", "--batch", "3", "--rounds", "2", "--repeats", "2")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "out" / "curves.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["strategy", "repeat", "labels", "accuracy", "macro_f1"]
    assert len(rows) == 3 * 2 * 3
    assert {(r["strategy"], r["labels"]) for r in rows} == {
        (s, n) for s in ("random", "margin", "bald") for n in ("6", "9", "12")}
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    svg = (tmp_path / "out" / "curves.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polygon") == 3 and "bald" in svg
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_test"] == 6 and summary["n_pool"] == 18
    assert set(summary["labels_to_target"]) == {"random", "margin", "bald"}
    # Features were cached: a second run computes none (same result, faster).
    again = _simulate(tmp_path, "--data", str(data), "--strategy", "margin",
                      "--initial", "6", "--batch", "3", "--rounds", "0", "--repeats", "1")
    assert again.exit_code == 0, again.output


# --- feature sources (issue 15) ---------------------------------------------------------

def _feature_folders(root) -> set[str]:
    return {p.name.split("-")[0] for p in root.rglob("*") if p.is_dir()
            and p.parent.name == "features"}


@pytest.mark.slow
@pytest.mark.parametrize("features, folders", [
    ("descriptors", {"descriptors"}),
    ("backbone", {"random"}),
    ("both", {"random", "descriptors"}),
])
def test_simulate_reads_the_features_asked_for(tmp_path, features, folders):
    data = _folder(tmp_path / "d", {"lymphocyte": 8, "neutrophil": 8, "eosinophil": 8})
    result = _simulate(tmp_path, "--data", str(data), "--strategy", "random,margin",
                       "--initial", "6", "--batch", "3", "--rounds", "1", "--repeats", "1",
                       "--features", features)
    assert result.exit_code == 0, result.output
    assert f"features: {features}" in result.output
    # Each part came through its own cache, under the key a round would use.
    assert _feature_folders(tmp_path) == folders
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert 0.0 <= summary["full_pool_accuracy"] <= 1.0 and summary["n_pool"] == 18


def test_simulate_refuses_unknown_features(tmp_path):
    data = _folder(tmp_path / "d", {"lymphocyte": 5, "basophil": 5})
    result = _simulate(tmp_path, "--data", str(data), "--features", "colour")
    assert result.exit_code != 0 and "'colour' is not one of" in result.output


@pytest.mark.slow
def test_simulate_on_precomputed_embeddings(tmp_path):
    """A .npy in the folder's file order: here features that give each class away,
    so the whole-pool model is perfect; no image is read for features."""
    data = _folder(tmp_path / "d", {"lymphocyte": 8, "neutrophil": 8, "eosinophil": 8})
    labels = read_class_folders(data).labels
    rng = np.random.default_rng(0)
    x = np.eye(3)[labels] * 5 + rng.normal(0, 0.1, (len(labels), 3))
    np.save(tmp_path / "emb.npy", x.astype(np.float32))
    result = _simulate(tmp_path, "--data", str(data), "--strategy", "random,margin",
                       "--initial", "6", "--batch", "3", "--rounds", "1", "--repeats", "1",
                       "--embeddings", str(tmp_path / "emb.npy"))
    assert result.exit_code == 0, result.output
    assert "emb.npy (precomputed)" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["full_pool_accuracy"] == 1.0
    assert _feature_folders(tmp_path) == set()  # nothing computed


def test_simulate_refuses_embeddings_that_do_not_fit(tmp_path):
    data = _folder(tmp_path / "d", {"lymphocyte": 5, "basophil": 5})
    np.save(tmp_path / "short.npy", np.zeros((7, 4), dtype=np.float32))
    small = ("--initial", "2", "--batch", "2")
    result = _simulate(tmp_path, "--data", str(data), *small,
                       "--embeddings", str(tmp_path / "short.npy"))
    assert result.exit_code != 0
    assert "needs 10 rows (one per cell)" in result.output
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    result = _simulate(tmp_path, "--data", str(data), *small,
                       "--embeddings", str(tmp_path / "bad.npy"))
    assert result.exit_code != 0 and "is not a readable .npy file" in result.output
    nan = np.zeros((10, 2), dtype=np.float32)
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    result = _simulate(tmp_path, "--data", str(data), *small,
                       "--embeddings", str(tmp_path / "nan.npy"))
    assert result.exit_code != 0 and "NaN or infinite" in result.output
