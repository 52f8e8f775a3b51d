"""Issue 13, run from the browser: projects, people, membership, imports.

Every test here runs on SQLite and on PostgreSQL (``database_url``), with
real requests through the app; imports run on a real Celery worker (or the
task's function, called as the worker calls it).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import create_engine, func, pool, select, text

from models import Annotation, Image, ImportJob, ImportStatus, Origin, Project, ProjectMember, User
from models.db import session_scope
from tests.helpers import (
    PASSWORD, LoggedIn, base_env, csrf_token, make_user, running_worker, small_demo_copy,
)
from webapp.bootstrap import create_project
from webapp.ingest import import_path


# --- helpers ---------------------------------------------------------------------------------

def _project_with_cells(settings, tmp_path: Path, name: str) -> int:
    src = small_demo_copy(tmp_path / f"cells-{name}", per_class=2,
                          classes=["lymphocyte", "neutrophil"])
    with session_scope(settings.database_url) as s:
        project = create_project(s, name, "pbc8", test_share=0.0)
        report = import_path(s, settings.storage_dir, project, src,
                             max_pixels=settings.max_image_pixels)
        assert report.imported == 4
        return project.id


def _first_image(settings, project_id: int) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.min(Image.id)).where(Image.project_id == project_id))


def _cell_png(colour: tuple[int, int, int], size: int = 40) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (size, size), colour).save(out, "PNG")
    return out.getvalue()


def _class_zip(folders: dict[str, int], top: str = "cells", extra: dict[str, bytes] | None = None
               ) -> bytes:
    """A zip of class folders under one top folder, with distinct images."""
    out = io.BytesIO()
    n = 0
    with zipfile.ZipFile(out, "w") as z:
        for cls, count in folders.items():
            for k in range(count):
                n += 1
                z.writestr(f"{top}/{cls}/{cls}-{k}.png", _cell_png((n * 20 % 256, k * 40, 90)))
        for name, data in (extra or {}).items():
            z.writestr(f"{top}/{name}", data)
    return out.getvalue()


def _form_token(page_html: str) -> str:
    return csrf_token(page_html)


# --- membership ------------------------------------------------------------------------------

def test_membership_per_role(app, settings, tmp_path):
    """A pathologist or curator sees only the projects they read; admins see all.
    Everything of another project answers 404: pages, cells, images, the API."""
    mine = _project_with_cells(settings, tmp_path, "mine")
    make_user(settings, "boss", "admin")
    make_user(settings, "reader", "pathologist")  # made after "mine": reads it
    make_user(settings, "cur", "curator")
    theirs = _project_with_cells(settings, tmp_path, "theirs")  # nobody joined it
    their_image = _first_image(settings, theirs)
    my_image = _first_image(settings, mine)

    for name in ("reader", "cur"):
        user = LoggedIn(app.test_client(), name)
        assert user.get(f"/label/{mine}").status_code == 200
        assert user.get(f"/images/{my_image}").status_code == 200
        for url in (f"/label/{theirs}", f"/label/{theirs}/next", f"/label/{theirs}/verify",
                    f"/images/{their_image}", f"/api/projects/{theirs}/queue"):
            assert user.get(url).status_code == 404, (name, url)
        assert user.post(f"/label/{theirs}/cells/{their_image}", data={"choice": "neutrophil"}
                         ).status_code == 404
        names = [p["name"] for p in user.get("/api/projects").json["projects"]]
        assert names == ["mine"]
        # The project list (one project: straight to it).
        assert user.get("/label/").location.endswith(f"/label/{mine}")

    cur = LoggedIn(app.test_client(), "cur")
    for url in (f"/curate/cells/{their_image}", f"/curate/cells/{their_image}/history",
                f"/curate/projects/{theirs}/agreement", f"/api/projects/{theirs}/agreement",
                f"/api/cells/{their_image}/history"):
        assert cur.get(url).status_code == 404, url
    assert cur.post(f"/curate/cells/{their_image}/resolve", htmx=False,
                    data={"choice": "neutrophil"}).status_code == 404
    assert cur.get(f"/curate/cells/{my_image}").status_code == 200
    assert cur.get(f"/curate/projects/{mine}/agreement").status_code == 200
    assert "theirs" not in cur.get("/curate/").text

    boss = LoggedIn(app.test_client(), "boss")
    assert boss.get(f"/label/{theirs}").status_code == 200
    assert boss.get(f"/images/{their_image}").status_code == 200
    assert {p["name"] for p in boss.get("/api/projects").json["projects"]} == {"mine", "theirs"}

    # The admin adds the reader to "theirs" on its page; then removes them again.
    page = boss.get(f"/admin/projects/{theirs}")
    assert page.status_code == 200 and "No readers yet" in page.text
    with session_scope(settings.database_url) as s:
        reader_id = s.scalar(select(User.id).where(User.username == "reader"))
    response = boss.post(f"/admin/projects/{theirs}/members", htmx=False,
                         data={"user_id": reader_id, "csrf_token": boss.token})
    assert response.status_code == 302
    reader = LoggedIn(app.test_client(), "reader")
    assert reader.get(f"/label/{theirs}").status_code == 200
    assert reader.get(f"/images/{their_image}").status_code == 200
    boss.post(f"/admin/projects/{theirs}/members/{reader_id}/remove", htmx=False,
              data={"csrf_token": boss.token})
    assert reader.get(f"/label/{theirs}").status_code == 404
    # Readers' pages stay closed to them.
    assert reader.get(f"/admin/projects/{theirs}").status_code == 403


def test_migration_makes_existing_readers_members(database_url):
    """Upgrading a lab: every pathologist and curator reads every existing project."""
    from migrations.runner import downgrade, upgrade

    downgrade(database_url, "0009")
    engine = create_engine(database_url, poolclass=pool.NullPool)
    with engine.begin() as conn:
        for pid, name in ((1, "a"), (2, "b")):
            conn.execute(text(
                "INSERT INTO projects (id, name, description, test_share, train_on_reference, "
                "min_labels_per_class, fine_tune_blocks, warm_start, readers_per_cell, "
                "contested_class_ids, agreement_share, blind_reading, lease_minutes, "
                "suggestion_min_accuracy, created_at) "
                "VALUES (:id, :name, '', 0.1, false, 1, 0, true, 1, '[]', 0, false, 10, 0.7, "
                "CURRENT_TIMESTAMP)"), {"id": pid, "name": name})
        for uid, name, role in ((1, "p", "pathologist"), (2, "c", "curator"), (3, "adm", "admin")):
            conn.execute(text(
                "INSERT INTO users (id, username, password_hash, role, is_active, created_at, "
                "session_version) VALUES (:id, :name, 'x', :role, true, CURRENT_TIMESTAMP, 0)"),
                {"id": uid, "name": name, "role": role})
    upgrade(database_url)
    with engine.connect() as conn:
        rows = set(conn.execute(text("SELECT project_id, user_id FROM project_members")))
        flags = set(conn.execute(text("SELECT must_change_password FROM users")).scalars())
    engine.dispose()
    assert rows == {(1, 1), (1, 2), (2, 1), (2, 2)}  # admins need no rows
    assert flags == {False}


# --- projects --------------------------------------------------------------------------------

def _new_project_form(boss, **fields):
    page = boss.get("/admin/projects/new")
    assert page.status_code == 200
    data = {"csrf_token": _form_token(page.text), "name": "marrow", "preset": "custom",
            "readers_per_cell": "2", "test_share": "0.2", "al_strategy": "entropy",
            "al_round_size": "30"}
    data.update(fields)
    return data


def test_admin_creates_a_project_with_custom_classes(app, settings):
    make_user(settings, "boss", "admin")
    boss = LoggedIn(app.test_client(), "boss")

    # Clashing and reserved hotkeys are refused with the reason; nothing is created.
    data = _new_project_form(boss)
    data["class_name"] = ["blast", "promyelocyte", "myelocyte"]
    data["class_hotkey"] = ["1", "1", "a"]
    data["class_colour"] = ["#ff0000", "#00ff00", "#0000ff"]
    response = boss.client.post("/admin/projects/new", data=data)
    assert response.status_code == 400
    body = response.text.replace("&#39;", "'")
    assert "hotkey '1' of 'promyelocyte' is already 'blast''s" in body
    assert "hotkey 'a' of 'myelocyte' is the labeling page's own key" in body
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(Project.id))) == 0

    data["class_hotkey"] = ["1", "2", "Q"]
    response = boss.client.post("/admin/projects/new", data=data)
    assert response.status_code == 302, response.text
    with session_scope(settings.database_url) as s:
        project = s.scalar(select(Project).where(Project.name == "marrow"))
        assert [(c.name, c.hotkey, c.colour) for c in project.classes] == [
            ("blast", "1", "#ff0000"), ("promyelocyte", "2", "#00ff00"),
            ("myelocyte", "q", "#0000ff")]
        assert (project.readers_per_cell, project.test_share, project.al_strategy,
                project.al_round_size) == (2, 0.2, "entropy", 30)
        pid = project.id
    assert response.location.endswith(f"/admin/projects/{pid}")

    # A preset works too; a duplicate name is refused.
    data = _new_project_form(boss, name="pbc", preset="wbc4")
    assert boss.client.post("/admin/projects/new", data=data).status_code == 302
    data = _new_project_form(boss, name="pbc", preset="wbc4")
    response = boss.client.post("/admin/projects/new", data=data)
    assert response.status_code == 400 and "already exists" in response.text

    # A class added later: the page says the next round starts afresh.
    page = boss.get(f"/admin/projects/{pid}")
    response = boss.client.post(f"/admin/projects/{pid}/classes", follow_redirects=True, data={
        "csrf_token": _form_token(page.text), "name": "blast", "hotkey": "4", "colour": "#123456"})
    assert response.status_code == 400 and "is used twice" in response.text.replace("&#39;", "'")
    response = boss.client.post(f"/admin/projects/{pid}/classes", follow_redirects=True, data={
        "csrf_token": _form_token(page.text), "name": "metamyelocyte", "hotkey": "4",
        "colour": "#123456"})
    assert response.status_code == 200
    assert "The next round trains a new network" in response.text
    with session_scope(settings.database_url) as s:
        names = [c.name for c in s.get(Project, pid).classes]
    assert names == ["blast", "promyelocyte", "myelocyte", "metamyelocyte"]


# --- people ----------------------------------------------------------------------------------

def _login(app, username: str, password: str):
    client = app.test_client()
    token = csrf_token(client.get("/auth/login").text)
    response = client.post("/auth/login", data={"username": username, "password": password,
                                                "csrf_token": token})
    return client, response


def test_admin_manages_users_and_everyone_changes_their_password(app, settings, tmp_path):
    pid = _project_with_cells(settings, tmp_path, "cells")
    make_user(settings, "boss", "admin")
    boss = LoggedIn(app.test_client(), "boss")

    # Create: a one-time password, shown once; the user must change it first.
    page = boss.get("/admin/users")
    response = boss.client.post("/admin/users", data={
        "csrf_token": _form_token(page.text), "username": "ada", "role": "pathologist"})
    assert response.status_code == 200
    otp = re.search(r'id="shown-password">([^<]+)<', response.text).group(1)
    assert otp not in boss.get("/admin/users").text  # never shown again
    client, response = _login(app, "ada", otp)
    assert response.status_code == 302
    assert client.get(f"/label/{pid}").location.endswith("/auth/account")
    assert client.get("/api/projects").status_code == 403
    token = csrf_token(client.get("/auth/account").text)
    response = client.post("/auth/account", data={"csrf_token": token, "current": otp,
                                                   "new": "short", "again": "short"})
    assert response.status_code == 400
    response = client.post("/auth/account", data={
        "csrf_token": token, "current": otp, "new": "ada-own-password", "again": "ada-own-password"})
    assert response.status_code == 302
    # Not a member of "cells" yet (created in the browser: no projects).
    assert client.get(f"/label/{pid}").status_code == 404
    assert client.get("/label/").status_code == 200

    with session_scope(settings.database_url) as s:
        ada = s.scalar(select(User).where(User.username == "ada"))
        ada_id, version = ada.id, ada.session_version
        assert not ada.must_change_password

    # Change role.
    boss.post(f"/admin/users/{ada_id}/role", htmx=False,
              data={"role": "curator", "csrf_token": boss.token})
    assert client.get("/curate/").status_code == 200

    # Reset: a new one-time password; the old sessions end.
    response = boss.post(f"/admin/users/{ada_id}/reset-password", htmx=False,
                         data={"csrf_token": boss.token})
    new_otp = re.search(r'id="shown-password">([^<]+)<', response.text).group(1)
    assert client.get("/curate/").location.startswith("/auth/login")
    assert _login(app, "ada", "ada-own-password")[1].status_code == 401
    client, response = _login(app, "ada", new_otp)
    assert response.status_code == 302
    assert client.get("/curate/").location.endswith("/auth/account")

    # Deactivate: the session in use ends at its next request; no new login.
    response = boss.post(f"/admin/users/{ada_id}/deactivate", htmx=False,
                         data={"csrf_token": boss.token})
    assert response.status_code == 302
    assert client.get("/auth/account").location.startswith("/auth/login")
    assert _login(app, "ada", new_otp)[1].status_code == 401
    with session_scope(settings.database_url) as s:
        assert s.get(User, ada_id).session_version > version

    # An admin cannot lock themselves out from this page.
    with session_scope(settings.database_url) as s:
        boss_id = s.scalar(select(User.id).where(User.username == "boss"))
    assert boss.post(f"/admin/users/{boss_id}/deactivate", htmx=False,
                     data={"csrf_token": boss.token}).status_code == 409

    # The account page: a wrong current password is refused; the admin's own works.
    token = csrf_token(boss.get("/auth/account").text)
    response = boss.client.post("/auth/account", data={
        "csrf_token": token, "current": "wrong-password", "new": "another-password",
        "again": "another-password"})
    assert response.status_code == 400 and "not your current password" in response.text
    response = boss.client.post("/auth/account", data={
        "csrf_token": token, "current": PASSWORD, "new": "another-password",
        "again": "another-password"})
    assert response.status_code == 302
    assert boss.get("/admin/users").status_code == 200  # this session goes on
    assert _login(app, "boss", "another-password")[1].status_code == 302

    # Pathologists and curators cannot reach any of it.
    make_user(settings, "reader", "pathologist")
    reader = LoggedIn(app.test_client(), "reader")
    for url in ("/admin/users", "/admin/projects/new", f"/admin/projects/{pid}"):
        assert reader.get(url).status_code == 403


# --- imports from the browser ----------------------------------------------------------------

def _upload(admin, pid: int, files: list[tuple[bytes, str]], trust: bool = False):
    page = admin.get(f"/admin/projects/{pid}")
    data = {"csrf_token": _form_token(page.text),
            "files": [(io.BytesIO(content), name) for content, name in files]}
    if trust:
        data["trust_labels"] = "y"
    return admin.client.post(f"/admin/projects/{pid}/imports", data=data,
                             content_type="multipart/form-data")


def _job(settings, job_id: int) -> ImportJob:
    with session_scope(settings.database_url) as s:
        job = s.get(ImportJob, job_id)
        s.expunge(job)
        return job


@pytest.mark.slow
def test_browser_import_of_a_zip_on_a_real_worker(app, settings):
    make_user(settings, "boss", "admin")
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "wbc4", test_share=0.0).id
    boss = LoggedIn(app.test_client(), "boss")
    archive = _class_zip({"lymphocyte": 3, "neutrophil": 2},
                         extra={"notes.txt": b"not an image", "monster/x.png": _cell_png((1, 2, 3))})

    response = _upload(boss, pid, [(archive, "cells.zip")], trust=True)
    assert response.status_code == 302, response.text
    job_id = int(response.location.rsplit("/", 1)[1])
    job = _job(settings, job_id)
    assert job.status == ImportStatus.QUEUED and job.trust_labels
    # The upload waits on disk (the worker removes it when done).
    assert (settings.instance_dir / job.upload_dir / "upload.zip").stat().st_size == len(archive)
    status = boss.get(f"/admin/imports/{job_id}/status")
    assert status.status_code == 200 and 'hx-trigger="every 5s"' in status.text  # queued
    assert boss.get(f"/admin/imports/{job_id}/report.json").status_code == 409

    with running_worker(app.extensions["celery"]):
        import time

        deadline = time.monotonic() + 120
        while not _job(settings, job_id).status.is_finished:
            assert time.monotonic() < deadline
            time.sleep(0.2)

    job = _job(settings, job_id)
    assert job.status == ImportStatus.SUCCEEDED, job.error
    assert job.files_done == job.files_total == 7
    assert not (settings.instance_dir / job.upload_dir).exists()
    status = boss.get(f"/admin/imports/{job_id}/status")
    assert status.status_code == 286  # htmx stops polling
    assert 'id="n-imported">5<' in status.text and 'id="n-rejected">2<' in status.text
    report = boss.get(f"/admin/imports/{job_id}/report.json")
    assert report.headers["Content-Disposition"].startswith("attachment")
    body = json.loads(report.data)
    assert (body["imported"], body["duplicates"], body["labeled"]) == (5, 0, 5)
    reasons = {r["file"]: r["reason"] for r in body["rejected"]}
    assert set(reasons) == {"cells/notes.txt", "cells/monster/x.png"}
    assert "unknown class 'monster'" in reasons["cells/monster/x.png"]
    with session_scope(settings.database_url) as s:
        assert s.get(Project, pid).train_on_reference  # the admin trusted the folders
        labels = s.execute(select(Annotation.label_class_id).where(
            Annotation.origin == Origin.REFERENCE)).scalars().all()
        assert len(labels) == 5

    # The same zip again: all duplicates; the admin's answer "no" turns trust off.
    response = _upload(boss, pid, [(archive, "cells.zip")])
    job_id = int(response.location.rsplit("/", 1)[1])
    from worker.imports import run_import_job

    assert run_import_job(settings, job_id) == "succeeded"
    assert run_import_job(settings, job_id) == "not queued"  # a second delivery does nothing
    job = _job(settings, job_id)
    assert (job.report["imported"], job.report["duplicates"]) == (0, 5)
    with session_scope(settings.database_url) as s:
        assert not s.get(Project, pid).train_on_reference


def test_browser_import_of_a_folder_and_of_files(app, settings):
    """A folder of class folders arrives as files named by their relative path
    (webkitdirectory); the task's function runs as the worker runs it."""
    from worker.imports import run_import_job

    make_user(settings, "boss", "admin")
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "wbc4", test_share=0.0).id
    boss = LoggedIn(app.test_client(), "boss")
    files = [(_cell_png((10 * k, 50, 50)), f"picked/eosinophil/e{k}.png") for k in range(3)]
    files += [(b"\xff\xd8 broken", "picked/eosinophil/broken.jpg"),
              (_cell_png((0, 0, 200)), "picked/../../escape.png")]
    response = _upload(boss, pid, files)
    assert response.status_code == 302
    job_id = int(response.location.rsplit("/", 1)[1])
    job = _job(settings, job_id)
    # Nothing climbed out of the job's folder.
    saved = sorted(p.relative_to(settings.instance_dir / job.upload_dir).as_posix()
                   for p in (settings.instance_dir / job.upload_dir).rglob("*") if p.is_file())
    assert saved == ["files/eosinophil/broken.jpg", "files/eosinophil/e0.png",
                     "files/eosinophil/e1.png", "files/eosinophil/e2.png", "files/escape.png"]
    assert run_import_job(settings, job_id) == "succeeded"
    job = _job(settings, job_id)
    assert (job.report["imported"], job.report["labeled"], len(job.report["rejected"])) == (4, 3, 1)
    assert job.report["rejected"][0]["file"] == "eosinophil/broken.jpg"

    # Flat image files: an unlabeled pool.
    response = _upload(boss, pid, [(_cell_png((7, 7, 7)), "a.png"), (_cell_png((8, 8, 8)), "b.png")])
    job_id = int(response.location.rsplit("/", 1)[1])
    run_import_job(settings, job_id)
    assert (_job(settings, job_id).report["imported"], _job(settings, job_id).report["labeled"]) == (2, 0)

    # Refused: nothing chosen, two zips.
    response = _upload(boss, pid, [])
    assert response.status_code == 302
    assert "Choose a zip" in boss.get(response.location).text
    response = _upload(boss, pid, [(b"PK", "a.zip"), (b"PK", "b.zip")])
    assert "one zip at a time" in boss.get(response.location).text
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(ImportJob.id))) == 2


