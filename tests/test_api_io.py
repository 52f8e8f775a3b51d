"""API v1 imports and exports: who may call them (401/403 JSON, never a redirect),
an import through a real worker, corrupt uploads, a double submit, export contents
against the database, and exports streamed a chunk at a time.  SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import time
import zipfile

import pytest
from sqlalchemy import func, select

from models import Annotation, Image, ImportJob, Origin, Project
from models.db import session_scope
from tests import image_corpus
from tests.api_helpers import bearer, make_token, models_with_predictions
from tests.helpers import make_user, running_worker
from webapp.bootstrap import create_project

IMPORT_URLS = [("POST", "/api/v1/projects/{pid}/imports"), ("GET", "/api/v1/projects/{pid}/imports"),
               ("GET", "/api/v1/imports/{job}"), ("GET", "/api/v1/imports/{job}/report")]
EXPORTS = ["labels.csv", "labels.jsonl", "folders.zip", "model.zip", "agreement.csv"]


def _refused(response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.is_json, response.headers.get("Content-Type")
    body = response.get_json()
    assert body["error"] and body["message"]
    assert "Location" not in response.headers


def _class_zip(folders: dict[str, int], top: str = "cells", seed: int = 0,
               extra: dict[str, bytes] | None = None) -> bytes:
    """Class folders under one top folder, distinct small JPEGs."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        n = seed
        for cls, count in folders.items():
            for k in range(count):
                n += 1
                z.writestr(f"{top}/{cls}/{cls}-{k}.jpg", image_corpus.cell(n))
        for name, data in (extra or {}).items():
            z.writestr(f"{top}/{name}", data)
    return out.getvalue()


def _upload(client, token: str, pid: int, files: list[tuple[bytes, str]], trust: bool = False):
    data = {"files": [(io.BytesIO(content), name) for content, name in files]}
    if trust:
        data["trust_labels"] = "true"
    return client.post(f"/api/v1/projects/{pid}/imports", data=data, headers=bearer(token),
                       content_type="multipart/form-data")


def _wait(settings, job_id: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(settings.database_url) as s:
            if s.get(ImportJob, job_id).status.is_finished:
                return
        assert time.monotonic() < deadline, "the import did not finish"
        time.sleep(0.2)


def _count_images(settings, pid: int) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count(Image.id)).where(Image.project_id == pid))


# --- who may call -----------------------------------------------------------------------------

def test_imports_and_exports_refuse_as_json_per_scope_role_and_membership(
        app, client, settings, demo_project):
    from worker.imports import run_import_job

    admin = make_user(settings, "boss", "admin")
    curator = make_user(settings, "cora", "curator")
    reader = make_user(settings, "pat", "pathologist")
    with session_scope(settings.database_url) as s:
        other = create_project(s, "other", "wbc4", test_share=0.0).id  # no members
    full = make_token(settings, admin, ["read", "label", "admin"])
    job = _upload(client, full, demo_project, [(image_corpus.cell(1), "a.jpg")]).get_json()["id"]
    assert run_import_job(settings, job) == "succeeded"

    # No token, or a bad one: 401 JSON on every route, before a body is read.
    urls = [(m, u.format(pid=demo_project, job=job)) for m, u in IMPORT_URLS]
    urls += [("GET", f"/api/v1/projects/{demo_project}/exports/{name}") for name in EXPORTS]
    for method, url in urls:
        for headers in ({}, bearer("hml_not-a-token")):
            send = client.post if method == "POST" else client.get
            _refused(send(url, headers=headers), 401)
    # Nor does a browser session count (the API wants a token).
    _refused(client.post(f"/api/v1/projects/{demo_project}/imports",
                         data={"files": [(io.BytesIO(b"x"), "a.jpg")]}), 401)

    # Imports want the admin scope: an admin's read-only token, a curator's, a reader's.
    for token in (make_token(settings, admin, ["read", "label"]),
                  make_token(settings, curator, ["read", "label"]),
                  make_token(settings, reader, ["read", "label"])):
        for method, url in urls[:4]:
            send = client.post if method == "POST" else client.get
            _refused(send(url, headers=bearer(token)), 403)
    # Exports want the read scope...
    admin_only = make_token(settings, admin, ["admin"])
    for name in EXPORTS:
        _refused(client.get(f"/api/v1/projects/{demo_project}/exports/{name}",
                            headers=bearer(admin_only)), 403)
    # ...and a curator or an admin: a pathologist's token is refused (an export holds
    # every reader's votes by name), however it is scoped.
    reader_read = make_token(settings, reader, ["read"])
    for name in EXPORTS:
        _refused(client.get(f"/api/v1/projects/{demo_project}/exports/{name}",
                            headers=bearer(reader_read)), 403)
    # Membership: a curator who does not read a project does not see it (404, as
    # everywhere in the API: no hint that it exists); the same curator's own is open.
    curator_read = make_token(settings, curator, ["read"])
    for name in EXPORTS:
        _refused(client.get(f"/api/v1/projects/{other}/exports/{name}",
                            headers=bearer(curator_read)), 404)
    response = client.get(f"/api/v1/projects/{demo_project}/exports/labels.csv",
                          headers=bearer(curator_read))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    # A streamed body keeps its request's context until it is read or closed.
    response.close()
    # Admins see every project; unknown ones are 404 JSON.
    response = client.get(f"/api/v1/projects/{other}/exports/labels.csv", headers=bearer(full))
    assert response.status_code == 200 and response.text.startswith("cell_id,")
    _refused(client.get("/api/v1/projects/999999/exports/labels.csv", headers=bearer(full)), 404)
    _refused(client.get("/api/v1/imports/999999", headers=bearer(full)), 404)
    _refused(_upload(client, full, 999999, [(image_corpus.cell(2), "b.jpg")]), 404)


