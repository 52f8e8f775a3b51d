"""Admin: self-supervised pretraining of a project's backbone (issue 15), and the
backbone its next round uses.

A run is a row the `train` worker claims (worker/pretraining.py); this page
starts, follows (htmx polling), cancels and lists runs, and sets the project's
``ProjectBackbone`` choice.  The web process never imports TensorFlow.
"""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from models import (
    BackboneChoice, PretrainingRun, PretrainingStatus, Project, ProjectBackbone, Role, utcnow,
)
from models.pretraining import active_run_id, cancel_pretraining, fail_lost_pretraining
from worker.celery_app import RUN_PRETRAINING

from ..auth.roles import role_required
from ..db import get_db, get_or_404
from ..queueing import celery
from . import bp
from .charts import line_chart
from .polling import polled
from .pretraining_forms import BackboneForm, PretrainingForm

HISTORY = 20


def _project(project_id: int) -> Project:
    return get_or_404(Project, project_id, "project")


def _fail_lost() -> None:
    fail_lost_pretraining(get_db(), current_app.config["HEMALOOP"].round_stale_seconds)


def _run(run_id: int) -> PretrainingRun:
    run = get_or_404(PretrainingRun, run_id, "pretraining run")
    if run.status == PretrainingStatus.RUNNING:
        _fail_lost()
        get_db().refresh(run)
    return run


def _succeeded(project_id: int) -> list[PretrainingRun]:
    return list(get_db().scalars(select(PretrainingRun).where(
        PretrainingRun.project_id == project_id,
        PretrainingRun.status == PretrainingStatus.SUCCEEDED).order_by(PretrainingRun.id.desc())))


def _choice_value(row: ProjectBackbone | None) -> str:
    if row is None:
        return "setting"
    if row.choice == BackboneChoice.PRETRAINED:
        return f"run-{row.pretraining_run_id}"
    return row.choice.value


def _loss_chart(run: PretrainingRun):
    if not run.loss_history:
        return None
    return line_chart({"SimSiam loss": list(run.loss_history)}, title="Loss per epoch",
                      x_title="epoch", y_title="negative cosine (−1 best)",
                      x_labels=[str(i + 1) for i in range(len(run.loss_history))])


def _page(project: Project, form: PretrainingForm, backbone_form: BackboneForm | None = None,
          status: int = 200):
    db = get_db()
    _fail_lost()
    settings = current_app.config["HEMALOOP"]
    runs = db.scalars(select(PretrainingRun).where(PretrainingRun.project_id == project.id)
                      .order_by(PretrainingRun.id.desc()).limit(HISTORY)).all()
    row = db.get(ProjectBackbone, project.id)
    if backbone_form is None:
        backbone_form = BackboneForm(backbone=_choice_value(row))
    backbone_form.fill(settings.backbone_weights, _succeeded(project.id))
    return render_template("admin/pretraining.html", project=project, form=form, runs=runs,
                           backbone_form=backbone_form, choice=row), status


@bp.get("/projects/<int:project_id>/pretraining")
@role_required(Role.ADMIN)
def pretraining(project_id: int):
    project = _project(project_id)
    form = PretrainingForm(image_size=current_app.config["HEMALOOP"].input_size)
    return _page(project, form)


@bp.post("/projects/<int:project_id>/pretraining")
@role_required(Role.ADMIN)
def start_pretraining(project_id: int):
    project = _project(project_id)
    form = PretrainingForm()
    if not form.validate_on_submit():
        return _page(project, form, status=400)
    db = get_db()
    _fail_lost()  # a run whose worker died must not block a new one
    run = PretrainingRun(project_id=project.id, created_by_id=current_user.id,
                         epochs=form.epochs.data, image_size=form.image_size.data,
                         batch_size=form.batch_size.data)
    db.add(run)
    try:
        db.commit()
    except IntegrityError:  # uq_pretraining_runs_one_active: one is queued or running
        db.rollback()
        busy = active_run_id(db, project.id)
        if busy is None:
            raise  # not the one-run rule (the project went meanwhile): a real error
        flash(f"Pretraining run {busy} of this project has not finished; cancel it or wait.",
              "error")
        return _page(project, form, status=409)
    try:
        celery().send_task(RUN_PRETRAINING, args=[run.id])
    except Exception:  # noqa: BLE001 - the broker is down: say so on the row
        current_app.logger.exception("could not enqueue pretraining run %s", run.id)
        run.status, run.error = PretrainingStatus.FAILED, "It could not be queued; try again."
        run.finished_at = utcnow()
        db.commit()
    return redirect(url_for("admin.pretraining_run", run_id=run.id))


@bp.get("/pretraining/<int:run_id>")
@role_required(Role.ADMIN)
def pretraining_run(run_id: int):
    run = _run(run_id)
    project = get_db().get(Project, run.project_id)
    context = {"run": run, "project": project, "chart": _loss_chart(run),
               "chosen": _choice_value(get_db().get(ProjectBackbone, project.id))}
    if not request.headers.get("HX-Request"):
        return render_template("admin/pretraining_run.html", **context)
    return polled(render_template("admin/_pretraining_run.html", **context),
                  finished=run.status.is_finished)


@bp.post("/pretraining/<int:run_id>/cancel")
@role_required(Role.ADMIN)
def cancel_pretraining_run(run_id: int):
    run = _run(run_id)
    if not cancel_pretraining(get_db(), run):
        return render_template("_error.html", title="Not cancelled",
                               message=f"Pretraining run {run.id} has already "
                                       f"{run.status.value}."), 409
    project = get_db().get(Project, run.project_id)
    return polled(render_template("admin/_pretraining_run.html", run=run, project=project,
                                  chart=_loss_chart(run), chosen=None), finished=True)


@bp.post("/projects/<int:project_id>/backbone")
@role_required(Role.ADMIN)
def choose_backbone(project_id: int):
    """The backbone the project's next round (and cold start) starts from."""
    project = _project(project_id)
    db = get_db()
    form = BackboneForm()
    form.fill(current_app.config["HEMALOOP"].backbone_weights, _succeeded(project.id))
    if not form.validate_on_submit():
        return _page(project, PretrainingForm(image_size=current_app.config["HEMALOOP"]
                                              .input_size), form, 400)
    value = form.backbone.data
    row = db.get(ProjectBackbone, project.id) or ProjectBackbone(project_id=project.id)
    if value.startswith("run-"):
        row.choice, row.pretraining_run_id = BackboneChoice.PRETRAINED, int(value[4:])
        what = f"pretraining run {row.pretraining_run_id}"
    else:
        row.choice, row.pretraining_run_id = BackboneChoice(value), None
        what = {"setting": "the installation's backbone setting",
                "random": "random initialisation", "imagenet": "ImageNet weights"}[value]
    row.chosen_by_id, row.chosen_at = current_user.id, utcnow()
    db.add(row)
    db.commit()
    flash(f"The next round of {project.name} starts from {what}; it trains afresh (no warm "
          "start across backbones) and reads every cell's features again.", "info")
    return redirect(url_for("admin.pretraining", project_id=project.id))
