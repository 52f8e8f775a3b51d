"""The web app while its database or its broker is down: clear pages, quick answers,
an honest readiness check.

"Down" is real: a port nothing listens on (connection refused), a server that
accepts connections and never answers (a hung host), or for SQLite a file that
cannot be opened. Times are measured and printed; the bounds asserted are
generous (a loaded CI machine must not fail them), the figures are in
docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from contextlib import contextmanager

import pytest
from sqlalchemy.engine import make_url

from models import RoundStatus, TrainingRound
from models.db import session_scope
from models.settings import load_settings
from tests.helpers import LoggedIn, base_env, make_user
from tests.reading_helpers import flat_project, read_cells

GENEROUS_S = 10


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def silent_server():
    """A server that accepts TCP connections (the kernel does, from its backlog) and
    never says a word: what a hung database or broker looks like to a client."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def _database_down_url(database_url: str, port: int) -> str:
    if database_url.startswith("sqlite"):
        return "sqlite:////nonexistent-hemaloop-dir/hemaloop.sqlite"  # cannot be opened
    return make_url(database_url).set(host="127.0.0.1", port=port).render_as_string(
        hide_password=False)


def _take_database_away(app, url: str) -> None:
    app.config["HEMALOOP"] = dataclasses.replace(app.config["HEMALOOP"], database_url=url)


# --- defect 5: pages with the database down -------------------------------------------------

def test_pages_say_the_database_is_down(app, settings, tmp_path, database_url):
    pid = flat_project(settings, tmp_path, "p", 2)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    anonymous = app.test_client()
    _take_database_away(app, _database_down_url(database_url, closed_port()))

    pages = ["/", "/label/", f"/label/{pid}", "/curate/", "/admin/", f"/admin/rounds/{pid}",
             f"/admin/projects/{pid}/settings"]
    for url in pages:
        response = admin.get(url)
        assert response.status_code == 503, (url, response.status_code, response.text[:300])
        assert "Database unavailable" in response.text and "nothing was saved" in response.text
        assert "Internal Server Error" not in response.text and "Traceback" not in response.text
        assert "<!doctype html>" in response.text.lower()  # the site's page, not a bare one
    # htmx fragments and the JSON API say the same in their own form.
    response = admin.post(f"/label/{pid}/cells/1", data={"choice": "lymphocyte"})
    assert response.status_code == 503 and 'data-error-title="Database unavailable"' in \
        response.text
    response = admin.get("/api/projects")
    assert response.status_code == 503 and response.json["error"] == "Database unavailable"
    # Other error pages too: the header's user cannot be loaded, the page still renders.
    response = admin.get("/no-such-page")
    assert response.status_code == 404 and "<!doctype html>" in response.text.lower()
    # A visitor who is not logged in still gets the login page (it needs no database).
    assert anonymous.get("/auth/login").status_code == 200
    # Liveness stays ok; readiness does not.
    assert app.test_client().get("/healthz").json == {"status": "ok"}
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"]["ok"] is False
    assert response.json["checks"]["broker"]["ok"] is True


@pytest.mark.postgres
def test_a_hung_database_server_gives_the_page_in_bounded_time(tmp_path, sqlite_template):
    """PostgreSQL that accepts and never answers: libpq's connect_timeout ends the wait."""
    import shutil

    from webapp import create_app

    path = tmp_path / "hemaloop.sqlite"
    shutil.copy(sqlite_template, path)
    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=f"sqlite:///{path}"))
    app = create_app(settings)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    with silent_server() as port:
        _take_database_away(app, f"postgresql+psycopg://postgres@127.0.0.1:{port}/hemaloop")
        started = time.perf_counter()
        response = admin.get("/label/")
        page_s = time.perf_counter() - started
        started = time.perf_counter()
        ready = app.test_client().get("/readyz")
        ready_s = time.perf_counter() - started
    print(f"hung database: page in {page_s:.1f} s, /readyz in {ready_s:.1f} s")
    assert response.status_code == 503 and "Database unavailable" in response.text
    assert ready.status_code == 503 and ready.json["checks"]["database"]["ok"] is False
    assert page_s < 3 * GENEROUS_S and ready_s < GENEROUS_S


# --- readiness ------------------------------------------------------------------------------

def _app(tmp_path, database_url: str, broker_url: str | None = None):
    from webapp import create_app

    extra = {"HEMALOOP_DATABASE_URL": database_url}
    if broker_url:
        extra.update(HEMALOOP_BROKER_URL=broker_url,
                     HEMALOOP_RESULT_BACKEND=broker_url.rsplit("/", 1)[0] + "/1",
                     # Failed-login counts in memory, not in the dead Redis: Flask-Limiter
                     # is one object per process, and a storage it found dead would
                     # stay "dead" for the next test's app (tests build many apps).
                     HEMALOOP_RATELIMIT_STORAGE_URL="memory://")
    settings = load_settings(base_env(tmp_path, **extra))
    app = create_app(settings)
    app.config["TESTING"] = True
    return app, settings


def test_readyz_reports_database_and_broker(tmp_path, database_url):
    app, _ = _app(tmp_path, database_url)
    response = app.test_client().get("/readyz")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "ready"
    assert set(response.json["checks"]) == {"database", "broker"}

    app, _ = _app(tmp_path, database_url, f"redis://127.0.0.1:{closed_port()}/0")
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and response.json["status"] == "unavailable"
    assert response.json["checks"]["database"]["ok"] is True
    assert response.json["checks"]["broker"] == {
        "ok": False, "error": "OperationalError", "ms": response.json["checks"]["broker"]["ms"]}
    assert app.test_client().get("/healthz").status_code == 200


def test_readyz_with_a_hung_broker_answers_in_bounded_time(tmp_path, sqlite_url):
    with silent_server() as port:
        app, _ = _app(tmp_path, sqlite_url, f"redis://127.0.0.1:{port}/0")
        started = time.perf_counter()
        response = app.test_client().get("/readyz")
        elapsed = time.perf_counter() - started
    print(f"hung broker: /readyz in {elapsed:.1f} s")
    assert response.status_code == 503 and response.json["checks"]["broker"]["ok"] is False
    assert elapsed < GENEROUS_S


# --- defect 7: sending work with Redis down ---------------------------------------------------

def test_start_round_and_rebuild_queue_answer_quickly_with_redis_down(tmp_path, database_url):
    """Broker and result backend both on a port nothing listens on (Redis stopped)."""
    app, settings = _app(tmp_path, database_url, f"redis://127.0.0.1:{closed_port()}/0")
    pid = flat_project(settings, tmp_path, "p", 4)
    make_user(settings, "boss", "admin")
    read_cells(app, pid, "boss", ["lymphocyte", "monocyte"])  # enough to train
    admin = LoggedIn(app.test_client(), "boss")

    started = time.perf_counter()
    response = admin.post(f"/admin/projects/{pid}/rounds")
    round_s = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert "The task queue could not be reached; is the broker running?" in response.text
    with session_scope(settings.database_url) as s:
        (rnd,) = s.query(TrainingRound).all()
        assert rnd.status == RoundStatus.FAILED  # visibly failed, never left queued

    started = time.perf_counter()
    response = admin.post(f"/admin/projects/{pid}/review-queue", htmx=False,
                          follow_redirects=True)
    queue_s = time.perf_counter() - started
    assert response.status_code == 200
    assert "The review queue could not be queued for rebuilding; try again shortly." in \
        response.text
    print(f"Redis down: start round answered in {round_s:.2f} s, "
          f"rebuild queue in {queue_s:.2f} s")
    assert round_s < GENEROUS_S and queue_s < GENEROUS_S