# --- imports -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_import_through_the_api_on_a_real_worker_and_a_double_submit(app, client, settings):
    admin = make_user(settings, "boss", "admin")
    token = make_token(settings, admin, ["read", "admin"])
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "wbc4", test_share=0.0).id
    archive = _class_zip({"lymphocyte": 3, "neutrophil": 2},
                         extra={"notes.txt": b"not an image",
                                "monster/x.jpg": image_corpus.cell(99)})

    response = _upload(client, token, pid, [(archive, "smear.zip")], trust=True)
    assert response.status_code == 202, response.text
    job = response.get_json()
    assert (job["status"], job["source"], job["trust_labels"]) == ("queued", "smear.zip", True)
    assert job["report_url"] is None and job["imported"] is None
    # Stored as sent, waiting on disk for the worker.
    with session_scope(settings.database_url) as s:
        upload_dir = settings.instance_dir / s.get(ImportJob, job["id"]).upload_dir
    assert (upload_dir / "upload.zip").read_bytes() == archive
    _refused(client.get(f"/api/v1/imports/{job['id']}/report", headers=bearer(token)), 409)

    with running_worker(app.extensions["celery"]):
        _wait(settings, job["id"])
        # A double submit: the same zip again, while the worker runs.
        again = _upload(client, token, pid, [(archive, "smear.zip")], trust=True).get_json()
        _wait(settings, again["id"])

    status = client.get(f"/api/v1/imports/{job['id']}", headers=bearer(token)).get_json()
    assert status["status"] == "succeeded", status
    assert status["files_done"] == status["files_total"] == 7 and status["progress"] == 1.0
    assert status["imported"] == 5 and not upload_dir.exists()
    report = client.get(status["report_url"], headers=bearer(token))
    assert report.status_code == 200 and report.is_json
    body = report.get_json()
    assert (body["imported"], body["duplicates"], body["labeled"]) == (5, 0, 5)
    reasons = {r["file"]: r["reason"] for r in body["rejected"]}
    assert set(reasons) == {"cells/notes.txt", "cells/monster/x.jpg"}
    assert "unknown class 'monster'" in reasons["cells/monster/x.jpg"]
    with session_scope(settings.database_url) as s:
        assert s.get(Project, pid).train_on_reference  # trusted, as asked
        assert s.scalar(select(func.count(Annotation.id)).where(
            Annotation.origin == Origin.REFERENCE)) == 5

    # The double submit imported nothing twice and lost nothing.
    second = client.get(f"/api/v1/imports/{again['id']}/report", headers=bearer(token)).get_json()
    assert (second["status"], second["imported"], second["duplicates"]) == ("succeeded", 0, 5)
    assert _count_images(settings, pid) == 5

    # Listed newest first, a page at a time.
    page = client.get(f"/api/v1/projects/{pid}/imports?limit=1", headers=bearer(token)).get_json()
    assert [i["id"] for i in page["items"]] == [again["id"]] and page["next_cursor"] == again["id"]
    page = client.get(f"/api/v1/projects/{pid}/imports?limit=1&cursor={page['next_cursor']}",
                      headers=bearer(token)).get_json()
    assert [i["id"] for i in page["items"]] == [job["id"]] and page["next_cursor"] is None


