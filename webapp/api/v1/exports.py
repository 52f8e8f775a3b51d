"""Exports (read scope; curators and admins of the project, as the Export page):
labels as CSV and JSON Lines, class folders as a zip, the model package, the
agreement report.  The Export page's code path (webapp/exports): the body is a
generator of chunks streamed as it is made, so a 100,000-cell export never sits
in memory.  Every refusal (an unknown class, a bad date, no model) comes before
the first byte, as `ErrorOut` JSON.
"""

from __future__ import annotations

from apiflask.schemas import FileSchema
from flask import Response, abort
from werkzeug.datastructures import MultiDict

from models import Role, Scope

from ...auth.access import require_project
from ...db import get_db
from ...exports.filters import ExportError
from ...exports.routes import export_response
from . import bp
from .auth import acting_user, token_auth
from .errors import json_error
from .io_schemas import ExportFilterQuery, ModelExportQuery

FILE = FileSchema(type="string", format="binary")
FILTERED_ERRORS = [400, 403, 404]


def _export(project_id: int, format_name: str, q: dict) -> Response:
    db = get_db()
    user = acting_user()
    project = require_project(db, user, project_id)
    if not user.has_role(Role.CURATOR):
        # An export holds every reader's votes by name and the curators' notes.
        abort(403, description="Exports are for curators and admins: they hold every "
                               "reader's votes.")
    # Repeated or comma-separated, as the Export page's query string.
    args = MultiDict([("state", s) for value in q.get("state", []) for s in value.split(",")])
    for key, name in (("class", "class_name"), ("since", "since"), ("version", "version")):
        if q.get(name) is not None:
            args[key] = str(q[name])
    try:
        return export_response(project, format_name, args)
    except ExportError as exc:
        return json_error(exc.status, "Export not made", str(exc))


@bp.get("/projects/<int:project_id>/exports/labels.csv")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.input(ExportFilterQuery, location="query", arg_name="q")
@bp.output(FILE, content_type="text/csv", description="One row per cell.")
@bp.doc(tags=["exports"], operation_id="export_labels_csv", responses=FILTERED_ERRORS)
def export_labels_csv(project_id: int, q: dict):
    """Labels as CSV: per cell its file, sha256, split, state, final label and how it was
    reached, every reader's vote, the curator's note, the active model's prediction."""
    return _export(project_id, "csv", q)


@bp.get("/projects/<int:project_id>/exports/labels.jsonl")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.input(ExportFilterQuery, location="query", arg_name="q")
@bp.output(FILE, content_type="application/x-ndjson", description="One JSON object per line.")
@bp.doc(tags=["exports"], operation_id="export_labels_jsonl", responses=FILTERED_ERRORS)
def export_labels_jsonl(project_id: int, q: dict):
    """Labels as JSON Lines: the CSV's columns, votes as a list."""
    return _export(project_id, "jsonl", q)


@bp.get("/projects/<int:project_id>/exports/folders.zip")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.input(ExportFilterQuery, location="query", arg_name="q")
@bp.output(FILE, content_type="application/zip",
           description="train/<class>/… and test/<class>/…, final labels only.")
@bp.doc(tags=["exports"], operation_id="export_folders", responses=FILTERED_ERRORS)
def export_folders(project_id: int, q: dict):
    """Class folders (the ImageFolder layout Keras and torchvision read as it is),
    train and test by the project's split."""
    return _export(project_id, "folders", q)


@bp.get("/projects/<int:project_id>/exports/model.zip")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.input(ModelExportQuery, location="query", arg_name="q")
@bp.output(FILE, content_type="application/zip",
           description="model.keras, model_card.json, predict.py, README.txt.")
@bp.doc(tags=["exports"], operation_id="export_model", responses=[403, 404, 409, 410])
def export_model(project_id: int, q: dict):
    """The active model (or `version`) as a package that loads and predicts outside
    hemaloop; 409 when the project has no active model, 410 when its file is gone."""
    return _export(project_id, "model", q)


@bp.get("/projects/<int:project_id>/exports/agreement.csv")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.output(FILE, content_type="text/csv",
           description="measure, scope, a, b, cells, value.")
@bp.doc(tags=["exports"], operation_id="export_agreement", responses=[403, 404])
def export_agreement(project_id: int):
    """The agreement report (kappas, alpha, reader pairs, confusion) as one CSV table."""
    return _export(project_id, "agreement", {})
