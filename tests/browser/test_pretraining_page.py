"""The Pretraining page in Debian's Chromium (issue 15): start a run with the form's
defaults, watch it queued, cancel it through the htmx button (CSRF, CSP), and choose a
backbone. No worker: the page's own behaviour. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import BackboneChoice, PretrainingRun, ProjectBackbone
from models.db import session_scope
from tests.browser.helpers import log_in
from tests.helpers import make_user
from webapp.bootstrap import create_project

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_admin_starts_cancels_and_chooses_a_backbone(live_server, page, settings):
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "smear", "pbc8").id
    make_user(settings, "boss", "admin")
    log_in(page, live_server, "boss")
    page.wait_for_url(live_server + "/admin/")
    page.goto(f"{live_server}/admin/projects/{pid}")
    page.click("nav.sub >> text=Pretraining")
    page.wait_for_url(f"**/admin/projects/{pid}/pretraining")
    assert page.input_value("#image_size") == "75"  # the rounds' input size
    page.fill("#epochs", "3")
    page.click("text=Start pretraining")
    page.wait_for_url("**/admin/pretraining/*")
    assert "3 epoch(s) at 75 px" in page.inner_text("section.card")
    with session_scope(settings.database_url) as s:
        run = s.scalar(select(PretrainingRun))
        assert (run.epochs, run.image_size, run.status.value) == (3, 75, "queued")

    page.once("dialog", lambda d: d.accept())
    page.click("section.card >> text=Cancel")
    page.wait_for_selector('section[data-status="cancelled"]')

    page.goto(f"{live_server}/admin/projects/{pid}/pretraining")
    assert "cancelled" in page.inner_text("table.pretraining-runs")
    page.select_option("#backbone", "random")
    page.click("text=Use this backbone")
    page.wait_for_selector("text=starts from random initialisation")
    with session_scope(settings.database_url) as s:
        assert s.get(ProjectBackbone, pid).choice == BackboneChoice.RANDOM
    assert not page.js_errors
