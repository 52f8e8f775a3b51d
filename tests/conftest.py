"""Shared fixtures: real databases (SQLite; PostgreSQL when configured), the app,
settings, a demo project, the test Redis database.  Helpers that are not fixtures
are in tests/helpers.py.

PostgreSQL and Redis are used when HEMALOOP_TEST_DATABASE_URL and
HEMALOOP_TEST_REDIS_URL are set (``.ci/run`` sets both); tests that need them
skip with the reason otherwise.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from migrations.runner import upgrade
from models.settings import Settings, load_settings
from tests.helpers import (NO_REDIS, REDIS_URL, base_env, fresh_postgres_database, open_to_readers,
                           small_demo_copy)


# --- databases -------------------------------------------------------------

@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file, copied for each test (migrating each time is slow)."""
    path = tmp_path_factory.mktemp("template") / "template.sqlite"
    upgrade(f"sqlite:///{path}")
    return path


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
def live_server(app):
    """The app served on a loopback port by a thread (browser tests, the README example)."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def session(settings):
    from models.db import get_sessionmaker

    s = get_sessionmaker(settings.database_url)()
    yield s
    s.close()


# --- data ---------------------------------------------------------------------

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


@pytest.fixture
def sqlite_settings(tmp_path, sqlite_url) -> Settings:
    """Settings on SQLite alone, for tests that need no second database."""
    return load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A trained 75 px classifier (random init) for the tests that predict; install it
    in a project with tests.model_helpers.install_model."""
    from tests.model_helpers import train_tiny_model

    return train_tiny_model(tmp_path_factory.mktemp("tiny-model"))


# --- Redis ----------------------------------------------------------------------

@pytest.fixture
def redis_db():
    """The test Redis database, emptied before and after (only that database)."""
    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    import redis

    conn = redis.Redis.from_url(REDIS_URL)
    if conn.connection_pool.connection_kwargs.get("db", 0) == 0:
        pytest.skip("refusing to flush Redis database 0: point HEMALOOP_TEST_REDIS_URL "
                    "at a spare database, e.g. redis://127.0.0.1:6379/15")
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()
