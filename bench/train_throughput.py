"""Training throughput: the project's fine-tuning step vs a bare keras model.fit.

Same model (InceptionV3 -> GAP -> Dropout -> Dense, top blocks unfrozen), same
images, same batch size, in one run.  "Ours" is CellClassifier.fine_tune's
path: JPEG files through the tf.data pipeline (decode, resize, rotation,
flips, shifts, zoom, stain jitter) into model.fit with class weights and the
progress/cancel callback.  "Bare" is model.fit on the same images already
decoded into a NumPy array, no augmentation.  The first epoch of each (graph
tracing) is not counted.  Last line: ``fit_ratio: X`` (ours / bare images/s;
goal >= 0.9).

    python bench/train_throughput.py                 # CPU: 75 px
    python bench/train_throughput.py --size 299      # GPU
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class EpochTimer:
    def __init__(self):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(cb, epoch, logs=None):
                cb.start = time.perf_counter()

            def on_epoch_end(cb, epoch, logs=None):
                self.times.append(time.perf_counter() - cb.start)

        self.times: list[float] = []
        self.callback = _Timer()


def image_files(data: Path, n: int) -> tuple[list[Path], list[int]]:
    classes = sorted(d for d in data.iterdir() if d.is_dir())
    per_class = [sorted(d.iterdir()) for d in classes]
    paths, labels, i = [], [], 0
    while len(paths) < n:  # round-robin over classes, repeating if the set is small
        k = i % len(classes)
        files = per_class[k]
        paths.append(files[(i // len(classes)) % len(files)])
        labels.append(k)
        i += 1
    return paths, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=75)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="per measurement, first not counted")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--blocks", type=int, default=2, help="top Inception blocks unfrozen")
    parser.add_argument("--precision", default="auto", choices=["auto", "on", "off"])
    default_data = REPO.parent / "shared" / "data" / "pbc-dev"
    parser.add_argument("--data", type=Path,
                        default=default_data if default_data.is_dir() else REPO / "webapp/demo/pbc")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    from worker.ml import precision
    from worker.ml.backend import CellClassifier
    from worker.ml.data import load_image
    from worker.ml.finetune import FINE_TUNE_LEARNING_RATE, unfreeze_top_blocks

    policy = precision.configure(args.precision)
    paths, labels = image_files(args.data, args.images)
    y = np.asarray(labels, dtype=np.int64)
    n_classes = int(y.max()) + 1
    clf, _ = CellClassifier.create(list(range(1, n_classes + 1)), args.size, "none")
    print(f"device: {tf.config.list_physical_devices('GPU') or 'CPU'}; policy {policy}; "
          f"{args.images} images at {args.size} px, batch {args.batch_size}, "
          f"{args.blocks} blocks unfrozen, data {args.data}")

    t = time.perf_counter()
    x = np.stack([load_image(p, args.size) for p in paths])
    print(f"bare: decoded {len(x)} images into memory in {time.perf_counter() - t:.1f} s "
          "(not counted)")

    def run_ours() -> list[float]:
        """CellClassifier.fine_tune, the product's path, with a stopwatch callback."""
        timer = EpochTimer()
        clf.fine_tune(paths, y, [], np.zeros(0, dtype=np.int64), blocks=args.blocks,
                      epochs=args.epochs, batch_size=args.batch_size,
                      should_stop=lambda: False, callbacks=[timer.callback])
        return timer.times

    def run_bare() -> list[float]:
        timer = EpochTimer()
        model = clf.model
        unfreeze_top_blocks(model, args.blocks)
        model.compile(optimizer=keras.optimizers.Adam(FINE_TUNE_LEARNING_RATE),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
                  callbacks=[timer.callback])
        unfreeze_top_blocks(model, 0)
        return timer.times

    ours_ips, bare_ips = [], []
    for rep in range(args.repeats):
        for name, run, sink in (("ours", run_ours, ours_ips), ("bare", run_bare, bare_ips)):
            times = run()
            steady = times[1:] or times
            ips = [len(paths) / t for t in steady]
            sink.extend(ips)
            print(f"repeat {rep + 1} {name}: first epoch {times[0]:.2f} s, then "
                  + ", ".join(f"{t:.2f}" for t in steady) + f" s -> {statistics.median(ips):.1f} images/s")
    ours_m, bare_m = statistics.median(ours_ips), statistics.median(bare_ips)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ours: {ours_m:.1f} images/s (decode + augmentation in tf.data)")
    print(f"bare model.fit: {bare_m:.1f} images/s (pre-decoded arrays, no augmentation)")
    print(f"peak memory: {peak:.0f} MiB")
    print(f"fit_ratio: {ours_m / bare_m:.3f}")


if __name__ == "__main__":
    main()
