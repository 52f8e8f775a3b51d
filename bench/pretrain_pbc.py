"""Self-supervised (SimSiam) pretraining of the backbone on pbc-dev, CPU: features before vs after.

Pretrains a randomly initialised InceptionV3 (the project's seed, as a fresh
round builds it) on every image of ../shared/data/pbc-dev without labels
(worker/ml/pretrain.py, the code the admin action runs), within a time
budget, then compares the backbone's global-average-pooled features before
and after, in the same run:

- 10-NN class purity on standardised features (all images);
- test accuracy of multinomial logistic regression on standardised features,
  stratified 80/20, mean of 3 seeds, with 100, 200, 500 and all training labels
  (the same measurement as bench/descriptor_features.py and issue 15's table).

The pool used for pretraining is every image, test split included, as a
project's unlabeled pool includes the cells it has not labeled yet; no label
is read before the evaluation.

Last line: ``pretrain_knn_purity_after: X``.

    nice python bench/pretrain_pbc.py --size 96 --minutes 12
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# bench/descriptor_features.py (imported for the same measurement) pins BLAS to
# one thread for its per-cell cost; here every core is the worker's.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, str(os.cpu_count() or 1))

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.descriptor_features import LABEL_COUNTS, accuracies, knn_purity  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "pbc-dev")
    parser.add_argument("--size", type=int, default=96, help="input size in px (75-96 on CPU)")
    parser.add_argument("--minutes", type=float, default=12.0,
                        help="pretraining time budget (the feature passes come on top)")
    parser.add_argument("--epochs", type=int, default=50, help="upper bound; the budget stops it")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "pretrain")
    args = parser.parse_args()
    if not args.data.is_dir():
        fallback = Path("/work/shared/data/pbc-dev")
        if not fallback.is_dir():
            sys.exit(f"SKIP: {args.data} not found: this benchmark needs the PBC development set")
        args.data = fallback

    import keras

    from worker.backbone import SEED
    from worker.ml.network import build_classifier
    from worker.ml.pretrain import PretrainConfig, pooled_features, pretrain, save_backbone_weights

    classes = sorted(p.name for p in args.data.iterdir() if p.is_dir())
    paths = sorted(p for c in classes for p in (args.data / c).iterdir() if p.is_file())
    y = np.array([classes.index(p.parent.name) for p in paths])
    load = os.getloadavg()
    print(f"{len(paths)} images, {len(classes)} classes; {args.size} px; "
          f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)

    # "Before": the backbone a fresh round builds (random init with the project's seed).
    fresh = build_classifier(len(classes), args.size, None, seed=SEED).get_layer("backbone")
    before_file = args.out / f"random-{args.size}.h5"
    save_backbone_weights(fresh, before_file)
    del fresh
    keras.backend.clear_session()

    def evaluate(name: str, weights: Path) -> tuple[float, list[float]]:
        start = time.perf_counter()
        feats = pooled_features(paths, args.size, weights)
        secs = time.perf_counter() - start
        purity = knn_purity(feats, y)
        acc, _ = accuracies(feats, y, len(classes))
        counts = ", ".join(f"{'all' if n is None else n}: {a:.3f}" for n, a in zip(LABEL_COUNTS, acc))
        print(f"{name}: 10-NN purity {purity:.3f}; head accuracy ({counts}); "
              f"features {secs:.0f} s")
        return purity, acc

    purity_before, acc_before = evaluate("before (random init)", before_file)

    config = PretrainConfig(epochs=args.epochs, input_size=args.size, batch_size=args.batch,
                            learning_rate=args.lr, max_seconds=args.minutes * 60, seed=SEED)
    last = [0.0]

    def progress(step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if now - last[0] > 30:
            last[0] = now
            print(f"  step {step}: loss {loss:.4f}", flush=True)

    after_file = args.out / f"simsiam-{args.size}.h5"
    result = pretrain(paths, after_file, config, init_weights=before_file, progress=progress)
    print(f"pretraining: {result.steps} steps ({result.epochs_done:.2f} epochs) of batch "
          f"{args.batch} in {result.seconds:.0f} s ({result.seconds / max(result.steps, 1):.2f} "
          f"s/step incl. the first step's graph tracing); loss per epoch "
          f"{[round(v, 4) for v in result.loss_history]}; projection spread "
          f"{[round(v, 4) for v in result.collapse_std]} (collapsed: 0, spread: "
          f"{1 / np.sqrt(config.projection_dim):.4f})")
    keras.backend.clear_session()
    purity_after, acc_after = evaluate("after (SimSiam)", after_file)
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"pretrain_head_accuracy_before: {acc_before[-1]:.3f}")
    print(f"pretrain_head_accuracy_after: {acc_after[-1]:.3f}")
    print(f"pretrain_knn_purity_before: {purity_before:.3f}")
    print(f"pretrain_knn_purity_after: {purity_after:.3f}")


if __name__ == "__main__":
    main()
