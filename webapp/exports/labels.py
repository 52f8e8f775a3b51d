"""Labels as CSV and JSON Lines, one row per cell, streamed.

Every cell's state comes from models/labels.py (``cell_states``), the same
derivation the queue, curation and training use, asked for one chunk of cell
ids at a time: an export of 100,000 cells holds one chunk in memory, not the
project.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import CellMeasurement, Flag, Image, ModelVersion, Prediction, Project, User
from models.images import Split
from models.labels import EXCLUDED, FINAL, CellState, cell_states, training_label

from .filters import ALL, LABELED, Filters

CHUNK = 1000  # cells per query round trip

Progress = Callable[[int], None]  # called with the number of cells just processed


@dataclass
class LabelRow:
    cell_id: int
    file_name: str
    sha256: str
    split: str
    state: str
    final_label: str | None
    # How the final label was reached: readers (k agreeing), curator, reference.
    label_source: str | None
    agreeing_readers: int | None
    readers_needed: int
    reference_label: str | None
    votes: list[dict] = field(default_factory=list)  # reader, choice, at
    curator: str | None = None
    curator_note: str | None = None
    curated_at: datetime | None = None
    labeled_at: datetime | None = None
    model_version: int | None = None
    predicted_label: str | None = None
    confidence: float | None = None  # calibrated (softmax with the version's temperature)
    # The cell's measurements (cell_measurements, issue 15), areas in pixels and,
    # where the project knows its pixel size, in µm²; empty when not measured.
    measurements: dict[str, float | int | None] = field(default_factory=dict)
    storage_path: str = ""  # for the folder export; not written to CSV/JSON


CSV_COLUMNS = ["cell_id", "file_name", "sha256", "split", "state", "final_label",
               "label_source", "agreeing_readers", "readers_needed", "reference_label", "votes",
               "curator", "curator_note", "curated_at", "labeled_at", "model_version",
               "predicted_label", "confidence"]
# What a haematologist measures on the cell (webapp/curate/measurements.py's
# panel, from the same rows), after the label columns.
MEASUREMENT_COLUMNS = ["nucleus_area_px", "nucleus_area_um2", "cell_area_px", "cell_area_um2",
                       "nucleus_lobes", "nucleus_to_cell", "nucleus_circularity",
                       "nucleus_solidity", "chromatin_density", "chromatin_contrast"]
CSV_COLUMNS += MEASUREMENT_COLUMNS


def _measurements(row: tuple | None, mpp: float | None) -> dict[str, float | int | None]:
    """A cell_measurements row (the columns below, in order) as export values."""
    if row is None:
        return {}
    nucleus, cell, lobes, ratio, circularity, solidity, density, contrast = row

    def area(px: float | None) -> float | None:
        return None if px is None or not mpp else round(px * mpp * mpp, 3)

    return {"nucleus_area_px": nucleus, "nucleus_area_um2": area(nucleus),
            "cell_area_px": cell, "cell_area_um2": area(cell), "nucleus_lobes": lobes,
            "nucleus_to_cell": ratio, "nucleus_circularity": circularity,
            "nucleus_solidity": solidity, "chromatin_density": density,
            "chromatin_contrast": contrast}


_MEASURED = (CellMeasurement.nucleus_area_px, CellMeasurement.cell_area_px,
             CellMeasurement.nucleus_lobes, CellMeasurement.nucleus_to_cell,
             CellMeasurement.nucleus_circularity, CellMeasurement.nucleus_solidity,
             CellMeasurement.chromatin_density, CellMeasurement.chromatin_contrast)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _choice(value, names: dict[int, str]) -> str:
    return names.get(value, str(value)) if isinstance(value, int) else Flag(value).value


def _row(project: Project, cell: CellState, image: tuple, names: dict[int, str],
         users: dict[int, str], prediction: tuple | None, version_id: int | None) -> LabelRow:
    label = training_label(project, cell)
    source = agreeing = None
    if cell.status == FINAL:
        if cell.curator is not None:
            source = "curator"
        else:
            source = "readers"
            agreeing = sum(1 for v in cell.votes.values() if v == cell.class_id)
    elif cell.status == EXCLUDED:
        if cell.curator is not None:
            source = "curator"
        else:
            source = "readers"
            agreeing = sum(1 for v in cell.votes.values() if v == Flag.UNUSABLE)
    elif label is not None:
        source = "reference"
    votes = [{"reader": users.get(uid, str(uid)), "choice": _choice(choice, names),
              "at": _iso(cell.vote_rows[uid].created_at)}
             for uid, choice in sorted(cell.votes.items(), key=lambda kv: users.get(kv[0], ""))]
    moments = [a.created_at for a in cell.vote_rows.values()]
    if cell.curator is not None:
        moments.append(cell.curator.created_at)
    labeled_at = max(moments) if moments else None
    if labeled_at is None and source == "reference":
        labeled_at = image[5]  # the reference label came with the import
    curator = cell.curator
    return LabelRow(
        cell_id=cell.image_id, file_name=image[1], sha256=image[2], split=cell.split.value,
        state=cell.status, final_label=names.get(label) if label is not None else None,
        label_source=source, agreeing_readers=agreeing, readers_needed=cell.need,
        reference_label=names.get(cell.reference_class_id) if cell.reference_class_id else None,
        votes=votes, curator=users.get(curator.user_id) if curator else None,
        curator_note=curator.note if curator else None,
        curated_at=curator.created_at if curator else None, labeled_at=labeled_at,
        model_version=version_id if prediction else None,
        predicted_label=names.get(prediction[0]) if prediction else None,
        confidence=float(prediction[1]) if prediction else None,
        storage_path=cell.storage_path)


def _keep(row: LabelRow, filters: Filters, names: dict[int, str]) -> bool:
    if filters.states:
        in_state = row.state in filters.states
        if not in_state and LABELED in filters.states and row.final_label is not None:
            in_state = True
        if not in_state:
            return False
    if filters.class_id is not None and row.final_label != names.get(filters.class_id):
        return False
    return filters.since is None or (row.labeled_at is not None
                                     and row.labeled_at >= filters.since)


def count_cells(session: Session, project: Project, split: Split | None = None) -> int:
    """Cells an export walks through (before filters): the length of a progress bar."""
    query = select(func.count(Image.id)).where(Image.project_id == project.id)
    if split is not None:
        query = query.where(Image.split == split)
    return session.scalar(query) or 0


def iter_label_rows(session: Session, project: Project, filters: Filters = ALL,
                    *, progress: Progress | None = None, split: Split | None = None,
                    chunk: int = CHUNK) -> Iterator[LabelRow]:
    """One LabelRow per cell passing ``filters``, in cell id order, a chunk at a time."""
    names = {c.id: c.name for c in project.classes}
    users = dict(session.execute(select(User.id, User.username)).all())
    version_id = session.scalar(select(ModelVersion.id).where(
        ModelVersion.project_id == project.id, ModelVersion.is_active))
    last = 0
    while True:
        query = (select(Image.id, Image.original_name, Image.sha256, Image.split,
                        Image.storage_path, Image.created_at)
                 .where(Image.project_id == project.id, Image.id > last)
                 .order_by(Image.id).limit(chunk))
        if split is not None:
            query = query.where(Image.split == split)
        images = {row[0]: tuple(row) for row in session.execute(query)}
        if not images:
            return
        ids = list(images)
        last = ids[-1]
        states = cell_states(session, project, image_ids=ids)
        predictions = {}
        if version_id is not None:
            predictions = {i: (c, p) for i, c, p in session.execute(
                select(Prediction.image_id, Prediction.predicted_class_id, Prediction.confidence)
                .where(Prediction.model_version_id == version_id,
                       Prediction.image_id.in_(ids)))}
        # A cell that could not be measured (its error is kept for the admin) exports
        # as not measured.
        measured = {r[0]: tuple(r[1:]) for r in session.execute(
            select(CellMeasurement.image_id, *_MEASURED).where(
                CellMeasurement.image_id.in_(ids), CellMeasurement.error.is_(None)))}
        for image_id in ids:
            row = _row(project, states[image_id], images[image_id], names, users,
                       predictions.get(image_id), version_id)
            row.measurements = _measurements(measured.get(image_id), project.microns_per_pixel)
            if _keep(row, filters, names):
                yield row
        if progress is not None:
            progress(len(ids))


def _csv_line(values: list) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def csv_values(row: LabelRow) -> list:
    votes = "; ".join(f"{v['reader']}={v['choice']}" for v in row.votes)
    return [row.cell_id, row.file_name, row.sha256, row.split, row.state, row.final_label or "",
            row.label_source or "", "" if row.agreeing_readers is None else row.agreeing_readers,
            row.readers_needed, row.reference_label or "", votes, row.curator or "",
            row.curator_note or "", _iso(row.curated_at) or "", _iso(row.labeled_at) or "",
            "" if row.model_version is None else row.model_version, row.predicted_label or "",
            "" if row.confidence is None else f"{row.confidence:.6f}",
            *("" if (v := row.measurements.get(k)) is None else v for k in MEASUREMENT_COLUMNS)]


def as_json(row: LabelRow) -> dict:
    return {"cell_id": row.cell_id, "file_name": row.file_name, "sha256": row.sha256,
            "split": row.split, "state": row.state, "final_label": row.final_label,
            "label_source": row.label_source, "agreeing_readers": row.agreeing_readers,
            "readers_needed": row.readers_needed, "reference_label": row.reference_label,
            "votes": row.votes, "curator": row.curator, "curator_note": row.curator_note,
            "curated_at": _iso(row.curated_at), "labeled_at": _iso(row.labeled_at),
            "model_version": row.model_version, "predicted_label": row.predicted_label,
            "confidence": row.confidence,
            "measurements": row.measurements or None}


def labels_csv(session: Session, project: Project, filters: Filters = ALL,
               progress: Progress | None = None) -> Iterator[bytes]:
    """The label table as CSV (UTF-8, a header row), a chunk of rows per item."""
    yield _csv_line(CSV_COLUMNS).encode()
    lines: list[str] = []
    for row in iter_label_rows(session, project, filters, progress=progress):
        lines.append(_csv_line(csv_values(row)))
        if len(lines) >= 200:
            yield "".join(lines).encode()
            lines.clear()
    if lines:
        yield "".join(lines).encode()


def labels_jsonl(session: Session, project: Project, filters: Filters = ALL,
                 progress: Progress | None = None) -> Iterator[bytes]:
    """The label table as JSON Lines: one object per cell, votes as a list."""
    lines: list[str] = []
    for row in iter_label_rows(session, project, filters, progress=progress):
        lines.append(json.dumps(as_json(row), ensure_ascii=False) + "\n")
        if len(lines) >= 200:
            yield "".join(lines).encode()
            lines.clear()
    if lines:
        yield "".join(lines).encode()