def test_many_files_by_their_folder_names(app, client, settings):
    """Files sent one part each, named by their relative path (a folder of class
    folders), as the browser's folder picker sends them."""
    from worker.imports import run_import_job

    token = make_token(settings, make_user(settings, "boss", "admin"), ["admin"])
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "wbc4", test_share=0.0).id
    files = [(image_corpus.cell(10 + k), f"picked/eosinophil/e{k}.jpg") for k in range(3)]
    files += [(image_corpus.cell(20), "picked/monocyte/m.jpg"),
              (image_corpus.cell(21), "picked/../../escape.jpg")]
    job = _upload(client, token, pid, files).get_json()
    assert job["source"] == "picked/ (5 files)"
    assert run_import_job(settings, job["id"]) == "succeeded"
    body = client.get(f"/api/v1/imports/{job['id']}/report", headers=bearer(token)).get_json()
    assert (body["imported"], body["labeled"], body["rejected"]) == (5, 4, [])
    with session_scope(settings.database_url) as s:
        assert not s.get(Project, pid).train_on_reference  # not trusted unless asked


def test_corrupt_and_refused_uploads_lose_nothing(app, client, settings):
    from worker.imports import run_import_job

    token = make_token(settings, make_user(settings, "boss", "admin"), ["admin"])
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "wbc4", test_share=0.0).id
    good = _class_zip({"lymphocyte": 2})

    # A damaged zip: accepted (it is stored as sent), the job fails with a reason.
    damaged = good[:10] + b"\0" * 10 + good[20:-30] + b"PK\x05\x06" + b"\xff" * 18
    job = _upload(client, token, pid, [(damaged, "bad.zip")]).get_json()
    assert run_import_job(settings, job["id"]) == "failed"
    status = client.get(f"/api/v1/imports/{job['id']}", headers=bearer(token)).get_json()
    assert status["status"] == "failed" and "zip is damaged" in status["error"]
    report = client.get(status["report_url"], headers=bearer(token)).get_json()
    assert report["imported"] == 0 and "zip is damaged" in report["error"]
    assert "Traceback" not in json.dumps(report)

    # Not a zip though named like one; a corrupt image among good ones.
    job = _upload(client, token, pid, [(b"just text", "notes.zip")]).get_json()
    assert run_import_job(settings, job["id"]) == "failed"
    job = _upload(client, token, pid, [(b"\xff\xd8 broken", "lymphocyte/broken.jpg"),
                                       (image_corpus.cell(5), "lymphocyte/ok.jpg")]).get_json()
    assert run_import_job(settings, job["id"]) == "succeeded"
    report = client.get(f"/api/v1/imports/{job['id']}/report", headers=bearer(token)).get_json()
    assert report["imported"] == 1
    assert [r["file"] for r in report["rejected"]] == ["lymphocyte/broken.jpg"]

    # Refused before anything is stored or recorded: no files, two zips, text for a file.
    before = _jobs(settings)
    _refused(client.post(f"/api/v1/projects/{pid}/imports", data={}, headers=bearer(token),
                         content_type="multipart/form-data"), 422)
    _refused(_upload(client, token, pid, [(good, "a.zip"), (good, "b.zip")]), 400)
    _refused(client.post(f"/api/v1/projects/{pid}/imports", data={"files": "not a file"},
                         headers=bearer(token), content_type="multipart/form-data"), 422)
    _refused(client.post(f"/api/v1/projects/{pid}/imports", json={"files": []},
                         headers=bearer(token)), 422)
    assert _jobs(settings) == before
    assert not list((settings.instance_dir / "uploads").glob("job-*"))


def _jobs(settings) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count(ImportJob.id)))


