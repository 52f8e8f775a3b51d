"""50 readers at once over real HTTP, k = 2, on PostgreSQL: every decision the server
accepted is stored once, and no cell gets more than its two readers.

The server is Werkzeug's threaded WSGI server started by the test on a free
port (one thread per request, each with its own database session, as gunicorn's
threads have), and each reader is a ``requests`` session with its own cookie,
logging in and labeling through the same forms and headers a browser sends.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from contextlib import contextmanager

import pytest
import requests
from sqlalchemy import select

from models import Annotation, Origin, Project
from models.db import session_scope
from models.labels import cell_states
from tests.helpers import PASSWORD, csrf_token, make_user, open_to_readers
from tests.reading_helpers import flat_project, shown, submission

READERS = 50
VOTES_EACH = 2
K = 2


@contextmanager
def serving(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _readers(settings, names: list[str]) -> None:
    """Pathologist accounts sharing one password hash: hashing is slow on purpose
    (0.4 s here), and 50 of them would be most of the test's time."""
    from models import Project, Role, User

    make_user(settings, names[0], "pathologist")
    with session_scope(settings.database_url) as s:
        hashed = s.scalar(select(User.password_hash).where(User.username == names[0]))
        s.add_all(User(username=name, role=Role.PATHOLOGIST, password_hash=hashed)
                  for name in names[1:])
        s.flush()
        for project in s.scalars(select(Project)):
            open_to_readers(s, project)  # each reader reads the project (memberships)


def _page_token(html: str) -> str:
    return re.search(r'"X-CSRFToken": "([^"]+)"', html).group(1)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_fifty_readers_over_http_with_two_readers_per_cell(app, settings, tmp_path):
    # Room for every vote (100 votes fill 50 cells at k = 2) and the lease each
    # reader then holds on its next cell.
    pid = flat_project(settings, tmp_path, "p", READERS * VOTES_EACH, readers_per_cell=K)
    names = [f"r{n}" for n in range(READERS)]
    _readers(settings, names)
    marks: list[float] = []
    start = threading.Barrier(READERS, action=lambda: marks.append(time.perf_counter()))
    accepted: list[tuple[str, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(base: str, name: str) -> None:
        try:
            web = requests.Session()
            page = web.get(f"{base}/auth/login", timeout=60)
            response = web.post(f"{base}/auth/login", timeout=60, data={
                "username": name, "password": PASSWORD, "csrf_token": csrf_token(page.text)})
            assert response.status_code == 200, response.status_code  # after the redirect
            html = web.get(f"{base}/label/{pid}", timeout=60).text
            headers = {"X-CSRFToken": _page_token(html), "HX-Request": "true"}
            start.wait(timeout=120)
            for _ in range(VOTES_EACH):
                cell = shown(html)
                if cell is None:
                    errors.append(f"{name}: no cell offered")
                    return
                response = web.post(f"{base}/label/{pid}/cells/{cell}", headers=headers,
                                    timeout=60, data={"choice": "lymphocyte",
                                                      "submission_id": submission(html)})
                if response.status_code != 200:
                    errors.append(f"{name}: {response.status_code} {response.text[:200]}")
                    return
                with lock:
                    accepted.append((name, cell))
                html = response.text
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{name}: {exc!r}")

    with serving(app) as base:
        threads = [threading.Thread(target=work, args=(base, n)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    if marks:
        print(f"{READERS} readers: {len(accepted)} decisions over HTTP in "
              f"{time.perf_counter() - marks[0]:.1f} s")
    assert errors == []
    assert len(accepted) == READERS * VOTES_EACH

    with session_scope(settings.database_url) as s:
        rows = s.execute(select(Annotation.user_id, Annotation.image_id)
                         .where(Annotation.origin == Origin.READER)).all()
        votes = [len(c.votes) for c in cell_states(s, s.get(Project, pid)).values()]
    # Decisions sent = decisions stored: one row per accepted decision, none twice.
    assert len(rows) == len(accepted)
    assert len(set(rows)) == len(rows)
    assert Counter(cell for _, cell in accepted) == Counter(cell for _, cell in rows)
    # No cell over k.
    assert max(votes) <= K and sum(votes) == READERS * VOTES_EACH
