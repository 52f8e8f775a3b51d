"""Shared fixtures: real databases (SQLite; PostgreSQL when configured), the app, a worker.

PostgreSQL and Redis are used when HEMALOOP_TEST_DATABASE_URL and
HEMALOOP_TEST_REDIS_URL are set (``.ci/run`` sets both); tests that need them
skip with the reason otherwise.
"""

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
from models.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / "webapp" / "demo" / "pbc"
PBC_DEV = REPO.parent / "shared" / "data" / "pbc-dev"
PG_URL = os.environ.get("HEMALOOP_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("HEMALOOP_TEST_REDIS_URL")
NO_PG = "HEMALOOP_TEST_DATABASE_URL is not set (PostgreSQL tests run in CI via .ci/run)"
NO_REDIS = "HEMALOOP_TEST_REDIS_URL is not set (Redis tests run in CI via .ci/run)"

PASSWORD = "correct-horse-battery"


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

@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


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


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path, sqlite_template) -> Iterator[str]:
    """Each test using this runs on SQLite and again on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "hemaloop.sqlite"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    path = tmp_path / "hemaloop.sqlite"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


# --- settings, app, clients -------------------------------------------------

@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=database_url))


@pytest.fixture
def app(settings):
    from webapp import create_app

    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def session(settings):
    from models.db import get_sessionmaker

    s = get_sessionmaker(settings.database_url)()
    yield s
    s.close()


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


@pytest.fixture
def demo_project(settings, tmp_path):
    """A pbc8 project with 6 real cells per class imported (reference labels)."""
    from models.db import session_scope
    from webapp.bootstrap import create_project
    from webapp.ingest import import_path

    src = small_demo_copy(tmp_path / "cells")
    with session_scope(settings.database_url) as s:
        project = create_project(s, "demo", "pbc8", test_share=0.2)
        open_to_readers(s, project)
        report = import_path(s, settings.storage_dir, project, src,
                             max_pixels=settings.max_image_pixels)
        assert report.imported == 48 and not report.rejected
        return project.id


# --- worker -------------------------------------------------------------------

@contextmanager
def running_worker(celery_app):
    """A real Celery worker consuming the app's queues, in a thread of this process.

    Celery's test worker never sends ``worker_ready``, so start-up clean-up is
    tested against the real ``celery worker`` command (tests/test_worker.py).
    """
    from celery.contrib.testing.worker import start_worker

    import worker.tasks  # noqa: F401

    with start_worker(celery_app, pool="solo", perform_ping_check=False,
                      queues=["train", "score", "default"], shutdown_timeout=60):
        yield