def test_browser_import_failures_end_on_the_row(app, settings):
    import shutil

    from worker.imports import run_import_job

    make_user(settings, "boss", "admin")
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "wbc4", test_share=0.0).id
    boss = LoggedIn(app.test_client(), "boss")

    # A damaged zip (passes as a zip by its end record, but its directory is garbage).
    good = _class_zip({"lymphocyte": 1})
    damaged = good[:10] + b"\0" * 10 + good[20:-30] + b"PK\x05\x06" + b"\xff" * 18
    response = _upload(boss, pid, [(damaged, "bad.zip")])
    job_id = int(response.location.rsplit("/", 1)[1])
    run_import_job(settings, job_id)
    job = _job(settings, job_id)
    assert job.status == ImportStatus.FAILED and "zip is damaged" in job.error
    page = boss.get(f"/admin/imports/{job_id}/status")
    assert page.status_code == 286 and job.error.split(" (")[0] in page.text

    # Not a zip at all, though named like one.
    response = _upload(boss, pid, [(b"just text", "notes.zip")])
    job_id = int(response.location.rsplit("/", 1)[1])
    assert run_import_job(settings, job_id) == "failed"
    assert "not a zip archive" in _job(settings, job_id).error

    # The upload vanished before the worker came to it.
    response = _upload(boss, pid, [(good, "cells.zip")])
    job_id = int(response.location.rsplit("/", 1)[1])
    shutil.rmtree(settings.instance_dir / _job(settings, job_id).upload_dir)
    assert run_import_job(settings, job_id) == "failed"
    assert "no longer on the server" in _job(settings, job_id).error


