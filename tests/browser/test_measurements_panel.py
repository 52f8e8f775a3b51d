"""Issue 15, item 3, in Debian's Chromium: the admin starts the measurements and watches
them end live on the project page (a real worker measures real PBC cells); the curator's
cell page then loads the Measurements panel beside the votes, with each voted class's
range.  Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import Annotation, Image, LabelClass, Origin, User
from models.db import session_scope
from tests.browser.helpers import ARTIFACTS, log_in, wait_for_js
from tests.helpers import make_user, open_to_readers, running_worker, small_demo_copy
from webapp.bootstrap import create_project
from webapp.ingest import import_path

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.mark.slow
def test_admin_measures_and_the_curator_sees_the_panel(live_server, browser, page, app, settings,
                                                       tmp_path):
    src = small_demo_copy(tmp_path / "src", per_class=6, classes=["lymphocyte", "neutrophil"])
    make_user(settings, "boss", "admin")
    make_user(settings, "ann", "pathologist")
    make_user(settings, "bob", "pathologist")
    make_user(settings, "cara", "curator")
    with session_scope(settings.database_url) as s:
        project = create_project(s, "cells", "pbc8", test_share=0.0, train_on_reference=True)
        open_to_readers(s, project)
        assert import_path(s, settings.storage_dir, project, src,
                           max_pixels=settings.max_image_pixels).imported == 12
        pid = project.id
        classes = {c.name: c.id for c in s.scalars(select(LabelClass).where(
            LabelClass.project_id == pid))}
        target = s.scalar(select(Image.id).where(Image.project_id == pid).order_by(Image.id))
        users = dict(s.execute(select(User.username, User.id)).all())
        s.add(Annotation(image_id=target, user_id=users["ann"], origin=Origin.READER,
                         label_class_id=classes["lymphocyte"]))
        s.add(Annotation(image_id=target, user_id=users["bob"], origin=Origin.READER,
                         label_class_id=classes["neutrophil"]))

    log_in(page, live_server, "boss")
    page.wait_for_url(live_server + "/admin/")
    page.goto(f"{live_server}/admin/projects/{pid}")
    page.wait_for_selector("#describe-status[data-status=none]")
    assert "0 of 12 cell(s) measured" in page.inner_text("#describe-status")
    with running_worker(app.extensions["celery"]):
        page.click("#start-describe")
        # The card polls its run (every 2-5 s) until the run ends.
        page.wait_for_selector("#describe-status[data-status=succeeded]", timeout=120_000)
    assert "12 of 12 cell(s) measured" in page.inner_text("#describe-status")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "issue15-measurements-admin.png"), full_page=True)
    assert page.js_errors == []

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    curator = context.new_page()
    errors: list[str] = []
    curator.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        log_in(curator, live_server, "cara")
        curator.wait_for_url(lambda url: "/auth/login" not in url)
        curator.goto(f"{live_server}/curate/cells/{target}")
        curator.wait_for_selector("#measurements table.measurements")
        panel = curator.locator("#measurements")
        text = panel.inner_text()
        assert "Nucleus area" in text and "Lobes" in text and "Nucleus-to-cell ratio" in text
        # One column per voted class, each with n = 5 or 6 measured final cells.
        headers = panel.locator("thead th").all_inner_texts()
        assert any(h.startswith("lymphocyte") for h in headers)
        assert any(h.startswith("neutrophil") for h in headers)
        area = panel.locator('tr[data-measure="nucleus_area_px"] td.range')
        assert area.count() == 2
        ns = sorted(int(area.nth(i).get_attribute("data-n")) for i in range(2))
        assert ns == [5, 6]  # the cell itself (a lymphocyte) is left out of its class
        places = [area.nth(i).inner_text() for i in range(2)]
        assert all(any(w in p for w in ("inside", "below", "above")) for p in places)
        # The panel sits beside the votes, in the same column.
        votes_box = curator.locator("#votes").bounding_box()
        panel_box = panel.bounding_box()
        assert abs(votes_box["x"] - panel_box["x"]) < 40 and panel_box["y"] > votes_box["y"]
        wait_for_js(curator, "document.querySelector('#measurements td.value') !== null")
        curator.screenshot(path=str(ARTIFACTS / "issue15-measurements-panel.png"), full_page=True)
        assert errors == []
    finally:
        context.close()
