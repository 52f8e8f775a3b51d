"""Prediction: the Predict page and POST /api/v1/projects/<id>/predict, answered by a
real predict worker (in a thread, on the `predict` queue) with a tiny trained model
(tests/model_helpers.py).  Bad uploads, roles and memberships, adding a cell, no
worker at all.  SQLite and PostgreSQL; the Redis broker once."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from models import Image, Project
from models.db import session_scope
from models.settings import load_settings
from tests.api_helpers import bearer, make_token
from tests.helpers import (DEMO_DIR, REDIS_URL, LoggedIn, base_env, make_user, running_worker,
                           small_demo_copy)
from tests.model_helpers import TINY_CLASSES, install_model
from worker.predict_spool import spool_bytes

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cell(name: str = "lymphocyte", n: int = 0):
    return sorted((DEMO_DIR / name).iterdir())[n]


def _upload(*files: tuple[str, bytes]) -> dict:
    return {"files": [(io.BytesIO(data), name) for name, data in files]}


def _good(n: int = 0, name: str = "lymphocyte") -> tuple[str, bytes]:
    path = _cell(name, n)
    return path.name, path.read_bytes()


def _truncated() -> tuple[str, bytes]:
    data = _cell("neutrophil").read_bytes()
    return "broken.jpg", data[: len(data) // 3]


NOT_AN_IMAGE = ("notes.txt", b"this is not an image, just words\n" * 10)


def _images(settings, project_id: int) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count(Image.id)).where(Image.project_id == project_id))


def _worker(settings):
    from worker.predict_celery import make_predict_celery

    return running_worker(make_predict_celery(settings), queues=["predict"])


def _expected(model_path, temperature: float, files: list) -> np.ndarray:
    """What the model says, computed here in-process: calibrated probabilities."""
    from worker.ml import calibration
    from worker.ml.backend import CellClassifier

    clf = CellClassifier.load(model_path)
    probs, ok = clf.predict(files, 8)
    assert ok.all()
    return calibration.softmax(np.log(np.maximum(probs, 1e-38)), temperature)


def test_page_and_api_predict_with_a_real_worker(app, settings, demo_project, tiny_model):
    version = install_model(settings, demo_project, tiny_model, temperature=1.7)
    make_user(settings, "reader", "pathologist")
    make_user(settings, "boss", "admin")
    reader = LoggedIn(app.test_client(), "reader")
    before = _images(settings, demo_project)

    index = reader.get("/predict/")
    assert index.status_code == 200 and f"/predict/{demo_project}" in index.text
    page = reader.get(f"/predict/{demo_project}")
    assert page.status_code == 200 and 'name="files"' in page.text

    with _worker(settings):
        response = reader.post(f"/predict/{demo_project}", data=_upload(
            _good(0), _truncated(), NOT_AN_IMAGE, _good(1, "eosinophil")),
            content_type="multipart/form-data")
        assert response.status_code == 200, response.text
        html = response.text
        # Per file: the two cells predicted, the two bad files named with their reasons.
        assert html.count('class="card predict-item"') == 4
        assert "Not predicted: corrupt image" in html
        assert "Not predicted: not an image" in html
        assert html.count('class="predict-class"') == 2
        assert html.count('<li><span class="top-class">') == 6  # top three, twice
        assert "heatmap grid 1×1" in html  # 75 px: InceptionV3's last block is one cell
        for url in re.findall(r'src="(/predict/[^"]+)"', html):
            served = reader.get(url)
            assert served.status_code == 200, url
            if url.endswith(".cam.png"):
                assert served.data.startswith(PNG_MAGIC)
        assert len(re.findall(r'src="(/predict/[^"]+\.cam\.png)"', html)) == 2
        assert "Add to" not in html  # pathologists do not add cells

        # The API, the same files: the same answer as JSON, and the numbers are the model's.
        token = make_token(settings, make_user(settings, "prog", "curator"), ["read"])
        api = app.test_client().post(
            f"/api/v1/projects/{demo_project}/predict", headers=bearer(token),
            data={"heatmap_png": "true",
                  **_upload(_good(0), NOT_AN_IMAGE, _good(1, "eosinophil"))},
            content_type="multipart/form-data")
        assert api.status_code == 200, api.text
        body = api.get_json()
        # By default the map comes as numbers only: nothing is drawn while it waits.
        lean = app.test_client().post(
            f"/api/v1/projects/{demo_project}/predict", headers=bearer(token),
            data=_upload(_good(0)), content_type="multipart/form-data").get_json()
        assert lean["items"][0]["heatmap_png"] is None
        assert lean["items"][0]["heatmap"] == body["items"][0]["heatmap"]
    assert body["model_version_id"] == version and body["heatmap_grid"] == [1, 1]
    good = [item for item in body["items"] if item["error"] is None]
    bad = [item for item in body["items"] if item["error"] is not None]
    assert [i["index"] for i in good] == [0, 2] and bad[0]["file"] == "notes.txt"
    assert "not an image" in bad[0]["error"] and bad[0]["top"] == []
    expected = _expected(settings.storage_dir / _artifact(settings, version), 1.7,
                         [_cell("lymphocyte", 0), _cell("eosinophil", 1)])
    for item, probs in zip(good, expected, strict=True):
        assert item["predicted_class"] in TINY_CLASSES
        assert [t["class"] for t in item["top"]][0] == item["predicted_class"]
        assert len(item["top"]) == 3
        assert sum(t["probability"] for t in item["top"]) == pytest.approx(1.0, abs=2e-3)
        assert item["confidence"] == pytest.approx(float(probs.max()), abs=1e-3)
        assert base64.b64decode(item["heatmap_png"]).startswith(PNG_MAGIC)
        (row,) = item["heatmap"]  # the 1x1 grid at 75 px, normalised to its peak
        assert len(row) == 1 and 0.0 <= row[0] <= 1.0
    assert bad[0]["heatmap"] is None and bad[0]["heatmap_png"] is None
    # Nothing joined the project.
    assert _images(settings, demo_project) == before


def _artifact(settings, version_id: int) -> str:
    from models import ModelVersion

    with session_scope(settings.database_url) as s:
        return s.get(ModelVersion, version_id).artifact_path


def test_a_chosen_version_and_the_admin_adds_a_cell(app, settings, demo_project, tiny_model):
    older = install_model(settings, demo_project, tiny_model, temperature=1.0)
    install_model(settings, demo_project, tiny_model, temperature=3.0)  # the active one
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    before = _images(settings, demo_project)
    new_cell = _cell("lymphocyte", 20)  # not among the 6 imported per class
    with _worker(settings):
        response = admin.post(f"/predict/{demo_project}",
                              data={"version": str(older), **_upload(
                                  (new_cell.name, new_cell.read_bytes()))},
                              content_type="multipart/form-data")
        assert response.status_code == 200, response.text
    assert f"Model v{older}" in response.text
    assert _images(settings, demo_project) == before  # not added until asked
    batch = re.search(r'"batch": "([0-9a-f]{16})"', response.text).group(1)
    added = admin.post(f"/predict/{demo_project}/add", data={"batch": batch, "index": "0"})
    assert added.status_code == 200, added.text
    assert "Added to demo as cell" in added.text
    assert _images(settings, demo_project) == before + 1
    with session_scope(settings.database_url) as s:
        cell = s.scalars(select(Image).where(Image.project_id == demo_project)
                         .order_by(Image.id.desc())).first()
        assert cell.original_name.endswith(new_cell.name)
    again = admin.post(f"/predict/{demo_project}/add", data={"batch": batch, "index": "0"})
    assert again.status_code == 200 and "already in demo" in again.text
    assert _images(settings, demo_project) == before + 1  # a double submit adds nothing
    bad = admin.post(f"/predict/{demo_project}/add", data={"batch": batch, "index": "7"})
    assert bad.status_code == 400
    assert admin.post(f"/predict/{demo_project}/add",
                      data={"batch": batch, "index": "²"}).status_code == 400

    # Names the file system or the import would trip on: long in bytes (364 bytes in
    # 124 characters), hidden. Both are added under a safe name.
    odd = [("細胞" * 60 + ".jpg", _cell("eosinophil", 20).read_bytes()),
           (".jpg", _cell("neutrophil", 20).read_bytes())]
    with _worker(settings):
        response = admin.post(f"/predict/{demo_project}", data=_upload(*odd),
                              content_type="multipart/form-data")
        assert response.status_code == 200, response.text
    batch = re.search(r'"batch": "([0-9a-f]{16})"', response.text).group(1)
    for index in ("0", "1"):
        added = admin.post(f"/predict/{demo_project}/add", data={"batch": batch, "index": index})
        assert added.status_code == 200 and "Added to demo as cell" in added.text, added.text
        assert "as cell None" not in added.text
    assert _images(settings, demo_project) == before + 3


def test_roles_members_and_blind_reading(app, settings, demo_project, tiny_model, tmp_path):
    from webapp.bootstrap import create_project

    install_model(settings, demo_project, tiny_model)
    make_user(settings, "reader", "pathologist")
    make_user(settings, "boss", "admin")
    with session_scope(settings.database_url) as s:
        other = create_project(s, "other", "pbc8", test_share=0.0)  # no members
        other_id = other.id
    make_user(settings, "cur", "curator")  # member of demo and other (made after both)
    reader = LoggedIn(app.test_client(), "reader")
    # Not a member of "other": it is not listed and does not exist for the reader.
    assert "/predict/%d" % other_id not in reader.get("/predict/").text
    assert reader.get(f"/predict/{other_id}").status_code == 404
    response = reader.post(f"/predict/{other_id}", data=_upload(_good()),
                           content_type="multipart/form-data")
    assert response.status_code == 404
    # Adding is for admins.
    assert reader.post(f"/predict/{demo_project}/add", data={"batch": "0" * 16,
                                                             "index": "0"}).status_code == 403
    curator = LoggedIn(app.test_client(), "cur")
    assert curator.post(f"/predict/{demo_project}/add").status_code == 403
    # A project without a model: a clear refusal, nothing spooled for nothing.
    refused = curator.post(f"/predict/{other_id}", data=_upload(_good()),
                           content_type="multipart/form-data")
    assert refused.status_code == 409 and "no active model" in refused.text
    # Blind reading: readers do not see the model's view, here either.
    with session_scope(settings.database_url) as s:
        s.get(Project, demo_project).blind_reading = True
    blind = reader.post(f"/predict/{demo_project}", data=_upload(_good()),
                        content_type="multipart/form-data")
    assert blind.status_code == 403 and "reads blind" in blind.text


def test_another_users_upload_is_not_theirs(app, settings, demo_project, tiny_model):
    install_model(settings, demo_project, tiny_model)
    make_user(settings, "boss", "admin")
    make_user(settings, "boss2", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    with _worker(settings):
        html = admin.post(f"/predict/{demo_project}", data=_upload(_good()),
                          content_type="multipart/form-data").text
    url = re.search(r'src="(/predict/[^"]+\.cam\.png)"', html).group(1)
    batch = re.search(r'"batch": "([0-9a-f]{16})"', html).group(1)
    other = LoggedIn(app.test_client(), "boss2")
    assert other.get(url).status_code == 404
    assert other.post(f"/predict/{demo_project}/add",
                      data={"batch": batch, "index": "0"}).status_code == 404
    assert admin.get(url.replace(".cam.png", ".cam.png.x")).status_code == 404
    assert admin.get(f"/predict/{demo_project}/uploads/{batch}/..%2Fmanifest.json"
                     ).status_code == 404


def test_bad_requests_are_clear(app, settings, demo_project, tiny_model):
    install_model(settings, demo_project, tiny_model)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    nothing = admin.post(f"/predict/{demo_project}", data={}, content_type="multipart/form-data")
    assert nothing.status_code == 400 and "Choose one or more" in nothing.text
    many = admin.post(f"/predict/{demo_project}", data=_upload(*[_good()] * 51),
                      content_type="multipart/form-data")
    assert many.status_code == 400 and "At most 50" in many.text
    for version in ("abc", "²"):  # "²".isdigit() is true, int("²") is not
        wrong = admin.post(f"/predict/{demo_project}", data={"version": version, **_upload(_good())},
                           content_type="multipart/form-data")
        assert wrong.status_code == 400
    missing = admin.post(f"/predict/{demo_project}", data={"version": "987654", **_upload(_good())},
                         content_type="multipart/form-data")
    assert missing.status_code == 404
    # Every file bad: each named with its reason, no worker needed (none runs here).
    bad = admin.post(f"/predict/{demo_project}", data=_upload(_truncated(), NOT_AN_IMAGE,
                                                              ("empty.png", b"")),
                     content_type="multipart/form-data")
    assert bad.status_code == 200
    assert bad.text.count("Not predicted:") == 3 and "empty file" in bad.text


def test_huge_images_are_refused_per_file(tmp_path, sqlite_url, tiny_model):
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_MAX_IMAGE_PIXELS="10000"))
    app = create_app(settings)
    project_id = _small_project(settings, tmp_path)
    install_model(settings, project_id, tiny_model)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    big = io.BytesIO()
    PILImage.new("RGB", (400, 300), (200, 100, 150)).save(big, "PNG")
    response = admin.post(f"/predict/{project_id}", data=_upload(("big.png", big.getvalue())),
                          content_type="multipart/form-data")
    assert response.status_code == 200
    assert "image too large: 400x300 pixels exceeds the limit" in response.text


def _small_project(settings, tmp_path) -> int:
    from webapp.bootstrap import create_project
    from webapp.ingest import import_path

    src = small_demo_copy(tmp_path / "cells", per_class=2, classes=TINY_CLASSES)
    with session_scope(settings.database_url) as s:
        project = create_project(s, "small", "pbc8", test_share=0.0)
        import_path(s, settings.storage_dir, project, src, max_pixels=10**8)
        return project.id


def test_no_predict_worker_is_a_clear_503(tmp_path, sqlite_url, tiny_model):
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_PREDICT_TIMEOUT_SECONDS="2"))
    app = create_app(settings)
    project_id = _small_project(settings, tmp_path)
    install_model(settings, project_id, tiny_model)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    # A worker on the other queues does not answer predictions.
    from worker.celery_app import make_celery

    with running_worker(make_celery(settings)):
        page = admin.post(f"/predict/{project_id}", data=_upload(_good()),
                          content_type="multipart/form-data")
    assert page.status_code == 503 and "No predict worker answered within 2 s" in page.text
    # Nothing to show or add from a batch nobody predicted: it is not kept.
    assert spool_bytes(settings.instance_dir) == 0
    token = make_token(settings, make_user(settings, "prog", "admin"), ["read"])
    api = app.test_client().post(f"/api/v1/projects/{project_id}/predict", headers=bearer(token),
                                 data=_upload(_good()), content_type="multipart/form-data")
    assert api.status_code == 503 and api.is_json
    assert "No predict worker answered" in api.get_json()["message"]


def test_a_full_spool_refuses_with_503_until_batches_expire(app, settings, demo_project,
                                                             tiny_model, monkeypatch):
    from worker import predict_spool

    install_model(settings, demo_project, tiny_model)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    batch, folder = predict_spool.new_batch(settings.instance_dir)
    (folder / "0.png").write_bytes(b"x" * 1000)  # a day's uploads, in small
    monkeypatch.setattr(predict_spool, "SPOOL_LIMIT_BYTES", 1000)
    full = admin.post(f"/predict/{demo_project}", data=_upload(_good()),
                      content_type="multipart/form-data")
    assert full.status_code == 503 and "store of uploads to predict is full" in full.text
    assert predict_spool.spool_bytes(settings.instance_dir) == 1000  # nothing spooled
    predict_spool.expire(settings.instance_dir, keep_seconds=-1)
    assert predict_spool.spool_bytes(settings.instance_dir) == 0


def test_one_person_cannot_take_the_whole_spool(app, settings, demo_project, tiny_model,
                                                monkeypatch):
    """Each person keeps at most USER_SHARE_BYTES of a day's uploads: past it they
    get a 429 that says why; the others go on predicting."""
    import json

    from worker import predict_spool

    install_model(settings, demo_project, tiny_model)
    greedy = make_user(settings, "greedy", "admin")
    make_user(settings, "other", "admin")
    _, folder = predict_spool.new_batch(settings.instance_dir)
    (folder / "0.png").write_bytes(b"x" * 1000)
    (folder / "manifest.json").write_text(json.dumps({"user_id": greedy}))
    monkeypatch.setattr(predict_spool, "USER_SHARE_BYTES", 1000)
    refused = LoggedIn(app.test_client(), "greedy").post(
        f"/predict/{demo_project}", data=_upload(_good()), content_type="multipart/form-data")
    assert refused.status_code == 429 and "each person may keep" in refused.text
    assert predict_spool.spool_bytes(settings.instance_dir, greedy) > 1000 - 1
    # Someone else is not held back (only bad files: answered without a worker).
    other = LoggedIn(app.test_client(), "other").post(
        f"/predict/{demo_project}", data=_upload(NOT_AN_IMAGE), content_type="multipart/form-data")
    assert other.status_code == 200 and "Not predicted:" in other.text


def test_predictions_per_person_are_rate_limited_across_page_and_api(app, settings, demo_project,
                                                                     tiny_model, monkeypatch):
    from webapp.predict import service

    install_model(settings, demo_project, tiny_model)
    monkeypatch.setattr(service, "PREDICT_RATE", "2 per minute")
    boss = make_user(settings, "boss", "admin")
    page = LoggedIn(app.test_client(), "boss")
    token = make_token(settings, boss, ["read"])
    url = f"/predict/{demo_project}"
    first = page.post(url, data=_upload(NOT_AN_IMAGE), content_type="multipart/form-data")
    second = app.test_client().post(f"/api/v1/projects/{demo_project}/predict",
                                    headers=bearer(token), data=_upload(NOT_AN_IMAGE),
                                    content_type="multipart/form-data")
    assert (first.status_code, second.status_code) == (200, 200)
    third = app.test_client().post(f"/api/v1/projects/{demo_project}/predict",
                                   headers=bearer(token), data=_upload(_good()),
                                   content_type="multipart/form-data")
    assert third.status_code == 429 and third.is_json
    assert "Too many predictions" in third.get_json()["message"]
    fourth = page.post(url, data=_upload(_good()), content_type="multipart/form-data")
    assert fourth.status_code == 429 and "Too many predictions" in fourth.text
    make_user(settings, "someone", "admin")  # another person has their own count
    theirs = LoggedIn(app.test_client(), "someone").post(
        url, data=_upload(NOT_AN_IMAGE), content_type="multipart/form-data")
    assert theirs.status_code == 200


def test_api_tokens_and_scopes(app, settings, demo_project, tiny_model):
    install_model(settings, demo_project, tiny_model)
    client = app.test_client()
    url = f"/api/v1/projects/{demo_project}/predict"
    anonymous = client.post(url, data=_upload(_good()), content_type="multipart/form-data")
    assert anonymous.status_code == 401 and anonymous.is_json
    label_only = make_token(settings, make_user(settings, "labeler", "pathologist"), ["label"])
    forbidden = client.post(url, headers=bearer(label_only), data=_upload(_good()),
                            content_type="multipart/form-data")
    assert forbidden.status_code == 403 and forbidden.is_json
    reader = make_token(settings, make_user(settings, "reader2", "pathologist"), ["read"])
    with session_scope(settings.database_url) as s:  # made after the reader: not a member
        from webapp.bootstrap import create_project

        other = create_project(s, "other", "pbc8", test_share=0.0).id
    hidden = client.post(f"/api/v1/projects/{other}/predict", headers=bearer(reader),
                         data=_upload(_good()), content_type="multipart/form-data")
    assert hidden.status_code == 404 and hidden.is_json
    empty = client.post(url, headers=bearer(reader), data={}, content_type="multipart/form-data")
    assert empty.status_code == 422 and empty.is_json


@pytest.mark.redis
def test_predict_over_the_redis_broker(tmp_path, sqlite_url, tiny_model, redis_db):
    from webapp import create_app

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_BROKER_URL=REDIS_URL,
                                      HEMALOOP_RESULT_BACKEND=REDIS_URL))
    app = create_app(settings)
    project_id = _small_project(settings, tmp_path)
    version = install_model(settings, project_id, tiny_model)
    token = make_token(settings, make_user(settings, "prog", "admin"), ["read"])
    with _worker(settings):
        for _ in range(2):  # the second from the loaded model
            api = app.test_client().post(
                f"/api/v1/projects/{project_id}/predict", headers=bearer(token),
                data=_upload(_good(2, "neutrophil")), content_type="multipart/form-data")
            assert api.status_code == 200, api.text
            assert api.get_json()["model_version_id"] == version


def test_the_real_predict_worker_warms_the_active_model(tmp_path, sqlite_url, tiny_model):
    """`hemaloop worker --queues predict` (worker/predict_main.py) loads the active model
    and predicts once before its first request, then answers the page over the SQLite
    broker.  (The in-process test worker never sends worker_ready: the real command.)"""
    import os
    import subprocess
    import time

    from tests.helpers import REPO
    from webapp import create_app
    from webapp.cli import worker_command

    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url)
    settings = load_settings(env)
    project_id = _small_project(settings, tmp_path)
    version = install_model(settings, project_id, tiny_model)
    make_user(settings, "boss", "admin")
    log_path = tmp_path / "predict-worker.log"
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith("HEMALOOP_")}
    proc_env.update(env, PYTHONPATH=str(REPO))
    command = worker_command("predict", prefix="predict")
    assert command[command.index("-A") + 1] == "worker.predict_main"
    proc = subprocess.Popen(command + ["--without-heartbeat", "--without-mingle",
                                       "--without-gossip"],
                            cwd=REPO, env=proc_env, stdout=log_path.open("a"),
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while f"models warm: [{version}]" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        admin = LoggedIn(create_app(settings).test_client(), "boss")
        response = admin.post(f"/predict/{project_id}", data=_upload(_good()),
                              content_type="multipart/form-data")
        assert response.status_code == 200, response.text
        assert 'class="predict-class"' in response.text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_the_spool_keeps_a_day_and_refuses_names_that_are_not_its_own(tmp_path):
    import os
    import time

    from worker.predict_spool import (KEEP_SECONDS, SpoolError, batch_folder, expire,
                                      new_batch, spooled_file, write_manifest)

    old, old_folder = new_batch(tmp_path)
    new, new_folder = new_batch(tmp_path)
    for folder in (old_folder, new_folder):
        write_manifest(folder, {"entries": []})
        (folder / "0.png").write_bytes(b"x")
    stale = time.time() - KEEP_SECONDS - 60
    os.utime(old_folder / "manifest.json", (stale, stale))  # uploaded and answered a day ago
    (old_folder / "0.cam.png").write_bytes(b"drawn today")  # a view does not keep it longer
    assert expire(tmp_path) == 1
    assert not old_folder.exists() and batch_folder(tmp_path, new) == new_folder
    assert spooled_file(tmp_path, new, "0.png").is_file()
    for batch, name in [(old, "0.png"), (new, "manifest.json"), (new, "../0.png"),
                        ("../" + new, "0.png"), (new, "1.png")]:
        with pytest.raises(SpoolError):
            spooled_file(tmp_path, batch, name)


def test_spool_usage_is_scanned_at_most_every_few_seconds(tmp_path):
    """The limits read the spool once per SCAN_SECONDS per process (a day may hold
    thousands of batches); this process's own uploads count meanwhile."""
    import json

    from worker import predict_spool

    def batch(user_id: int, nbytes: int) -> None:
        _, folder = predict_spool.new_batch(tmp_path)
        (folder / "0.png").write_bytes(b"x" * nbytes)
        (folder / "manifest.json").write_text(json.dumps({"user_id": user_id}))

    batch(1, 100)
    batch(2, 50)
    manifest = len(json.dumps({"user_id": 1}))
    total, per_user = predict_spool.usage(tmp_path, now=1000.0)
    assert per_user == {1: 100 + manifest, 2: 50 + manifest} and total == sum(per_user.values())
    batch(1, 70)  # another process's upload: not seen until the next scan
    assert predict_spool.usage(tmp_path, now=1005.0) == (total, per_user)
    predict_spool.note_spooled(tmp_path, 3, 30)  # this process's own: counted at once
    assert predict_spool.usage(tmp_path, now=1005.0)[1][3] == 30
    later = predict_spool.usage(tmp_path, now=1000.0 + predict_spool.SCAN_SECONDS)
    assert later[1] == {1: 170 + 2 * manifest, 2: 50 + manifest}


