"""Label latency: N simulated readers labeling at once through HTTP.

Self-contained: seeds a fresh database (SQLite under a temporary folder by
default; with --database-url, a new database on that PostgreSQL server,
dropped afterwards), starts gunicorn on loopback (webapp/gunicorn_conf.py:
one single-threaded worker per core), logs in N readers, and has each do
label + fetch-next (one POST: the answer is the next cell) in a loop.
Reports the server's own time per request (the Server-Timing header) and the
client's round trip, by percentile.  Goal: p95 < 25 ms for 20 readers on
2 cores, on both databases.

Last line: ``label_next_p95_ms: X`` (server time, 95th percentile).

    python bench/label_latency.py
    python bench/label_latency.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PASSWORD = "bench-password-123"
HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(url: str, storage: Path, cells: int, readers: int) -> int:
    """A pbc8 project of ``cells`` pool cells (one shared tiny image file) and the readers."""
    from migrations.runner import upgrade
    from models import Image, Role, Split
    from models.db import session_scope
    from webapp.bootstrap import create_project, create_user

    upgrade(url)
    (storage / "images").mkdir(parents=True, exist_ok=True)
    (storage / "images" / "cell.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    with session_scope(url) as s:
        project = create_project(s, "bench", "pbc8", test_share=0.0)
        for i in range(cells):
            s.add(Image(project_id=project.id, sha256=f"{i:064x}", storage_path="images/cell.jpg",
                        width=360, height=363, original_name=f"c{i}.jpg", source="bench",
                        split=Split.POOL, shuffle_key=((i * 2654435761) % 2**32) / 2**32))
        for n in range(readers):
            create_user(s, f"reader{n}", Role.PATHOLOGIST, PASSWORD, projects=[project])
        pid = project.id
    _planner_statistics(url)
    return pid


def _planner_statistics(url: str) -> None:
    """Statistics as a database in service has them.

    PostgreSQL's autovacuum gathers them within a minute or so (without them it
    picks a poor plan for the queue query).  SQLite has none unless someone runs
    ANALYZE, and hemaloop does not: its planner's defaults suit the queue, while
    statistics taken on a young database (every label by a handful of readers)
    lead it to scan annotations per candidate cell.
    """
    from models.db import get_engine

    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
    engine.dispose()


def seed_model(env: dict, pid: int, review_size: int, labeled: int = 500) -> None:
    """The state readers meet after a round: ``labeled`` cells already labeled
    (what the model was trained on), an active model with a (random) prediction
    per remaining cell, and a current review queue of ``review_size`` cells
    built by the product's own code (margin strategy, ranked in SQL)."""
    import numpy as np
    from sqlalchemy import select

    from models import (
        Annotation, Image, Kind, ModelVersion, Origin, Prediction, Project, TrainingRound, User,
        utcnow,
    )
    from models.db import session_scope
    from models.open_slots import refresh_open_slots
    from models.settings import load_settings
    from worker.publish import prediction_rows
    from worker.review_queue import build_review_queue

    settings = load_settings(env)
    rng = np.random.default_rng(0)
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        project.al_strategy, project.al_round_size = "margin", review_size
        class_ids = [c.id for c in project.classes]
        rnd = TrainingRound(project_id=pid, trigger="cli", warnings=[], config={}, timings={},
                            status="succeeded")
        s.add(rnd)
        s.flush()
        version = ModelVersion(project_id=pid, round_id=rnd.id, artifact_path="m/bench.keras",
                               class_ids=class_ids, input_size=75, backbone_weights="none",
                               is_active=True, feature_key="bench")
        s.add(version)
        s.flush()
        ids = list(s.scalars(select(Image.id).where(Image.project_id == pid).order_by(Image.id)))
        # Labeled by the readers in turn, as a team would have.
        readers = list(s.scalars(select(User.id).where(User.username.like("reader%"))))
        lymphocyte = project.class_by_name("lymphocyte").id
        s.execute(Annotation.__table__.insert(), [
            {"image_id": i, "user_id": readers[k % len(readers)], "origin": Origin.READER, "kind": Kind.LABEL,
             "label_class_id": lymphocyte, "duration_ms": 800, "created_at": utcnow()}
            for k, i in enumerate(ids[:labeled])])
        refresh_open_slots(s, project, ids[:labeled])  # Core inserts skip the ORM's hook
        ids = ids[labeled:]
        probs = rng.dirichlet(np.full(len(class_ids), 0.3), size=len(ids)).astype(np.float32)
        s.execute(Prediction.__table__.insert(), prediction_rows(version.id, ids, probs, class_ids))
    build_review_queue(settings, pid, trigger="cli", seed=0)
    _planner_statistics(settings.database_url)


