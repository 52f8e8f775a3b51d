"""Issue 15, item 3: cell measurements for curators.

A describe run measures real PBC cells on a real Celery worker (queued by the
admin button and, by itself, after a browser import), records a damaged file
as that cell's failure and goes on; the curator's panel shows each value with
the 10th–90th percentile of the classes in question, checked against values
worked out by hand.  SQLite and PostgreSQL (``database_url``).
"""

from __future__ import annotations

import io
import re
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from models import (Annotation, CellMeasurement, DescribeRun, DescribeStatus, Image, ImportJob,
                    ImportStatus, LabelClass, Origin, Project, ProjectMember, User)
from models.db import session_scope
from tests.helpers import (LoggedIn, base_env, csrf_token, make_user, running_worker,
                           small_demo_copy)
from webapp.bootstrap import create_project
from webapp.curate.measurements import MIN_CELLS, class_range, percentile
from webapp.ingest import import_path

CLASSES = ["lymphocyte", "neutrophil", "platelet"]


def _project(settings, tmp_path, per_class: int = 2, name: str = "cells") -> int:
    """Real demo cells, their class folders trusted: every cell is final with its class."""
    src = small_demo_copy(tmp_path / f"src-{name}", per_class=per_class, classes=CLASSES)
    with session_scope(settings.database_url) as s:
        project = create_project(s, name, "pbc8", test_share=0.0, train_on_reference=True)
        report = import_path(s, settings.storage_dir, project, src,
                             max_pixels=settings.max_image_pixels)
        assert report.imported == per_class * len(CLASSES)
        return project.id


def _cells(settings, pid: int) -> list[Image]:
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(Image).where(Image.project_id == pid).order_by(Image.id)).all()
        s.expunge_all()
        return rows


def _run(settings, run_id: int) -> DescribeRun:
    with session_scope(settings.database_url) as s:
        run = s.get(DescribeRun, run_id)
        s.expunge(run)
        return run


def _wait(settings, condition, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the worker did not finish in time"
        time.sleep(0.2)


def _runs(settings, pid: int) -> list[DescribeRun]:
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(DescribeRun).where(DescribeRun.project_id == pid)
                         .order_by(DescribeRun.id)).all()
        s.expunge_all()
        return rows


def _measurements(settings, pid: int) -> dict[int, CellMeasurement]:
    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(CellMeasurement).where(CellMeasurement.project_id == pid)).all()
        s.expunge_all()
        return {m.image_id: m for m in rows}


