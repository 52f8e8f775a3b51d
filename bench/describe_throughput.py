"""Cell measurements for curators (issue 15): the describe task's throughput against a
bare descriptor loop on the same files, and what the curator's panel costs to render.

Part 1, same run and files: N real PBC cells imported into a fresh SQLite project,
then (a) a bare loop of ``worker.ml.descriptors.describe_path`` over the stored
files, (b) a describe run queued as the admin button queues it and run by a real
Celery worker (solo pool, the default SQLite broker) into ``cell_measurements``,
timed from the send to the row's end (so queueing, the FeatureStore writes and the
per-chunk commits are in it) and from the row's own start to end; the bare loop runs
again after the task and the two are averaged (the cores are shared).

Part 2: the curator's panel, medians of repeats: what it adds to the cell page (which
renders it from the cells' states it has worked out already), the whole cell page, and
GET /curate/cells/<id>/measurements alone (the fragment works the states out itself), on
the N measured cells and again after adding synthetic measured,
reference-labeled cells up to ``--pool`` (the ranges read every final, measured cell
of the project, so their cost grows with it).

Last line: ``describe_cells_per_s: X`` (the task, send to end).

    nice python bench/describe_throughput.py                 # ../shared/data/pbc-dev
    nice python bench/describe_throughput.py --cells 200 --pool 10000
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
DEFAULT_DATA = REPO.parent / "shared" / "data" / "pbc-dev"


def _copy_cells(data: Path, dest: Path, n: int) -> int:
    """n cells spread over the class folders (class folders kept: reference labels)."""
    classes = sorted(d for d in data.iterdir() if d.is_dir())
    per = -(-n // len(classes))
    copied = 0
    for d in classes:
        (dest / d.name).mkdir(parents=True)
        for f in sorted(d.iterdir())[:per]:
            if copied == n:
                break
            shutil.copy(f, dest / d.name / f.name)
            copied += 1
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cells", type=int, default=120)
    parser.add_argument("--pool", type=int, default=5000, help="cells for the larger panel figure")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent")
        return

    tmp = Path(tempfile.mkdtemp(prefix="hemaloop-describe-"))
    os.environ.update({"HEMALOOP_INSTANCE_DIR": str(tmp / "instance"),
                       "HEMALOOP_SECRET_KEY": "bench-secret-key-0123456789",
                       "HEMALOOP_LOG_LEVEL": "WARNING"})
    import numpy as np
    from celery.contrib.testing.worker import start_worker
    from sqlalchemy import select

    import worker.tasks  # noqa: F401  (registers the task with the worker)
    from migrations.runner import upgrade
    from models import (Annotation, CellMeasurement, DescribeRun, Image, LabelClass, Origin, Role,
                        Project, Split)
    from models.db import session_scope
    from models.labels import cell_states
    from models.settings import load_settings
    from webapp import create_app
    from webapp.bootstrap import create_project, create_user
    from webapp.curate.measurements import panel, panel_classes
    from webapp.ingest import import_path
    from worker.celery_app import make_celery
    from worker.describe_launch import create_run, enqueue_run
    from worker.ml.descriptors import DESCRIPTOR_VERSION, describe_path

    settings = load_settings()
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    n = _copy_cells(args.data, tmp / "src", args.cells)
    with session_scope(settings.database_url) as s:
        project = create_project(s, "bench", "pbc8", test_share=0.0, train_on_reference=True)
        report = import_path(s, settings.storage_dir, project, tmp / "src",
                             max_pixels=settings.max_image_pixels)
        assert report.imported == n, report.as_dict()
        pid = project.id
        paths = [settings.storage_dir / p for p in s.scalars(
            select(Image.storage_path).where(Image.project_id == pid).order_by(Image.id))]
        create_user(s, "cara", Role.CURATOR, "bench-password-123", projects=[project])
        # The panel's usual case: two readers disagree, so two classes are in question.
        classes = {c.name: c.id for c in project.classes}
        target = s.scalar(select(Image.id).where(Image.project_id == pid).order_by(Image.id))
        for name, choice in (("ann", "lymphocyte"), ("bob", "neutrophil")):
            reader, _ = create_user(s, name, Role.PATHOLOGIST, "bench-password-123",
                                    projects=[project])
            s.add(Annotation(image_id=target, user_id=reader.id, origin=Origin.READER,
                             label_class_id=classes[choice]))
    print(f"part 1: {n} PBC cells from {args.data} (one process, load average "
          f"{os.getloadavg()[0]:.1f} at the start)")

    def bare_loop() -> float:
        t = time.perf_counter()
        for p in paths:
            describe_path(p)
        return n / (time.perf_counter() - t)

    describe_path(paths[0])  # warm-up: scikit-image's lazy imports
    bare_before = bare_loop()
    print(f"  bare describe_path loop: {bare_before:.2f} cells/s ({1000 / bare_before:.0f} ms per cell)")

    celery = make_celery(settings)
    with start_worker(celery, pool="solo", perform_ping_check=False, queues=["default"],
                      shutdown_timeout=60):
        with session_scope(settings.database_url) as s:
            run = create_run(s, pid, trigger="cli", stale_seconds=settings.round_stale_seconds)
            t = time.perf_counter()
            assert enqueue_run(s, celery, run)
            run_id = run.id
        while True:
            with session_scope(settings.database_url) as s:
                row = s.get(DescribeRun, run_id)
                if row.status.is_finished:
                    break
            time.sleep(0.05)
        wall = time.perf_counter() - t
    with session_scope(settings.database_url) as s:
        row = s.get(DescribeRun, run_id)
        assert row.status.value == "succeeded" and row.cells_done == n, (row.status, row.error)
        in_task = (row.finished_at - row.started_at).total_seconds()
        measured = s.query(CellMeasurement).filter(CellMeasurement.error.is_(None)).count()
    task = n / wall
    # The machine is shared: the bare loop again after the task, and their mean.
    bare_after = bare_loop()
    bare = (bare_before + bare_after) / 2
    print(f"  bare describe_path loop again: {bare_after:.2f} cells/s; mean {bare:.2f} cells/s")
    print(f"  describe task on a real worker: {task:.2f} cells/s send to end ({wall:.1f} s), "
          f"{n / in_task:.2f} cells/s inside the task; {measured} rows")
    print(f"  task / bare: {task / bare:.2f} (send to end), {n / in_task / bare:.2f} (in the task)")

    # --- part 2: the panel -----------------------------------------------------------
    app = create_app(settings)
    app.config["TESTING"] = True
    client = app.test_client()
    page = client.get("/auth/login").text
    token = page.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
    assert client.post("/auth/login", data={"username": "cara", "password": "bench-password-123",
                                            "csrf_token": token}).status_code == 302

    def render(label: str) -> None:
        url = f"/curate/cells/{target}/measurements"
        client.get(url)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - t)
            assert response.status_code == 200 and "measurements" in response.text
        page_times = []
        for _ in range(max(3, args.repeats // 3)):
            t = time.perf_counter()
            assert client.get(f"/curate/cells/{target}").status_code == 200
            page_times.append(time.perf_counter() - t)
        # What the panel adds to the cell page, which has the cells' states already.
        with session_scope(settings.database_url) as s:
            project = s.get(Project, pid)
            states = cell_states(s, project)
            classes = panel_classes(project, states[target], [])
            panel_times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                panel(s, project, target, states, classes)
                panel_times.append(time.perf_counter() - t)
        print(f"  {label}: the panel in the cell page {statistics.median(panel_times) * 1000:.1f} ms "
              f"of a {statistics.median(page_times) * 1000:.1f} ms page (medians); the fragment "
              f"alone (GET .../measurements) {statistics.median(times) * 1000:.1f} ms")

    print(f"part 2: the measurements panel ({args.repeats} requests, SQLite)")
    render(f"{n} cells")
    extra = args.pool - n
    if extra > 0:
        rng = np.random.default_rng(0)
        with session_scope(settings.database_url) as s:
            class_ids = s.scalars(select(LabelClass.id).where(LabelClass.project_id == pid)).all()
            start = s.scalar(select(Image.id).order_by(Image.id.desc()).limit(1)) + 1
            ids = list(range(start, start + extra))
            s.execute(Image.__table__.insert(), [
                dict(id=i, project_id=pid, sha256=f"{i:064x}", storage_path=f"images/{i}.jpg",
                     width=360, height=363, original_name=f"{i}.jpg", source="bench",
                     split=Split.POOL, shuffle_key=float(rng.random())) for i in ids])
            s.execute(Annotation.__table__.insert(), [
                dict(image_id=i, origin=Origin.REFERENCE, source="bench",
                     label_class_id=class_ids[k % len(class_ids)]) for k, i in enumerate(ids)])
            s.execute(CellMeasurement.__table__.insert(), [
                dict(image_id=i, project_id=pid, descriptor_version=DESCRIPTOR_VERSION,
                     nucleus_found=True, cytoplasm_found=True,
                     nucleus_area_px=float(rng.uniform(2000, 20000)),
                     cell_area_px=float(rng.uniform(20000, 40000)),
                     nucleus_lobes=int(rng.integers(1, 5)), nucleus_to_cell=float(rng.random()),
                     nucleus_circularity=float(rng.random()), nucleus_solidity=float(rng.random()),
                     chromatin_density=float(rng.random()),
                     chromatin_contrast=float(rng.uniform(0, 4))) for i in ids])
        render(f"{args.pool} cells ({extra} synthetic)")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"describe_cells_per_s: {task:.2f}")


if __name__ == "__main__":
    main()
