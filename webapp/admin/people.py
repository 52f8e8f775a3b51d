"""Admins manage accounts: create, change role, deactivate, reset a password."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select

from models import Project, ProjectMember, Role, User

from ..auth.roles import role_required
from ..bootstrap import SetupError, create_user, one_time_password
from ..db import get_db, get_or_404
from . import bp
from .people_forms import NewUserForm, RoleForm


def _user(user_id: int) -> User:
    return get_or_404(User, user_id, "user")


def _page(form: NewUserForm | None = None, status: int = 200, problems=(), shown=None):
    db = get_db()
    users = db.scalars(select(User).order_by(User.username)).all()
    projects = {}
    for user_id, name in db.execute(select(ProjectMember.user_id, Project.name)
                                    .join(Project, Project.id == ProjectMember.project_id)
                                    .order_by(Project.name)):
        projects.setdefault(user_id, []).append(name)
    return render_template("admin/users.html", users=users, form=form or NewUserForm(),
                           role_form=RoleForm(), projects=projects, problems=list(problems),
                           shown=shown), status


@bp.get("/users")
@role_required(Role.ADMIN)
def users():
    return _page()


@bp.post("/users")
@role_required(Role.ADMIN)
def create_user_view():
    form = NewUserForm()
    if not form.validate_on_submit():
        return _page(form, 400)
    db = get_db()
    try:
        user, password = create_user(db, form.username.data, Role(form.role.data))
    except SetupError as exc:
        db.rollback()
        return _page(form, 400, [str(exc)])
    user.must_change_password = True  # the admin chose nothing: the user picks their own
    db.commit()
    # Shown once, in this response only; never stored in the clear or flashed.
    return _page(shown={"username": user.username, "password": password, "new": True})


def _not_self(user: User, what: str) -> None:
    if user.id == current_user.id:
        abort(409, description=f"You cannot {what} your own account here "
              "(another admin can; your password is on your Account page).")


@bp.post("/users/<int:user_id>/role")
@role_required(Role.ADMIN)
def change_role(user_id: int):
    user = _user(user_id)
    _not_self(user, "change the role of")
    form = RoleForm()
    if not form.validate_on_submit():
        abort(400, description="Choose a role: pathologist, curator or admin.")
    user.role = Role(form.role.data)
    get_db().commit()
    flash(f"{user.username} is now a {user.role.value}.", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/deactivate")
@role_required(Role.ADMIN)
def deactivate(user_id: int):
    user = _user(user_id)
    _not_self(user, "deactivate")
    user.deactivate()  # its open sessions end at their next request
    get_db().commit()
    flash(f"{user.username} can no longer log in; their open sessions have ended. "
          "Their labels stay.", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/activate")
@role_required(Role.ADMIN)
def activate_user(user_id: int):
    user = _user(user_id)
    user.is_active = True
    get_db().commit()
    flash(f"{user.username} can log in again.", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/reset-password")
@role_required(Role.ADMIN)
def reset_password(user_id: int):
    user = _user(user_id)
    _not_self(user, "reset the password of")
    db = get_db()
    password = one_time_password(db, user)
    db.commit()
    return _page(shown={"username": user.username, "password": password, "new": False})
