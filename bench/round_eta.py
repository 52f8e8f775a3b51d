"""How good is a round's time-left estimate? (worker/eta.py, issue 14)

Self-contained: a temporary instance (SQLite), ``--per-class`` PBC cells of each
class imported with their reference labels trusted for training, then one real
round (worker.rounds.run_round) in a thread while this script reads the row's
stored estimate (eta_seconds, what the admin page and ``hemaloop round`` show)
twice a second.  Each reading is compared with the time the round really had
left.  Last line ``round_eta_median_abs_error_pct: X`` (over readings once 10 %
of the round had passed).

    python bench/round_eta.py --per-class 20 --size 75 --fine-tune-blocks 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "pbc-dev")
    parser.add_argument("--size", type=int, default=75)
    parser.add_argument("--weights", default="none")
    parser.add_argument("--fine-tune-blocks", type=int, default=1)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--head-epochs", type=int, default=30)
    parser.add_argument("--per-class", type=int, default=20)
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
        "HEMALOOP_LOG_LEVEL": "WARNING",
    })
    from migrations.runner import upgrade
    from models import Project, TrainingRound
    from models.db import session_scope
    from models.settings import load_settings
    from webapp.bootstrap import create_project
    from webapp.ingest import import_path
    from worker.launch import create_round
    from worker.rounds import run_round

    settings = load_settings()
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    src = tmp / "subset"
    for class_dir in sorted(args.data.iterdir()):
        (src / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:args.per_class]:
            (src / class_dir.name / f.name).symlink_to(f)
    with session_scope(settings.database_url) as s:
        project = create_project(s, "pbc", "pbc8", test_share=0.0, train_on_reference=True,
                                 fine_tune_blocks=args.fine_tune_blocks)
        import_path(s, settings.storage_dir, project, src, max_pixels=settings.max_image_pixels)
        round_id = create_round(s, s.get(Project, project.id), trigger="cli").id

    readings: list[tuple[float, float | None, str]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with session_scope(settings.database_url) as s:
                rnd = s.get(TrainingRound, round_id)
                readings.append((time.monotonic(), rnd.eta_seconds, rnd.phase))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.monotonic()
    sampler.start()
    status = run_round(settings, round_id, worker="bench")
    end = time.monotonic()
    done.set()
    sampler.join()
    if status.value != "succeeded":
        sys.exit(f"round {status.value}")
    total = end - start
    errors = []
    for at, eta, _phase in readings:
        if eta is None or at - start < 0.1 * total:
            continue
        actual = end - at
        errors.append(abs(eta - actual) / total * 100)
    shown = [r for r in readings if r[1] is not None]
    print(f"round: {total:.1f} s, {len(readings)} readings, {len(shown)} with an estimate")
    step = 1 if os.environ.get("ROUND_ETA_ALL") else max(1, len(readings) // 12)
    for at, eta, phase in readings[::step]:
        print(f"  t={at - start:6.1f} s  estimate {eta if eta is None else round(eta, 1)!s:>6} s"
              f"  actual {end - at:6.1f} s  {phase}")
    print(f"round_eta_max_abs_error_pct: {max(errors):.1f}")
    print(f"round_eta_median_abs_error_pct: {statistics.median(errors):.1f}")


if __name__ == "__main__":
    main()