@pytest.mark.slow
def test_admin_run_on_a_real_worker_measures_real_cells_and_survives_a_damaged_file(
        app, settings, tmp_path):
    from worker.ml.descriptors import DESCRIPTOR_VERSION, FEATURE_NAMES, describe_path

    pid = _project(settings, tmp_path)
    cells = _cells(settings, pid)
    damaged = cells[1]
    (settings.storage_dir / damaged.storage_path).write_bytes(b"\xff\xd8 not a jpeg any more")
    make_user(settings, "boss", "admin")
    boss = LoggedIn(app.test_client(), "boss")

    page = boss.get(f"/admin/projects/{pid}")
    assert 'id="measurements"' in page.text
    status = boss.get(f"/admin/projects/{pid}/describe/status")
    assert status.status_code == 286 and 'id="n-measured">0</span> of 6 cell(s)' in status.text
    response = boss.post(f"/admin/projects/{pid}/describe",
                         data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 302
    (run,) = _runs(settings, pid)
    assert run.status == DescribeStatus.QUEUED and run.trigger == "admin"
    status = boss.get(f"/admin/projects/{pid}/describe/status")
    assert status.status_code == 200 and 'hx-trigger="every 5s"' in status.text  # polls
    # A second click while it waits queues nothing more.
    again = boss.post(f"/admin/projects/{pid}/describe", data={"csrf_token": csrf_token(page.text)},
                      follow_redirects=True)
    assert "already queued" in again.text and len(_runs(settings, pid)) == 1

    with running_worker(app.extensions["celery"]):
        _wait(settings, lambda: _run(settings, run.id).status.is_finished)

    run = _run(settings, run.id)
    assert run.status == DescribeStatus.SUCCEEDED, run.error
    assert (run.cells_total, run.cells_done, run.cells_failed) == (6, 6, 1)
    assert run.descriptor_version == DESCRIPTOR_VERSION
    rows = _measurements(settings, pid)
    assert set(rows) == {c.id for c in cells}
    assert rows[damaged.id].error == "The image file cannot be decoded."
    assert rows[damaged.id].nucleus_area_px is None
    for cell in cells:
        if cell.id == damaged.id:
            continue
        m = rows[cell.id]
        assert m.error is None and m.nucleus_found and m.descriptor_version == DESCRIPTOR_VERSION
        # The stored values are the descriptor code's, in pixels of the stored image.
        vector = describe_path(settings.storage_dir / cell.storage_path)
        v = dict(zip(FEATURE_NAMES, vector.tolist()))
        assert m.nucleus_area_px == pytest.approx(v["nucleus_area"] * cell.width * cell.height)
        assert m.nucleus_lobes == round(v["nucleus_lobes"]) >= 1
        assert m.nucleus_to_cell == pytest.approx(v["nucleus_to_cell"])
        # A PBC cell image is ~360 px: its nucleus is thousands of pixels, within its cell.
        assert 1000 < m.nucleus_area_px <= m.cell_area_px < cell.width * cell.height
        assert 0 < m.nucleus_to_cell <= 1
    # The descriptors went into the rounds' feature store too (segmented once for both).
    assert list((settings.storage_dir / "features").glob("descriptors-v*-cell/*/*.npy"))

    status = boss.get(f"/admin/projects/{pid}/describe/status")
    assert status.status_code == 286  # htmx stops polling
    assert 'id="n-measured">5<' in status.text and 'id="n-measure-failed">1<' in status.text

    # The file restored, the button measures that one cell and nothing else.
    restore = small_demo_copy(tmp_path / "again", per_class=2, classes=CLASSES)
    match = [f for f in restore.rglob("*") if f.name == damaged.original_name.rsplit("/", 1)[-1]]
    assert match, damaged.original_name
    (settings.storage_dir / damaged.storage_path).write_bytes(match[0].read_bytes())
    boss.post(f"/admin/projects/{pid}/describe", data={"csrf_token": csrf_token(page.text)})
    second = _runs(settings, pid)[-1]
    with running_worker(app.extensions["celery"]):
        _wait(settings, lambda: _run(settings, second.id).status.is_finished)
    second = _run(settings, second.id)
    assert (second.status, second.cells_total, second.cells_failed) == (DescribeStatus.SUCCEEDED, 1, 0)
    assert _measurements(settings, pid)[damaged.id].error is None


def _zip_of(folder) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for f in sorted(folder.rglob("*.jpg")):
            z.write(f, f.relative_to(folder).as_posix())
    return buffer.getvalue()


@pytest.mark.slow
def test_a_browser_import_queues_the_measurements_by_itself(app, settings, tmp_path):
    make_user(settings, "boss", "admin")
    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "pbc8", test_share=0.0).id
    boss = LoggedIn(app.test_client(), "boss")
    page = boss.get(f"/admin/projects/{pid}")
    archive = _zip_of(small_demo_copy(tmp_path / "up", per_class=1, classes=CLASSES))
    response = boss.post(f"/admin/projects/{pid}/imports",
                         data={"csrf_token": csrf_token(page.text),
                               "files": [(io.BytesIO(archive), "cells.zip")]},
                         content_type="multipart/form-data")
    assert response.status_code == 302, response.text
    job_id = int(response.location.rsplit("/", 1)[1])

    def done() -> bool:
        runs = _runs(settings, pid)
        return bool(runs) and runs[-1].status.is_finished

    with running_worker(app.extensions["celery"]):
        _wait(settings, done)
    with session_scope(settings.database_url) as s:
        assert s.get(ImportJob, job_id).status == ImportStatus.SUCCEEDED
    (run,) = _runs(settings, pid)
    assert (run.trigger, run.status, run.cells_total, run.cells_failed) == (
        "import", DescribeStatus.SUCCEEDED, 3, 0)
    assert len(_measurements(settings, pid)) == 3


