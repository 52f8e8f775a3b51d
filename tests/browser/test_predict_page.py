"""In a real browser: a pathologist opens Predict from the nav, uploads two cells and a
file that is not an image, and sees each cell's class, confidence, top three and its
Grad-CAM heatmap (loaded as an image), the bad file's reason, and no CSP violation;
an admin adds a predicted cell to the project."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models import Image
from models.db import session_scope
from tests.browser.helpers import log_in, wait_for_js
from tests.browser.test_csp import WATCH
from tests.helpers import DEMO_DIR, make_user, running_worker
from tests.model_helpers import TINY_CLASSES, install_model

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)]


def _count(settings, project_id: int) -> int:
    with session_scope(settings.database_url) as s:
        return s.scalar(select(func.count(Image.id)).where(Image.project_id == project_id))


def test_upload_cells_and_see_class_and_heatmap(live_server, page, settings, demo_project,
                                                tiny_model, tmp_path):
    from worker.predict_celery import make_predict_celery

    page.add_init_script(WATCH)
    install_model(settings, demo_project, tiny_model)
    make_user(settings, "reader", "pathologist")
    make_user(settings, "boss", "admin")
    text = tmp_path / "notes.txt"
    text.write_text("not a cell\n")
    cells = [sorted((DEMO_DIR / name).iterdir())[10] for name in ("lymphocyte", "eosinophil")]
    before = _count(settings, demo_project)

    with running_worker(make_predict_celery(settings), queues=["predict"]):
        log_in(page, live_server, "reader")
        page.click("nav >> text=Predict")
        page.click("ul.predict-projects >> text=demo")
        page.set_input_files("input[name=files]", [str(c) for c in cells] + [str(text)])
        page.click("button:has-text('Predict')")
        page.wait_for_selector(".predict-item", timeout=120_000)
        items = page.locator(".predict-item")
        assert items.count() == 3
        classes = page.locator(".predict-class strong").all_text_contents()
        assert len(classes) == 2 and all(c in TINY_CLASSES for c in classes)
        assert page.locator(".predict-top li").count() == 6
        assert "Not predicted: not an image" in page.locator(".predict-error").text_content()
        # The heatmaps are real images the browser decoded.
        heatmaps = page.locator("img.heatmap")
        assert heatmaps.count() == 2
        # Drawn by the web process when the browser asks, so they may still be on their way.
        wait_for_js(page, "[...document.querySelectorAll('img.heatmap')]"
                          ".every(i => i.complete && i.naturalWidth > 0)", timeout=60)
        assert page.locator("text=Add to demo").count() == 0  # readers do not add
        assert _count(settings, demo_project) == before
        assert page.evaluate("window.__csp") == [] and page.js_errors == []

        # An admin predicts one and adds it.
        page.context.clear_cookies()
        log_in(page, live_server, "boss")
        page.wait_for_url("**/admin/")
        page.goto(f"{live_server}/predict/{demo_project}")
        page.set_input_files("input[name=files]", [str(cells[0])])
        page.click("button:has-text('Predict')")
        page.wait_for_selector(".predict-item img.heatmap", timeout=120_000)
    page.click("button:has-text('Add to demo')")
    page.wait_for_selector(".predict-added")
    assert "Added to demo as cell" in page.text_content(".predict-added")
    assert _count(settings, demo_project) == before + 1
