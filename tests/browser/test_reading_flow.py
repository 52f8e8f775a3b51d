"""The whole reading day in Debian's Chromium: label 10 cells by keyboard, undo, flag one,
bulk-verify a grid, and a curator settles the flagged cell. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import Annotation, Flag, Kind, Origin
from models.db import session_scope
from tests.browser.helpers import ARTIFACTS, log_in, wait_for_js
from tests.helpers import make_user
from tests.reading_helpers import fake_active_model, flat_project, pool_ids

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)




def _cell_id(page) -> str:
    return page.get_attribute("#cell", "data-image-id")


def _wait_for_cell(page, not_id: str | None = None, is_id: str | None = None) -> None:
    if is_id is not None:
        wait_for_js(page, f"(c => c && c.dataset.imageId === '{is_id}' && c.dataset.ready)"
                    "(document.querySelector('#cell'))")
    else:
        wait_for_js(page, f"(c => c && c.dataset.imageId !== '{not_id}' && c.dataset.ready)"
                    "(document.querySelector('#cell'))")


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"reading-{name}.png"), full_page=True)


def _rows(settings):
    with session_scope(settings.database_url) as s:
        return s.execute(select(Annotation.image_id, Annotation.kind, Annotation.flag,
                                Annotation.origin, Annotation.retracts_id, Annotation.note)
                         .order_by(Annotation.id)).all()


def test_reading_day(live_server, page, browser, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "smear", 24)
    ids = pool_ids(settings, pid)
    # The stand-in model: unsure about most cells (first in the queue), sure about 6 basophils.
    predicted = {i: ("lymphocyte", 0.55) for i in ids[:18]}
    predicted.update({i: ("basophil", 0.96) for i in ids[18:]})
    fake_active_model(settings, pid, predicted)
    make_user(settings, "reader", "pathologist")
    make_user(settings, "cara", "curator")

    log_in(page, live_server, "reader")
    page.wait_for_selector("#cell[data-ready]")
    assert page.inner_text("#suggestion-name") == "lymphocyte"

    # Ten cells by keyboard: eight class keys, an accept, a reject followed by a class key.
    labeled = []
    for key in ["1", "2", "3", "4", "5", "6", "7", "8", "a", "x"]:
        image_id = _cell_id(page)
        labeled.append(image_id)
        page.keyboard.press(key)
        if key == "x":
            page.wait_for_selector(".suggestion.rejected")
            page.keyboard.press("Enter")  # accept no longer works once rejected...
            page.keyboard.press("2")  # ...a class key decides
        _wait_for_cell(page, not_id=image_id)
    assert len(set(labeled)) == 10
    assert page.inner_text("#session-count") == "10"
    assert page.inner_text("#done-count") == "10"
    _shot(page, "1-ten-labeled")

    # The cell is fitted to the panel; + zooms in, 0 fits it again.
    assert page.inner_text(".zoom-level").startswith("fit (")
    page.keyboard.press("+")
    assert page.inner_text(".zoom-level").endswith("% of native")
    page.keyboard.press("0")
    assert page.inner_text(".zoom-level").startswith("fit (")

    # Backspace: the last cell comes back, and is relabeled.
    current = _cell_id(page)
    page.keyboard.press("Backspace")
    _wait_for_cell(page, is_id=labeled[-1])
    assert page.inner_text("#done-count") == "9"
    assert page.inner_text("#undone").startswith(f"Undid eosinophil on cell {labeled[-1]}")
    page.keyboard.press("3")
    _wait_for_cell(page, is_id=current)

    # One cell flagged ambiguous.
    flagged = _cell_id(page)
    page.keyboard.press("?")
    _wait_for_cell(page, not_id=flagged)
    _shot(page, "2-undo-and-flag")

    rows = _rows(settings)
    retract = [r for r in rows if r.kind == Kind.RETRACT]
    assert len(retract) == 1
    assert [str(r.image_id) for r in rows if r.flag == Flag.AMBIGUOUS] == [flagged]
    rejected = next(r for r in rows if str(r.image_id) == labeled[9] and r.kind == Kind.LABEL
                    and r.retracts_id is None and r.flag is None)
    assert rejected is not None

    # Bulk verification: six confident basophils; one is clicked as wrong, Enter asks, and
    # Enter again confirms the rest.
    page.goto(f"{live_server}/label/{pid}/verify?class=basophil&min=0.9")
    tiles = page.locator(".verify-grid label")
    assert tiles.count() == 6
    wrong = tiles.nth(0).get_attribute("data-image-id")
    tiles.nth(0).click()
    _shot(page, "3-verify-grid")
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-dialog[open]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state()
    verified = [r for r in _rows(settings) if r.kind == Kind.VERIFY]
    assert len(verified) == 5 and wrong not in {str(r.image_id) for r in verified}
    assert page.js_errors == []

    # A curator settles the flagged cell.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    curator = context.new_page()
    try:
        log_in(curator, live_server, "cara")
        curator.wait_for_selector(f'a.thumb[data-image-id="{flagged}"]')
        assert "flagged ambiguous" in curator.inner_text(f'a.thumb[data-image-id="{flagged}"]')
        curator.click(f'a.thumb[data-image-id="{flagged}"]')
        curator.wait_for_selector("#resolve")
        assert "reader" in curator.inner_text("#votes")
        curator.fill("input[name=note]", "band, not segmented")
        with curator.expect_navigation():
            curator.click("#resolve button[value=neutrophil]")
        curator.wait_for_load_state()
        curator.screenshot(path=str(ARTIFACTS / "reading-4-curator.png"), full_page=True)
    finally:
        context.close()
    resolution = [r for r in _rows(settings) if r.origin == Origin.CURATOR]
    assert [(str(r.image_id), r.note) for r in resolution] == [(flagged, "band, not segmented")]
