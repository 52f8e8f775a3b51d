"""Prediction latency: one image over HTTP against a bare in-process forward pass.

End to end: ``POST /api/v1/projects/<id>/predict`` with one image to a real app
server (gunicorn) whose request waits for a real predict worker
(``celery -A worker.predict_main worker -Q predict --pool solo``), which answers
with the class, calibrated top three and the Grad-CAM map (as numbers, the API's
default).  On Redis it is run a second time asking for the map drawn over the
image as well (``heatmap_png=true``, what the Predict page shows), and reported.  Bare: the same
model and input size called in this process on the same, already decoded,
image, after warm-up (``model(x)`` eagerly, and as a traced ``tf.function``,
which is what the worker runs: the overhead is taken against the faster).

Run on the SQLite broker (the default) and on the Redis broker and result
backend (HEMALOOP_BENCH_REDIS_URL, default redis://127.0.0.1:6379/2; that
database is flushed).  The last line is ``predict_overhead_ms: X``, end-to-end
p50 minus bare p50 on Redis; the goal is X < 50.

    python bench/predict_latency.py [--size 128] [--requests 40]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEMO_CELL = sorted((REPO / "webapp" / "demo" / "pbc" / "lymphocyte").iterdir())[0]
CLASSES = ["lymphocyte", "neutrophil", "eosinophil"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def make_model(folder: Path, size: int) -> Path:
    from worker.ml.backend import CellClassifier

    clf, _ = CellClassifier.create(list(range(len(CLASSES))), size, "none", seed=0)
    path = folder / "bench.keras"
    clf.save(path)
    return path


def bare_latency(model_path: Path, size: int, n: int) -> dict[str, float]:
    import tensorflow as tf

    from worker.ml.backend import CellClassifier
    from worker.ml.data import load_image

    clf = CellClassifier.load(model_path)
    x = load_image(DEMO_CELL, size)[None]
    eager = []
    for i in range(n + 5):
        started = time.perf_counter()
        clf.model(x, training=False).numpy()
        if i >= 5:
            eager.append((time.perf_counter() - started) * 1000)
    forward = tf.function(lambda t: clf.model(t, training=False))
    traced = []
    for i in range(n + 5):
        started = time.perf_counter()
        forward(tf.constant(x)).numpy()
        if i >= 5:
            traced.append((time.perf_counter() - started) * 1000)
    return {"eager_p50": pct(eager, 50), "traced_p50": pct(traced, 50)}


def setup_instance(root: Path, env: dict[str, str], model_path: Path, size: int) -> tuple[int, str]:
    """A migrated SQLite instance with a project, the model active, an admin token."""
    import json
    import shutil

    from migrations.runner import upgrade
    from models import ModelVersion, Role, RoundStatus, Scope, TrainingRound, User
    from models.db import session_scope
    from models.settings import load_settings
    from models.tokens import ApiToken
    from webapp.bootstrap import create_project, create_user
    from worker.activation import activate

    settings = load_settings(env)
    settings.instance_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as s:
        project = create_project(s, "bench", "pbc8", test_share=0.0)
        s.flush()
        ids = {c.name: c.id for c in project.classes}
        class_ids = [ids[c] for c in CLASSES]
        rel = Path("models") / "bench.keras"
        (settings.storage_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model_path, settings.storage_dir / rel)
        meta = json.loads(model_path.with_suffix(".json").read_text())
        (settings.storage_dir / rel).with_suffix(".json").write_text(
            json.dumps({**meta, "class_ids": class_ids}))
        rnd = TrainingRound(project_id=project.id, trigger="cli", warnings=[], config={},
                            timings={}, status=RoundStatus.SUCCEEDED)
        s.add(rnd)
        s.flush()
        version = ModelVersion(project_id=project.id, round_id=rnd.id,
                               artifact_path=rel.as_posix(), class_ids=class_ids,
                               input_size=size, backbone_weights="none", metrics={},
                               temperature=1.3)
        s.add(version)
        s.flush()
        activate(s, version)
        user, _ = create_user(s, "bench", Role.ADMIN, "bench-password-123", projects=[project])
        s.flush()
        row, token = ApiToken.issue(s.get(User, user.id), "bench", [Scope.READ], None)
        s.add(row)
        return project.id, token


def wait_http(url: str, timeout: float = 120) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


def end_to_end(name: str, env: dict[str, str], model_path: Path, size: int, n: int,
               png: bool = False) -> dict:
    import requests

    root = Path(env["HEMALOOP_INSTANCE_DIR"]).parent
    project_id, token = setup_instance(root, env, model_path, size)
    port = free_port()
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker.predict_main", "worker", "--pool", "solo",
         "-Q", "predict", "--loglevel", "WARNING", "-n", f"bench-predict-{os.getpid()}@%h"],
        env=full_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--threads", "2", "webapp.wsgi:app"],
        env=full_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        url = f"http://127.0.0.1:{port}/api/v1/projects/{project_id}/predict"
        data = DEMO_CELL.read_bytes()
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        times = []
        for i in range(n + 5):  # the first ones wait for the worker's warm-up
            started = time.perf_counter()
            response = session.post(url, files={"files": (DEMO_CELL.name, data)},
                                    data={"heatmap_png": "true"} if png else None, timeout=120)
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
            body = response.json()
            assert body["items"][0]["heatmap"], "no heatmap came back"
            assert bool(body["items"][0]["heatmap_png"]) == png
            if i >= 5:
                times.append(elapsed)
        # The worker's own time per task (model inputs, Grad-CAM pass, overlay),
        # from the batches' manifests: the rest is HTTP, spooling and the queue.
        import json

        spool = Path(env["HEMALOOP_INSTANCE_DIR"]) / "predict-spool"
        manifests = sorted(spool.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
        results = [json.loads(m.read_text())["result"] for m in manifests][5:]
        return {"p50": pct(times, 50), "p90": pct(times, 90), "n": len(times),
                "worker_p50": pct([r["worker_ms"] for r in results], 50),
                "lookup_p50": pct([r["worker_lookup_ms"] for r in results], 50)}
    finally:
        for proc in (server, worker):
            proc.terminate()
        for proc in (server, worker):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="input size (the CPU default: 128)")
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    redis_url = os.environ.get("HEMALOOP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/2")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start; "
          f"input {args.size} px, random-init InceptionV3, {args.requests} requests of one image")
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        tmp_path = Path(tmp)
        model_path = make_model(tmp_path, args.size)
        bare = bare_latency(model_path, args.size, args.requests)
        print(f"bare model(x) in-process: eager p50 {bare['eager_p50']:.1f} ms, "
              f"traced p50 {bare['traced_p50']:.1f} ms")
        baseline = min(bare["eager_p50"], bare["traced_p50"])
        results = {}
        setups = [("sqlite", None, False), ("redis", redis_url, False),
                  ("redis+png", redis_url, True)]
        for name, broker, png in setups:
            folder = tmp_path / name.replace("+", "-")
            folder.mkdir()
            env = {"HEMALOOP_INSTANCE_DIR": str(folder / "instance"),
                   "HEMALOOP_SECRET_KEY": "bench-secret-key-0123456789",
                   "HEMALOOP_INPUT_SIZE": str(args.size), "HEMALOOP_BACKBONE_WEIGHTS": "none",
                   "HEMALOOP_LOG_LEVEL": "warning"}
            if broker:
                import redis

                redis.Redis.from_url(broker).flushdb()
                env.update(HEMALOOP_BROKER_URL=broker, HEMALOOP_RESULT_BACKEND=broker)
            results[name] = end_to_end(name, env, model_path, args.size, args.requests, png)
            r = results[name]
            print(f"{name} broker: end-to-end p50 {r['p50']:.1f} ms, p90 {r['p90']:.1f} ms "
                  f"(n={r['n']}); worker's own time p50 {r['worker_p50']:.1f} ms "
                  f"(of which before the model {r['lookup_p50']:.1f} ms); "
                  f"overhead over bare p50 {r['p50'] - baseline:.1f} ms")
        print(f"load average at end: {os.getloadavg()[0]:.2f}")
        print(f"predict_overhead_ms: {results['redis']['p50'] - baseline:.1f}")


if __name__ == "__main__":
    main()
