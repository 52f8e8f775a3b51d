"""Exports: labels (CSV, JSON Lines) with votes, curator and model columns and filters,
class-folder zips, the model package (used in a fresh process), the agreement CSV, the
Export page's roles and the ``hemaloop export`` command."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import types
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from models import Image, Prediction, Project, RoundStatus, Split, utcnow
from models.db import session_scope
from models.settings import load_settings
from tests.helpers import DEMO_DIR, LoggedIn, base_env, make_user
from tests.reading_helpers import fake_active_model, flat_project, pool_ids, read_cells
from webapp.exports import (
    ExportError,
    agreement_csv,
    folders_zip,
    iter_label_rows,
    labels_csv,
    labels_jsonl,
    model_package_zip,
    package_version,
    parse_filters,
)
from webapp.exports.labels import CSV_COLUMNS, MEASUREMENT_COLUMNS


def _bytes(chunks) -> bytes:
    return b"".join(chunks)


# --- labels ---------------------------------------------------------------------------

def _reading_project(app, settings, tmp_path):
    """Two readers on k = 2 and a curator: an agreed cell, a disputed one the curator
    settles with a note, a flagged one the curator excludes, one agreed that the model
    doubts, one nobody read; an active (stand-in) model's predictions."""
    pid = flat_project(settings, tmp_path, "p", 5, readers_per_cell=2)
    for name in ("ann", "bob"):
        make_user(settings, name, "pathologist")
    make_user(settings, "cara", "curator")
    cells, _ = read_cells(app, pid, "ann", ["monocyte", "platelet", "ambiguous", "lymphocyte"])
    read_cells(app, pid, "bob", ["monocyte", "basophil", "lymphocyte"])
    agreed, disputed, flagged, doubted = cells
    unread = next(i for i in pool_ids(settings, pid) if i not in cells)
    predictions = {i: ("lymphocyte", 0.6) for i in pool_ids(settings, pid)}
    predictions[doubted] = ("monocyte", 0.97)
    version = fake_active_model(settings, pid, predictions)
    curator = LoggedIn(app.test_client(), "cara")
    assert curator.post(f"/curate/cells/{disputed}/resolve", htmx=False, data={
        "choice": "basophil", "note": "granules, clearly", "submission_id": "c1"}).status_code == 302
    assert curator.post(f"/curate/cells/{flagged}/resolve", htmx=False, data={
        "choice": "excluded", "submission_id": "c2"}).status_code == 302
    cells = {"agreed": agreed, "disputed": disputed, "flagged": flagged, "doubted": doubted,
             "unread": unread}
    return pid, cells, version


def _rows(settings, pid, **filters):
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        return {r.cell_id: r for r in iter_label_rows(s, project, parse_filters(project, **filters))}


