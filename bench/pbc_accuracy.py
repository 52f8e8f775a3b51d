"""Accuracy of the default training pipeline on real cells (../shared/data/pbc-dev).

Self-contained: a temporary instance (SQLite, storage), the PBC folder imported
through the product's importer with its reference labels trusted for training,
a stratified 80/20 split, then one real training round (worker.rounds.run_round:
features, head, optional fine-tuning, calibration, evaluation).  Prints the
round's test metrics; last line ``pbc_test_accuracy: X``.

    python bench/pbc_accuracy.py --size 128 --weights none --fine-tune-blocks 0
    python bench/pbc_accuracy.py --features backbone      # or descriptors, both
    python bench/pbc_accuracy.py --size 299 --weights imagenet --fine-tune-blocks 2   # GPU
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "pbc-dev")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--weights", default="none")
    parser.add_argument("--fine-tune-blocks", type=int, default=0)
    parser.add_argument("--fine-tune-epochs", type=int, default=8)
    parser.add_argument("--head-epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--per-class", type=int, default=0, help="cap per class (0: all)")
    from models.feature_sources import DEFAULT_FEATURE_SOURCES, FEATURE_SOURCES

    parser.add_argument("--cached-round", action="store_true",
                        help="then time a second round on the now cached features")
    parser.add_argument("--features", choices=FEATURE_SOURCES, default=DEFAULT_FEATURE_SOURCES,
                        help="the project's feature sources (default: new projects')")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data} not found: this benchmark needs the PBC development set")

    tmp = Path(tempfile.mkdtemp(prefix="hemaloop-bench-"))
    os.environ.update({
        "HEMALOOP_INSTANCE_DIR": str(tmp / "instance"),
        "HEMALOOP_SECRET_KEY": "bench-secret-key-0123456789",
        "HEMALOOP_INPUT_SIZE": str(args.size),
        "HEMALOOP_BACKBONE_WEIGHTS": args.weights,
        "HEMALOOP_HEAD_EPOCHS": str(args.head_epochs),
        "HEMALOOP_FINE_TUNE_EPOCHS": str(args.fine_tune_epochs),
        "HEMALOOP_BATCH_SIZE": str(args.batch_size),
        "HEMALOOP_LOG_LEVEL": "WARNING",
    })
    import numpy as np
    from sqlalchemy import select, update

    from migrations.runner import upgrade
    from models import Image, ModelVersion, Project, Split, TrainingRound
    from models.db import session_scope
    from models.labels import labeled_images
    from models.settings import load_settings
    from webapp.bootstrap import create_project
    from webapp.ingest import import_path
    from worker.launch import create_round
    from worker.rounds import run_round

    settings = load_settings()
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)

    src = args.data
    if args.per_class:
        src = tmp / "subset"
        for class_dir in sorted(args.data.iterdir()):
            (src / class_dir.name).mkdir(parents=True)
            for f in sorted(class_dir.iterdir())[:args.per_class]:
                shutil.copyfile(f, src / class_dir.name / f.name)  # the importer skips links

    t = time.perf_counter()
    with session_scope(settings.database_url) as s:
        project = create_project(s, "pbc", "pbc8", test_share=0.0, train_on_reference=True,
                                 fine_tune_blocks=args.fine_tune_blocks,
                                 feature_sources=args.features)
        report = import_path(s, settings.storage_dir, project, src,
                             max_pixels=settings.max_image_pixels)
        pid = project.id
    print(f"imported {report.imported} cells in {time.perf_counter() - t:.1f} s "
          f"({len(report.rejected)} rejected, {report.duplicates} duplicates)")

    # Stratified 80/20: a fixed 20% of each class becomes the test split.
    rng = np.random.default_rng(0)
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        labeled = labeled_images(s, project, Split.POOL)
        by_class: dict[int, list[int]] = {}
        for item in labeled:
            by_class.setdefault(item.label_class_id, []).append(item.image_id)
        test_ids = []
        for ids in by_class.values():
            ids = rng.permutation(ids)
            test_ids += [int(i) for i in ids[: round(0.2 * len(ids))]]
        s.execute(update(Image).where(Image.id.in_(test_ids)).values(split=Split.TEST))
    print(f"split: {len(labeled) - len(test_ids)} train / {len(test_ids)} test (stratified)")

    with session_scope(settings.database_url) as s:
        round_id = create_round(s, s.get(Project, pid), trigger="cli").id
    t = time.perf_counter()
    status = run_round(settings, round_id, worker="bench")
    wall = time.perf_counter() - t
    with session_scope(settings.database_url) as s:
        rnd = s.get(TrainingRound, round_id)
        version = s.scalar(select(ModelVersion).where(ModelVersion.round_id == round_id))
        if status.value != "succeeded":
            sys.exit(f"round {status.value}: {rnd.error}")
        test, val = version.metrics["test"], version.metrics.get("validation", {})
        print(f"round: {wall:.0f} s; timings: "
              + ", ".join(f"{k} {v:.1f}" for k, v in rnd.timings.items()))
        print(f"features {args.features}, size {args.size}, weights {version.backbone_weights}, "
              f"fine-tuned blocks {version.config.get('fine_tune_blocks', 0)}, "
              f"{version.n_train} training labels")
        fine = version.metrics.get("fine_tune")
        if fine:
            print(f"phase 2: validation loss {fine['val_loss_before']:.3f} -> "
                  f"{fine['val_loss_after']:.3f}: "
                  + ("kept" if fine["kept"] else "reverted to the head-only model"))
        for warning in rnd.warnings or []:
            print(f"round warning: {warning}")
        print(f"validation: n={val.get('n')}, temperature={val.get('temperature', 1):.2f}, "
              f"ECE {val.get('ece_uncalibrated', float('nan')):.3f} -> {val.get('ece', float('nan')):.3f}")
        print(f"test: n={test['n']}, accuracy={test['accuracy']:.4f}, macro_f1={test['macro_f1']:.4f}, "
              f"ece={test['ece']:.3f}")
        for name, m in test["per_class"].items():
            print(f"  {name:13s} P={m['precision']:.2f} R={m['recall']:.2f} F1={m['f1']:.2f} "
                  f"n={m['support']}")
    if args.cached_round:
        # The same round again: every cell's features now come from the caches, so
        # this is the cost of a head-only round on cached cells.
        with session_scope(settings.database_url) as s:
            again = create_round(s, s.get(Project, pid), trigger="cli").id
        t = time.perf_counter()
        status = run_round(settings, again, worker="bench")
        wall2 = time.perf_counter() - t
        with session_scope(settings.database_url) as s:
            rnd = s.get(TrainingRound, again)
            print(f"cached round ({status.value}, {rnd.timings.get('features_cached', 0):.0f} "
                  f"cells from the cache): {wall2:.1f} s; timings: "
                  + ", ".join(f"{k} {v:.1f}" for k, v in rnd.timings.items()))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak:.0f} MiB")
    print(f"pbc_test_macro_f1: {test['macro_f1']:.4f}")
    print(f"pbc_test_accuracy: {test['accuracy']:.4f}")


if __name__ == "__main__":
    main()
