"""Which projects a user may see: the one rule every page, image and API route asks.

Today's rule: every signed-in user sees every project.  Per-project
membership (issue 13) replaces the bodies of these two functions; their
signatures stay, so callers need no change.
"""

from __future__ import annotations

from flask import abort
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from models import Project, User


def visible_projects(session: Session, user: User) -> Select:
    """A select of the projects ``user`` may see, by id."""
    return select(Project).order_by(Project.id)


def require_project(session: Session, user: User, project_id: int) -> Project:
    """The project, or 404 when it does not exist or ``user`` may not see it (the
    same answer both ways, so ids do not tell which projects exist)."""
    project = session.get(Project, project_id)
    if project is None:
        abort(404, description=f"There is no project {project_id}.")
    return project
