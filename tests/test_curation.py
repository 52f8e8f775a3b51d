"""Curators: the queue of cells to settle, resolution, cell history, agreement figures."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from sqlalchemy import select

from models import Annotation, Image, ModelVersion, Origin, Project, Split
from models.db import session_scope
from models.labels import (EXCLUDED, FINAL, ReadingRules, cell_states, labeled_images,
                           unsettled_by)
from tests.helpers import LoggedIn, make_user
from tests.reading_helpers import (
    flat_project, pool_ids, read_cells, shown,
    two_readers_disputing_a_curators_cells,
)
from worker.ml import embeddings


def _read(app, pid, name, choices):
    ids, READERS[name] = read_cells(app, pid, name, choices)
    return ids


READERS: dict[str, LoggedIn] = {}  # the last session of each reader, to undo in


def test_curator_queue_and_resolution(app, settings, tmp_path):
    pid, (agreed, disputed, flagged, doubted), _ = two_readers_disputing_a_curators_cells(
        app, settings, tmp_path, sessions=READERS)
    curator = LoggedIn(app.test_client(), "cara")
    assert curator.get("/").location.endswith("/curate/")
    index = curator.get("/curate/").text
    assert f'data-image-id="{disputed}"' in index and "readers disagree" in index
    assert f'data-image-id="{flagged}"' in index and "flagged ambiguous" in index
    assert f'data-image-id="{doubted}"' in index and "confident model disagrees" in index
    assert f'data-image-id="{agreed}"' not in index

    page = curator.get(f"/curate/cells/{disputed}").text
    assert "<strong>ann</strong>: platelet" in page and "<strong>bob</strong>: basophil" in page
    assert 'id="probabilities"' in page and "lymphocyte 60.0%" in page
    assert "No cell embeddings yet" in page  # the stand-in model has none: degrade politely

    response = curator.post(f"/curate/cells/{disputed}/resolve", htmx=False, data={
        "choice": "basophil", "note": "granules", "submission_id": "c1"})
    assert response.status_code == 302
    # A double click records once.
    curator.post(f"/curate/cells/{disputed}/resolve", htmx=False, data={
        "choice": "basophil", "note": "granules", "submission_id": "c1"})
    response = curator.post(f"/curate/cells/{flagged}/resolve", htmx=False,
                            data={"choice": "excluded", "submission_id": "c2"})
    assert response.status_code == 302

    for bad, status in [({"choice": "megakaryocyte"}, 400), ({"choice": ""}, 400),
                        ({"choice": "monocyte", "note": "x" * 2001}, 400)]:
        assert curator.post(f"/curate/cells/{doubted}/resolve", htmx=False,
                            data=bad).status_code == status
    assert curator.post("/curate/cells/424242/resolve", htmx=False,
                        data={"choice": "monocyte"}).status_code == 404

    with session_scope(settings.database_url) as s:
        rows = s.scalars(select(Annotation).where(Annotation.origin == Origin.CURATOR)).all()
        assert [(r.image_id, r.note) for r in rows] == [(disputed, "granules"), (flagged, None)]
        project = s.get(Project, pid)
        states = cell_states(s, project, Split.POOL)
        assert states[disputed].status == FINAL and states[flagged].status == EXCLUDED
        trained = {x.image_id for x in labeled_images(s, project, Split.POOL)}
    assert trained == {agreed, disputed, doubted}
    index = curator.get("/curate/").text
    assert f'data-image-id="{disputed}"' not in index and f'data-image-id="{flagged}"' not in index

    # Readers cannot curate.
    reader = LoggedIn(app.test_client(), "ann")
    assert reader.post(f"/curate/cells/{doubted}/resolve", htmx=False,
                       data={"choice": "monocyte"}).status_code == 403


def test_nearest_labeled_cells_from_embeddings(app, settings, tmp_path):
    pid, (agreed, disputed, flagged, doubted), version_id = two_readers_disputing_a_curators_cells(
        app, settings, tmp_path, sessions=READERS)
    ids = pool_ids(settings, pid)
    with session_scope(settings.database_url) as s:
        artifact = settings.storage_dir / s.get(ModelVersion, version_id).artifact_path
    vectors = np.eye(len(ids), 8, dtype=np.float32)
    vectors[ids.index(agreed)] = vectors[ids.index(disputed)] * 0.9 + 0.1
    embeddings.save(embeddings.embeddings_path(artifact), np.array(ids),
                    vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    curator = LoggedIn(app.test_client(), "cara")
    page = curator.get(f"/curate/cells/{disputed}").text
    assert "Nearest labeled cells" in page and "No cell embeddings yet" not in page
    # Candidate classes are the voted ones and the model's top two; lymphocyte (the
    # model's top) has one final cell to compare with.
    assert f"cell {doubted} · similarity" in page


def test_cell_history_page_and_api(app, settings, tmp_path):
    pid, (agreed, disputed, flagged, doubted), version = two_readers_disputing_a_curators_cells(
        app, settings, tmp_path, sessions=READERS)
    ann = READERS["ann"]
    # ann undoes her last decision (the lymphocyte of `doubted`) and relabels it.
    html = ann.post(f"/label/{pid}/undo").text
    assert shown(html) == doubted
    curator = LoggedIn(app.test_client(), "cara")
    curator.post(f"/curate/cells/{disputed}/resolve", htmx=False,
                 data={"choice": "platelet", "note": "looked twice"})
    events = curator.get(f"/api/cells/{disputed}/history").json["events"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "import" and kinds.count("label") == 2 and "prediction" in kinds
    assert kinds[-1] == "resolution" or "resolution" in kinds
    resolution = next(e for e in events if e["kind"] == "resolution")
    assert resolution["who"] == "cara" and resolution["note"] == "looked twice"
    assert {e["who"] for e in events if e["kind"] == "label"} == {"ann", "bob"}
    undo = curator.get(f"/api/cells/{doubted}/history").json["events"]
    assert [e["kind"] for e in undo].count("undo") == 1
    page = curator.get(f"/curate/cells/{doubted}/history")
    assert page.status_code == 200 and 'data-kind="undo"' in page.text
    assert curator.get("/api/cells/424242/history").status_code == 404


def test_agreement_api_and_page(app, settings, tmp_path):
    pid, cells, _ = two_readers_disputing_a_curators_cells(
        app, settings, tmp_path, sessions=READERS)
    curator = LoggedIn(app.test_client(), "cara")
    curator.post(f"/curate/cells/{cells[1]}/resolve", htmx=False, data={"choice": "platelet"})
    data = curator.get(f"/api/projects/{pid}/agreement").json
    # Three cells read by both: monocyte/monocyte, platelet/basophil, lymphocyte/lymphocyte.
    assert data["cells_with_two_or_more_readers"] == 3
    (pair,) = data["cohen_kappa_pairs"]
    assert pair["readers"] == ["ann", "bob"] and pair["cells"] == 3
    assert pair["agreement"] == 2 / 3
    # po = 2/3; pe = (1*1 + 1*1 + 0 + 0)/9 = 2/9 -> kappa = (2/3 - 2/9) / (7/9) = 4/7.
    assert abs(pair["cohen_kappa"] - 4 / 7) < 1e-9
    assert data["fleiss_kappa"] is not None and data["krippendorff_alpha"] is not None
    assert set(data["per_class"]) >= {"monocyte", "basophil", "ambiguous", "unusable"}
    vs = {r["reader"]: r["agreement"] for r in data["agreement_with_curator"]}
    assert vs == {"ann": 1.0, "bob": 0.0}
    cats = data["categories"]
    m = data["confusion"]
    assert m[cats.index("platelet")][cats.index("basophil")] == 1
    assert m[cats.index("monocyte")][cats.index("monocyte")] == 1
    page = curator.get(f"/curate/projects/{pid}/agreement")
    assert page.status_code == 200 and "<svg" in page.text and "ann vs bob" in page.text
    reader = LoggedIn(app.test_client(), "ann")
    assert reader.get(f"/api/projects/{pid}/agreement").status_code == 403
    assert curator.get("/api/projects/999/agreement").status_code == 404


def test_reading_settings_page(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 2)
    make_user(settings, "boss", "admin")
    admin = LoggedIn(app.test_client(), "boss")
    assert f"/admin/projects/{pid}/reading" in admin.get("/admin/").text
    page = admin.get(f"/admin/projects/{pid}/reading")
    assert page.status_code == 200
    with session_scope(settings.database_url) as s:
        mono = s.get(Project, pid).class_by_name("monocyte").id
    response = admin.post(f"/admin/projects/{pid}/reading", htmx=False, data={
        "csrf_token": admin.token, "readers_per_cell": "2", "contested_readers": "3",
        "contested_classes": [str(mono)], "agreement_share": "0.1", "blind_reading": "y",
        "lease_minutes": "5"})
    assert response.status_code == 302
    with session_scope(settings.database_url) as s:
        p = s.get(Project, pid)
        assert (p.readers_per_cell, p.contested_readers, p.contested_class_ids, p.agreement_share,
                p.blind_reading, p.lease_minutes) == (2, 3, [mono], 0.1, True, 5)
    response = admin.post(f"/admin/projects/{pid}/reading", htmx=False, data={
        "csrf_token": admin.token, "readers_per_cell": "0", "agreement_share": "2",
        "lease_minutes": "5"})
    assert response.status_code == 400


def test_raising_k_asks_before_it_unsettles_final_labels(app, settings, tmp_path):
    """Issue 14, defect 4: k 1 -> 2 silently dropped earlier labels from training."""
    pid = flat_project(settings, tmp_path, "p", 6)
    make_user(settings, "ann", "pathologist")
    make_user(settings, "boss", "admin")
    _read(app, pid, "ann", ["monocyte", "monocyte", "platelet", "unusable"])
    with session_scope(settings.database_url) as s:
        assert len(labeled_images(s, s.get(Project, pid), Split.POOL)) == 3
    admin = LoggedIn(app.test_client(), "boss")
    form = {"csrf_token": admin.token, "readers_per_cell": "2", "contested_readers": "",
            "agreement_share": "0", "lease_minutes": "10", "suggestion_min_accuracy": "0.5"}
    # While the admin edits the form, the page previews the count.
    preview = admin.post(f"/admin/projects/{pid}/reading/preview", data=form)
    assert preview.status_code == 200
    assert 'id="unsettle-preview-count">With these rules, <strong>3</strong>' in preview.text
    assert "no final label" in admin.post(f"/admin/projects/{pid}/reading/preview",
                                          data={**form, "readers_per_cell": "1"}).text
    assert admin.post(f"/admin/projects/{pid}/reading/preview",
                      data={**form, "readers_per_cell": "0"}).text.strip() == ""
    response = admin.post(f"/admin/projects/{pid}/reading", htmx=False, data=form)
    # Nothing saved; the page says how many labels the change would un-settle and asks.
    assert response.status_code == 409
    assert 'id="unsettled-count">3<' in response.text  # the excluded cell had no label
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        assert project.readers_per_cell == 1
        assert len(labeled_images(s, project, Split.POOL)) == 3
    # A confirmation of another number (the count moved on) asks again.
    response = admin.post(f"/admin/projects/{pid}/reading", htmx=False,
                          data={**form, "confirm_unsettle": "2"})
    assert response.status_code == 409
    response = admin.post(f"/admin/projects/{pid}/reading", htmx=False,
                          data={**form, "confirm_unsettle": "3"})
    assert response.status_code == 302
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        assert (project.readers_per_cell, project.suggestion_min_accuracy) == (2, 0.5)
        assert labeled_images(s, project, Split.POOL) == []
    # Lowering k again un-settles nothing: saved without a question.
    response = admin.post(f"/admin/projects/{pid}/reading", htmx=False,
                          data={**form, "readers_per_cell": "1"})
    assert response.status_code == 302


def test_unsettled_by_counts_with_the_labels_rules(settings, tmp_path, app):
    pid = flat_project(settings, tmp_path, "p", 4)
    make_user(settings, "ann", "pathologist")
    make_user(settings, "bob", "pathologist")
    _read(app, pid, "ann", ["monocyte", "monocyte"])
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        rules = ReadingRules.of(project)
        assert unsettled_by(s, project, rules) == 0
        assert unsettled_by(s, project, replace(rules, readers_per_cell=2)) == 2
        # Every cell in the agreement sample with a higher k: both lose their label.
        assert unsettled_by(s, project, replace(rules, contested_readers=3,
                                                agreement_share=1.0)) == 2
        assert project.readers_per_cell == 1  # nothing saved


def test_worklist_shows_votes_and_each_resolution_can_be_undone(app, settings, tmp_path):
    """Issue 14, curators: votes in the list; a resolution is confirmed, with an undo."""
    pid, (agreed, disputed, flagged, doubted), _ = two_readers_disputing_a_curators_cells(
        app, settings, tmp_path, sessions=READERS)
    curator = LoggedIn(app.test_client(), "cara")
    index = curator.get("/curate/").text
    card = index[index.index(f'data-image-id="{disputed}"'):]
    card = card[:card.index("</a>")]
    assert "<strong>ann</strong>: platelet" in card and "<strong>bob</strong>: basophil" in card
    assert "model: lymphocyte 60%" in card

    # The cell page walks the worklist (in id order) with n/p.
    first, middle, last = sorted([disputed, flagged, doubted])
    page = curator.get(f"/curate/cells/{middle}").text
    assert f'href="/curate/cells/{first}" data-hotkey="p"' in page
    assert f'href="/curate/cells/{last}" data-hotkey="n"' in page
    assert "2 of 3 in the worklist" in page
    assert 'data-hotkey="e"' in page and 'data-hotkey="1"' in page and 'class="zoom"' in page

    response = curator.post(f"/curate/cells/{disputed}/resolve", htmx=False,
                            data={"choice": "basophil", "submission_id": "c1"})
    assert response.status_code == 302 and "resolved=" in response.location
    page = curator.get(response.location).text
    assert f"Resolved cell {disputed} as <strong>basophil</strong>" in page
    annotation_id = int(page.split('name="annotation_id" value="')[1].split('"')[0])
    with session_scope(settings.database_url) as s:
        assert cell_states(s, s.get(Project, pid), Split.POOL)[disputed].status == FINAL

    # Undo: the resolution is voided, the cell is disputed again and back in the list.
    response = curator.post(f"/curate/cells/{disputed}/undo", htmx=False,
                            data={"annotation_id": str(annotation_id)})
    assert response.status_code == 302
    page = curator.get(response.location).text
    assert f"Undid the resolution of cell {disputed}" in page
    assert "Resolved cell" not in page
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        assert cell_states(s, project, Split.POOL)[disputed].status == "disputed"
        assert s.get(Image, disputed).open_slots == 0  # still waits for a curator, not readers
    assert f'data-image-id="{disputed}"' in curator.get("/curate/").text
    # A second undo of the same resolution, or of someone else's, writes nothing.
    assert curator.post(f"/curate/cells/{disputed}/undo", htmx=False,
                        data={"annotation_id": str(annotation_id)}).status_code == 409
    assert curator.post(f"/curate/cells/{disputed}/undo", htmx=False,
                        data={"annotation_id": "x"}).status_code == 400


def test_undone_resolution_of_an_open_cell_hands_it_back_to_readers(app, settings, tmp_path):
    pid = flat_project(settings, tmp_path, "p", 3, readers_per_cell=2)
    make_user(settings, "cara", "curator")
    ids = pool_ids(settings, pid)
    curator = LoggedIn(app.test_client(), "cara")
    response = curator.post(f"/curate/cells/{ids[0]}/resolve", htmx=False,
                            data={"choice": "monocyte", "submission_id": "c1"})
    page = curator.get(response.location).text
    annotation_id = int(page.split('name="annotation_id" value="')[1].split('"')[0])
    with session_scope(settings.database_url) as s:
        assert s.get(Image, ids[0]).open_slots == 0
    curator.post(f"/curate/cells/{ids[0]}/undo", htmx=False,
                 data={"annotation_id": str(annotation_id)})
    with session_scope(settings.database_url) as s:
        assert s.get(Image, ids[0]).open_slots == 2
        assert cell_states(s, s.get(Project, pid), Split.POOL)[ids[0]].status == "open"


def test_nearest_cells_say_why_empty_and_fall_back_to_trusted_references(app, settings, tmp_path):
    pid, (agreed, disputed, flagged, doubted), version_id = two_readers_disputing_a_curators_cells(
        app, settings, tmp_path, sessions=READERS)
    ids = pool_ids(settings, pid)
    unread = next(i for i in ids if i not in (agreed, disputed, flagged, doubted))
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        artifact = settings.storage_dir / s.get(ModelVersion, version_id).artifact_path
        platelet = project.class_by_name("platelet").id
        # A reference label on the cell no reader has read, as an import gives.
        s.add(Annotation(image_id=unread, origin=Origin.REFERENCE, label_class_id=platelet,
                         source="import"))
    vectors = np.eye(len(ids), 8, dtype=np.float32)
    embeddings.save(embeddings.embeddings_path(artifact), np.array(ids), vectors)
    curator = LoggedIn(app.test_client(), "cara")
    page = curator.get(f"/curate/cells/{disputed}").text
    # ann voted platelet: no final platelet cell, and the reference is not trusted.
    assert "No cell is final as platelet yet: a cell becomes final when" in page
    assert "1 cell(s) carry a reference label platelet, but this project does not trust" in page
    assert f"cell {unread} · similarity" not in page
    with session_scope(settings.database_url) as s:
        s.get(Project, pid).train_on_reference = True
    page = curator.get(f"/curate/cells/{disputed}").text
    assert f"cell {unread} · similarity" in page and "reference labels</span>" in page