def test_upload_streams_to_the_instance_disk(app, settings):
    """Werkzeug spools each uploaded file into the instance's uploads folder (our
    request class), not into memory."""
    from flask import request

    from webapp.uploads import incoming_dir

    with app.test_request_context("/", method="POST", content_type="multipart/form-data",
                                  data={"f": (io.BytesIO(b"x" * 10), "small.png")}):
        stream = request.files["f"].stream
        assert hasattr(stream, "fileno")  # a real file, even for 10 bytes
        assert Path(incoming_dir(settings)).is_dir()


def test_cli_import_trust_labels(settings, tmp_path):
    from webapp.cli import main

    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    runner = CliRunner()
    assert runner.invoke(main, ["create-project", "cells"], env=env).exit_code == 0
    src = small_demo_copy(tmp_path / "src", per_class=1)
    result = runner.invoke(main, ["import", str(src), "--project", "cells", "--trust-labels"],
                           env=env)
    assert result.exit_code == 0, result.output
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(Project.train_on_reference).where(Project.name == "cells"))
    # create-user --project: the account reads that project only.
    result = runner.invoke(main, ["create-user", "ada", "--project", "cells"], env=env)
    assert result.exit_code == 0 and "reads: cells" in result.output
    result = runner.invoke(main, ["create-user", "bob", "--project", "nope"], env=env)
    assert result.exit_code != 0 and "no project named 'nope'" in result.output
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count()).select_from(ProjectMember)) == 1