def test_an_import_that_added_nothing_queues_no_run(app, settings, tmp_path):
    from worker.describe import describe_after_import

    with session_scope(settings.database_url) as s:
        pid = create_project(s, "cells", "pbc8", test_share=0.0).id
        job = ImportJob(project_id=pid, source="x", upload_dir="uploads/x",
                        status=ImportStatus.SUCCEEDED, report={"imported": 0, "duplicates": 3})
        s.add(job)
        s.flush()
        job_id = job.id
    assert describe_after_import(settings, app.extensions["celery"], job_id) is None
    assert _runs(settings, pid) == []


# --- the ranges, against values worked out by hand ---------------------------------------

def test_percentile_matches_numpy_and_hand_values():
    assert percentile([1, 2, 3, 4, 5, 6], 10) == pytest.approx(1.5)  # rank 0.5
    assert percentile([1, 2, 3, 4, 5, 6], 90) == pytest.approx(5.5)  # rank 4.5
    assert percentile([7.0], 90) == 7.0
    rng = np.random.default_rng(0)
    for n in (2, 5, 17, 100):
        values = sorted(rng.normal(size=n).tolist())
        for q in (0, 10, 50, 90, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    r = class_range([1, 2, 3, 4, 5, 6], 1.4)
    assert (r.n, r.low, r.high, r.place) == (6, pytest.approx(1.5), pytest.approx(5.5), "below")
    assert class_range([1, 2, 3, 4, 5, 6], 5.5).place == "inside"
    assert class_range([1, 2, 3, 4, 5, 6], 5.6).place == "above"
    few = class_range([1, 2, 3, 4], 2)
    assert MIN_CELLS == 5 and (few.n, few.low, few.place) == (4, None, None)


def _set_values(settings, pid, values: dict[int, dict]) -> None:
    with session_scope(settings.database_url) as s:
        for image_id, v in values.items():
            s.merge(CellMeasurement(image_id=image_id, project_id=pid, descriptor_version=1,
                                    nucleus_found=True, cytoplasm_found=True, **v))


def _range_cell(html: str, measure: str, class_name: str) -> dict:
    row = re.search(rf'<tr data-measure="{measure}">(.*?)</tr>', html, re.S).group(1)
    cell = re.search(rf'<td class="range ?(\w*)" data-class="{class_name}" data-n="(\d+)"\s*'
                     r'(?:data-low="([^"]+)" data-high="([^"]+)")?', row)
    return {"place": cell.group(1) or None, "n": int(cell.group(2)),
            "low": cell.group(3) and float(cell.group(3)),
            "high": cell.group(4) and float(cell.group(4))}


def test_panel_ranges_are_the_hand_computed_percentiles(app, settings, tmp_path):
    pid = _project(settings, tmp_path, per_class=6)
    make_user(settings, "ann", "pathologist")
    make_user(settings, "bob", "pathologist")
    make_user(settings, "cara", "curator")
    cells = _cells(settings, pid)
    with session_scope(settings.database_url) as s:
        classes = {c.name: c.id for c in s.scalars(select(LabelClass).where(
            LabelClass.project_id == pid))}
        ref = dict(s.execute(select(Annotation.image_id, Annotation.label_class_id).where(
            Annotation.origin == Origin.REFERENCE)).all())
    lymph = [c.id for c in cells if ref[c.id] == classes["lymphocyte"]]
    neutro = [c.id for c in cells if ref[c.id] == classes["neutrophil"]]
    target = lymph[0]
    # Two readers disagree on the target: lymphocyte and neutrophil are in question.
    with session_scope(settings.database_url) as s:
        users = dict(s.execute(select(User.username, User.id)).all())
        s.add(Annotation(image_id=target, user_id=users["ann"], origin=Origin.READER,
                         label_class_id=classes["lymphocyte"]))
        s.add(Annotation(image_id=target, user_id=users["bob"], origin=Origin.READER,
                         label_class_id=classes["neutrophil"]))
    # Lymphocytes other than the target: 5 cells, areas 100..500 px; neutrophils 6 cells,
    # 1000..6000.  Lobes: lymphocytes 1, neutrophils 2,3,3,4,4,5.  The target: 250 px, 3 lobes.
    values = {i: {"nucleus_area_px": 100.0 * (k + 1), "nucleus_lobes": 1, "nucleus_to_cell": 0.8}
              for k, i in enumerate(lymph[1:])}
    values.update({i: {"nucleus_area_px": 1000.0 * (k + 1), "nucleus_lobes": lobes,
                       "nucleus_to_cell": None}
                   for k, (i, lobes) in enumerate(zip(neutro, [2, 3, 3, 4, 4, 5]))})
    values[target] = {"nucleus_area_px": 250.0, "nucleus_lobes": 3, "nucleus_to_cell": 0.9}
    _set_values(settings, pid, values)
    # A failed row and an older version's row are never part of a range.
    platelet = next(c.id for c in cells if ref[c.id] == classes["platelet"])
    with session_scope(settings.database_url) as s:
        s.merge(CellMeasurement(image_id=platelet, project_id=pid, descriptor_version=1,
                                error="The image file cannot be decoded."))

    cara = LoggedIn(app.test_client(), "cara")
    page = cara.get(f"/curate/cells/{target}")
    html = cara.get(f"/curate/cells/{target}/measurements").text
    # The cell page carries the same panel, beside the votes.
    assert page.status_code == 200
    assert page.text.index('id="votes"') < page.text.index('id="measurements-panel"')
    for measure in ("nucleus_area_px", "nucleus_lobes", "nucleus_to_cell"):
        for name in ("lymphocyte", "neutrophil"):
            assert _range_cell(page.text, measure, name) == _range_cell(html, measure, name)
    # Areas: lymphocytes [100..500]: p10 = 100 + 0.4*100 = 140, p90 = 460; 250 inside.
    assert _range_cell(html, "nucleus_area_px", "lymphocyte") == {
        "place": "inside", "n": 5, "low": 140.0, "high": 460.0}
    # Neutrophils [1000..6000]: rank 0.5 -> 1500, rank 4.5 -> 5500; 250 below.
    assert _range_cell(html, "nucleus_area_px", "neutrophil") == {
        "place": "below", "n": 6, "low": 1500.0, "high": 5500.0}
    # Lobes: lymphocytes all 1 (3 above); neutrophils [2,3,3,4,4,5] -> 2.5..4.5 (3 inside).
    assert _range_cell(html, "nucleus_lobes", "lymphocyte")["place"] == "above"
    assert _range_cell(html, "nucleus_lobes", "neutrophil") == {
        "place": "inside", "n": 6, "low": 2.5, "high": 4.5}
    # Neutrophils have no ratio: n = 0, no range, no mark.
    assert _range_cell(html, "nucleus_to_cell", "neutrophil") == {
        "place": None, "n": 0, "low": None, "high": None}
    assert "250 px" in html and "(voted)" in html and "platelet" not in html

    # With the project's pixel size, areas are µm² (0.5 µm/px: x 0.25), ranges too.
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).microns_per_pixel = 0.5
    html = cara.get(f"/curate/cells/{target}/measurements").text
    assert _range_cell(html, "nucleus_area_px", "lymphocyte") == {
        "place": "inside", "n": 5, "low": 35.0, "high": 115.0}
    assert "62 µm²" in html and "(250 px)" in html  # 62.5 rounds to even

    # The failed cell says why; a cell with no row says it is not measured yet.
    failed = cara.get(f"/curate/cells/{platelet}/measurements").text
    assert 'id="measure-failed"' in failed and "cannot be decoded" in failed
    with session_scope(settings.database_url) as s:
        s.delete(s.get(CellMeasurement, neutro[0]))
    assert 'id="not-measured"' in cara.get(f"/curate/cells/{neutro[0]}/measurements").text


