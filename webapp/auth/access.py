"""Which projects a user may see: the one place pages, images and the API ask.

Admins see every project.  Pathologists and curators see the projects they
are members of (``project_members``); anything else answers 404, as if the
project (or its cell, or its image) did not exist, so a non-member learns
nothing about it.
"""

from __future__ import annotations

from flask import abort
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from models import Project, ProjectMember, Role, User


def visible_projects(session: Session, user: User) -> Select:
    """A select of the projects ``user`` may see (add order_by/options as needed)."""
    query = select(Project)
    if user.has_role(Role.ADMIN):
        return query
    return query.where(Project.id.in_(
        select(ProjectMember.project_id).where(ProjectMember.user_id == user.id)))


def can_see(session: Session, user: User, project_id: int) -> bool:
    if user.has_role(Role.ADMIN):
        return True
    return session.get(ProjectMember, (project_id, user.id)) is not None


def require_project(session: Session, user: User, project_id: int, options=()) -> Project:
    """The project, or a 404 when it does not exist or ``user`` may not see it.

    One query either way (the labeling page asks on every keypress): the
    membership is a condition of the project's own SELECT.
    """
    if user.has_role(Role.ADMIN):
        project = session.get(Project, project_id, options=list(options))
    else:
        project = session.scalars(
            visible_projects(session, user).where(Project.id == project_id)
            .options(*options)).unique().first()
    if project is None:
        abort(404, description=f"There is no project {project_id}.")
    return project


def require_cell(session: Session, user: User, model, ident: int, noun: str = "cell"):
    """A row with a ``project_id`` (an image): 404 unless its project is visible to ``user``."""
    row = session.get(model, ident)
    if row is None or not can_see(session, user, row.project_id):
        abort(404, description=f"There is no {noun} {ident}.")
    return row