def test_label_export_content_and_filters(app, settings, tmp_path):
    pid, c, version = _reading_project(app, settings, tmp_path)
    rows = _rows(settings, pid)
    assert set(rows) == set(c.values())

    agreed = rows[c["agreed"]]
    assert (agreed.state, agreed.final_label, agreed.label_source, agreed.agreeing_readers,
            agreed.readers_needed) == ("final", "monocyte", "readers", 2, 2)
    assert [(v["reader"], v["choice"]) for v in agreed.votes] == [("ann", "monocyte"),
                                                                  ("bob", "monocyte")]
    assert agreed.curator is None and agreed.split == "pool" and len(agreed.sha256) == 64
    assert (agreed.model_version, agreed.predicted_label, agreed.confidence) == (
        version, "lymphocyte", pytest.approx(0.6))

    disputed = rows[c["disputed"]]
    assert (disputed.state, disputed.final_label, disputed.label_source) == (
        "final", "basophil", "curator")
    assert [(v["reader"], v["choice"]) for v in disputed.votes] == [("ann", "platelet"),
                                                                    ("bob", "basophil")]
    assert (disputed.curator, disputed.curator_note) == ("cara", "granules, clearly")
    assert disputed.labeled_at == disputed.curated_at

    flagged = rows[c["flagged"]]
    assert (flagged.state, flagged.final_label, flagged.label_source) == (
        "excluded", None, "curator")
    assert [(v["reader"], v["choice"]) for v in flagged.votes] == [("ann", "ambiguous")]

    doubted = rows[c["doubted"]]
    assert (doubted.final_label, doubted.predicted_label, doubted.confidence) == (
        "lymphocyte", "monocyte", pytest.approx(0.97))
    unread = rows[c["unread"]]
    assert (unread.state, unread.final_label, unread.votes, unread.labeled_at) == (
        "open", None, [], None)

    # Filters: state(s), final class, labeled since.
    assert set(_rows(settings, pid, states="final")) == {c["agreed"], c["disputed"], c["doubted"]}
    assert set(_rows(settings, pid, states=["excluded", "open"])) == {c["flagged"], c["unread"]}
    assert set(_rows(settings, pid, class_name="basophil")) == {c["disputed"]}
    assert set(_rows(settings, pid, states="final", class_name="monocyte")) == {c["agreed"]}
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    assert _rows(settings, pid, since=tomorrow) == {}
    an_hour_ago = (utcnow() - timedelta(hours=1)).isoformat()
    assert set(_rows(settings, pid, since=an_hour_ago)) == set(c.values()) - {c["unread"]}

    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        for bad, words in [({"states": "finished"}, "Unknown state finished"),
                           ({"class_name": "megakaryocyte"}, "no class 'megakaryocyte'"),
                           ({"since": "last tuesday"}, "is not a date")]:
            with pytest.raises(ExportError, match=words):
                parse_filters(project, **bad)

        # CSV and JSON Lines say the same; both are generators (streamed), not lists.
        csv_stream = labels_csv(s, project)
        jsonl_stream = labels_jsonl(s, project)
        assert isinstance(csv_stream, types.GeneratorType)
        assert isinstance(jsonl_stream, types.GeneratorType)
        table = list(csv.DictReader(io.StringIO(_bytes(csv_stream).decode())))
        lines = [json.loads(line) for line in _bytes(jsonl_stream).decode().splitlines()]
    assert list(table[0]) == CSV_COLUMNS and len(table) == len(lines) == 5
    by_id = {int(r["cell_id"]): r for r in table}
    assert by_id[c["disputed"]]["votes"] == "ann=platelet; bob=basophil"
    assert by_id[c["disputed"]]["curator_note"] == "granules, clearly"
    assert by_id[c["agreed"]]["agreeing_readers"] == "2"
    assert by_id[c["doubted"]]["confidence"] == "0.970000"
    for line in lines:
        row = by_id[line["cell_id"]]
        assert (line["state"], line["final_label"] or "", line["label_source"] or "") == (
            row["state"], row["final_label"], row["label_source"])
        assert "; ".join(f"{v['reader']}={v['choice']}" for v in line["votes"]) == row["votes"]


def test_label_exports_carry_the_cells_measurements(app, settings, tmp_path):
    """The curator's measurements go out with the labels: areas in px and, with the
    project's pixel size, µm²; a cell that could not be measured, or was never
    measured, has empty measurement columns (CSV) and null (JSON Lines)."""
    from models import CellMeasurement

    pid, c, _ = _reading_project(app, settings, tmp_path)
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).microns_per_pixel = 0.5
        s.add(CellMeasurement(image_id=c["agreed"], project_id=pid, descriptor_version=1,
                              nucleus_found=True, cytoplasm_found=True, nucleus_area_px=400.0,
                              cell_area_px=1000.0, nucleus_lobes=3, nucleus_to_cell=0.4,
                              nucleus_circularity=0.7, nucleus_solidity=0.9,
                              chromatin_density=0.55, chromatin_contrast=12.5))
        s.add(CellMeasurement(image_id=c["disputed"], project_id=pid, descriptor_version=1,
                              error="cannot read the image (truncated file)"))
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        table = list(csv.DictReader(io.StringIO(_bytes(labels_csv(s, project)).decode())))
        lines = [json.loads(line) for line in _bytes(labels_jsonl(s, project)).decode().splitlines()]
    by_id = {int(r["cell_id"]): r for r in table}
    agreed = by_id[c["agreed"]]
    assert (agreed["nucleus_area_px"], agreed["nucleus_area_um2"], agreed["cell_area_um2"],
            agreed["nucleus_lobes"], agreed["nucleus_to_cell"]) == ("400.0", "100.0", "250.0", "3",
                                                                   "0.4")
    for cell in ("disputed", "unread"):
        assert all(by_id[c[cell]][k] == "" for k in MEASUREMENT_COLUMNS)
    json_by_id = {line["cell_id"]: line for line in lines}
    assert json_by_id[c["agreed"]]["measurements"]["chromatin_contrast"] == 12.5
    assert json_by_id[c["agreed"]]["measurements"]["nucleus_area_um2"] == 100.0
    assert json_by_id[c["disputed"]]["measurements"] is None
    assert json_by_id[c["unread"]]["measurements"] is None


