"""Labeling through the API: the same leases, rules and code as the labeling page.

A program labels the way a reader does: ask for a cell (a lease, from
webapp/label/leases.py), then post the decision for it (recorded by
webapp/label/decisions.py, which refuses a cell not leased to you, a test
cell, an unknown class, a second vote).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from models import Annotation, Image, Lease, Project, Role, Scope

from ...auth.access import require_project
from ...db import get_db
from ...label.decisions import DecisionError, parse, record, undo
from ...label.leases import next_for
from . import bp
from .auth import acting_user, token_auth
from .errors import json_error
from .schemas import (AnnotationCreated, AnnotationIn, AnnotationPage, AnnotationQuery,
                      AnnotationUndone, LeaseIn, LeaseOut)
from .serialize import annotation_json, cell_json, class_names, usernames


def _project(project_id: int) -> Project:
    db = get_db()
    project = require_project(db, acting_user(), project_id)
    # The label code reads classes and the active model; load them now.
    return db.get(Project, project.id,
                  options=[joinedload(Project.classes), joinedload(Project.active_version)])


@bp.get("/projects/<int:project_id>/annotations")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.input(AnnotationQuery, location="query", arg_name="q")
@bp.output(AnnotationPage)
@bp.doc(tags=["annotations"], operation_id="list_annotations")
def list_annotations(project_id: int, q: dict):
    """Annotations by id: yours, or (curators and admins) everyone's; undos included
    as `retract` rows naming the decision they void."""
    db = get_db()
    user = acting_user()
    project = require_project(db, user, project_id)
    stmt = (select(Annotation).join(Image, Image.id == Annotation.image_id)
            .where(Image.project_id == project.id, Annotation.id > q["cursor"])
            .order_by(Annotation.id).limit(q["limit"] + 1))
    if not user.has_role(Role.CURATOR):
        stmt = stmt.where(Annotation.user_id == user.id)
    if "image_id" in q:
        stmt = stmt.where(Annotation.image_id == q["image_id"])
    rows = list(db.scalars(stmt))
    more = len(rows) > q["limit"]
    rows = rows[: q["limit"]]
    names, users = class_names(project), usernames(db, [a.user_id for a in rows])
    return {"items": [annotation_json(a, names, users) for a in rows],
            "next_cursor": rows[-1].id if more else None}


@bp.post("/projects/<int:project_id>/leases")
@bp.auth_required(token_auth, roles=[Scope.LABEL.value])
@bp.input(LeaseIn, arg_name="body")
@bp.output(LeaseOut)
@bp.doc(tags=["annotations"], operation_id="next_cell")
def next_cell(project_id: int, body: dict):
    """Lease the next cell that needs you (or the one you hold), as the labeling page does.

    Label it with POST /projects/{id}/annotations before the lease runs out
    (the project's lease minutes); `cell` is null when no cell needs you.
    """
    db = get_db()
    user = acting_user()
    project = _project(project_id)
    turn = next_for(db, project, user.id, body["skipped"], durable=False)
    if turn.cell is None:
        return {"cell": None, "expires_at": None, "model_version_id": None,
                "suggested_class_id": None, "remaining": turn.status.remaining}
    blind = project.blind_reading
    prediction = None if blind else turn.cell.prediction
    expires = db.scalar(select(Lease.expires_at).where(
        Lease.image_id == turn.cell.image.id, Lease.user_id == user.id))
    return {"cell": cell_json(turn.cell.image, prediction, class_names(project)),
            "expires_at": expires,
            "model_version_id": prediction.model_version_id if prediction else None,
            "suggested_class_id": turn.cell.suggestion.id if turn.cell.suggestion and not blind
            else None,
            "remaining": turn.status.remaining}


@bp.post("/projects/<int:project_id>/annotations")
@bp.auth_required(token_auth, roles=[Scope.LABEL.value])
@bp.input(AnnotationIn, arg_name="body")
@bp.output(AnnotationCreated, status_code=201)
@bp.doc(tags=["annotations"], operation_id="create_annotation", responses=[400, 404, 409])
def create_annotation(project_id: int, body: dict):
    """Record your decision on a cell leased to you (a class name, `ambiguous` or
    `unusable`); a repeated `submission_id` is recorded once."""
    db = get_db()
    user = acting_user()
    project = _project(project_id)
    try:
        decision = parse({k: v for k, v in body.items() if k != "image_id"})
        annotation, created = record(db, project, body["image_id"], user, decision)
    except DecisionError as exc:
        # The reasons are the labeling page's: meant for the person, no internals.
        return json_error(exc.status, "Not saved", str(exc), lease_lost=exc.lease_lost)
    names = class_names(project)
    return {"created": created,
            "annotation": annotation_json(annotation, names, {user.id: user.username})}


@bp.post("/projects/<int:project_id>/annotations/<int:annotation_id>/undo")
@bp.auth_required(token_auth, roles=[Scope.LABEL.value])
@bp.output(AnnotationUndone)
@bp.doc(tags=["annotations"], operation_id="undo_annotation")
def undo_annotation(project_id: int, annotation_id: int):
    """Take back one of your decisions (the page's Backspace): a `retract` row voids
    it and the cell is leased to you again.  Returns the decision undone; 404 when it
    is not yours, not in this project, or already undone."""
    db = get_db()
    user = acting_user()
    project = _project(project_id)
    undone = undo(db, project, user, annotation_id)
    if undone is None:
        return json_error(404, "Nothing to undo",
                          f"Annotation {annotation_id} is not a live decision of yours in "
                          "this project.")
    return {"undone": annotation_json(undone, class_names(project), {user.id: user.username})}
