"""Pool scoring throughput, and scoring from cached features.

Part 1, same run and files: the product's image scoring path
(CellClassifier.predict: threaded Pillow decoding overlapping a compiled
forward pass) vs bare ``model.predict`` on the same files read with Keras'
own loader (keras.utils.load_img + img_to_array, then one predict call).
Both include decoding.  Images/s, median of repeats.

Part 2: scoring N cells whose backbone features are cached (the common case
after a round: re-activating or re-scoring a model): worker.scoring.score_version
end to end on a real SQLite database, reading N cached feature files, computing
calibrated probabilities and uncertainty, and inserting N prediction rows.
Goal: 20,000 cells in under 10 s on 2 cores.

Last line: ``score_ratio: X`` (ours / bare images/s; goal >= 0.9).

    python bench/score_throughput.py                  # CPU: 75 px
    python bench/score_throughput.py --size 299       # GPU
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def bench_images(args) -> float:
    import keras
    import numpy as np

    from worker.ml import precision
    from worker.ml.backend import CellClassifier

    policy = precision.configure(args.precision)
    files = sorted(p for d in sorted(args.data.iterdir()) if d.is_dir() for p in d.iterdir())
    paths = (files * (args.images // len(files) + 1))[:args.images]
    clf, _ = CellClassifier.create(list(range(1, 9)), args.size, "none")
    model = clf.model
    print(f"part 1: {len(paths)} images at {args.size} px, batch {args.batch_size}, policy {policy}")

    def ours() -> float:
        t = time.perf_counter()
        probs, ok = clf.predict(paths, args.batch_size)
        assert ok.all()
        return len(paths) / (time.perf_counter() - t)

    def bare() -> float:
        t = time.perf_counter()
        x = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, target_size=(args.size, args.size)))
                      for p in paths]) / 127.5 - 1.0
        model.predict(x, batch_size=args.batch_size, verbose=0)
        return len(paths) / (time.perf_counter() - t)

    ours(), bare()  # warm-up: tracing and first-call costs
    o, b = [], []
    for rep in range(args.repeats):
        o.append(ours())
        b.append(bare())
        print(f"  repeat {rep + 1}: ours {o[-1]:.1f} images/s, bare model.predict {b[-1]:.1f} images/s")
    ratio = statistics.median(o) / statistics.median(b)
    print(f"  ours {statistics.median(o):.1f} images/s, bare {statistics.median(b):.1f} images/s")
    return ratio


def bench_cached(args) -> None:
    import numpy as np
    from sqlalchemy import func, select

    tmp = Path(tempfile.mkdtemp(prefix="hemaloop-score-"))
    os.environ.update({"HEMALOOP_INSTANCE_DIR": str(tmp / "instance"),
                       "HEMALOOP_SECRET_KEY": "bench-secret-key-0123456789",
                       "HEMALOOP_INPUT_SIZE": "75", "HEMALOOP_BACKBONE_WEIGHTS": "none",
                       "HEMALOOP_LOG_LEVEL": "WARNING"})
    from migrations.runner import upgrade
    from models import Image, ModelVersion, Prediction, Split, TrainingRound
    from models.db import session_scope
    from models.settings import load_settings
    from webapp.bootstrap import create_project
    from worker.ml.backend import CellClassifier
    from worker.ml.feature_store import FeatureStore
    from worker.ml.network import FEATURE_DIM
    from worker.scoring import score_version

    settings = load_settings()
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    n = args.cached
    rng = np.random.default_rng(0)
    shas = [f"{i:064x}" for i in range(n)]
    with session_scope(settings.database_url) as s:
        project = create_project(s, "bench", "pbc8")
        s.execute(Image.__table__.insert(), [
            dict(project_id=project.id, sha256=sha, storage_path=f"images/{sha}.jpg", width=360,
                 height=363, original_name=f"{i}.jpg", source="bench", split=Split.POOL,
                 shuffle_key=float(rng.random())) for i, sha in enumerate(shas)])
        rnd = TrainingRound(project_id=project.id, trigger="cli", warnings=[], config={},
                            timings={})
        s.add(rnd)
        s.flush()
        class_ids = [c.id for c in project.classes]
        clf, _ = CellClassifier.create(class_ids, 75, "none")
        artifact = Path("models") / "bench.keras"
        (settings.storage_dir / artifact).parent.mkdir(parents=True, exist_ok=True)
        clf.save(settings.storage_dir / artifact)
        version = ModelVersion(project_id=project.id, round_id=rnd.id, artifact_path=str(artifact),
                               class_ids=class_ids, input_size=75, backbone_weights="none",
                               metrics={}, temperature=1.3, feature_key="bench-75",
                               is_active=True, config={})
        s.add(version)
        s.flush()
        version_id = version.id
    store = FeatureStore(settings.storage_dir / "features", "bench-75")
    feats = rng.random((n, FEATURE_DIM), dtype=np.float32)
    store.put_many(shas, feats, range(n))
    os.system("sync")
    t = time.perf_counter()
    written = score_version(settings, version_id)
    elapsed = time.perf_counter() - t
    with session_scope(settings.database_url) as s:
        stored = s.scalar(select(func.count(Prediction.id)))
    assert written == stored == n, (written, stored)
    print(f"part 2: scored {n} cached-feature cells (read features, calibrate, uncertainty, "
          f"insert predictions, SQLite) in {elapsed:.2f} s = {n / elapsed:.0f} cells/s "
          f"(goal: 20,000 in < 10 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=75)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cached", type=int, default=20_000)
    parser.add_argument("--precision", default="auto", choices=["auto", "on", "off"])
    default_data = REPO.parent / "shared" / "data" / "pbc-dev"
    parser.add_argument("--data", type=Path,
                        default=default_data if default_data.is_dir() else REPO / "webapp/demo/pbc")
    args = parser.parse_args()
    ratio = bench_images(args)
    if args.cached:
        bench_cached(args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak:.0f} MiB")
    print(f"score_ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