def test_who_may_see_and_start_measurements(app, settings, tmp_path):
    pid = _project(settings, tmp_path, per_class=1)
    with session_scope(settings.database_url) as s:
        other = create_project(s, "other", "pbc8", test_share=0.0).id
    cell = _cells(settings, pid)[0].id
    make_user(settings, "reader", "pathologist")
    make_user(settings, "cara", "curator")
    make_user(settings, "boss", "admin")
    # A curator of another project only.
    make_user(settings, "outsider", "curator")
    with session_scope(settings.database_url) as s:
        uid = s.scalar(select(User.id).where(User.username == "outsider"))
        s.query(ProjectMember).filter_by(user_id=uid, project_id=pid).delete()
        assert s.get(Project, other) is not None

    reader = LoggedIn(app.test_client(), "reader")
    assert reader.get(f"/curate/cells/{cell}/measurements").status_code == 403
    outsider = LoggedIn(app.test_client(), "outsider")
    assert outsider.get(f"/curate/cells/{cell}/measurements").status_code == 404
    cara = LoggedIn(app.test_client(), "cara")
    assert cara.get(f"/curate/cells/{cell}/measurements").status_code == 200
    assert cara.get("/curate/cells/987654/measurements").status_code == 404
    html = cara.get(f"/curate/cells/{cell}").text
    assert cara.post(f"/admin/projects/{pid}/describe",
                     data={"csrf_token": csrf_token(html)}).status_code == 403
    assert cara.get(f"/admin/projects/{pid}/describe/status").status_code == 403
    boss = LoggedIn(app.test_client(), "boss")
    # Without the CSRF token nothing is queued.
    assert boss.client.post(f"/admin/projects/{pid}/describe").status_code == 400
    assert boss.post("/admin/projects/987654/describe").status_code == 404
    assert _runs(settings, pid) == []


