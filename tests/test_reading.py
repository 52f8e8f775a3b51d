"""Reading: leases, fairness, undo, k-reader consensus, blind reading, bulk verification."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest

from sqlalchemy import func, select, update

from models import Annotation, Image, Kind, Lease, Origin, Project, Split, utcnow
from models.db import session_scope
from models.labels import DISPUTED, EXCLUDED, FINAL, FLAGGED, OPEN, cell_states, labeled_images, \
    unlabeled_pool
from tests.helpers import LoggedIn, make_user
from tests.reading_helpers import (
    class_id, fake_active_model, flat_project, pool_ids, read_cells, shown, submission,
)


def _reader_rows(settings) -> list[Annotation]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(select(Annotation).where(Annotation.origin == Origin.READER)
                              .order_by(Annotation.id)))


def _states(settings, pid):
    with session_scope(settings.database_url) as s:
        return cell_states(s, s.get(Project, pid), Split.POOL)


def _label(reader: LoggedIn, pid: int, html: str, choice: str):
    return reader.post(f"/label/{pid}/cells/{shown(html)}",
                       data={"choice": choice, "submission_id": submission(html)})


# --- leases --------------------------------------------------------------------------------

def test_two_readers_at_once_never_get_the_same_cell(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 6)
    for name in ("r1", "r2"):
        make_user(settings, name, "pathologist")
    r1, r2 = LoggedIn(app.test_client(), "r1"), LoggedIn(app.test_client(), "r2")
    seen1, seen2 = set(), set()
    h1, h2 = r1.get(f"/label/{pid}").text, r2.get(f"/label/{pid}").text
    for _ in range(3):
        assert shown(h1) != shown(h2)
        seen1.add(shown(h1))
        seen2.add(shown(h2))
        h1, h2 = _label(r1, pid, h1, "monocyte").text, _label(r2, pid, h2, "platelet").text
    assert not seen1 & seen2 and len(seen1 | seen2) == 6
    assert shown(h1) is None and shown(h2) is None  # everything read once (k = 1)
    assert len(_reader_rows(settings)) == 6


def test_overlap_when_the_project_asks_for_two_readers(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 3, readers_per_cell=2)
    for name in ("r1", "r2", "r3"):
        make_user(settings, name, "pathologist")
    r1, r2 = LoggedIn(app.test_client(), "r1"), LoggedIn(app.test_client(), "r2")
    h1, h2 = r1.get(f"/label/{pid}").text, r2.get(f"/label/{pid}").text
    assert shown(h1) == shown(h2)  # two readers per cell: both may read it at once
    first = shown(h1)
    # A third reader does not get a cell both slots of which are leased.
    r3 = LoggedIn(app.test_client(), "r3")
    assert shown(r3.get(f"/label/{pid}").text) != first
    h1 = _label(r1, pid, h1, "monocyte").text
    # A reader never sees the same cell twice.
    seen = [first]
    while shown(h1) is not None:
        assert shown(h1) not in seen
        seen.append(shown(h1))
        h1 = _label(r1, pid, h1, "monocyte").text


def test_reload_keeps_the_leased_cell(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 4)
    make_user(settings, "r1", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    first = shown(r1.get(f"/label/{pid}").text)
    assert shown(r1.get(f"/label/{pid}").text) == first
    assert shown(r1.get(f"/label/{pid}/next").text) == first


def test_labeling_refusals_write_nothing(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 4)
    other = flat_project(settings, tmp_path, "other", 2)
    make_user(settings, "r1", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    html = r1.get(f"/label/{pid}").text
    mine = shown(html)
    not_mine = next(i for i in pool_ids(settings, pid) if i != mine)

    response = r1.post(f"/label/{pid}/cells/{not_mine}", data={"choice": "monocyte"})
    assert response.status_code == 409 and f"Cell {not_mine} is not leased to you" in response.text
    assert response.headers.get("HX-Lease-Lost") == "1"
    response = r1.post(f"/label/{pid}/cells/424242", data={"choice": "monocyte"})
    assert response.status_code == 404 and "Cell 424242 does not exist" in response.text
    response = r1.post(f"/label/{pid}/cells/{pool_ids(settings, other)[0]}",
                       data={"choice": "monocyte"})
    assert response.status_code == 404
    response = r1.post(f"/label/{pid}/cells/{mine}", data={"choice": "megakaryocyte"})
    assert response.status_code == 400 and "Unknown class" in response.text
    # 'excluded' is a curator's decision, not a reader's.
    response = r1.post(f"/label/{pid}/cells/{mine}", data={"choice": "excluded"})
    assert response.status_code == 400
    assert _reader_rows(settings) == []

    # Labeled once; labeling it again is refused with the reason.
    assert _label(r1, pid, html, "monocyte").status_code == 200
    response = r1.post(f"/label/{pid}/cells/{mine}", data={"choice": "platelet"})
    assert response.status_code == 409 and "already labeled" in response.text
    assert len(_reader_rows(settings)) == 1


def test_expired_lease_is_refused_quietly_and_a_fresh_cell_follows(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 3)
    make_user(settings, "r1", "pathologist")
    make_user(settings, "r2", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    html = r1.get(f"/label/{pid}").text
    stale = shown(html)
    with session_scope(settings.database_url) as s:
        s.execute(update(Lease).values(expires_at=utcnow() - timedelta(seconds=1)))
    # The closed tab's cell is free for someone else.
    r2 = LoggedIn(app.test_client(), "r2")
    assert shown(r2.get(f"/label/{pid}").text) == stale

    response = _label(r1, pid, html, "monocyte")
    assert response.status_code == 409 and response.headers["HX-Lease-Lost"] == "1"
    assert "ran out" in response.text or "not leased" in response.text
    assert "<html" not in response.text  # a message fragment, never an error page
    assert _reader_rows(settings) == []
    fresh = shown(r1.get(f"/label/{pid}/next").text)
    assert fresh is not None and fresh != stale


def test_double_keypress_and_retry_record_once(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 3)
    make_user(settings, "r1", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    html = r1.get(f"/label/{pid}").text
    first, second = _label(r1, pid, html, "monocyte"), _label(r1, pid, html, "monocyte")
    assert first.status_code == second.status_code == 200
    assert len(_reader_rows(settings)) == 1


def test_reader_total_is_recounted_on_page_load_and_never_shown_to_the_next_user(
        app, settings, tmp_path):
    """"Labeled by you" counts this project's class labels (not flags): counted when
    the page loads and kept in the session after that; a login or logout starts a
    clean session."""
    pid = flat_project(settings, tmp_path, "p", 8)
    for name in ("r1", "r2"):
        make_user(settings, name, "pathologist")
    browser = app.test_client()
    r1 = LoggedIn(browser, "r1")
    html = r1.get(f"/label/{pid}").text
    for _ in range(3):
        html = _label(r1, pid, html, "monocyte").text
    assert 'id="done-count">3<' in html
    # The same reader in a second browser: the first one's total catches up on reload.
    other = LoggedIn(app.test_client(), "r1")
    other_html = other.get(f"/label/{pid}").text
    assert 'id="done-count">3<' in other_html
    _label(other, pid, other_html, "platelet")
    assert 'id="done-count">4<' in r1.get(f"/label/{pid}").text

    # This project's labels only: another project's votes are not counted here.
    other_pid = flat_project(settings, tmp_path, "q", 3)
    other_html = r1.get(f"/label/{other_pid}").text
    assert 'id="done-count">0<' in other_html
    other_html = _label(r1, other_pid, other_html, "platelet").text
    assert 'id="done-count">1<' in other_html
    assert 'id="done-count">4<' in r1.get(f"/label/{pid}").text

    # Class labels only: a flag is a decision but no label, in the kept count as in
    # the recount, and undoing one takes nothing off.
    html = r1.get(f"/label/{pid}").text
    html = _label(r1, pid, html, "ambiguous").text
    assert 'id="done-count">4<' in html
    html = _label(r1, pid, html, "unusable").text
    assert 'id="done-count">4<' in html
    assert 'id="done-count">4<' in r1.get(f"/label/{pid}").text  # recounted
    html = _label(r1, pid, r1.get(f"/label/{pid}").text, "monocyte").text
    assert 'id="done-count">5<' in html
    html = r1.post(f"/label/{pid}/undo").text  # the monocyte
    assert "Undid monocyte" in html and 'id="done-count">4<' in html
    html = r1.post(f"/label/{pid}/undo").text  # the unusable flag
    assert "Undid unusable" in html and 'id="done-count">4<' in html
    assert 'id="done-count">4<' in r1.get(f"/label/{pid}").text

    r1.post("/auth/logout", htmx=False)
    r2 = LoggedIn(browser, "r2")
    html = r2.get(f"/label/{pid}").text
    assert 'id="done-count">0<' in html and 'id="session-count">0<' in html
    assert not re.search(r"undo \(\d+\)", html)  # r1's decisions are not r2's to undo
    assert r2.post(f"/label/{pid}/undo").status_code == 409


def test_cells_per_hour_waits_for_enough_to_measure():
    from webapp.label.routes import per_hour

    assert per_hour(2, 60) is None  # it read "120/h"
    assert per_hour(9, 3600) is None and per_hour(50, 100) is None
    assert per_hour(10, 120) == 300 and per_hour(30, 1800) == 60


# --- undo ------------------------------------------------------------------------------------

def test_backspace_undoes_the_last_decisions(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 14)
    make_user(settings, "r1", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    html = r1.get(f"/label/{pid}").text
    order = []
    for _ in range(12):
        order.append(shown(html))
        html = _label(r1, pid, html, "monocyte").text
    assert 'id="done-count">12<' in html and 'id="session-count">12<' in html

    response = r1.post(f"/label/{pid}/undo")
    assert response.status_code == 200
    assert shown(response.text) == order[-1]  # the undone cell comes back
    # ...and the page says so (it came back silently).
    assert f"Undid monocyte on cell {order[-1]}" in response.text
    assert 'id="done-count">11<' in response.text
    html = _label(r1, pid, response.text, "platelet").text  # relabeled
    rows = _reader_rows(settings)
    assert [r.kind for r in rows].count(Kind.RETRACT) == 1
    states = _states(settings, pid)
    assert states[order[-1]].votes[rows[0].user_id] == class_id(settings, pid, "platelet")

    # Ten decisions of the session stay editable, not more.
    for n in range(10):
        response = r1.post(f"/label/{pid}/undo")
        assert response.status_code == 200, n
    response = r1.post(f"/label/{pid}/undo")
    assert response.status_code == 409 and "last 10 decisions" in response.text
    live = [c for c in _states(settings, pid).values() if c.votes]
    assert len(live) == 2  # 12 cells labeled, the last 10 decisions undone
    assert sum(1 for r in _reader_rows(settings) if r.kind == Kind.RETRACT) == 11


# --- consensus ---------------------------------------------------------------------------------

def _read(app, pid, name, choices):
    return read_cells(app, pid, name, choices)[0]


def test_k_readers_agree_disagree_flag_and_unusable(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 4, readers_per_cell=2)
    for name in ("r1", "r2"):
        make_user(settings, name, "pathologist")
    a = _read(app, pid, "r1", ["monocyte", "platelet", "unusable", "ambiguous"])
    b = _read(app, pid, "r2", ["monocyte", "basophil", "unusable"])
    assert a[:3] == b  # both read the same cells, in queue order...
    # ...except the one flagged ambiguous: it waits for a curator, not a second reader.
    r2 = LoggedIn(app.test_client(), "r2")
    assert shown(r2.get(f"/label/{pid}").text) is None
    states = _states(settings, pid)
    assert [states[i].status for i in a] == [FINAL, DISPUTED, EXCLUDED, FLAGGED]
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        labeled = labeled_images(s, project, Split.POOL)
        pool = {i for i, _ in unlabeled_pool(s, project)}
    assert [x.image_id for x in labeled] == [a[0]]
    assert pool == {a[1], a[3]}  # disputed and flagged are scored; final and excluded not


def test_one_vote_is_not_final_when_k_is_two(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 2, readers_per_cell=2)
    make_user(settings, "r1", "pathologist")
    ids = _read(app, pid, "r1", ["monocyte"])
    assert _states(settings, pid)[ids[0]].status == OPEN
    with session_scope(settings.database_url) as s:
        assert labeled_images(s, s.get(Project, pid), Split.POOL) == []


def test_contested_classes_and_agreement_share_raise_k(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 3, contested_readers=2)
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        project.contested_class_ids = [project.class_by_name("monocyte").id]
    for name in ("r1", "r2"):
        make_user(settings, name, "pathologist")
    a = _read(app, pid, "r1", ["monocyte", "platelet", "platelet"])
    states = _states(settings, pid)
    assert [states[i].status for i in a] == [OPEN, FINAL, FINAL]
    assert states[a[0]].need == 2
    # The monocyte cell goes to a second reader; the others are done.
    b = _read(app, pid, "r2", ["monocyte"])
    assert b == [a[0]] and _states(settings, pid)[a[0]].status == FINAL

    # An agreement share of 1 puts every cell in the sample.
    pid2 = flat_project(settings, tmp_path, "all", 2, contested_readers=2, agreement_share=1.0)
    ids = _read(app, pid2, "r1", ["platelet"])
    assert _states(settings, pid2)[ids[0]].need == 2


def test_weak_or_uncalibrated_model_suggestions_are_tentative(app, settings, tmp_path):
    """Issue 14: "ig 88%" from a model with 17% test accuracy looked trustworthy."""
    from tests.reading_helpers import measured_metrics

    pid = flat_project(settings, tmp_path, "p", 3)
    ids = pool_ids(settings, pid)
    make_user(settings, "r1", "pathologist")
    with session_scope(settings.database_url) as s:
        names = [c.name for c in s.get(Project, pid).classes]
    cases = [(measured_metrics(names, accuracy=0.2), True, "model right on 20% of 80 test cells"),
             (measured_metrics(names, accuracy=0.9), False, "model right on 90% of 80 test cells"),
             (measured_metrics(names, accuracy=0.9, calibrated=False), True, "90%"),
             ({}, True, "model accuracy not measured yet")]
    for metrics, tentative, accuracy_text in cases:
        fake_active_model(settings, pid, {i: ("ig", 0.88) for i in ids}, metrics=metrics)
        html = LoggedIn(app.test_client(), "r1").get(f"/label/{pid}").text
        assert accuracy_text in html
        assert ('class="tentative-tag"' in html) is tentative, metrics
    # The threshold is the project's.
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).suggestion_min_accuracy = 0.1
    fake_active_model(settings, pid, {i: ("ig", 0.88) for i in ids},
                      metrics=measured_metrics(names, accuracy=0.2))
    html = LoggedIn(app.test_client(), "r1").get(f"/label/{pid}").text
    assert 'class="tentative-tag"' not in html and 'id="model-accuracy"' in html


def test_blind_reading_hides_suggestions(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 3, blind_reading=True)
    fake_active_model(settings, pid, {i: ("monocyte", 0.95) for i in pool_ids(settings, pid)})
    make_user(settings, "r1", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    html = r1.get(f"/label/{pid}").text
    assert "Blind reading" in html and "suggestion-name" not in html
    assert 'name="suggested_class_id"' not in html
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).blind_reading = False
    html = r1.get(f"/label/{pid}").text
    assert 'id="suggestion-name">monocyte<' in html and 'data-hotkey="x"' in html


# --- bulk verification ------------------------------------------------------------------------

def test_bulk_verification(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 8)
    ids = pool_ids(settings, pid)
    predicted = {i: ("basophil", 0.95) for i in ids[:5]}
    predicted[ids[5]] = ("basophil", 0.5)  # below the threshold
    predicted[ids[6]] = ("monocyte", 0.99)  # another class
    version = fake_active_model(settings, pid, predicted)
    make_user(settings, "r1", "pathologist")
    make_user(settings, "r2", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    page = r1.get(f"/label/{pid}/verify?class=basophil&min=0.9")
    assert page.status_code == 200
    grid = [i for i in ids if f'data-image-id="{i}"' in page.text]
    assert sorted(grid) == sorted(ids[:5])
    # Another reader meanwhile gets none of the grid's cells (they are leased).
    r2 = LoggedIn(app.test_client(), "r2")
    assert not {i for i in ids if f'data-image-id="{i}"' in
                r2.get(f"/label/{pid}/verify?class=basophil&min=0.9").text} & set(grid)

    wrong = grid[0]
    form = {"class": "basophil", "min": "0.9", "model_version_id": str(version), "batch": "b1",
            "image_id": [str(i) for i in grid], "wrong": [str(wrong)]}
    response = r1.post(f"/label/{pid}/verify", data=form, htmx=False)
    assert response.status_code == 302
    again = r1.post(f"/label/{pid}/verify", data=form, htmx=False)  # a retried request
    assert again.status_code == 302
    rows = [r for r in _reader_rows(settings) if r.kind != Kind.REJECT]
    assert sorted(r.image_id for r in rows) == sorted(grid[1:])
    bas = class_id(settings, pid, "basophil")
    assert all(r.kind == Kind.VERIFY and r.label_class_id == bas == r.suggested_class_id
               and r.model_version_id == version for r in rows)
    # The wrong one is back in the queue, for ordinary labeling.
    with session_scope(settings.database_url) as s:
        assert s.scalar(select(func.count(Lease.id)).where(Lease.image_id == wrong)) == 0

    # Bad input: a cell outside the grid's class, or not leased; nothing written.
    for bad in [{"image_id": [str(ids[6])]}, {"image_id": [str(ids[7])]},
                {"image_id": ["x"]}, {"class": "nope"}, {"model_version_id": "999"},
                {"wrong": [str(ids[6])], "image_id": [str(ids[6])]}]:
        response = r1.post(f"/label/{pid}/verify", data={**form, "batch": "b2", "wrong": [],
                                                        **bad})
        assert 400 <= response.status_code < 500, bad
    assert len(_reader_rows(settings)) == 5  # four verifications and one rejection


def _grid(reader: LoggedIn, pid: int, ids: list[int], cls: str = "basophil") -> list[int]:
    html = reader.get(f"/label/{pid}/verify?class={cls}&min=0.5").text
    return [i for i in ids if f'data-image-id="{i}"' in html]


def test_bulk_rejections_are_recorded_and_leave_the_grid(app, settings, tmp_path):
    """Issue 14, defect 1: cells marked wrong came straight back unticked, recorded nowhere."""
    pid = flat_project(settings, tmp_path, "p", 10)
    ids = pool_ids(settings, pid)
    version = fake_active_model(settings, pid, {i: ("basophil", 0.9) for i in ids})
    make_user(settings, "r1", "pathologist")
    make_user(settings, "r2", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    grid = _grid(r1, pid, ids)
    assert len(grid) == 10
    wrong, confirmed = grid[:7], grid[7:]
    response = r1.post(f"/label/{pid}/verify", htmx=False, data={
        "class": "basophil", "min": "0.5", "model_version_id": str(version), "batch": "b1",
        "image_id": [str(i) for i in grid], "wrong": [str(i) for i in wrong]})
    assert response.status_code == 302
    # Recorded: one rejection of the basophil suggestion per wrong cell.
    bas = class_id(settings, pid, "basophil")
    rejections = [r for r in _reader_rows(settings) if r.kind == Kind.REJECT]
    assert sorted(r.image_id for r in rejections) == sorted(wrong)
    assert all(r.suggested_class_id == bas and r.label_class_id is None and r.flag is None
               and r.model_version_id == version for r in rejections)
    # The reloaded grid does not bring them back (nor the confirmed ones).
    assert _grid(r1, pid, ids) == []
    # A rejection is no vote: the cells stay open, and still come to this reader one by one.
    states = _states(settings, pid)
    assert all(states[i].status == OPEN and not states[i].votes for i in wrong)
    assert all(states[i].rejected == {rejections[0].user_id: {bas}} for i in wrong)
    assert all(states[i].status == FINAL for i in confirmed)
    seen = set()
    html = r1.get(f"/label/{pid}").text
    while shown(html) is not None:
        seen.add(shown(html))
        html = _label(r1, pid, html, "monocyte").text
    assert seen == set(wrong)
    assert 'id="done-count">10<' in html  # 3 verified + 7 labeled; rejections count nothing


def test_a_rejected_label_that_became_final_goes_to_the_curator(app, settings, tmp_path):
    """k = 1: r1 rejects basophil for a cell in the grid, r2 confirms it. The cell is final
    as basophil, but a reader said it is not: the curator's worklist lists it."""
    pid = flat_project(settings, tmp_path, "p", 2)
    ids = pool_ids(settings, pid)
    version = fake_active_model(settings, pid, {i: ("basophil", 0.9) for i in ids})
    make_user(settings, "r1", "pathologist")
    make_user(settings, "r2", "pathologist")
    make_user(settings, "cara", "curator")
    r1 = LoggedIn(app.test_client(), "r1")  # (r2 logs in later: login leases a cell)
    grid = _grid(r1, pid, ids)
    assert sorted(grid) == ids
    response = r1.post(f"/label/{pid}/verify", htmx=False, data={
        "class": "basophil", "min": "0.5", "model_version_id": str(version), "batch": "b1",
        "image_id": [str(i) for i in grid], "wrong": [str(grid[0])]})
    assert response.status_code == 302, response.text
    r2 = LoggedIn(app.test_client(), "r2")
    grid2 = _grid(r2, pid, ids)
    assert grid2 == [grid[0]]  # the rejection was r1's alone
    r2.post(f"/label/{pid}/verify", htmx=False, data={
        "class": "basophil", "min": "0.5", "model_version_id": str(version), "batch": "b2",
        "image_id": [str(grid[0])]})
    assert _states(settings, pid)[grid[0]].status == FINAL
    curator = LoggedIn(app.test_client(), "cara")
    index = curator.get("/curate/").text
    assert f'data-image-id="{grid[0]}"' in index and "a reader rejected this label" in index
    assert "r1: not basophil" in index
    assert f'data-image-id="{grid[1]}"' not in index  # confirmed by r1, rejected by nobody
    history = curator.get(f"/curate/cells/{grid[0]}/history").text
    assert "marked the suggestion basophil wrong in bulk verification" in history