def test_the_upload_limit_not_the_form_limit_applies_and_413_is_json(tmp_path, sqlite_url):
    """The API's upload route is marked like the page's (`accepts_upload`): a body over
    the ordinary form limit is taken, one over the upload limit is 413 JSON, unstored."""
    from models.settings import load_settings
    from tests.helpers import base_env
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_MAX_FORM_BYTES="100000",
                                      HEMALOOP_MAX_UPLOAD_BYTES="400000"))
    app = create_app(settings)
    token = make_token(settings, make_user(settings, "boss", "admin"), ["admin"])
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "wbc4", test_share=0.0).id
    response = _upload(app.test_client(), token, pid, [(b"\0" * 200_000, "big.zip")])
    assert response.status_code == 202, response.text
    _refused(_upload(app.test_client(), token, pid, [(b"\0" * 500_000, "huge.zip")]), 413)
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(ImportJob.id))) == 1
    assert len(list((settings.instance_dir / "uploads").glob("job-*"))) == 1


# --- exports -----------------------------------------------------------------------------------

def _label_two_cells(client, token: str, pid: int) -> dict[int, str]:
    """Two labels through the API as the token's user (lease, then decide)."""
    done = {}
    for choice in ("lymphocyte", "unusable"):
        cell = client.post(f"/api/v1/projects/{pid}/leases", json={},
                           headers=bearer(token)).get_json()["cell"]
        response = client.post(f"/api/v1/projects/{pid}/annotations", headers=bearer(token),
                               json={"image_id": cell["id"], "choice": choice})
        assert response.status_code == 201, response.text
        done[cell["id"]] = choice
    return done


def test_label_exports_match_the_database(app, client, settings, demo_project):
    admin = make_user(settings, "boss", "admin")
    token = make_token(settings, admin, ["read", "label"])
    voted = _label_two_cells(client, token, demo_project)
    with session_scope(settings.database_url) as s:
        project = s.get(Project, demo_project)
        names = {c.id: c.name for c in project.classes}
        cells = {i.id: i for i in s.scalars(select(Image).where(Image.project_id == demo_project))}
        reference = dict(s.execute(select(Annotation.image_id, Annotation.label_class_id).where(
            Annotation.origin == Origin.REFERENCE)).all())
        s.expunge_all()
    url = f"/api/v1/projects/{demo_project}/exports"

    response = client.get(f"{url}/labels.csv", headers=bearer(token))
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="demo-labels.csv"'
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["cell_id"]) for r in rows] == sorted(cells)  # every cell, once, by id
    for row in rows:
        cell = cells[int(row["cell_id"])]
        assert (row["file_name"], row["sha256"], row["split"]) == (
            cell.original_name, cell.sha256, cell.split.value)
        assert row["reference_label"] == names[reference[cell.id]]
        if cell.id in voted:
            assert row["votes"] == f"boss={voted[cell.id]}"
        else:
            assert row["votes"] == ""

    # The same rows as JSON Lines.
    response = client.get(f"{url}/labels.jsonl", headers=bearer(token))
    assert response.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [x["cell_id"] for x in lines] == [int(r["cell_id"]) for r in rows]
    assert [x["final_label"] or "" for x in lines] == [r["final_label"] for r in rows]

    # The UI's filters: class, state (repeated or comma-separated), since.
    response = client.get(f"{url}/labels.csv?class=neutrophil", headers=bearer(token))
    got = {int(r["cell_id"]) for r in csv.DictReader(io.StringIO(response.text))}
    want = {int(r["cell_id"]) for r in rows if r["final_label"] == "neutrophil"}
    assert got == want and got
    states = {r["state"] for r in rows}
    for query in ("state=open&state=excluded", "state=open,excluded"):
        response = client.get(f"{url}/labels.jsonl?{query}", headers=bearer(token))
        got = [json.loads(line)["state"] for line in response.text.splitlines()]
        assert set(got) <= {"open", "excluded"}
        assert len(got) == sum(r["state"] in ("open", "excluded") for r in rows)
    assert states
    response = client.get(f"{url}/labels.csv?since=2999-01-01", headers=bearer(token))
    assert response.text.splitlines() == [response.text.splitlines()[0]]  # the header alone
    # Refused as JSON, before any byte: an unknown class or state, a bad date.
    _refused(client.get(f"{url}/labels.csv?class=dragon", headers=bearer(token)), 400)
    _refused(client.get(f"{url}/labels.csv?state=sleepy", headers=bearer(token)), 400)
    _refused(client.get(f"{url}/folders.zip?since=yesterday", headers=bearer(token)), 400)


