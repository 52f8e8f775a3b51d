"""Label export of a large project: time and peak Python memory while streaming.

Self-contained: a fresh SQLite database under a temporary folder, one pbc8 project
of N cells (default 100,000), two readers' votes on every cell (k = 2, a tenth of
them disputed), an active model's predictions on all of them; then the CSV export
is streamed to nowhere, once timed and once under tracemalloc for the peak.  The peak
should stay flat as N grows (a chunk of 1,000 cells at a time), far below the
export's size.

Last line: ``export_csv_peak_mib: X`` (tracemalloc peak during the export).

    python bench/export_memory.py [--cells 100000]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def seed(url: str, cells: int) -> int:
    from models import (
        Annotation,
        Image,
        ModelVersion,
        Prediction,
        Role,
        TrainingRound,
        utcnow,
    )
    from models.db import session_scope
    from webapp.bootstrap import create_project, create_user

    rng = random.Random(0)
    with session_scope(url) as s:
        project = create_project(s, "big", "pbc8", test_share=0.1)
        project.readers_per_cell = 2
        readers = [create_user(s, name, Role.PATHOLOGIST, "bench-password-123")[0]
                   for name in ("ann", "bob")]
        s.flush()
        pid, class_ids, reader_ids = project.id, [c.id for c in project.classes], \
            [r.id for r in readers]
        rnd = TrainingRound(project_id=pid, status="succeeded", trigger="cli", progress=1.0)
        s.add(rnd)
        s.flush()
        version = ModelVersion(project_id=pid, round_id=rnd.id, artifact_path="none.keras",
                               class_ids=class_ids, input_size=75, backbone_weights="none",
                               is_active=True)
        s.add(version)
        s.flush()
        vid = version.id
    now = utcnow()
    for start in range(0, cells, 10_000):
        with session_scope(url) as s:
            n = min(10_000, cells - start)
            rows = [{"project_id": pid, "sha256": f"{start + i:064x}",
                     "storage_path": f"images/x/{start + i}.jpg", "width": 360, "height": 363,
                     "original_name": f"BNE_{start + i}.jpg", "source": "bench",
                     "split": "test" if rng.random() < 0.1 else "pool",
                     "shuffle_key": rng.random(), "created_at": now, "open_slots": 0}
                    for i in range(n)]
            s.execute(Image.__table__.insert(), rows)
            ids = [i for (i,) in s.execute(Image.__table__.select().with_only_columns(
                Image.id).where(Image.project_id == pid).order_by(Image.id.desc()).limit(n))]
            votes, predictions = [], []
            for image_id in ids:
                first = rng.choice(class_ids)
                second = first if rng.random() < 0.9 else rng.choice(class_ids)
                for user, choice in zip(reader_ids, (first, second)):
                    votes.append({"image_id": image_id, "user_id": user, "origin": "reader",
                                  "label_class_id": choice, "kind": "label", "created_at": now})
                probs = {str(c): 0.02 for c in class_ids}
                probs[str(first)] = 0.86
                predictions.append({"model_version_id": vid, "image_id": image_id,
                                    "probabilities": probs, "predicted_class_id": first,
                                    "confidence": 0.86, "entropy": 0.6, "margin": 0.84,
                                    "least_confidence": 0.14, "created_at": now})
            s.execute(Annotation.__table__.insert(), votes)
            s.execute(Prediction.__table__.insert(), predictions)
    return pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    args = parser.parse_args()

    from migrations.runner import upgrade
    from models import Project
    from models.db import session_scope
    from webapp.exports import labels_csv

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        upgrade(url)
        t = time.perf_counter()
        pid = seed(url, args.cells)
        print(f"seeded {args.cells} cells with 2 votes each in {time.perf_counter() - t:.1f} s")
        with session_scope(url) as s:
            project = s.get(Project, pid)
            t = time.perf_counter()
            size = sum(len(chunk) for chunk in labels_csv(s, project))
            seconds = time.perf_counter() - t
        with session_scope(url) as s:
            project = s.get(Project, pid)
            tracemalloc.start()
            for _chunk in labels_csv(s, project):
                pass
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    print(f"csv: {size / 2**20:.1f} MiB in {seconds:.1f} s ({args.cells / seconds:,.0f} cells/s)")
    print(f"export_csv_peak_mib: {peak / 2**20:.1f}")


if __name__ == "__main__":
    main()
