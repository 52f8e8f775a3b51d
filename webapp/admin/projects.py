"""Admins create projects, add classes and choose who reads each project."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from sqlalchemy import func, select
from wtforms import SelectChoice

from models import Image, ImportJob, Project, ProjectMember, Role, User

from ..auth.roles import role_required
from ..bootstrap import ClassSpec, SetupError, add_class, add_member, create_project, remove_member
from ..db import get_db, get_or_404
from . import bp
from .people_forms import (CLASS_ROWS, ROW_COLOURS, ImportForm, MemberForm, NewClassForm,
                           NewProjectForm)


def _project(project_id: int) -> Project:
    return get_or_404(Project, project_id, "project")


def _class_rows() -> list[ClassSpec]:
    """The custom-class rows of the form, without the ones left empty."""
    names = request.form.getlist("class_name")
    keys = request.form.getlist("class_hotkey")
    colours = request.form.getlist("class_colour")
    rows = [ClassSpec(n.strip(), k.strip(), c.strip())
            for n, k, c in zip(names[:CLASS_ROWS], keys, colours, strict=False)]
    return [r for r in rows if r.name or r.hotkey]


@bp.route("/projects/new", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def new_project():
    form = NewProjectForm()
    rows = _class_rows() if request.method == "POST" else []
    problems: list[str] = []
    if request.method == "POST" and form.validate_on_submit():
        custom = form.preset.data == "custom"
        db = get_db()
        try:
            project = create_project(
                db, form.name.data, "pbc8" if custom else form.preset.data,
                classes=rows if custom else None, test_share=form.test_share.data,
                readers_per_cell=form.readers_per_cell.data,
                blind_reading=form.blind_reading.data, al_strategy=form.al_strategy.data,
                al_round_size=form.al_round_size.data,
                feature_sources=form.feature_sources.data)
        except SetupError as exc:
            db.rollback()
            problems = str(exc).split("; ")
        else:
            db.commit()
            flash(f"Project {project.name!r} created. Add its readers and import its cells "
                  "below.", "info")
            return redirect(url_for("admin.project_page", project_id=project.id))
    status = 400 if request.method == "POST" else 200
    return render_template("admin/project_new.html", form=form, rows=rows, problems=problems,
                           n_rows=CLASS_ROWS, row_colours=ROW_COLOURS), status


def _page(project: Project, class_form: NewClassForm | None = None, status: int = 200,
          problems: list[str] | None = None):
    db = get_db()
    members = db.scalars(select(User).join(ProjectMember, ProjectMember.user_id == User.id)
                         .where(ProjectMember.project_id == project.id)
                         .order_by(User.username)).all()
    member_ids = {u.id for u in members}
    candidates = [u for u in db.scalars(select(User).where(
        User.role.in_([Role.PATHOLOGIST, Role.CURATOR]), User.is_active).order_by(User.username))
        if u.id not in member_ids]
    member_form = MemberForm()
    member_form.user_id.choices = [SelectChoice(u.id, f"{u.username} ({u.role.value})")
                                  for u in candidates]
    import_form = ImportForm(trust_labels=project.train_on_reference)
    jobs = db.scalars(select(ImportJob).where(ImportJob.project_id == project.id)
                      .order_by(ImportJob.id.desc()).limit(10)).all()
    n_cells = db.scalar(select(func.count(Image.id)).where(Image.project_id == project.id))
    return render_template("admin/project.html", project=project, members=members,
                           member_form=member_form, candidates=candidates,
                           class_form=class_form or NewClassForm(), import_form=import_form,
                           jobs=jobs, n_cells=n_cells, problems=problems or []), status


@bp.get("/projects/<int:project_id>")
@role_required(Role.ADMIN)
def project_page(project_id: int):
    return _page(_project(project_id))


@bp.post("/projects/<int:project_id>/classes")
@role_required(Role.ADMIN)
def add_project_class(project_id: int):
    project = _project(project_id)
    form = NewClassForm()
    if not form.validate_on_submit():
        return _page(project, form, 400)
    db = get_db()
    try:
        label_class = add_class(db, project, ClassSpec(form.name.data, form.hotkey.data,
                                                       form.colour.data))
    except SetupError as exc:
        db.rollback()
        return _page(project, form, 400, str(exc).split("; "))
    db.commit()
    flash(f"Class {label_class.name!r} added [{label_class.hotkey}]. Existing labels stay. "
          "The next round trains a new network from the backbone (a warm start needs the "
          "same classes), so it may take longer than the last one.", "info")
    return redirect(url_for("admin.project_page", project_id=project.id))


@bp.post("/projects/<int:project_id>/members")
@role_required(Role.ADMIN)
def add_project_member(project_id: int):
    project = _project(project_id)
    form = MemberForm()
    if not form.validate_on_submit() or not form.user_id.data:
        flash("Choose a reader to add.", "error")
        return redirect(url_for("admin.project_page", project_id=project.id))
    db = get_db()
    user = get_or_404(User, form.user_id.data, "user")
    if user.role == Role.ADMIN:
        flash(f"{user.username} is an admin and sees every project already.", "info")
    elif add_member(db, project, user):
        db.commit()
        flash(f"{user.username} now reads {project.name}.", "info")
    return redirect(url_for("admin.project_page", project_id=project.id))


@bp.post("/projects/<int:project_id>/members/<int:user_id>/remove")
@role_required(Role.ADMIN)
def remove_project_member(project_id: int, user_id: int):
    project = _project(project_id)
    user = get_or_404(User, user_id, "user")
    db = get_db()
    remove_member(db, project, user)
    db.commit()
    flash(f"{user.username} no longer sees {project.name}; their labels stay.", "info")
    return redirect(url_for("admin.project_page", project_id=project.id))
