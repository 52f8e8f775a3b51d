"""Issue 14's fixed flows in Debian's Chromium: bulk rejection, the curator's keyboard
resolve and undo, and the cell fitted to the panel. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from models import Annotation, Kind, Origin, Project
from models.db import session_scope
from tests.browser.helpers import ARTIFACTS, log_in, wait_for_js
from tests.helpers import make_user
from tests.reading_helpers import (fake_active_model, flat_project, measured_metrics, pool_ids,
                                   read_cells)

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"issue14-{name}.png"), full_page=True)


def _rows(settings, *conditions):
    with session_scope(settings.database_url) as s:
        return s.execute(select(Annotation.image_id, Annotation.kind, Annotation.origin,
                                Annotation.label_class_id, Annotation.retracts_id)
                         .where(*conditions).order_by(Annotation.id)).all()


def test_bulk_rejection_leaves_the_grid(live_server, page, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "bulk", 10)
    ids = pool_ids(settings, pid)
    # Pale and dark cells alike, predicted ig: the confidence must be legible on both.
    fake_active_model(settings, pid, {i: ("ig", 0.6 + i % 4 * 0.1) for i in ids})
    make_user(settings, "reader", "pathologist")
    log_in(page, live_server, "reader")
    page.wait_for_selector("#cell[data-ready]")
    page.goto(f"{live_server}/label/{pid}/verify?class=ig&min=0.5")
    tiles = page.locator(".verify-grid label")
    assert tiles.count() == 10
    tile_box = tiles.nth(0).bounding_box()
    assert tile_box["width"] >= 200  # ~220 px tiles, not 150
    assert page.inner_text("#confirm-count") == "10"

    # Two wrong by mouse, one by keyboard (arrow keys move, Space marks).
    wrong = [tiles.nth(i).get_attribute("data-image-id") for i in (0, 1, 3)]
    tiles.nth(0).click()
    tiles.nth(1).click()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.imageId") == wrong[2]
    page.keyboard.press(" ")
    assert page.inner_text("#confirm-count") == "7"
    assert page.inner_text("#wrong-count") == "3"
    # The confidence pill is white on a dark background, whatever the cell's colour.
    colours = page.eval_on_selector(".verify-grid .conf", "e => [getComputedStyle(e).color, "
                                    "getComputedStyle(e).backgroundColor]")
    assert colours[0] == "rgb(255, 255, 255)" and colours[1].startswith("rgba(17, 24, 39")
    _shot(page, "1-bulk-grid-marked")

    # Enter asks first; Esc goes back and nothing is sent.
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-dialog[open]")
    assert page.inner_text("#dialog-count") == "7"
    _shot(page, "2-bulk-confirm")
    page.keyboard.press("Escape")
    assert not page.is_visible("#confirm-dialog")
    assert _rows(settings, Annotation.origin == Origin.READER) == []
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-dialog[open]")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_load_state()

    rows = _rows(settings, Annotation.origin == Origin.READER)
    assert sorted(str(r.image_id) for r in rows if r.kind == Kind.REJECT) == sorted(wrong)
    assert len([r for r in rows if r.kind == Kind.VERIFY]) == 7
    # The reloaded grid does not bring the rejected cells back.
    assert "3 marked wrong were recorded as rejections" in page.inner_text("#messages")
    assert page.locator(".verify-grid label").count() == 0
    assert page.js_errors == []


def test_cell_is_fitted_to_the_panel_and_zooms_to_native(live_server, page, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "fit", 3)
    with session_scope(settings.database_url) as s:
        names = [c.name for c in s.get(Project, pid).classes]
    # A weak model (20% right on the test split): its suggestion shows as tentative.
    fake_active_model(settings, pid, {i: ("ig", 0.88) for i in pool_ids(settings, pid)},
                      metrics=measured_metrics(names, accuracy=0.2))
    make_user(settings, "reader", "pathologist")
    log_in(page, live_server, "reader")
    page.wait_for_selector("#cell[data-ready]")
    wait_for_js(page, "document.querySelector('.zoom img')?.complete")
    natural, shown_width, panel = page.eval_on_selector(
        ".zoom img", "i => [i.naturalWidth, i.getBoundingClientRect().width, "
                     "i.closest('.zoom').clientWidth]")
    assert shown_width > natural * 1.3  # 360 px cells fill the panel...
    assert shown_width <= panel + 1  # ...and no more
    level = page.inner_text(".zoom-level")
    assert level.startswith("fit (")
    fit_percent = int(re.search(r"(\d+)%", level).group(1))
    assert fit_percent > 130
    assert page.is_visible(".suggestion.tentative .tentative-tag")
    assert "model right on 20% of 80 test cells" in page.inner_text("#model-accuracy")
    _shot(page, "3-fit-to-panel")
    # Zoom out reaches native pixels (and less); zoom in goes beyond.
    for _ in range(4):
        page.keyboard.press("-")
    assert int(re.search(r"(\d+)%", page.inner_text(".zoom-level")).group(1)) <= 100
    page.keyboard.press("0")
    for _ in range(3):
        page.keyboard.press("+")
    assert int(re.search(r"(\d+)%", page.inner_text(".zoom-level")).group(1)) > fit_percent
    assert page.js_errors == []


def test_curator_resolves_by_keyboard_and_undoes(live_server, page, settings, tmp_path, app):
    pid = flat_project(settings, tmp_path, "cur", 4, readers_per_cell=2)
    for name in ("ann", "bob"):
        make_user(settings, name, "pathologist")
    make_user(settings, "cara", "curator")
    cells, _ = read_cells(app, pid, "ann", ["monocyte", "platelet", "basophil"])
    read_cells(app, pid, "bob", ["lymphocyte", "neutrophil", "eosinophil"])
    disputed = sorted(cells)
    log_in(page, live_server, "cara")
    page.wait_for_selector(f'a.thumb[data-image-id="{disputed[0]}"]')
    card = page.inner_text(f'a.thumb[data-image-id="{disputed[0]}"]')
    assert "ann:" in card and "bob:" in card  # the votes, in the list
    _shot(page, "4-worklist-votes")
    page.click(f'a.thumb[data-image-id="{disputed[0]}"]')
    page.wait_for_selector("#resolve")

    # n and p walk the worklist.
    with page.expect_navigation():
        page.keyboard.press("n")
    assert page.url.endswith(f"/curate/cells/{disputed[1]}")
    with page.expect_navigation():
        page.keyboard.press("p")
    assert page.url.endswith(f"/curate/cells/{disputed[0]}")
    # Zoom works here too.
    page.keyboard.press("+")
    assert page.inner_text(".zoom-level").endswith("% of native")

    # Typing a note does not trigger keys; a class key resolves.
    page.fill("input[name=note]", "n p e 1")
    page.locator("input[name=note]").blur()
    with page.expect_navigation():
        page.keyboard.press("6")  # monocyte's key in pbc8
    page.wait_for_selector("#resolved")
    assert f"Resolved cell {disputed[0]} as monocyte" in page.inner_text("#resolved")
    _shot(page, "5-resolved-with-undo")
    curated = _rows(settings, Annotation.origin == Origin.CURATOR)
    assert [(r.image_id, r.kind) for r in curated] == [(disputed[0], Kind.LABEL)]

    # Backspace undoes it, and says so.
    with page.expect_navigation():
        page.keyboard.press("Backspace")
    assert page.url.endswith(f"/curate/cells/{disputed[0]}")
    assert f"Undid the resolution of cell {disputed[0]}" in page.inner_text("#messages")
    curated = _rows(settings, Annotation.origin == Origin.CURATOR)
    assert [r.kind for r in curated] == [Kind.LABEL, Kind.RETRACT]

    # e excludes.
    with page.expect_navigation():
        page.keyboard.press("e")
    page.wait_for_selector("#resolved")
    assert "as excluded" in page.inner_text("#resolved")
    assert page.js_errors == []


def test_raising_k_previews_and_asks_before_unsettling(live_server, page, settings, tmp_path,
                                                       app):
    pid = flat_project(settings, tmp_path, "rules", 4)
    make_user(settings, "ann", "pathologist")
    make_user(settings, "boss", "admin")
    read_cells(app, pid, "ann", ["monocyte", "platelet"])
    log_in(page, live_server, "boss")
    page.wait_for_selector("form.logout")  # signed in
    page.goto(f"{live_server}/admin/projects/{pid}/reading")
    page.fill("input[name=readers_per_cell]", "2")
    page.locator("input[name=readers_per_cell]").blur()  # a change event: the preview
    page.wait_for_selector("#unsettle-preview-count")
    assert "2" in page.inner_text("#unsettle-preview-count")
    page.click("button.primary >> text=Save")
    page.wait_for_selector("#unsettle-warning")
    _shot(page, "6-unsettle-warning")
    with session_scope(settings.database_url) as s:
        assert s.get(Project, pid).readers_per_cell == 1  # nothing saved yet
    with page.expect_navigation():
        page.click("button[name=confirm_unsettle]")
    with session_scope(settings.database_url) as s:
        assert s.get(Project, pid).readers_per_cell == 2
    assert "2 label(s) went back to the readers" in page.inner_text("#messages")
    assert page.js_errors == []
