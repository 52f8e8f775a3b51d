"""Cells: list (cursor pages, filters) and get, with the active model's prediction."""

from __future__ import annotations

from flask import abort
from sqlalchemy import and_, select

from models import CellMeasurement, Image, Prediction, Project, Role, Scope, User
from models.labels import cell_states

from ...auth.access import require_project
from ...db import get_db
from . import bp
from .auth import acting_user, token_auth
from .schemas import CellDetailOut, CellPage, CellQuery
from .serialize import cell_json, class_names, measurements_json

# State and label filters are worked out in Python (models/labels.py), a
# chunk of cells at a time; one call looks at no more than this many.
SCAN_LIMIT = 5000
CHUNK = 500


def _sees_votes(user: User) -> bool:
    # The curation pages show states and final labels; readers see only their own votes.
    return user.has_role(Role.CURATOR)


def _sees_predictions(user: User, project: Project) -> bool:
    return not project.blind_reading or _sees_votes(user)


def _class_id(project: Project, name: str) -> int:
    c = project.class_by_name(name)
    if c is None:
        abort(400, description=f"Unknown class {name!r}; this project's classes are "
                               + ", ".join(x.name for x in project.classes) + ".")
    return c.id


@bp.get("/projects/<int:project_id>/cells")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.input(CellQuery, location="query", arg_name="q")
@bp.output(CellPage)
@bp.doc(tags=["cells"], operation_id="list_cells", responses=[400, 403, 404])
def list_cells(project_id: int, q: dict):
    """Cells by id, a page at a time; filter by split, state, final label, prediction."""
    db = get_db()
    user = acting_user()
    project = require_project(db, user, project_id)
    wants_state = "state" in q or "label" in q
    if wants_state and not _sees_votes(user):
        abort(403, description="Filtering by state or final label is for curators and admins.")
    wants_prediction = any(k in q for k in ("predicted_class", "min_confidence", "max_confidence"))
    if wants_prediction and not _sees_predictions(user, project):
        abort(403, description="This project reads blind: readers do not see predictions.")
    label_id = _class_id(project, q["label"]) if "label" in q else None
    version = project.active_version if _sees_predictions(user, project) else None
    join_on = (and_(Prediction.image_id == Image.id, Prediction.model_version_id == version.id)
               if version is not None else Prediction.id == -1)
    stmt = (select(Image, Prediction).outerjoin(Prediction, join_on)
            .where(Image.project_id == project.id).order_by(Image.id))
    if "split" in q:
        stmt = stmt.where(Image.split == q["split"])
    if "predicted_class" in q:
        stmt = stmt.where(Prediction.predicted_class_id == _class_id(project, q["predicted_class"]))
    if "min_confidence" in q:
        stmt = stmt.where(Prediction.confidence >= q["min_confidence"])
    if "max_confidence" in q:
        stmt = stmt.where(Prediction.confidence <= q["max_confidence"])

    names = class_names(project)
    limit, cursor = q["limit"], q["cursor"]
    items: list[dict] = []
    scanned = 0
    while True:
        chunk = limit + 1 if not wants_state else CHUNK
        rows = db.execute(stmt.where(Image.id > cursor).limit(chunk)).all()
        states = (cell_states(db, project, image_ids=[i.id for i, _p in rows])
                  if _sees_votes(user) and rows else {})
        for image, prediction in rows:
            state = states.get(image.id)
            if wants_state and not ((q.get("state") is None or state.status == q["state"]) and
                                    (label_id is None or state.class_id == label_id)):
                cursor = image.id
                continue
            if len(items) == limit:
                return {"items": items, "next_cursor": items[-1]["id"]}
            items.append(cell_json(image, prediction, names, state))
            cursor = image.id
        scanned += len(rows)
        if len(rows) < chunk:
            return {"items": items, "next_cursor": None}
        if wants_state and (len(items) == limit or scanned >= SCAN_LIMIT):
            return {"items": items, "next_cursor": cursor}


@bp.get("/cells/<int:image_id>")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.output(CellDetailOut)
@bp.doc(tags=["cells"], operation_id="get_cell")
def get_cell(image_id: int):
    """One cell, with the active model's prediction and (for curators) its state."""
    db = get_db()
    user = acting_user()
    image = db.get(Image, image_id)
    if image is None:
        abort(404, description=f"There is no cell {image_id}.")
    project = require_project(db, user, image.project_id)
    prediction = None
    version = project.active_version
    if version is not None and _sees_predictions(user, project):
        prediction = db.scalar(select(Prediction).where(
            Prediction.image_id == image.id, Prediction.model_version_id == version.id))
    state = (cell_states(db, project, image_ids=[image.id])[image.id]
             if _sees_votes(user) else None)
    body = cell_json(image, prediction, class_names(project), state)
    body["measurements"] = measurements_json(db.get(CellMeasurement, image.id), project)
    return body