def test_label_export_reads_in_chunks(app, settings, tmp_path):
    """Chunks of 2 cells give the same rows as one chunk of all; the work is done as
    the generator is read (a chunk at a time), not when it is made."""
    pid, c, _ = _reading_project(app, settings, tmp_path)
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        whole = [vars(r) for r in iter_label_rows(s, project)]
        seen: list[int] = []
        rows = iter_label_rows(s, project, chunk=2, progress=seen.append)
        assert seen == []  # nothing read yet
        first = next(rows)
        assert seen == [] and first.cell_id == min(c.values())
        rest = list(rows)
    assert seen == [2, 2, 1]
    assert [vars(first)] + [vars(r) for r in rest] == whole


def test_agreement_csv(app, settings, tmp_path):
    pid, _, _ = _reading_project(app, settings, tmp_path)
    with session_scope(settings.database_url) as s:
        table = list(csv.DictReader(io.StringIO(_bytes(agreement_csv(s, s.get(Project, pid)))
                                                .decode())))
    pairs = {r["measure"]: r for r in table if r["scope"] == "reader_pair"}
    # ann and bob both read 3 cells: agreed, disputed (platelet/basophil), doubted.
    assert pairs["agreement"]["a"] == "ann" and pairs["agreement"]["b"] == "bob"
    assert pairs["agreement"]["cells"] == "3"
    assert float(pairs["agreement"]["value"]) == pytest.approx(2 / 3)
    curator = [r for r in table if r["measure"] == "agreement_with_curator"]
    assert {(r["a"], r["value"]) for r in curator} == {("ann", "0.0"), ("bob", "1.0")}
    confusion = {(r["a"], r["b"]): int(r["value"]) for r in table if r["measure"] == "confusion"}
    assert confusion[("platelet", "basophil")] == 1 and confusion[("monocyte", "monocyte")] == 1


# --- class folders ----------------------------------------------------------------------

@pytest.fixture
def labeled_project(settings, tmp_path):
    """3 classes x 6 real cells, reference labels trusted for training, a third in test."""
    from webapp.bootstrap import create_project
    from webapp.ingest import import_path

    src = tmp_path / "cells"
    for cls in ("basophil", "ig", "platelet"):
        (src / cls).mkdir(parents=True)
        for f in sorted((DEMO_DIR / cls).iterdir())[:6]:
            shutil.copy(f, src / cls / f.name)
    with session_scope(settings.database_url) as s:
        project = create_project(s, "folders", "pbc8", test_share=0.34, train_on_reference=True)
        assert import_path(s, settings.storage_dir, project, src,
                           max_pixels=settings.max_image_pixels).imported == 18
        return project.id


def _expected_members(settings, pid) -> dict[str, str]:
    """member name -> sha256, from the database."""
    with session_scope(settings.database_url) as s:
        out = {image.id: image for image in s.scalars(select(Image).where(Image.project_id == pid))}
        rows = {r.cell_id: r for r in iter_label_rows(s, s.get(Project, pid))}
        return {f"{'train' if img.split == Split.POOL else 'test'}/{rows[i].final_label}/"
                f"{i}-{Path(img.original_name).stem}.jpg": img.sha256
                for i, img in out.items() if rows[i].final_label}


def test_folders_zip_layout(settings, labeled_project):
    import hashlib

    with session_scope(settings.database_url) as s:
        stream = folders_zip(s, s.get(Project, labeled_project), settings.storage_dir)
        assert isinstance(stream, types.GeneratorType)
        chunks = list(stream)
    assert len(chunks) > 18  # at least one piece per member: streamed, not built whole
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None
    expected = _expected_members(settings, labeled_project)
    assert sorted(archive.namelist()) == sorted(expected)
    assert {n.split("/")[0] for n in expected} == {"train", "test"}
    for name, sha in expected.items():
        info = archive.getinfo(name)
        assert info.compress_type == zipfile.ZIP_STORED
        assert hashlib.sha256(archive.read(name)).hexdigest() == sha

    # A class filter keeps that class's folders only.
    with session_scope(settings.database_url) as s:
        project = s.get(Project, labeled_project)
        only = zipfile.ZipFile(io.BytesIO(_bytes(folders_zip(
            s, project, settings.storage_dir, parse_filters(project, class_name="ig")))))
    assert only.namelist() and all(n.split("/")[1] == "ig" for n in only.namelist())


