"""Model versions: list and activate (admins; the admin page's code path)."""

from __future__ import annotations

from flask import abort

from models import ModelVersion, Scope

from ...admin.overview import versions_of
from ...admin.versions import activate_and_rescore
from ...auth.access import require_project
from ...db import get_db
from . import bp
from .auth import acting_user, token_auth
from .schemas import ActivationOut, ModelVersionList
from .serialize import class_names, version_json


@bp.get("/projects/<int:project_id>/models")
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.output(ModelVersionList)
@bp.doc(tags=["models"], operation_id="list_model_versions")
def list_versions(project_id: int):
    """The project's model versions, newest first."""
    db = get_db()
    project = require_project(db, acting_user(), project_id)
    names = class_names(project)
    return {"items": [version_json(v, names) for v in versions_of(db, project.id)]}


@bp.post("/models/<int:version_id>/activate")
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.output(ActivationOut)
@bp.doc(tags=["models"], operation_id="activate_model_version")
def activate(version_id: int):
    """Make this version the one that suggests labels (or roll back to it); the pool is
    re-scored with it.  Activating the active version changes nothing."""
    db = get_db()
    version = db.get(ModelVersion, version_id)
    if version is None:
        abort(404, description=f"There is no model version {version_id}.")
    project = require_project(db, acting_user(), version.project_id)
    queued = activate_and_rescore(db, version)
    return {"version": version_json(version, class_names(project)), "scoring_queued": queued}