def test_bulk_rejection_is_no_vote_with_two_readers(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 4, readers_per_cell=2)
    ids = pool_ids(settings, pid)
    version = fake_active_model(settings, pid, {i: ("basophil", 0.9) for i in ids})
    make_user(settings, "r1", "pathologist")
    make_user(settings, "r2", "pathologist")
    r1, r2 = LoggedIn(app.test_client(), "r1"), LoggedIn(app.test_client(), "r2")
    grid = _grid(r1, pid, ids)
    r1.post(f"/label/{pid}/verify", htmx=False, data={
        "class": "basophil", "min": "0.5", "model_version_id": str(version), "batch": "b1",
        "image_id": [str(i) for i in grid], "wrong": [str(i) for i in grid]})
    assert _grid(r1, pid, ids) == []
    # r2 sees all four and confirms them: one vote each, not final with k = 2.
    grid2 = _grid(r2, pid, ids)
    assert sorted(grid2) == sorted(ids)
    r2.post(f"/label/{pid}/verify", htmx=False, data={
        "class": "basophil", "min": "0.5", "model_version_id": str(version), "batch": "b2",
        "image_id": [str(i) for i in grid2]})
    states = _states(settings, pid)
    assert all(c.status == OPEN and len(c.votes) == 1 for c in states.values())
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        assert labeled_images(s, project, Split.POOL) == []
        assert set(s.scalars(select(Image.open_slots).where(Image.project_id == pid))) == {1}


