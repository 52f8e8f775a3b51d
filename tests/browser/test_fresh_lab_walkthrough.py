"""Issue 13's "done when", walked in Chromium: from a freshly bootstrapped hemaloop
(`hemaloop bootstrap --demo`, as `make run` does), an admin, without a shell, makes a
second project with its own readers, uploads a zip of real cells and waits for the
import report, the readers label, a round runs on a real worker (the tests' tiny
settings: 75 px, random init) and finishes, and the labels CSV downloaded from the
Export page holds what the database holds."""

from __future__ import annotations

import csv
import io
import shutil
import zipfile

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from models import Annotation, Image, ModelVersion, Origin, Project, User
from models.db import session_scope
from tests.browser.helpers import ARTIFACTS, log_in, wait_for_js
from tests.helpers import PASSWORD, PBC_DEV, base_env, running_worker

pytestmark = [pytest.mark.slow,
              pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]

CLASSES = (("lymphocyte", "1"), ("neutrophil", "2"), ("eosinophil", "3"))
PER_CLASS = 8
READERS = ("ada", "ben")
LABELS_EACH = 4


def _zip_of_real_cells(path) -> list[str]:
    """PER_CLASS real cells per class from pbc-dev, in class folders under one top folder."""
    names = []
    with zipfile.ZipFile(path, "w") as z:
        for cls, _key in CLASSES:
            for src in sorted((PBC_DEV / cls).iterdir())[:PER_CLASS]:
                z.write(src, f"smear-07/{cls}/{src.name}")
                names.append(f"smear-07/{cls}/{src.name}")
    return names


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"walkthrough-{name}.png"), full_page=True)


def _bootstrap(settings, tmp_path) -> None:
    """`hemaloop bootstrap --demo` on the test's empty database: the admin account
    (its password from HEMALOOP_ADMIN_PASSWORD) and the demo project."""
    from webapp.cli import main

    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url,
                   HEMALOOP_ADMIN_PASSWORD=PASSWORD)
    result = CliRunner().invoke(main, ["bootstrap", "--demo"], env=env)
    assert result.exit_code == 0, result.output
    assert "created admin account 'admin'" in result.output