def test_folders_agreement_and_model_exports(app, client, settings, demo_project):
    token = make_token(settings, make_user(settings, "boss", "admin"), ["read"])
    url = f"/api/v1/projects/{demo_project}/exports"
    # No model yet: 409 JSON, as the page says.
    _refused(client.get(f"{url}/model.zip", headers=bearer(token)), 409)

    response = client.get(f"{url}/folders.zip", headers=bearer(token))
    assert response.status_code == 200 and response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.data)) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        assert z.testzip() is None
    # Final labels only, each cell under its split's and its class's folder: as the CSV says.
    rows = csv.DictReader(io.StringIO(client.get(f"{url}/labels.csv", headers=bearer(token)).text))
    labeled = {int(r["cell_id"]): (r["split"], r["final_label"]) for r in rows if r["final_label"]}
    assert labeled and len(names) == len(labeled)
    for name in names:
        split, cls, file_name = name.split("/")
        cell_split, label = labeled[int(file_name.split("-")[0])]
        assert cls == label and split == ("test" if cell_split == "test" else "train")
    with zipfile.ZipFile(io.BytesIO(
            client.get(f"{url}/folders.zip?class=ig", headers=bearer(token)).data)) as z:
        assert {n.split("/")[1] for n in z.namelist() if not n.endswith("/")} == {"ig"}

    response = client.get(f"{url}/agreement.csv", headers=bearer(token))
    assert response.status_code == 200
    assert response.text.splitlines()[0] == "measure,scope,a,b,cells,value"

    # An active version whose file is gone from the store: 410 JSON, before any byte.
    _rounds, versions, _ = models_with_predictions(settings, demo_project)
    _refused(client.get(f"{url}/model.zip", headers=bearer(token)), 410)
    _refused(client.get(f"{url}/model.zip?version=999999", headers=bearer(token)), 404)
    # With the file: the package.
    with session_scope(settings.database_url) as s:
        from models import ModelVersion

        artifact = settings.storage_dir / s.get(ModelVersion, versions[0]).artifact_path
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_bytes(b"not really keras, but bytes to package")
    response = client.get(f"{url}/model.zip?version={versions[0]}", headers=bearer(token))
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(response.data)) as z:
        assert z.read("model.keras") == artifact.read_bytes()
        assert json.loads(z.read("model_card.json"))["classes"]


def test_exports_stream_a_chunk_at_a_time(app, client, settings, demo_project):
    """The body is a generator, read as it is sent: no route builds the file first."""
    from webapp.exports import export_stream

    # What the API's routes stream (webapp.exports.routes.export_response) is a generator.
    with session_scope(settings.database_url) as s:
        project = s.get(Project, demo_project)
        for format_name in ("csv", "jsonl", "folders", "agreement"):
            export = export_stream(s, project, format_name, settings.storage_dir)
            assert inspect.isgenerator(export.chunks), format_name
            export.chunks.close()
    token = make_token(settings, make_user(settings, "boss", "admin"), ["read"])
    for name in EXPORTS[:3]:
        response = client.get(f"/api/v1/projects/{demo_project}/exports/{name}",
                              headers=bearer(token), buffered=False)
        assert response.status_code == 200 and response.is_streamed
        assert "Content-Length" not in response.headers  # not known in advance
        chunks = list(response.response)
        response.close()
        total = sum(len(c) for c in chunks)
        if name == "folders.zip":
            # One member (one cell) after another: no chunk holds the archive.
            assert len(chunks) >= 10 and max(len(c) for c in chunks) < total / 5
        else:
            assert len(chunks) >= 1 and total > 0


@pytest.mark.redis
@pytest.mark.slow
def test_an_api_import_through_redis_and_a_real_worker(tmp_path, sqlite_url, redis_db):
    """The production broker: the API's upload is one message on Redis's default queue."""
    from models.settings import load_settings
    from tests.helpers import REDIS_URL, base_env
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_BROKER_URL=REDIS_URL))
    app = create_app(settings)
    token = make_token(settings, make_user(settings, "boss", "admin"), ["admin"])
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "wbc4", test_share=0.0).id
    job = _upload(app.test_client(), token, pid, [(_class_zip({"monocyte": 2}), "m.zip")],
                  trust=True).get_json()
    assert redis_db.llen("default") == 1
    with running_worker(app.extensions["celery"]):
        _wait(settings, job["id"])
    body = app.test_client().get(f"/api/v1/imports/{job['id']}/report",
                                 headers=bearer(token)).get_json()
    assert (body["status"], body["imported"], body["labeled"]) == ("succeeded", 2, 2)
    assert redis_db.llen("default") == 0