def test_bulk_verification_waits_for_measured_precision(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 4)
    ids = pool_ids(settings, pid)
    version = fake_active_model(settings, pid, {i: ("basophil", 0.9) for i in ids},
                                metrics={"test": {"n": 0, "accuracy": None}})
    make_user(settings, "r1", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    html = r1.get(f"/label/{pid}/verify?class=basophil&min=0.5").text
    assert 'id="verify-closed"' in html and _grid(r1, pid, ids) == []
    response = r1.post(f"/label/{pid}/verify", htmx=False, data={
        "class": "basophil", "min": "0.5", "model_version_id": str(version), "batch": "b1",
        "image_id": [str(ids[0])]})
    assert response.status_code == 409 and "precision" in response.text
    assert _reader_rows(settings) == []


# --- 50 readers at once ---------------------------------------------------------------------

@pytest.mark.slow
def test_fifty_readers_at_once_lose_nothing(app, settings, tmp_path):
    # Each reader labels two cells and is then handed (leased) a third: 150 cells.
    pid = flat_project(settings, tmp_path, "p", 160)
    readers = []
    for n in range(50):
        make_user(settings, f"r{n}", "pathologist")
    for n in range(50):
        readers.append(LoggedIn(app.test_client(), f"r{n}"))
    start = threading.Barrier(50)
    saved: list[tuple[int, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work(n: int, reader: LoggedIn) -> None:
        try:
            html = reader.get(f"/label/{pid}").text
            start.wait()
            for _ in range(2):
                image = shown(html)
                if image is None:
                    errors.append(f"{n}: no cell offered " + re.search(r'remaining="(\d+)"', html).group(1))
                    return
                response = _label(reader, pid, html, "lymphocyte")
                if response.status_code != 200:
                    errors.append(f"{n}: {response.status_code} {response.text[:200]}")
                    return
                with lock:
                    saved.append((n, image))
                html = response.text
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"{n}: {exc!r}")

    threads = [threading.Thread(target=work, args=(n, r)) for n, r in enumerate(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == []
    rows = _reader_rows(settings)
    assert len(rows) == len(saved) == 100
    assert len({r.image_id for r in rows}) == 100  # k = 1: no cell read twice


def test_a_stale_candidate_list_cannot_lease_a_labeled_cell(app, settings, tmp_path):
    """Between choosing a cell and claiming it, another reader may lease and label it."""
    from webapp.label.leases import try_lease

    pid = flat_project(settings, tmp_path, "p", 2)
    make_user(settings, "r1", "pathologist")
    late = make_user(settings, "r2", "pathologist")
    r1 = LoggedIn(app.test_client(), "r1")
    html = r1.get(f"/label/{pid}").text
    cell = shown(html)
    assert _label(r1, pid, html, "monocyte").status_code == 200
    # r2 computed slot 0 for this cell before r1 labeled it; r1's lease on slot 0 is gone.
    with session_scope(settings.database_url) as s:
        assert not try_lease(s, s.get(Project, pid), cell, late, 0, utcnow())
        s.commit()
        assert s.scalar(select(func.count(Lease.id)).where(Lease.image_id == cell)) == 0
