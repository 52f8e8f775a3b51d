"""The admin's flows in Debian's Chromium: landing on Admin, a comparison started with the
form's defaults, pages that follow a finished round without a reload, and checkboxes that
sit beside their labels. Screenshots go to test-artifacts/."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models import SimulationRun, TrainingRound, utcnow
from models.db import session_scope
from tests.admin_helpers import finish_round
from tests.browser.helpers import log_in, wait_for_js
from tests.helpers import add_round, make_user
from webapp.bootstrap import create_project

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _project(settings) -> int:
    with session_scope(settings.database_url) as s:
        return create_project(s, "smear", "pbc8").id


def test_admin_lands_on_admin_and_compares_strategies_with_the_defaults(live_server, page,
                                                                        settings):
    pid = _project(settings)
    make_user(settings, "boss", "admin")
    log_in(page, live_server, "boss")
    page.wait_for_url(live_server + "/admin/")
    assert page.inner_text("h1") == "Admin"

    page.click(f"#project-{pid} >> text=Active learning")
    boxes = page.locator("fieldset.checks input[type=checkbox]")
    assert boxes.count() >= 8
    assert page.locator("fieldset.checks input[required]").count() == 0
    # Each checkbox sits on the line of its label, just left of it.
    first = page.locator("fieldset.checks li").first
    box, label = first.locator("input").bounding_box(), first.locator("label").bounding_box()
    assert abs((box["y"] + box["height"] / 2) - (label["y"] + label["height"] / 2)) < 6
    assert 0 <= label["x"] - (box["x"] + box["width"]) < 20

    page.click("text=Start comparison")  # the defaults: random and margin
    page.wait_for_url("**/admin/comparisons/*")
    assert "random, margin" in page.inner_text("section.card")
    with session_scope(settings.database_url) as s:
        run = s.scalar(select(SimulationRun))
        assert run.params["strategies"] == ["random", "margin"]

    page.once("dialog", lambda d: d.accept())
    page.click("section.card >> text=Cancel")
    page.wait_for_selector('section[data-status="cancelled"]')
    assert not page.js_errors


def test_the_card_and_the_round_page_follow_a_finished_round(live_server, browser, page,
                                                            settings):
    pid = _project(settings)
    round_id = add_round(settings, pid, status="running", worker="w@host", progress=0.4,
                         phase="training the head", started_at=utcnow(), heartbeat_at=utcnow())
    make_user(settings, "boss", "admin")
    log_in(page, live_server, "boss")
    page.wait_for_url(live_server + "/admin/")
    assert "none yet" in page.inner_text(f"#figures-{pid}")

    round_page = page.context.new_page()
    round_page.goto(f"{live_server}/admin/rounds/{round_id}")
    assert round_page.locator("text=Confusion matrix").count() == 0

    version = finish_round(settings, round_id)
    # No reload: the polled row ends (286), its event refreshes the card and the round page.
    page.wait_for_selector(f'#round-{round_id}[data-status="succeeded"]', timeout=10_000)
    wait_for_js(page, f"document.querySelector('#figures-{pid}')?.innerText"
                      f".includes('v{version}')", timeout=10)
    assert "test accuracy 75.0%" in page.inner_text(f"#figures-{pid}")
    round_page.wait_for_selector("text=Confusion matrix", timeout=10_000)
    assert "accuracy 75.0%" in round_page.inner_text("#round-result")

    # Polling has stopped: no more requests for the row.
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if "/row" in r.url else None)
    page.wait_for_timeout(2500)
    assert seen == []
    with session_scope(settings.database_url) as s:
        assert s.get(TrainingRound, round_id).status == "succeeded"
    assert not page.js_errors and not getattr(round_page, "js_errors", [])


def test_reading_settings_contested_classes_are_checkboxes_beside_their_labels(live_server, page,
                                                                              settings):
    pid = _project(settings)
    make_user(settings, "boss", "admin")
    log_in(page, live_server, "boss")
    page.wait_for_url(live_server + "/admin/")
    page.goto(f"{live_server}/admin/projects/{pid}/reading")
    items = page.locator("fieldset.checks li")
    assert items.count() == 8
    width = page.locator("fieldset.checks").bounding_box()["width"]
    assert width > 400  # not a tiny select
    item = items.nth(2)
    box, label = item.locator("input").bounding_box(), item.locator("label").bounding_box()
    assert abs((box["y"] + box["height"] / 2) - (label["y"] + label["height"] / 2)) < 6
    item.locator("label").click()  # the label ticks its box
    assert item.locator("input").is_checked()


def test_charts_have_titles_and_axis_titles_on_screen(live_server, page, app, settings, tmp_path):
    """The agreement page's two bar charts and heatmap, and a round's loss chart, as drawn."""
    from tests.reading_helpers import two_readers_disputing_a_curators_cells

    pid, _, _ = two_readers_disputing_a_curators_cells(app, settings, tmp_path)
    log_in(page, live_server, "cara")
    page.wait_for_url("**/curate/")
    page.goto(f"{live_server}/curate/projects/{pid}/agreement")
    pair, alpha = page.locator("#pair-kappa svg"), page.locator("#class-alpha svg")
    assert pair.is_visible() and alpha.is_visible()
    for chart in (pair, alpha):
        box = chart.bounding_box()
        assert box["width"] > 300 and box["height"] > 60
        # Every label inside its chart: nothing cut off at the edges.
        for text in chart.locator("text").all():
            t = text.bounding_box()
            assert box["x"] - 1 <= t["x"] and t["x"] + t["width"] <= box["x"] + box["width"] + 1
    heat = page.locator("#reader-confusion svg")
    hb = heat.bounding_box()
    for title in ("one reader's vote", "the other reader's vote"):
        t = heat.locator(f"text:text-is(\"{title}\")").bounding_box()
        assert hb["x"] - 1 <= t["x"] and t["y"] >= hb["y"] - 1
    page.screenshot(path=str(tmp_path / "agreement.png"), full_page=True)
    assert not page.js_errors


def test_loss_chart_is_titled_and_labelled_on_screen(live_server, page, settings):
    from models import ModelVersion

    pid = _project(settings)
    round_id = add_round(settings, pid, status="running")
    version = finish_round(settings, round_id)
    with session_scope(settings.database_url) as s:
        v = s.get(ModelVersion, version)
        v.metrics = {**v.metrics, "history": {
            "head": {"loss": [1.4, 1.0, 0.8, 0.7], "val_loss": [1.5, 1.1, 0.95, 0.9]},
            "fine_tune": {"loss": [0.65, 0.6], "val_loss": [0.88, 0.87]}}}
    make_user(settings, "boss", "admin")
    log_in(page, live_server, "boss")
    page.wait_for_url(live_server + "/admin/")
    page.goto(f"{live_server}/admin/rounds/{round_id}")
    chart = page.locator("#round-result figure.chart svg")
    box = chart.bounding_box()
    texts = [t.text_content().strip() for t in chart.locator("text").all()]
    assert "Loss per epoch (head, then fine-tuning)" in texts
    assert "cross-entropy loss (nats)" in texts and any(t.startswith("epoch") for t in texts)
    assert {"1", "6"} <= set(texts)  # first and last epoch on the x axis
    for text in chart.locator("text").all():
        t = text.bounding_box()
        assert box["x"] - 1 <= t["x"] and t["x"] + t["width"] <= box["x"] + box["width"] + 1
        assert box["y"] - 1 <= t["y"] and t["y"] + t["height"] <= box["y"] + box["height"] + 1
