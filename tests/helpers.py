"""Helpers the tests share: settings for a test, users, rounds, logged-in clients,
demo data, a fresh PostgreSQL database and a real Celery worker.  (Fixtures are in
tests/conftest.py; helpers for the reading tests in tests/reading_helpers.py.)"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from migrations.runner import upgrade
from models.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "webapp" / "demo" / "pbc"
PBC_DEV = REPO.parent / "shared" / "data" / "pbc-dev"
PG_URL = os.environ.get("HEMALOOP_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("HEMALOOP_TEST_REDIS_URL")
NO_PG = "HEMALOOP_TEST_DATABASE_URL is not set (PostgreSQL tests run in CI via .ci/run)"
NO_REDIS = "HEMALOOP_TEST_REDIS_URL is not set (Redis tests run in CI via .ci/run)"

PASSWORD = "correct-horse-battery"
TWO_CLASSES = ["lymphocyte", "neutrophil"]


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Settings for a test: small inputs, random init, everything under ``tmp``."""
    env = {
        "HEMALOOP_INSTANCE_DIR": str(tmp / "instance"),
        "HEMALOOP_INPUT_SIZE": "75",
        "HEMALOOP_BACKBONE_WEIGHTS": "none",
        "HEMALOOP_HEAD_EPOCHS": "8",
        "HEMALOOP_BATCH_SIZE": "32",
        "HEMALOOP_SECRET_KEY": "test-secret-key-0123456789",
        "HEMALOOP_BROKER_URL": f"sqla+sqlite:///{tmp / 'broker.sqlite'}",
    }
    env.update(extra)
    return env


# --- databases -------------------------------------------------------------

@contextmanager
def fresh_postgres_database(migrate: bool = True) -> Iterator[str]:
    """A new, empty (or migrated) PostgreSQL database, dropped afterwards."""
    if not PG_URL:
        pytest.skip(NO_PG)
    admin_url = make_url(PG_URL)
    name = f"hemaloop_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            upgrade(url)
        yield url
    finally:
        from models.db import get_engine, get_sessionmaker

        # Close pooled connections so the database can be dropped.
        get_engine(url).dispose()
        get_engine.cache_clear()
        get_sessionmaker.cache_clear()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- users, rounds, clients ---------------------------------------------------

def make_user(settings: Settings, username: str, role: str, password: str = PASSWORD) -> int:
    from sqlalchemy import select

    from models import Project, Role
    from models.db import session_scope
    from webapp.bootstrap import create_user

    # Tests read every project that exists (as before memberships);
    # open_to_readers does the same for projects made after the users.
    with session_scope(settings.database_url) as s:
        user, _ = create_user(s, username, Role(role), password,
                              projects=s.scalars(select(Project)).all())
        return user.id


def open_to_readers(session, project) -> None:
    """Every existing pathologist and curator reads ``project`` (test set-up)."""
    from webapp.bootstrap import add_all_readers

    add_all_readers(session, project)


def add_round(settings: Settings, project_id: int, **values) -> int:
    """A round row written directly (bypassing create_round's checks)."""
    from models import TrainingRound
    from models.db import session_scope

    values = {"trigger": "cli", "warnings": [], "config": {}, "timings": {}, **values}
    with session_scope(settings.database_url) as s:
        rnd = TrainingRound(project_id=project_id, **values)
        s.add(rnd)
        s.flush()
        return rnd.id


def csrf_token(html: str) -> str:
    match = re.search(r'"X-CSRFToken": "([^"]+)"', html) or re.search(
        r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class LoggedIn:
    """A test client logged in as one user, sending the CSRF header like htmx does."""

    def __init__(self, client, username: str, password: str = PASSWORD):
        self.client = client
        page = client.get("/auth/login")
        response = client.post("/auth/login", data={
            "username": username, "password": password, "csrf_token": csrf_token(page.text)},
            follow_redirects=True)
        assert response.status_code == 200, response.text
        self.token = csrf_token(response.text)

    def get(self, url: str, **kw):
        return self.client.get(url, **kw)

    def post(self, url: str, data=None, htmx: bool = True, **kw):
        headers = {"X-CSRFToken": self.token}
        if htmx:
            headers["HX-Request"] = "true"
        return self.client.post(url, data=data or {}, headers=headers, **kw)


# --- data ---------------------------------------------------------------------

def small_demo_copy(dest: Path, per_class: int = 6, classes: list[str] | None = None) -> Path:
    """Copy a few bundled demo cells per class: real images, quick to import."""
    for class_dir in sorted(DEMO_DIR.iterdir()):
        if classes and class_dir.name not in classes:
            continue
        target = dest / class_dir.name
        target.mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(f, target / f.name)
    return dest


def trainable_project(settings, tmp_path: Path, name: str = "tiny") -> int:
    """4 reference-labeled cells in each of two classes (trusted for training), plus
    4 unlabeled cells to rank.  Small, so a round takes seconds."""
    from models.db import session_scope
    from webapp.bootstrap import create_project
    from webapp.ingest import import_path

    labeled = small_demo_copy(tmp_path / f"{name}-labeled", per_class=4, classes=TWO_CLASSES)
    flat = tmp_path / f"{name}-unlabeled"
    flat.mkdir()
    for f in sorted((DEMO_DIR / "monocyte").iterdir())[:4]:
        shutil.copy(f, flat / f.name)
    with session_scope(settings.database_url) as s:
        project = create_project(s, name, "pbc8", test_share=0.0, train_on_reference=True)
        for src in (labeled, flat):
            report = import_path(s, settings.storage_dir, project, src,
                                 max_pixels=settings.max_image_pixels)
            assert report.imported == (8 if src is labeled else 4)
        return project.id


# --- worker -------------------------------------------------------------------

WORKER_QUEUES = ("train", "score", "default", "simulate")


@contextmanager
def running_worker(celery_app, queues=WORKER_QUEUES):
    """A real Celery worker consuming ``queues`` (default: all but ``predict``, which
    deployments give a worker of its own), in a thread of this process.

    Celery's test worker never sends ``worker_ready``, so start-up clean-up is
    tested against the real ``celery worker`` command (tests/test_worker.py).
    """
    from celery.contrib.testing.worker import start_worker

    import worker.tasks  # noqa: F401

    with start_worker(celery_app, pool="solo", perform_ping_check=False,
                      queues=list(queues), shutdown_timeout=60):
        yield
