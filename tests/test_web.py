"""The web app's edges: login, CSRF, roles, labeling refusals, the queue, images, admin."""

from __future__ import annotations

import html as htmllib
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from models import Annotation, Flag, Image, Origin, Project, Split, TrainingRound
from models.db import session_scope
from tests.helpers import (DEMO_DIR, PASSWORD, LoggedIn, csrf_token, make_user,
                           open_to_readers)
from webapp.bootstrap import create_project
from webapp.ingest import import_path

CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte",
           "neutrophil", "platelet"]


# --- fixtures and helpers ------------------------------------------------------------

@pytest.fixture
def sqlite_app(sqlite_settings):
    from webapp import create_app

    app = create_app(sqlite_settings)
    app.config["TESTING"] = True
    return app


def _small_project(settings, tmp_path: Path, name: str, n: int, test_share: float = 0.0) -> int:
    """A project of n unlabeled demo cells (a flat import)."""
    src = tmp_path / f"flat-{name}"
    src.mkdir()
    files = [f for d in sorted(DEMO_DIR.iterdir()) for f in sorted(d.iterdir())]
    for f in files[: n * 7: 7][:n]:
        shutil.copy(f, src / f.name)
    with session_scope(settings.database_url) as s:
        project = create_project(s, name, "pbc8", test_share=test_share)
        open_to_readers(s, project)
        report = import_path(s, settings.storage_dir, project, src,
                             max_pixels=settings.max_image_pixels)
        assert report.imported == n
        return project.id


def _shown(html: str) -> int | None:
    match = re.search(r'data-image-id="(\d+)"', html)
    return int(match.group(1)) if match else None


def _submission(html: str) -> str:
    return re.search(r'name="submission_id" value="(\w+)"', html).group(1)


def _annotations(settings) -> list[Annotation]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(Annotation).where(Annotation.origin == Origin.READER)
                              .order_by(Annotation.id)))


def _n_rounds(settings) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count(TrainingRound.id)))


def _image_ids(settings, project_id: int, split: Split) -> list[int]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(Image.id).where(
            Image.project_id == project_id, Image.split == split).order_by(Image.id)))


def _text(response) -> str:
    """The response body with HTML entities decoded (&#39; -> ')."""
    return htmllib.unescape(response.text)


def _is_login_redirect(response) -> bool:
    return response.status_code == 302 and urlsplit(response.location).path == "/auth/login"


# --- login and logout ------------------------------------------------------------------