def test_a_broker_that_is_down_fails_the_run_with_a_message(settings, tmp_path):
    from models.settings import load_settings
    from webapp import create_app

    pid = _project(settings, tmp_path, per_class=1)
    down = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url,
                                  HEMALOOP_BROKER_URL="redis://127.0.0.1:1/0"))
    app = create_app(down)
    app.config["TESTING"] = True
    make_user(settings, "boss", "admin")
    boss = LoggedIn(app.test_client(), "boss")
    page = boss.get(f"/admin/projects/{pid}")
    response = boss.post(f"/admin/projects/{pid}/describe",
                         data={"csrf_token": csrf_token(page.text)}, follow_redirects=True)
    assert "could not be queued" in response.text
    (run,) = _runs(settings, pid)
    assert run.status == DescribeStatus.FAILED and "broker" in run.error
    # A failed run blocks nothing: the next click queues a new one.
    boss.post(f"/admin/projects/{pid}/describe", data={"csrf_token": csrf_token(page.text)})
    assert len(_runs(settings, pid)) == 2


def test_a_run_whose_worker_went_silent_no_longer_blocks(settings, tmp_path):
    from datetime import timedelta

    from models.base import utcnow
    from worker.describe_launch import LOST, DescribeBusy, create_run

    pid = _project(settings, tmp_path, per_class=1)
    with session_scope(settings.database_url) as s:
        s.add(DescribeRun(project_id=pid, status=DescribeStatus.RUNNING,
                          started_at=utcnow() - timedelta(hours=1),
                          heartbeat_at=utcnow() - timedelta(seconds=settings.round_stale_seconds + 5)))
    with session_scope(settings.database_url) as s:
        run = create_run(s, pid, trigger="cli", stale_seconds=settings.round_stale_seconds)
        with pytest.raises(DescribeBusy):
            create_run(s, pid, trigger="cli", stale_seconds=settings.round_stale_seconds)
        assert run.status == DescribeStatus.QUEUED
    lost = _runs(settings, pid)[0]
    assert lost.status == DescribeStatus.FAILED and lost.error == LOST


def test_cli_describe_inline_with_a_progress_bar(settings, tmp_path):
    from webapp.cli import main

    _project(settings, tmp_path, per_class=1)
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    result = CliRunner().invoke(main, ["describe", "--project", "cells", "--inline"], env=env)
    assert result.exit_code == 0, result.output
    assert "measuring run 1" in result.stderr  # the bar
    assert "succeeded, 3 of 3 cell(s), 0 could not be measured" in result.stdout
    again = CliRunner().invoke(main, ["describe", "--project", "cells", "--inline"], env=env)
    assert "succeeded, 0 of 0 cell(s)" in again.stdout
    missing = CliRunner().invoke(main, ["describe", "--project", "nope", "--inline"], env=env)
    assert missing.exit_code != 0 and "nope" in missing.output