@pytest.mark.slow
def test_folders_zip_reads_with_keras(settings, labeled_project, tmp_path):
    import tensorflow as tf

    with session_scope(settings.database_url) as s:
        data = _bytes(folders_zip(s, s.get(Project, labeled_project), settings.storage_dir))
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path / "out")
    expected = _expected_members(settings, labeled_project)
    for split in ("train", "test"):
        dataset = tf.keras.utils.image_dataset_from_directory(
            tmp_path / "out" / split, image_size=(75, 75), batch_size=4, shuffle=False)
        counts: dict[str, int] = {}
        for name in expected:
            if name.startswith(split + "/"):
                cls = name.split("/")[1]
                counts[cls] = counts.get(cls, 0) + 1
        assert dataset.class_names == sorted(counts)
        labels = [int(y) for _, batch in dataset for y in batch.numpy()]
        assert [labels.count(k) for k in range(len(counts))] == [counts[n] for n in sorted(counts)]


# --- the Export page ---------------------------------------------------------------------

def test_export_page_roles_and_downloads(app, settings, tmp_path):
    pid, c, _ = _reading_project(app, settings, tmp_path)
    make_user(settings, "root", "admin")
    reader = LoggedIn(app.test_client(), "ann")
    urls = [f"/exports/projects/{pid}", f"/exports/projects/{pid}/download?format=csv"]
    for url in urls:
        assert reader.get(url).status_code == 403
        anonymous = app.test_client().get(url)
        assert anonymous.status_code == 302 and "/auth/login" in anonymous.location
    for name in ("cara", "root"):
        user = LoggedIn(app.test_client(), name)
        page = user.get(f"/exports/projects/{pid}")
        assert page.status_code == 200 and 'name="format"' in page.text
        assert "<script>" not in page.text
    curator = LoggedIn(app.test_client(), "cara")
    assert f'/exports/projects/{pid}"' in curator.get("/curate/").text  # linked from curation
    assert f'/exports/projects/{pid}"' in LoggedIn(app.test_client(), "root").get("/admin/").text

    response = curator.get(f"/exports/projects/{pid}/download?format=csv&state=final"
                           "&class=basophil")
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="p-labels.csv"'
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [int(r["cell_id"]) for r in table] == [c["disputed"]]

    # The page's form as sent with every filter left at "any".
    everything = curator.get(f"/exports/projects/{pid}/download?format=csv&state=&class="
                             "&since=&version=")
    assert len(list(csv.DictReader(io.StringIO(everything.text)))) == 5

    jsonl = curator.get(f"/exports/projects/{pid}/download?format=jsonl&state=excluded")
    assert [json.loads(x)["cell_id"] for x in jsonl.text.splitlines()] == [c["flagged"]]
    assert curator.get(f"/exports/projects/{pid}/download?format=agreement").status_code == 200
    folders = curator.get(f"/exports/projects/{pid}/download?format=folders")
    assert folders.status_code == 200
    assert len(zipfile.ZipFile(io.BytesIO(folders.data)).namelist()) == 3  # the final labels

    for query, status, words in [
            ("format=csv&state=finished", 400, "Unknown state"),
            ("format=csv&class=megakaryocyte", 400, "no class"),
            ("format=csv&since=yesterday", 400, "is not a date"),
            ("format=pdf", 400, "Unknown export format"),
            ("format=model&version=x", 400, "not a model version"),
            ("format=model&version=999", 404, "no model version 999"),
            # The stand-in model has no file in the store.
            ("format=model", 410, "missing from the store")]:
        response = curator.get(f"/exports/projects/{pid}/download?{query}")
        assert response.status_code == status, query
        assert words in response.text, query
    assert curator.get("/exports/projects/4242/download?format=csv").status_code == 404


# --- the command ------------------------------------------------------------------------