def test_a_heatmap_that_cannot_be_drawn_is_none_not_a_500(tmp_path, sqlite_url):
    """heatmap_file draws from the manifest's map: a batch expired meanwhile, a map
    that is not a grid, a missing upload each give None (the page's 404), and an
    overlay already drawn is served as it is."""
    import json

    from webapp import create_app
    from webapp.predict.service import heatmap_file
    from worker import predict_spool

    app = create_app(load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url)))
    _, folder = predict_spool.new_batch(tmp_path)
    (folder / "0.png").write_bytes(_cell().read_bytes())
    (folder / "manifest.json").write_text(json.dumps({"user_id": 1}))
    entry = {"stored": "0.png", "heatmap": "0.cam.png"}
    with app.app_context():
        for cam in (None, [], [[]], [1.0, 2.0], [[0.1, 0.2], [0.3]], [["a"]],
                    [[float("nan")]], [[[0.5]]]):
            assert heatmap_file(folder, {**entry, "cam": cam}) is None, cam
        assert heatmap_file(folder, {**entry, "stored": "1.png", "heatmap": "1.cam.png",
                                     "cam": [[0.5]]}) is None  # the upload is gone
        drawn = heatmap_file(folder, {**entry, "cam": [[0.2, 1.0], [0.0, 0.4]]})
        assert drawn is not None and drawn.read_bytes().startswith(PNG_MAGIC)
        assert heatmap_file(folder, entry) == drawn  # already drawn: no map needed
        (folder / "manifest.json").unlink()
        assert heatmap_file(folder, {**entry, "heatmap": "x.cam.png", "cam": [[1.0]]}) is None
