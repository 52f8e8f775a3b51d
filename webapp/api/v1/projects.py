"""Projects: the ones the token's user may see."""

from __future__ import annotations

from models import Project, Scope

from ...admin.overview import project_overview
from ...auth.access import require_project, visible_projects
from ...db import get_db
from . import bp
from .auth import acting_user, token_auth
from .schemas import ProjectDetailOut, ProjectList
from .serialize import project_json


@bp.get("/projects")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.output(ProjectList)
@bp.doc(tags=["projects"], operation_id="list_projects")
def list_projects():
    """The projects you may see."""
    db = get_db()
    return {"items": [project_json(p)
                      for p in db.scalars(visible_projects(db, acting_user()).order_by(Project.id)).unique()]}


@bp.get("/projects/<int:project_id>")
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.output(ProjectDetailOut)
@bp.doc(tags=["projects"], operation_id="get_project")
def get_project(project_id: int):
    """One project, with its counts."""
    db = get_db()
    project = require_project(db, acting_user(), project_id)
    o = project_overview(db, project, n_rounds=0)
    return {**project_json(project), "pool": o.pool, "test": o.test,
            "reader_labeled": o.reader_labeled, "training_labels": o.training_labels}