def test_export_command(app, settings, tmp_path):
    from webapp.cli import main

    _, c, _ = _reading_project(app, settings, tmp_path)
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    out = tmp_path / "exports" / "final.jsonl"
    out.parent.mkdir()
    result = CliRunner().invoke(main, ["export", "--project", "p", "--format", "jsonl",
                                       "--out", str(out), "--state", "final", "--state",
                                       "excluded"], env=env)
    assert result.exit_code == 0, result.output
    assert {json.loads(x)["cell_id"] for x in out.read_text().splitlines()} == {
        c["agreed"], c["disputed"], c["doubted"], c["flagged"]}
    assert "exporting jsonl" in result.output and f"wrote {out}" in result.output
    assert [p.name for p in out.parent.iterdir()] == ["final.jsonl"]  # no temporary left

    for args, words in [(["--class", "megakaryocyte"], "no class"),
                        (["--project", "nope"], "nope"),
                        (["--format", "model"], "missing from the store")]:
        base = {"--project": "p", "--format": "csv", "--out": str(tmp_path / "x.csv")}
        for flag, value in zip(args[::2], args[1::2]):
            base[flag] = value
        result = CliRunner().invoke(main, ["export", *[x for kv in base.items() for x in kv]],
                                    env=env)
        assert result.exit_code != 0 and words in result.output, result.output
        assert not (tmp_path / "x.csv").exists()


def test_export_command_failing_midway_leaves_no_file(app, settings, tmp_path):
    """The class-folder zip meets a cell whose file is gone after it has written
    others: a clear error naming the cell, and nothing left in the folder (neither the
    file asked for nor a temporary one).  `--out -` still streams to stdout."""
    from webapp.cli import main

    pid, c, _ = _reading_project(app, settings, tmp_path)
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=settings.database_url)
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    whole = out_dir / "whole.zip"
    args = ["export", "--project", "p", "--format", "folders", "--out"]
    result = CliRunner().invoke(main, [*args, str(whole)], env=env)
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(whole) as archive:
        names = archive.namelist()
    assert len(names) >= 2
    # The last member's cell loses its file: the export fails after writing the others.
    last = int(names[-1].rsplit("/", 1)[1].split("-", 1)[0])
    whole.unlink()
    with session_scope(settings.database_url) as s:
        image = s.get(Image, last)
        (settings.storage_dir / image.storage_path).unlink()
        file_name = image.original_name
    out = out_dir / "labels.zip"
    result = CliRunner().invoke(main, [*args, str(out)], env=env)
    assert result.exit_code == 1 and result.exception is not None
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    assert f"The file of cell {last} ({file_name}) is missing from the store." in result.output
    assert list(out_dir.iterdir()) == []

    result = CliRunner().invoke(main, ["export", "--project", "p", "--format", "jsonl",
                                       "--out", "-"], env=env)
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert {r["cell_id"] for r in rows} >= {c["agreed"], c["disputed"], c["doubted"]}
    assert list(out_dir.iterdir()) == []


# --- the model package ------------------------------------------------------------------