class Reader:
    """One reader's browser: a keep-alive connection, a cookie, the CSRF token."""

    def __init__(self, port: int, name: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookie = ""
        page = self.request("GET", "/auth/login")[1]
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        self.request("POST", "/auth/login", {"username": name, "password": PASSWORD,
                                             "csrf_token": token})
        page = self.request("GET", "/label/")[1]
        self.token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)

    def request(self, method: str, path: str, form: dict | None = None, htmx: bool = False):
        headers = {"Cookie": self.cookie} if self.cookie else {}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if htmx:
            headers.update({"HX-Request": "true", "X-CSRFToken": self.token})
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        if response.status in (301, 302, 303):
            location = response.getheader("Location")
            return self.request("GET", location) if location.startswith("/") else (response, text)
        return response, text


def run_reader(port: int, name: str, pid: int, decisions: int, server_ms: list, client_ms: list,
               errors: list, start: threading.Barrier) -> None:
    try:
        reader = Reader(port, name)
        html = reader.request("GET", f"/label/{pid}/next", htmx=True)[1]
        start.wait()
        for _ in range(decisions):
            image = re.search(r'data-image-id="(\d+)"', html)
            if image is None:
                return
            # What the page's form sends: its hidden fields (the submission id,
            # and the model's suggestion when one is shown) and the key pressed.
            form = {**dict(HIDDEN.findall(html)), "choice": "lymphocyte", "duration_ms": "800"}
            t = time.perf_counter()
            response, html = reader.request("POST", f"/label/{pid}/cells/{image.group(1)}", form,
                                            htmx=True)
            client_ms.append((time.perf_counter() - t) * 1000)
            if response.status != 200:
                errors.append(f"{name}: {response.status}")
                return
            timing = re.search(r"app;dur=([\d.]+)", response.getheader("Server-Timing") or "")
            server_ms.append(float(timing.group(1)))
    except Exception as exc:  # noqa: BLE001 - counted and printed
        errors.append(f"{name}: {exc!r}")


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": q[49], "p90": q[89], "p95": q[94], "p99": q[98], "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--decisions", type=int, default=40, help="labels per reader")
    parser.add_argument("--cells", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=max(2, os.cpu_count() or 2),
                        help="gunicorn worker processes (default: one per core, as in production)")
    parser.add_argument("--no-model", action="store_true",
                        help="no active model or review queue (the state before the first round)")
    parser.add_argument("--review-size", type=int, default=200,
                        help="cells in the current review queue (with a model)")
    parser.add_argument("--database-url", help="a PostgreSQL server URL (a fresh database is made)")
    args = parser.parse_args()

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    tmp = Path(tempfile.mkdtemp(prefix="hemaloop-bench-"))
    admin = None
    if args.database_url:
        admin = create_engine(make_url(args.database_url), isolation_level="AUTOCOMMIT")
        name = f"hemaloop_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(args.database_url).set(database=name).render_as_string(hide_password=False)
        kind = "postgresql"
    else:
        url, kind = f"sqlite:///{tmp / 'bench.sqlite'}", "sqlite"
    server = None
    try:
        t = time.perf_counter()
        pid = seed(url, tmp / "storage", args.cells, args.readers)
        env = {**os.environ, "HEMALOOP_DATABASE_URL": url, "HEMALOOP_INSTANCE_DIR": str(tmp),
               "HEMALOOP_STORAGE_DIR": str(tmp / "storage"),
               "HEMALOOP_SECRET_KEY": "bench-secret-key-0123456789",
               "HEMALOOP_BROKER_URL": f"sqla+sqlite:///{tmp / 'broker.sqlite'}",
               "HEMALOOP_LOG_LEVEL": "WARNING", "WEB_CONCURRENCY": str(args.workers),
               "WEB_THREADS": "1", "WEB_ACCESS_LOG": ""}
        if not args.no_model:
            seed_model(env, pid, args.review_size)
        print(f"seeded {args.cells} cells, {args.readers} readers on {kind}"
              + (" (no model)" if args.no_model else
                 f", an active model and a review queue of {args.review_size}")
              + f" in {time.perf_counter() - t:.1f} s")
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "-c",
             "python:webapp.gunicorn_conf", "webapp.wsgi:app"], cwd=REPO, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

        server_ms: list[float] = []
        client_ms: list[float] = []
        errors: list[str] = []
        start = threading.Barrier(args.readers)
        threads = [threading.Thread(target=run_reader, args=(
            port, f"reader{n}", pid, args.decisions, server_ms, client_ms, errors, start))
            for n in range(args.readers)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        if errors or not server_ms:
            raise SystemExit(f"errors: {errors[:5]} ({len(errors)})")
        print(f"{len(server_ms)} label+next requests, {args.readers} readers at once, "
              f"{args.workers} gunicorn workers, {kind}; {len(server_ms) / elapsed:.0f} requests/s")
        for name, values in (("server (Server-Timing)", server_ms), ("client round trip", client_ms)):
            p = percentiles(values)
            print(f"{name:24s} " + "  ".join(f"{k} {v:6.1f} ms" for k, v in p.items()))
        print(f"label_next_p95_ms: {percentiles(server_ms)['p95']:.1f}")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()


if __name__ == "__main__":
    main()
