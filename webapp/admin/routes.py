from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from wtforms import SelectChoice

from models import ModelVersion, Project, Role, TrainingRound
from models.fine_tune_cost import fine_tune_costs
from models.labels import ReadingRules, unsettled_by
from worker.launch import RoundRefused, cancel_round, create_round, enqueue_round

from ..auth.roles import role_required
from ..db import get_db, get_or_404
from ..queueing import celery
from . import bp
from .forms import ProjectSettingsForm, ReadingSettingsForm
from .polling import polled
from .overview import history_chart, project_overview, quality_chart, recent_rounds, versions_of
from .versions import activate_and_rescore


def _project(project_id: int) -> Project:
    return get_or_404(Project, project_id, "project")


def _round(round_id: int) -> TrainingRound:
    return get_or_404(TrainingRound, round_id, "round")


@bp.get("/")
@role_required(Role.ADMIN)
def index():
    # Only reads: lost rounds are recovered by Celery beat (worker/tasks.py).
    db = get_db()
    projects = db.scalars(select(Project).order_by(Project.name)).all()
    return render_template("admin/index.html",
                           overviews=[project_overview(db, p) for p in projects])


@bp.post("/projects/<int:project_id>/rounds")
@role_required(Role.ADMIN)
def start_round(project_id: int):
    db = get_db()
    project = _project(project_id)
    try:
        rnd = create_round(db, project, trigger="admin", user=current_user)
    except RoundRefused as exc:
        return render_template("_error.html", title="Round not started", message=str(exc)), 409
    enqueue_round(db, celery(), rnd)
    return render_template("admin/_rounds.html", project=project,
                           rounds=recent_rounds(db, project.id))


@bp.post("/rounds/<int:round_id>/cancel")
@role_required(Role.ADMIN)
def cancel(round_id: int):
    rnd = _round(round_id)
    if not cancel_round(get_db(), rnd):
        return render_template("_error.html", title="Not cancelled",
                               message=f"Round {rnd.id} has already {rnd.status.value}."), 409
    return render_template("admin/_round_row.html", rnd=rnd)


@bp.get("/rounds/<int:round_id>/row")
@role_required(Role.ADMIN)
def round_row(round_id: int):
    """The polled row; once the round has ended, 286 stops the polling and a
    ``round-N-finished`` event has the page refresh what the round changed."""
    rnd = _round(round_id)
    return polled(render_template("admin/_round_row.html", rnd=rnd),
                  finished=rnd.status.is_finished,
                  events=(f"round-{rnd.id}-finished", f"project-{rnd.project_id}-round-finished"))


@bp.get("/projects/<int:project_id>/figures")
@role_required(Role.ADMIN)
def project_figures(project_id: int):
    """A project's figures on the admin card (active model, labels), refreshed when a round ends."""
    return render_template("admin/_figures.html", o=project_overview(get_db(), _project(project_id)))


def _round_result(rnd: TrainingRound) -> dict:
    db = get_db()
    version = db.scalar(select(ModelVersion).where(ModelVersion.round_id == rnd.id))
    return {"rnd": rnd, "version": version, "project": db.get(Project, rnd.project_id),
            "chart": history_chart(version) if version else None}


@bp.get("/rounds/<int:round_id>/result")
@role_required(Role.ADMIN)
def round_result(round_id: int):
    """The round page's timings, model metrics and confusion matrix, refreshed when it ends."""
    return render_template("admin/_round_result.html", **_round_result(_round(round_id)))


@bp.get("/rounds/<int:round_id>")
@role_required(Role.ADMIN)
def round_detail(round_id: int):
    return render_template("admin/round.html", **_round_result(_round(round_id)))


@bp.get("/projects/<int:project_id>/models")
@role_required(Role.ADMIN)
def models(project_id: int):
    project = _project(project_id)
    versions = versions_of(get_db(), project.id)
    return render_template("admin/models.html", project=project, versions=versions,
                           chart=quality_chart(versions))


@bp.post("/models/<int:version_id>/activate")
@role_required(Role.ADMIN)
def activate_version(version_id: int):
    """Activate (or roll back to) a model version; the pool is re-scored with it."""
    db = get_db()
    version = get_or_404(ModelVersion, version_id, "model version")
    if not version.is_active:
        if activate_and_rescore(db, version):
            flash(f"Model v{version.id} is now active; new cells are being scored.", "info")
        else:
            flash(f"Model v{version.id} is active, but re-scoring could not be queued; "
                  "cells imported since its round have no suggestion yet.", "error")
    return redirect(url_for("admin.models", project_id=version.project_id))


@bp.route("/projects/<int:project_id>/settings", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def project_settings(project_id: int):
    project = _project(project_id)
    form = ProjectSettingsForm(obj=project)
    if request.method == "POST" and form.validate_on_submit():
        form.populate_obj(project)
        get_db().commit()
        flash("Project settings saved.", "info")
        return redirect(url_for("admin.index"))
    status = 400 if request.method == "POST" else 200
    return render_template("admin/settings.html", project=project, form=form,
                           costs=fine_tune_costs(get_db())), status


def _reading_form(project: Project) -> ReadingSettingsForm:
    form = ReadingSettingsForm(obj=project)
    form.contested_classes.choices = [SelectChoice(c.id, c.name) for c in project.classes]
    if request.method == "GET":
        form.contested_classes.data = list(project.contested_class_ids or [])
    return form


def _unsettled(project: Project, form: ReadingSettingsForm) -> int:
    """Final labels the form's rules would un-settle, counted with the labels module's
    own rules and nothing saved (0 when the rules do not change)."""
    proposed = ReadingRules(form.readers_per_cell.data, form.contested_readers.data,
                            tuple(form.contested_classes.data or ()), form.agreement_share.data)
    if proposed == ReadingRules.of(project):
        return 0
    return unsettled_by(get_db(), project, proposed)


@bp.post("/projects/<int:project_id>/reading/preview")
@role_required(Role.ADMIN)
def reading_preview(project_id: int):
    """What the rules in the form would do, shown as the admin edits them (htmx)."""
    project = _project(project_id)
    form = _reading_form(project)
    unsettled = _unsettled(project, form) if form.validate_on_submit() else None
    return render_template("admin/_unsettle_preview.html", unsettled=unsettled)


@bp.route("/projects/<int:project_id>/reading", methods=["GET", "POST"])
@role_required(Role.ADMIN)
def reading_settings(project_id: int):
    project = _project(project_id)
    form = _reading_form(project)
    unsettled = None
    if request.method == "POST" and form.validate_on_submit():
        # The admin confirms this very number (it may grow while they read).
        unsettled = _unsettled(project, form)
        if unsettled and request.form.get("confirm_unsettle") != str(unsettled):
            return render_template("admin/reading.html", project=project, form=form,
                                   unsettled=unsettled), 409
        project.readers_per_cell = form.readers_per_cell.data
        project.contested_readers = form.contested_readers.data
        project.contested_class_ids = list(form.contested_classes.data or [])
        project.agreement_share = form.agreement_share.data
        project.blind_reading = form.blind_reading.data
        project.lease_minutes = form.lease_minutes.data
        if form.suggestion_min_accuracy.data is not None:
            project.suggestion_min_accuracy = form.suggestion_min_accuracy.data
        get_db().commit()
        flash("Reading settings saved." + (
            f" {unsettled} label(s) went back to the readers." if unsettled else ""), "info")
        return redirect(url_for("admin.index"))
    status = 400 if request.method == "POST" else 200
    return render_template("admin/reading.html", project=project, form=form,
                           unsettled=unsettled), status