FRESH_PROCESS = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from predict import CellModel
model = CellModel(sys.argv[1])
paths = json.loads(sys.argv[2])
probs = model.probabilities(paths)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("models", "webapp", "worker"))
predicted = model.predict(paths[:1])
model.temperature = 1.0  # what a reader of the bare model output would get
uncalibrated = model.probabilities(paths)
print(json.dumps({"classes": model.classes, "probs": probs.tolist(), "leaked": leaked,
                  "predict": predicted, "uncalibrated": uncalibrated.tolist()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sources", ["backbone", "both"])
def test_model_package_predicts_like_the_server(tmp_path, sqlite_url, sources):
    from webapp.bootstrap import create_project
    from webapp.ingest import import_path
    from worker.launch import create_round
    from worker.rounds import run_round

    settings = load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                      HEMALOOP_HEAD_EPOCHS="3", HEMALOOP_FINE_TUNE_EPOCHS="0"))
    src = tmp_path / "cells"
    for cls in ("basophil", "eosinophil", "lymphocyte", "platelet"):
        shutil.copytree(DEMO_DIR / cls, src / cls)
    with session_scope(settings.database_url) as s:
        project = create_project(s, "pkg", "pbc8", test_share=0.2, train_on_reference=True,
                                 fine_tune_blocks=0, feature_sources=sources)
        assert import_path(s, settings.storage_dir, project, src,
                           max_pixels=settings.max_image_pixels).imported == 100
        round_id = create_round(s, project, trigger="cli").id
        pid = project.id
    assert run_round(settings, round_id) == RoundStatus.SUCCEEDED

    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        version = package_version(s, project)
        assert version.temperature != 1.0  # a calibrated model: the test checks calibration
        data = _bytes(model_package_zip(s, project, settings.storage_dir, version))
        stored = {p.image_id: p for p in s.scalars(select(Prediction).where(
            Prediction.model_version_id == version.id).order_by(Prediction.image_id).limit(12))}
        paths = {i: str(settings.storage_dir / s.get(Image, i).storage_path) for i in stored}
        class_ids, artifact = version.class_ids, settings.storage_dir / version.artifact_path
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert sorted(archive.namelist()) == ["README.txt", "model.keras", "model_card.json",
                                          "pixels.py", "predict.py"]
    assert archive.read("model.keras") == artifact.read_bytes()  # copied, not re-saved
    card = json.loads(archive.read("model_card.json"))
    assert card["class_ids"] == class_ids and card["input_size"] == 75
    with session_scope(settings.database_url) as s:
        names = {c.id: c.name for c in s.get(Project, pid).classes}
    assert card["classes"] == [names[i] for i in class_ids]  # the network's output order
    assert card["temperature"] == pytest.approx(version.temperature)
    assert card["metrics"]["test"]["n"] > 0 and card["backbone_weights"]
    assert card["feature_sources"] == sources
    if sources == "backbone":
        assert card["inputs"] == ["image"] and card["descriptors"] is None
        assert "descriptors" not in archive.read("README.txt").decode()
    else:
        # The limit is stated: descriptors come from hemaloop's own code.
        assert card["inputs"] == ["image", "descriptors"]
        assert card["descriptors"]["version"] >= 1
        assert "worker.ml.descriptors" in card["descriptors"]["limit"]
        assert "worker.ml.descriptors" in archive.read("README.txt").decode()
    counts = card["label_counts_at_export"]
    assert sum(counts["train"].values()) + sum(counts["test"].values()) == 100
    package = tmp_path / "package"
    archive.extractall(package)

    # The Export page streams the same package (the card's export time aside).
    from webapp import create_app

    app = create_app(settings)
    app.config["TESTING"] = True
    make_user(settings, "root", "admin")
    response = LoggedIn(app.test_client(), "root").get(
        f"/exports/projects/{pid}/download?format=model")
    assert response.status_code == 200 and response.is_streamed
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="pkg-model-v{version.id}.zip"')
    downloaded = zipfile.ZipFile(io.BytesIO(response.data))
    assert downloaded.namelist() == archive.namelist()
    assert downloaded.read("model.keras") == archive.read("model.keras")

    # A fresh interpreter, run from elsewhere, with no hemaloop on its path.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HEMALOOP"))}
    result = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS, str(package), json.dumps(list(paths.values()))],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    # With both inputs the random-init backbone's pooled features (spread ~1e-5) are
    # standardised, which magnifies float32 rounding between the package's forward
    # pass and the server's cached features to a few 1e-4, and a head fitted to its
    # optimum (larger weights than an early-stopped one) to about 1.5e-3.
    tolerance = {"backbone": 1e-4, "descriptors": 1e-3}.get(sources, 5e-3)
    if sources == "backbone":
        assert answer["leaked"] == []
    else:
        # Where hemaloop is installed (as here), predict.py takes its descriptors from it.
        assert "worker.ml.descriptors" in answer["leaked"]
    assert answer["classes"] == card["classes"]
    for row, image_id in zip(answer["probs"], paths):
        server = stored[image_id].probabilities
        for k, cid in enumerate(class_ids):
            assert row[k] == pytest.approx(server[str(cid)], abs=tolerance)
    # The comparison can tell: without the temperature the numbers are off.
    assert max(abs(row[k] - stored[i].probabilities[str(cid)])
               for row, i in zip(answer["uncalibrated"], paths)
               for k, cid in enumerate(class_ids)) > 1e-3
    first = answer["predict"][0]
    top = stored[next(iter(paths))]
    assert first["class"] == card["classes"][class_ids.index(top.predicted_class_id)]
    assert first["confidence"] == pytest.approx(top.confidence, abs=tolerance)
    assert len(first["top3"]) == 3

    # And as a script, the way the README shows it.
    image = next(iter(paths.values()))
    script = subprocess.run([sys.executable, "-I", str(package / "predict.py"), image],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert script.returncode == 0, script.stderr[-3000:]
    assert json.loads(script.stdout.strip().splitlines()[-1])["class"] == first["class"]