@pytest.mark.slow
@pytest.mark.redis
def test_browser_import_through_redis_and_a_real_worker(tmp_path, sqlite_url):
    """As in production: the message waits in Redis on the default queue."""
    import time

    import redis

    from models.settings import load_settings
    from tests.helpers import NO_REDIS, REDIS_URL
    from webapp import create_app

    if not REDIS_URL:
        pytest.skip(NO_REDIS)
    conn = redis.Redis.from_url(REDIS_URL)
    if conn.connection_pool.connection_kwargs.get("db", 0) == 0:
        pytest.skip("refusing to flush Redis database 0")
    conn.flushdb()
    try:
        settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                          HEMALOOP_BROKER_URL=REDIS_URL))
        app = create_app(settings)
        app.config["TESTING"] = True
        make_user(settings, "boss", "admin")
        with session_scope(settings.database_url) as s:
            pid = create_project(s, "cells", "wbc4", test_share=0.0).id
        boss = LoggedIn(app.test_client(), "boss")
        response = _upload(boss, pid, [(_class_zip({"monocyte": 2}), "m.zip")])
        job_id = int(response.location.rsplit("/", 1)[1])
        assert conn.llen("default") == 1
        with running_worker(app.extensions["celery"]):
            deadline = time.monotonic() + 120
            while not _job(settings, job_id).status.is_finished:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        job = _job(settings, job_id)
        assert job.status == ImportStatus.SUCCEEDED, job.error
        assert (job.report["imported"], job.report["labeled"]) == (2, 2)
        assert conn.llen("default") == 0
    finally:
        conn.flushdb()
        conn.close()


def test_bootstrap_demo_makes_existing_readers_readers_of_the_demo(settings, tmp_path):
    from webapp.cli import main

    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    runner = CliRunner()
    result = runner.invoke(main, ["create-user", "ada"], env=env)
    assert result.exit_code == 0 and "reads: no project yet" in result.output
    result = runner.invoke(main, ["bootstrap", "--demo"], env=env)
    assert result.exit_code == 0, result.output
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(User.username, Project.name)
                         .join(ProjectMember, ProjectMember.user_id == User.id)
                         .join(Project, Project.id == ProjectMember.project_id)).all()
    assert rows == [("ada", "demo")]  # the admin needs no row