def test_measurement_values_scale_shares_to_stored_pixels():
    from worker.describe import measurement_values
    from worker.ml.descriptors import FEATURE_NAMES

    v = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    names = {n: i for i, n in enumerate(FEATURE_NAMES)}
    for name, value in {"nucleus_found": 1, "cytoplasm_found": 0, "nucleus_area": 0.25,
                        "cell_area": 0.5, "nucleus_lobes": 2.0, "nucleus_to_cell": 0.5}.items():
        v[names[name]] = value
    out = measurement_values(v, 360, 200)  # not square: a share of the square is one of the image
    assert out["nucleus_area_px"] == pytest.approx(18000.0)
    assert out["cell_area_px"] == pytest.approx(36000.0)
    assert (out["nucleus_lobes"], out["nucleus_found"], out["cytoplasm_found"]) == (2, True, False)
    v[names["nucleus_found"]] = 0
    assert measurement_values(v, 360, 200)["nucleus_area_px"] is None


def test_the_pixel_size_is_a_project_setting(app, settings, tmp_path):
    pid = _project(settings, tmp_path, per_class=1)
    make_user(settings, "boss", "admin")
    boss = LoggedIn(app.test_client(), "boss")
    form = {"min_labels_per_class": "1", "fine_tune_blocks": "0", "warm_start": "y"}
    page = boss.get(f"/admin/projects/{pid}/settings")
    assert 'name="microns_per_pixel"' in page.text
    refused = boss.post(f"/admin/projects/{pid}/settings", data={**form, "microns_per_pixel": "-1"})
    assert refused.status_code == 400
    assert boss.post(f"/admin/projects/{pid}/settings",
                     data={**form, "microns_per_pixel": "0.24"}).status_code == 302
    with session_scope(settings.database_url) as s:
        assert s.get(Project, pid).microns_per_pixel == pytest.approx(0.24)
    boss.post(f"/admin/projects/{pid}/settings", data={**form, "microns_per_pixel": ""})
    with session_scope(settings.database_url) as s:
        assert s.get(Project, pid).microns_per_pixel is None


def test_api_v1_cell_detail_carries_the_measurements(app, settings, tmp_path):
    from tests.api_helpers import bearer, make_token

    pid = _project(settings, tmp_path, per_class=1)
    first, second = (c.id for c in _cells(settings, pid)[:2])
    _set_values(settings, pid, {first: {"nucleus_area_px": 400.0, "nucleus_lobes": 2,
                                        "nucleus_to_cell": 0.5}})
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).microns_per_pixel = 0.5
    headers = bearer(make_token(settings, make_user(settings, "cara", "curator"), ["read"]))
    client = app.test_client()
    body = client.get(f"/api/v1/cells/{first}", headers=headers).get_json()
    m = body["measurements"]
    assert (m["nucleus_area_px"], m["nucleus_area_um2"], m["nucleus_lobes"], m["error"]) == (
        400.0, 100.0, 2, None)
    assert client.get(f"/api/v1/cells/{second}", headers=headers).get_json()["measurements"] is None
    spec = client.get("/api/v1/openapi.json").get_json()
    assert "measurements" in spec["components"]["schemas"]["CellDetailOut"]["properties"]


@pytest.mark.slow
def test_cli_describe_on_a_worker_follows_the_row(app, settings, tmp_path):
    from webapp.cli import main

    _project(settings, tmp_path, per_class=1)
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    with running_worker(app.extensions["celery"]):
        result = CliRunner().invoke(main, ["describe", "--project", "cells"], env=env)
    assert result.exit_code == 0, result.output
    assert "measuring run 1 queued" in result.stdout
    assert "succeeded, 3 of 3 cell(s), 0 could not be measured" in result.stdout
    (run,) = _runs(settings, 1)
    assert run.trigger == "cli" and run.status == DescribeStatus.SUCCEEDED