def _first_login(browser, base: str, username: str, one_time: str):
    """A reader's first visit: the one-time password, then one of their own."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base + "/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", one_time)
    page.keyboard.press("Enter")
    page.wait_for_url("**/auth/account")
    page.fill("input[name=current]", one_time)
    page.fill("input[name=new]", f"{username}-chose-this")
    page.fill("input[name=again]", f"{username}-chose-this")
    page.click("button:has-text('Change password')")
    page.wait_for_selector("text=Your password has been changed")
    return context, page, errors


def _label_by_keyboard(page, base: str, pid: int, n: int) -> list[int]:
    page.goto(f"{base}/label/{pid}")
    page.wait_for_selector("#cell[data-ready]")
    seen = []
    for _ in range(n):
        image_id = page.get_attribute("#cell", "data-image-id")
        seen.append(int(image_id))
        page.keyboard.press("1")  # lymphocyte, whatever the cell: they agree with each other
        wait_for_js(page, f"(c => c && c.dataset.imageId !== '{image_id}' && c.dataset.ready)"
                          "(document.querySelector('#cell'))")
    return seen


def test_a_fresh_lab_from_bootstrap_to_a_csv_export(live_server, page, browser, app, settings,
                                                    tmp_path):
    if not PBC_DEV.is_dir():
        pytest.skip(f"{PBC_DEV} is not here (the shared data set)")
    _bootstrap(settings, tmp_path)

    # The admin signs in and lands on Admin, where the demo project already is.
    log_in(page, live_server, "admin")
    page.wait_for_url("**/admin/")
    assert "demo" in page.inner_text("main")

    # A second project: three classes with hotkeys, two readers per cell.
    page.click("text=New project")
    page.fill("input[name=name]", "marrow")
    page.select_option("select[name=preset]", "custom")
    page.fill("input[name=readers_per_cell]", "2")
    page.fill("input[name=test_share]", "0.2")
    for i, (name, key) in enumerate(CLASSES):
        page.locator("input[name=class_name]").nth(i).fill(name)
        page.locator("input[name=class_hotkey]").nth(i).fill(key)
    page.click("text=Create project")
    page.wait_for_selector("h1:has-text('marrow')")
    project_url = page.url
    with session_scope(settings.database_url) as s:
        pid = s.scalar(select(Project.id).where(Project.name == "marrow"))
        assert s.get(Project, pid).readers_per_cell == 2

    # Its own readers: two pathologist accounts (one-time passwords shown once), members.
    one_time = {}
    for name in READERS:
        page.goto(live_server + "/admin/users")
        page.fill("input[name=username]", name)
        page.select_option("select[name=role]", "pathologist")
        page.click("text=Create account")
        one_time[name] = page.inner_text("#shown-password").strip()
    page.goto(project_url)
    for name in READERS:
        page.select_option("select[name=user_id]", label=f"{name} (pathologist)")
        page.click("text=Add reader")
        page.wait_for_selector(f"#members td:has-text('{name}')")

    # A zip of real cells in class folders, trusted as labels, imported on a real worker.
    archive = tmp_path / "smear-07.zip"
    files = _zip_of_real_cells(archive)
    page.locator("input[type=file]:not([webkitdirectory])").set_input_files(str(archive))
    page.check("input[name=trust_labels]")
    with running_worker(app.extensions["celery"]):
        page.click("text=Upload and import")
        page.wait_for_url("**/admin/imports/*")
        wait_for_js(page, "!!document.querySelector('#n-imported')", timeout=120)
    assert page.get_attribute("#import-status", "data-status") == "succeeded"
    assert page.inner_text("#n-imported") == str(len(files))
    assert page.inner_text("#n-rejected") == "0"
    _shot(page, "import-report")

    # The readers: first login, their own password, then labeling by keyboard.
    labeled: dict[str, list[int]] = {}
    for name in READERS:
        context, reader, errors = _first_login(browser, live_server, name, one_time[name])
        labeled[name] = _label_by_keyboard(reader, live_server, pid, LABELS_EACH)
        # Their project only: the demo project is not theirs.
        reader.goto(f"{live_server}/label/")
        assert "demo" not in reader.inner_text("main")
        assert not errors, errors
        context.close()
    with session_scope(settings.database_url) as s:
        users = dict(s.execute(select(User.id, User.username)).all())
        votes = {(users[u], i) for u, i in s.execute(
            select(Annotation.user_id, Annotation.image_id).where(
                Annotation.origin == Origin.READER))}
    assert votes == {(name, i) for name, ids in labeled.items() for i in ids}

    # A round, started from the Admin page, runs on a real worker and finishes.
    from worker.celery_app import make_celery

    page.goto(live_server + "/admin/")
    with running_worker(make_celery(settings)):
        page.click(f"#project-{pid} >> text=Start retraining round")
        page.wait_for_selector(f"#rounds-{pid} tr.round")
        page.wait_for_selector(f'#rounds-{pid} tr.round[data-status="succeeded"]',
                               timeout=300_000)
    _shot(page, "round-finished")

    # The labels as CSV, from the Export page's Download button.
    page.goto(f"{live_server}/exports/projects/{pid}")
    page.select_option("select[name=format]", "csv")
    with page.expect_download() as info:
        page.click("#export-form button[type=submit]")
    download = info.value
    assert download.suggested_filename == "marrow-labels.csv"
    saved = tmp_path / "marrow-labels.csv"
    shutil.copy(download.path(), saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))

    with session_scope(settings.database_url) as s:
        cells = {i.id: i for i in s.scalars(select(Image).where(Image.project_id == pid))}
        version = s.scalar(select(ModelVersion).where(ModelVersion.project_id == pid,
                                                      ModelVersion.is_active))
        assert version is not None  # the round's model is active
        s.expunge_all()
    assert sorted(int(r["cell_id"]) for r in rows) == sorted(cells)
    assert sorted(r["file_name"] for r in rows) == sorted(files)
    by_id = {int(r["cell_id"]): r for r in rows}
    for cell_id, cell in cells.items():
        row = by_id[cell_id]
        assert (row["sha256"], row["split"]) == (cell.sha256, cell.split.value)
        assert row["reference_label"] in {c for c, _k in CLASSES}
        readers = sorted(name for name, ids in labeled.items() if cell_id in ids)
        assert row["votes"] == "; ".join(f"{n}=lymphocyte" for n in readers)
        if row["predicted_label"]:
            assert int(row["model_version"]) == version.id
    assert any(r["predicted_label"] for r in rows)  # the new model scored the pool
    # Trusted folder names are final labels (the readers' votes are beside them).
    assert all(r["final_label"] for r in rows)
    assert not page.js_errors

    # A cell the lab has not imported, predicted by the round's model on the Predict
    # page through the warm predict worker: its class (one of the project's), the
    # calibrated confidence and the top three.  The project reads cell descriptors
    # (the default for new projects), so the page says there is no pixel heatmap.
    from worker.predict_celery import make_predict_celery

    new_cell = sorted((PBC_DEV / "eosinophil").iterdir())[PER_CLASS]
    with running_worker(make_predict_celery(settings), queues=["predict"]):
        page.goto(f"{live_server}/predict/{pid}")
        page.set_input_files("input[name=files]", [str(new_cell)])
        page.click("button:has-text('Predict')")
        page.wait_for_selector(".predict-item", timeout=120_000)
    assert page.locator(".predict-class strong").text_content() in {c for c, _k in CLASSES}
    assert page.locator(".predict-top li").count() == 3
    assert "no heatmap: this model reads cell measurements" in page.inner_text("main")
    _shot(page, "predicted")
    assert not page.js_errors
