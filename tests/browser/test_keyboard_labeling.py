"""A pathologist labels by keyboard alone in a real browser; htmx swaps cells in place."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models import Annotation, Flag, Origin
from models.db import session_scope
from tests.browser.helpers import log_in, wait_for_js
from tests.helpers import make_user

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)




def _wait_for_next(page, image_id: str) -> None:
    """The next cell is swapped in and ready for keys."""
    wait_for_js(page,
        f"(c => c && c.dataset.imageId !== '{image_id}' && c.dataset.ready)"
        "(document.querySelector('#cell'))")


def test_keyboard_only_labeling(live_server, page, settings, demo_project):
    make_user(settings, "reader", "pathologist")
    log_in(page, live_server, "reader")
    page.wait_for_selector("#cell[data-ready]")
    url = page.url
    seen = []
    for key in "1234567":
        image_id = page.get_attribute("#cell", "data-image-id")
        seen.append(image_id)
        page.keyboard.press(key)
        _wait_for_next(page, image_id)
    flagged = page.get_attribute("#cell", "data-image-id")
    page.keyboard.press("?")
    _wait_for_next(page, flagged)

    assert page.url == url  # no full page load: htmx swapped the cell
    assert len(set(seen)) == 7
    assert page.inner_text("#done-count") == "7"  # class labels: the flag is no label
    assert page.js_errors == []
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(Annotation.image_id, Annotation.flag, Annotation.duration_ms)
                         .where(Annotation.origin == Origin.READER)).all()
    assert len(rows) == 8
    assert {str(r.image_id) for r in rows} == set(seen) | {flagged}
    assert [r.flag for r in rows if str(r.image_id) == flagged] == [Flag.AMBIGUOUS]
    assert all(r.duration_ms is not None and r.duration_ms >= 0 for r in rows)


def test_bad_request_shows_message_and_keeps_cell(live_server, page, settings, demo_project):
    make_user(settings, "reader", "pathologist")
    log_in(page, live_server, "reader")
    page.wait_for_selector("#cell[data-ready]")
    image_id = page.get_attribute("#cell", "data-image-id")
    # A class removed from the form behind the reader's back: the server refuses it.
    page.evaluate("document.querySelector('[data-hotkey=\"1\"]').value = 'not-a-class'")
    page.keyboard.press("1")
    page.wait_for_selector("#messages .flash.error")
    assert "Unknown class" in page.inner_text("#messages")
    assert page.get_attribute("#cell", "data-image-id") == image_id
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(Annotation.id))
                        .where(Annotation.origin == Origin.READER)) == 0
