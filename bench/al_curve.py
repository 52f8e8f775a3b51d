"""Active learning on real cells: every strategy against random (../shared/data/pbc-dev).

Self-contained: the simulator (worker/simulation/, the project's own head
training, scoring and selection code) on the PBC development folder, with the
features new projects use by default (``--features``, models/feature_sources.py:
cell descriptors since issue 15; ``backbone`` is a random-init InceptionV3 at
128 px by default, as ImageNet weights cannot be downloaded on the benchmark
machine) computed once and cached under bench/out/features, so head-only
rounds are all that repeats.

For each strategy: labels needed to reach A = 95% of the accuracy of a model
trained on the whole pool (mean ± sd over the repeats; a repeat stops once
it reaches A).  Last line: ``label_savings_vs_random: X`` = random's mean
labels to reach A / the default strategy's.

    python bench/al_curve.py                      # all strategies, 3 repeats
    python bench/al_curve.py --strategies random,margin --repeats 5
    python bench/al_curve.py --features backbone
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    from models.feature_sources import DEFAULT_FEATURE_SOURCES, FEATURE_SOURCES
    from worker.ml.selection import DEFAULT_STRATEGY, STRATEGIES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "pbc-dev")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--initial", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--weights", default="none")
    parser.add_argument("--features", choices=FEATURE_SOURCES, default=DEFAULT_FEATURE_SOURCES)
    parser.add_argument("--default", default=DEFAULT_STRATEGY,
                        help="the strategy the savings are computed for")
    parser.add_argument("--at-labels", type=int, default=200,
                        help="also report each strategy's accuracy at this many labels")
    parser.add_argument("--no-stop", action="store_true",
                        help="run every round (not stopped at A): accuracy at --at-labels "
                             "for every repeat")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "al_curve")
    parser.add_argument("--cache", type=Path, default=REPO / "bench" / "out" / "features")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data} not found: this benchmark needs the PBC development set")
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    default = args.default
    if "random" not in strategies or default not in strategies:
        sys.exit(f"--strategies must include random and the default ({default})")

    import numpy as np

    from worker.simulation.dataset import read_class_folders
    from worker.simulation.run import run_simulation

    t0 = time.perf_counter()
    data = read_class_folders(args.data)
    last = [0.0]

    def progress(done: int, total: int, message: str) -> None:
        now = time.perf_counter()
        if now - last[0] > 30 or done == total:
            last[0] = now
            print(f"  [{now - t0:6.0f} s] {message}", flush=True)

    result = run_simulation(data, strategies, initial=args.initial, batch=args.batch,
                            rounds=args.rounds, repeats=args.repeats, out_dir=args.out,
                            cache_dir=args.cache, input_size=args.size, weights=args.weights,
                            stop_at_target=not args.no_stop, progress=progress,
                            features=args.features)
    wall = time.perf_counter() - t0
    print(f"\n{len(data)} cells, {len(data.class_names)} classes; pool {result.n_pool}, "
          f"test {result.n_test} (stratified, fixed)")
    print(f"features: {args.features}; backbone (when used): {args.weights} weights, "
          f"{args.size} px; initial {args.initial}, "
          f"batch {args.batch}, up to {args.rounds} rounds, {args.repeats} repeats")
    print(f"whole-pool model: accuracy {result.full_accuracy:.4f}, "
          f"macro-F1 {result.full_macro_f1:.4f}; target A = 95% = {result.target:.4f}")
    print(f"\n{'strategy':18s} {'labels to reach A':>22s}   per repeat")
    by_name = {t.strategy: t for t in result.to_target}
    for t in result.to_target:
        shown = f"{t.mean:.0f} ± {t.sd:.0f}" if t.mean is not None else "not reached"
        reps = ", ".join("-" if n is None else str(n) for n in t.per_repeat)
        mark = "  (default)" if t.strategy == default else ""
        print(f"{t.strategy:18s} {shown:>22s}   {reps}{mark}")
    print(f"\naccuracy at {args.at_labels} labels (mean ± sd over the repeats that ran it):")
    for name in strategies:
        accs = [p.accuracy for p in result.points
                if p.strategy == name and p.labels == args.at_labels]
        shown = (f"{np.mean(accs):.4f} ± {np.std(accs):.4f} (n={len(accs)})" if accs
                 else "- (every repeat had stopped: reached A earlier)")
        print(f"  {name:18s} {shown}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory: {peak:.0f} MiB")
    print(f"\nwall time {wall:.0f} s; curves: {args.out / 'curves.csv'}, plot: "
          f"{args.out / 'curves.svg'}")
    rnd, best = by_name["random"].mean, by_name[default].mean
    if rnd is None or best is None:
        who = "random" if rnd is None else default
        print(f"{who} did not reach A in every repeat: raise --rounds")
        print("label_savings_vs_random: nan")
        return
    print(f"label_savings_vs_random: {rnd / best:.2f}")


if __name__ == "__main__":
    main()
