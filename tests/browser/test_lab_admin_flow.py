"""An admin runs a lab from Chromium: a project with custom classes, a pathologist
who reads it, a zip of class folders imported on a real worker, the report; then
the pathologist logs in with the one-time password, chooses their own and labels."""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image as PILImage

from tests.browser.helpers import ARTIFACTS, log_in, wait_for_js
from tests.helpers import make_user, running_worker

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _zip(path) -> None:
    """Two class folders (3 + 2 cells) under one top folder, and one stray text file."""
    with zipfile.ZipFile(path, "w") as z:
        n = 0
        for cls, count in (("blast", 3), ("myelocyte", 2)):
            for k in range(count):
                n += 1
                out = io.BytesIO()
                PILImage.new("RGB", (48, 48), (n * 40, 200 - n * 20, 90)).save(out, "PNG")
                z.writestr(f"marrow/{cls}/{cls}-{k}.png", out.getvalue())
        z.writestr("marrow/readme.txt", b"not a cell")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"lab-admin-{name}.png"), full_page=True)


def test_admin_sets_up_a_lab_in_the_browser(live_server, page, browser, app, settings, tmp_path):
    make_user(settings, "boss", "admin")
    log_in(page, live_server, "boss")
    page.wait_for_url("**/admin/")  # admins land on Admin

    # A project with custom classes.
    page.goto(live_server + "/admin/")
    page.click("text=New project")
    page.fill("input[name=name]", "marrow")
    page.select_option("select[name=preset]", "custom")
    for i, (name, key) in enumerate((("blast", "1"), ("myelocyte", "2"), ("promyelocyte", "3"))):
        page.locator("input[name=class_name]").nth(i).fill(name)
        page.locator("input[name=class_hotkey]").nth(i).fill(key)
    page.click("text=Create project")
    page.wait_for_selector("h1:has-text('marrow')")
    project_url = page.url
    assert "promyelocyte" in page.inner_text("#classes")

    # A pathologist, with a one-time password shown once.
    page.goto(live_server + "/admin/users")
    page.fill("input[name=username]", "ada")
    page.select_option("select[name=role]", "pathologist")
    page.click("text=Create account")
    otp = page.inner_text("#shown-password").strip()
    assert len(otp) >= 12

    # Ada reads the project.
    page.goto(project_url)
    page.select_option("select[name=user_id]", label="ada (pathologist)")
    page.click("text=Add reader")
    page.wait_for_selector("#members td:has-text('ada')")

    # A zip of class folders, trusted as labels, imported on a real worker.
    archive = tmp_path / "marrow.zip"
    _zip(archive)
    page.locator("input[type=file]:not([webkitdirectory])").set_input_files(str(archive))
    page.check("input[name=trust_labels]")
    with running_worker(app.extensions["celery"]):
        page.click("text=Upload and import")
        page.wait_for_url("**/admin/imports/*")
        wait_for_js(page, "!!document.querySelector('#n-imported')", timeout=120)
    assert page.inner_text("#n-imported") == "5"
    assert page.inner_text("#n-rejected") == "1"
    assert "marrow/readme.txt" in page.inner_text("table.rejected")
    assert page.get_attribute("#import-status", "data-status") == "succeeded"
    assert page.locator("text=Download the report (JSON)").count() == 1
    _shot(page, "report")
    assert not page.js_errors

    # Ada: the one-time password, then her own, then the project's cells.
    context = browser.new_context()
    ada = context.new_page()
    ada.goto(live_server + "/")
    ada.fill("input[name=username]", "ada")
    ada.fill("input[name=password]", otp)
    ada.keyboard.press("Enter")
    ada.wait_for_url("**/auth/account")
    ada.fill("input[name=current]", otp)
    ada.fill("input[name=new]", "ada-chose-this")
    ada.fill("input[name=again]", "ada-chose-this")
    ada.click("button:has-text('Change password')")
    ada.wait_for_selector("text=Your password has been changed")
    ada.goto(live_server + "/label/")
    ada.wait_for_selector("#cell[data-ready]")
    assert "blast" in ada.inner_text(".classes")
    context.close()


def test_folder_of_class_folders_through_the_folder_picker(live_server, page, app, settings,
                                                           tmp_path):
    """Chromium sends each file of a picked folder under its relative path; the class
    folders become reference labels, the picked folder's own name is looked through."""
    from sqlalchemy import func, select

    from models import Annotation, Origin
    from models.db import session_scope
    from webapp.bootstrap import create_project

    with session_scope(settings.database_url) as s:
        pid = create_project(s, "blood", "wbc4", test_share=0.0).id
    picked = tmp_path / "smear-2026"
    for cls, colour in (("eosinophil", (200, 60, 60)), ("monocyte", (60, 200, 60))):
        (picked / cls).mkdir(parents=True)
        for k in range(2):
            PILImage.new("RGB", (32, 32), (colour[0], colour[1], 40 * k)).save(
                picked / cls / f"{k}.png")
    make_user(settings, "boss", "admin")
    log_in(page, live_server, "boss")
    page.wait_for_url("**/admin/")  # admins land on Admin
    page.goto(f"{live_server}/admin/projects/{pid}")
    page.locator("input[webkitdirectory]").set_input_files(str(picked))
    with running_worker(app.extensions["celery"]):
        page.click("text=Upload and import")
        page.wait_for_url("**/admin/imports/*")
        wait_for_js(page, "!!document.querySelector('#n-imported')", timeout=120)
    assert page.inner_text("#n-imported") == "4"
    assert page.inner_text("#n-rejected") == "0"
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(Annotation.id)).where(
            Annotation.origin == Origin.REFERENCE)) == 4