def test_login_wrong_password_and_logout(sqlite_app, sqlite_settings):
    make_user(sqlite_settings, "reader", "pathologist")
    client = sqlite_app.test_client()
    page = client.get("/auth/login")
    assert page.status_code == 200
    token = csrf_token(page.text)

    for username, password in [("reader", "wrong-password"), ("nobody", PASSWORD)]:
        response = client.post("/auth/login", data={
            "username": username, "password": password, "csrf_token": token})
        assert response.status_code == 401
        assert "Unknown username or wrong password." in response.text
        with client.session_transaction() as sess:
            assert "_user_id" not in sess
        assert _is_login_redirect(client.get("/label/"))

    response = client.post("/auth/login", data={
        "username": "reader", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302 and response.location == "/"
    page = client.get("/label/")
    assert page.status_code == 200  # no project yet: the list of projects
    token = csrf_token(page.text)

    # Logging out is a POST with the CSRF token; anything less leaves the session.
    assert client.get("/auth/logout").status_code == 405
    response = client.post("/auth/logout")
    assert response.status_code == 400 and "Form expired" in response.text
    assert client.get("/label/").status_code == 200
    response = client.post("/auth/logout", data={"csrf_token": token})
    assert _is_login_redirect(response)
    assert _is_login_redirect(client.get("/label/"))
    with client.session_transaction() as sess:
        assert "_user_id" not in sess


def test_inactive_user_cannot_log_in(sqlite_app, sqlite_settings):
    from models import User

    uid = make_user(sqlite_settings, "gone", "pathologist")
    with session_scope(sqlite_settings.database_url) as s:
        s.get(User, uid).is_active = False
    client = sqlite_app.test_client()
    token = csrf_token(client.get("/auth/login").text)
    response = client.post("/auth/login", data={
        "username": "gone", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 401


def test_login_without_csrf_token_is_refused(sqlite_app, sqlite_settings):
    make_user(sqlite_settings, "reader", "pathologist")
    client = sqlite_app.test_client()
    client.get("/auth/login")
    response = client.post("/auth/login", data={"username": "reader", "password": PASSWORD})
    assert response.status_code == 400
    with client.session_transaction() as sess:
        assert "_user_id" not in sess


@pytest.mark.parametrize("target", [
    "http://evil.example/phish",
    "https://evil.example",
    "//evil.example/x",
    "/\\evil.example/x",  # browsers read a backslash as a slash: //evil.example
    "javascript:alert(1)",
    "evil.example",
])
def test_login_never_redirects_off_site(sqlite_app, sqlite_settings, target):
    make_user(sqlite_settings, "reader", "pathologist")
    client = sqlite_app.test_client()
    token = csrf_token(client.get("/auth/login").text)
    response = client.post("/auth/login", query_string={"next": target}, data={
        "username": "reader", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302
    location = response.location
    # Where a browser goes: a path on this site (a raw backslash would read as '/').
    assert location.startswith("/") and not location.startswith("//"), location
    assert "\\" not in location and "evil.example" not in urlsplit(location).netloc
    if target.startswith(("http", "//", "javascript", "evil")):
        assert location == "/"


def test_login_follows_a_local_next(sqlite_app, sqlite_settings):
    make_user(sqlite_settings, "reader", "pathologist")
    client = sqlite_app.test_client()
    # Visiting a page logged out sends you to login with next=...
    response = client.get("/label/")
    assert _is_login_redirect(response)
    login_url = response.location
    token = csrf_token(client.get(login_url).text)
    response = client.post(login_url, data={
        "username": "reader", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302 and response.location == "/label/"


# --- roles -----------------------------------------------------------------------------

def test_role_gating(sqlite_app, sqlite_settings, tmp_path):
    pid = _small_project(sqlite_settings, tmp_path, "p", 2)
    anonymous = sqlite_app.test_client()
    for url in ["/", "/label/", f"/label/{pid}", "/admin/", "/curate/", "/images/1",
                "/admin/rounds/1"]:
        assert _is_login_redirect(anonymous.get(url)), url
    # The JSON API answers a program with 401 JSON, never a login page (issue 13).
    for url in ["/api/rounds/1", "/api/projects", f"/api/projects/{pid}/queue"]:
        response = anonymous.get(url)
        assert response.status_code == 401 and response.json["error"] == "Unauthorized", url

    make_user(sqlite_settings, "reader", "pathologist")
    make_user(sqlite_settings, "cur", "curator")
    reader = LoggedIn(sqlite_app.test_client(), "reader")
    for url in ["/admin/", "/curate/", "/api/rounds/1", "/admin/rounds/1"]:
        assert reader.get(url).status_code == 403, url
    response = reader.get("/api/rounds/1")
    assert response.json["error"] == "Forbidden" and "admin" in response.json["message"]
    response = reader.post(f"/admin/projects/{pid}/rounds")
    assert response.status_code == 403
    assert _n_rounds(sqlite_settings) == 0
    assert reader.get(f"/label/{pid}").status_code == 200
    assert reader.get("/api/projects").status_code == 200

    curator = LoggedIn(sqlite_app.test_client(), "cur")
    assert curator.get("/curate/").status_code == 200
    assert curator.get("/admin/").status_code == 403
    assert curator.get(f"/label/{pid}").status_code == 200


def test_admin_api_round_404(sqlite_app, sqlite_settings):
    make_user(sqlite_settings, "boss", "admin")
    admin = LoggedIn(sqlite_app.test_client(), "boss")
    response = admin.get("/api/rounds/12345")
    assert response.status_code == 404 and "There is no round 12345." in response.json["message"]


# --- labeling: refusals write nothing ----------------------------------------------------

def test_labeling_refusals(app, client, settings, demo_project, tmp_path):
    make_user(settings, "reader", "pathologist")
    reader = LoggedIn(client, "reader")
    page = reader.get(f"/label/{demo_project}")
    image_id = _shown(page.text)
    assert image_id is not None
    url = f"/label/{demo_project}/cells/{image_id}"

    response = reader.post(url, data={"choice": "megakaryocyte", "submission_id": "s1"})
    assert response.status_code == 400
    assert "Unknown class 'megakaryocyte'; this project's classes are " \
        + ", ".join(CLASSES) in _text(response)

    for data, words in [
        ({"choice": ""}, "No class was chosen."),
        ({"choice": "neutrophil", "duration_ms": "soon"}, "duration_ms must be a whole number"),
        ({"choice": "neutrophil", "submission_id": "x" * 65}, "submission_id is too long"),
        ({"choice": "neutrophil", "model_version_id": "999"}, "Model version 999"),
        ({"choice": "neutrophil", "suggested_class_id": "99999"}, "not one of this project's"),
    ]:
        response = reader.post(url, data=data)
        assert response.status_code == 400, data
        assert words in _text(response), (data, response.text)

    response = reader.post(f"/label/{demo_project}/cells/999999", data={"choice": "neutrophil"})
    assert response.status_code == 404 and "Cell 999999 does not exist" in response.text

    test_ids = _image_ids(settings, demo_project, Split.TEST)
    assert test_ids, "the demo project holds some cells out for testing"
    response = reader.post(f"/label/{demo_project}/cells/{test_ids[0]}",
                           data={"choice": "neutrophil"})
    assert response.status_code == 409 and "test split" in response.text

    # A cell of another project is not this project's cell.
    other = _small_project(settings, tmp_path, "other", 1)
    other_image = _image_ids(settings, other, Split.POOL)[0]
    response = reader.post(f"/label/{demo_project}/cells/{other_image}",
                           data={"choice": "neutrophil"})
    assert response.status_code == 404

    response = reader.post("/label/98765/cells/1", data={"choice": "neutrophil"})
    assert response.status_code == 404

    # Without the CSRF token: refused before anything runs.
    response = client.post(url, data={"choice": "neutrophil"}, headers={"HX-Request": "true"})
    assert response.status_code == 400 and "Form expired" in response.text

    assert _annotations(settings) == []
    # The refused cell is still the one shown.
    assert _shown(reader.get(f"/label/{demo_project}").text) == image_id


def test_double_submit_creates_one_annotation(app, client, settings, demo_project):
    make_user(settings, "reader", "pathologist")
    reader = LoggedIn(client, "reader")
    page = reader.get(f"/label/{demo_project}").text
    image_id, submission = _shown(page), _submission(page)
    data = {"choice": "lymphocyte", "submission_id": submission, "duration_ms": "1200"}
    first = reader.post(f"/label/{demo_project}/cells/{image_id}", data=data)
    second = reader.post(f"/label/{demo_project}/cells/{image_id}", data=data)
    assert first.status_code == second.status_code == 200
    assert _shown(first.text) != image_id and _shown(second.text) != image_id

    (ann,) = _annotations(settings)
    assert (ann.image_id, ann.submission_id, ann.duration_ms, ann.flag) == (
        image_id, submission, 1200, None)
    with session_scope(settings.database_url) as s:
        assert s.get(Project, demo_project).class_by_name("lymphocyte").id == ann.label_class_id

    # Another reader cannot label a cell that was not leased to them...
    make_user(settings, "reader2", "pathologist")
    make_user(settings, "reader3", "pathologist")
    other = LoggedIn(app.test_client(), "reader2")
    response = other.post(f"/label/{demo_project}/cells/{image_id}", data=data)
    assert response.status_code == 409 and "is not leased to you" in response.text
    assert len(_annotations(settings)) == 1
    # ...but once the project asks two readers per cell, it is shown to them, and their
    # identical submission id is their own submission.
    with session_scope(settings.database_url) as s:
        s.get(Project, demo_project).readers_per_cell = 2
    other = LoggedIn(app.test_client(), "reader3")
    assert _shown(other.get(f"/label/{demo_project}").text) == image_id
    response = other.post(f"/label/{demo_project}/cells/{image_id}", data=data)
    assert response.status_code == 200
    assert len(_annotations(settings)) == 2


def test_flags_are_stored_and_leave_the_queue(app, client, settings, demo_project):
    make_user(settings, "reader", "pathologist")
    reader = LoggedIn(client, "reader")
    html = reader.get(f"/label/{demo_project}").text
    remaining = int(re.search(r'data-remaining="(\d+)"', html).group(1))
    flagged = []
    for flag in ["ambiguous", "unusable"]:
        image_id = _shown(html)
        response = reader.post(f"/label/{demo_project}/cells/{image_id}", data={
            "choice": flag, "submission_id": _submission(html)})
        assert response.status_code == 200
        html = response.text
        flagged.append(image_id)
        assert _shown(html) not in flagged
    assert int(re.search(r'data-remaining="(\d+)"', html).group(1)) == remaining - 2

    anns = _annotations(settings)
    assert [(a.image_id, a.flag, a.label_class_id) for a in anns] == [
        (flagged[0], Flag.AMBIGUOUS, None), (flagged[1], Flag.UNUSABLE, None)]
    queue = reader.get(f"/api/projects/{demo_project}/queue?limit=1000").json
    assert len(queue["cells"]) == remaining - 2
    assert not {c["image_id"] for c in queue["cells"]} & set(flagged)
    # A curator sees the ambiguous one.
    make_user(settings, "cur", "curator")
    curator = LoggedIn(app.test_client(), "cur")
    assert f"/images/{flagged[0]}" in curator.get("/curate/").text


def test_skip_moves_the_cell_to_the_back(sqlite_app, sqlite_settings, tmp_path):
    pid = _small_project(sqlite_settings, tmp_path, "three", 3)
    make_user(sqlite_settings, "reader", "pathologist")
    reader = LoggedIn(sqlite_app.test_client(), "reader")
    order = [c["image_id"] for c in reader.get(f"/api/projects/{pid}/queue").json["cells"]]
    assert len(order) == 3
    a, b, c = order
    assert _shown(reader.get(f"/label/{pid}").text) == a

    response = reader.post(f"/label/{pid}/cells/{a}/skip")
    assert response.status_code == 200 and _shown(response.text) == b
    assert _shown(reader.get(f"/label/{pid}").text) == b  # remembered in the session
    assert _annotations(sqlite_settings) == []  # a skip records nothing
    # Skipping is per reader session: the queue itself still starts at the front.
    assert reader.get(f"/api/projects/{pid}/queue").json["cells"][0]["image_id"] == a

    html = reader.post(f"/label/{pid}/cells/{b}", data={"choice": "monocyte"}).text
    assert _shown(html) == c  # the skipped cell waits behind the others...
    html = reader.post(f"/label/{pid}/cells/{c}", data={"choice": "monocyte"}).text
    assert _shown(html) == a  # ...and comes back rather than getting lost
    html = reader.post(f"/label/{pid}/cells/{a}", data={"choice": "platelet"}).text
    assert _shown(html) is None and "The queue is empty" in html


# --- images and static files -------------------------------------------------------------

def test_image_served_and_missing_file_is_a_clear_404(sqlite_app, sqlite_settings, tmp_path):
    pid = _small_project(sqlite_settings, tmp_path, "p", 2)
    first, second = _image_ids(sqlite_settings, pid, Split.POOL)
    make_user(sqlite_settings, "reader", "pathologist")
    reader = LoggedIn(sqlite_app.test_client(), "reader")
    with session_scope(sqlite_settings.database_url) as s:
        image = s.get(Image, first)
        path = sqlite_settings.storage_dir / s.get(Image, second).storage_path

    response = reader.get(f"/images/{first}")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert response.get_etag()[0] == image.sha256
    assert response.data == (sqlite_settings.storage_dir / image.storage_path).read_bytes()
    assert reader.get(f"/images/{first}", headers={
        "If-None-Match": f'"{image.sha256}"'}).status_code == 304

    path.unlink()
    response = reader.get(f"/images/{second}")
    assert response.status_code == 404
    assert f"The file of image {second} is missing from storage." in response.text
    assert "Traceback" not in response.text

    response = reader.get("/images/424242")
    assert response.status_code == 404 and "There is no image 424242." in response.text


def test_vendored_htmx_and_no_cdn(sqlite_app, sqlite_settings, tmp_path):
    pid = _small_project(sqlite_settings, tmp_path, "p", 2)
    make_user(sqlite_settings, "boss", "admin")
    client = sqlite_app.test_client()
    pages = [client.get("/auth/login").text]
    admin = LoggedIn(client, "boss")
    for url in [f"/label/{pid}", "/admin/", "/curate/", "/label/"]:
        response = admin.get(url, follow_redirects=True)
        assert response.status_code == 200, url
        pages.append(response.text)

    sources = set()
    for html in pages:
        sources |= set(re.findall(r'<script[^>]*\bsrc="([^"]+)"', html))
        sources |= set(re.findall(r'<link[^>]*\bhref="([^"]+)"', html))
        assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "/static/vendor/htmx-2.0.11.min.js" in sources
    sources = {src for src in sources if not src.startswith("data:")}  # inline, no fetch
    for src in sources:
        assert src.startswith("/static/"), src
        response = client.get(src)
        assert response.status_code == 200, src
        assert len(response.data) > 0
        response.close()
    htmx = client.get("/static/vendor/htmx-2.0.11.min.js")
    assert b"htmx" in htmx.data and htmx.mimetype in {"text/javascript", "application/javascript"}

    # Nor anywhere in the templates, rendered or not.
    templates = Path(sqlite_app.root_path) / "templates"
    for t in templates.rglob("*.html"):
        assert not re.search(r'(src|href)="(https?:)?//', t.read_text()), t


# --- admin: starting rounds ------------------------------------------------------------------

def test_start_round_refusals(app, client, settings, demo_project):
    make_user(settings, "boss", "admin")
    admin = LoggedIn(client, "boss")
    assert "Start retraining round" in admin.get("/admin/").text

    response = admin.post(f"/admin/projects/{demo_project}/rounds")
    assert response.status_code == 409
    assert "Round not started" in response.text
    assert "at least two classes" in response.text and "labels so far: none" in response.text
    assert _n_rounds(settings) == 0

    # Without the CSRF token: nothing happens.
    response = client.post(f"/admin/projects/{demo_project}/rounds", headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert _n_rounds(settings) == 0

    # One class labeled is still too few.
    html = admin.get(f"/label/{demo_project}").text
    for _ in range(2):
        html = admin.post(f"/label/{demo_project}/cells/{_shown(html)}",
                          data={"choice": "neutrophil"}).text
    response = admin.post(f"/admin/projects/{demo_project}/rounds")
    assert response.status_code == 409 and "neutrophil: 2" in response.text
    assert _n_rounds(settings) == 0

    admin.post(f"/label/{demo_project}/cells/{_shown(html)}", data={"choice": "basophil"})
    response = admin.post(f"/admin/projects/{demo_project}/rounds")
    assert response.status_code == 200, response.text
    round_id = int(re.search(r'id="round-(\d+)"', response.text).group(1))
    with session_scope(settings.database_url) as s:
        rnd = s.get(TrainingRound, round_id)
        assert rnd.status.value == "queued" and rnd.celery_task_id and rnd.trigger == "admin"

    # A second start while one is queued is refused, naming the round.
    response = admin.post(f"/admin/projects/{demo_project}/rounds")
    assert response.status_code == 409
    assert f"Round {round_id} is already queued" in response.text
    assert _n_rounds(settings) == 1
    assert admin.post("/admin/projects/4242/rounds").status_code == 404


def test_queue_api_limit_is_validated(sqlite_app, sqlite_settings, tmp_path):
    pid = _small_project(sqlite_settings, tmp_path, "p", 3)
    make_user(sqlite_settings, "reader", "pathologist")
    reader = LoggedIn(sqlite_app.test_client(), "reader")
    queue = reader.get(f"/api/projects/{pid}/queue?limit=2").json
    assert queue["order"] == "random" and queue["model_version_id"] is None
    assert len(queue["cells"]) == 2 and queue["cells"][0]["suggestion"] is None
    # "²" is a digit to str.isdigit() but not to int(): still a bad request, not a crash.
    for bad in ["0", "1001", "-1", "abc", "2.5", "²"]:
        response = reader.get(f"/api/projects/{pid}/queue", query_string={"limit": bad})
        assert response.status_code == 400, (bad, response.status_code)
        assert response.json["message"] == "limit must be a whole number from 1 to 1000"
    assert reader.get("/api/projects/999/queue").status_code == 404
