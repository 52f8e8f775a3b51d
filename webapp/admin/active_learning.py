"""Admin: a project's active-learning strategy, its review queue, and strategy comparisons."""

from __future__ import annotations

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy import select

from models import Project, ReviewQueue, Role, SimulationRun, SimulationStatus
from models.simulation import cancel_simulation, fail_lost_simulations
from worker.celery_app import BUILD_REVIEW_QUEUE, RUN_SIMULATION

from ..auth.roles import role_required
from ..db import get_db, get_or_404
from ..queueing import celery
from . import bp
from .active_learning_forms import ComparisonForm, StrategyForm
from .polling import polled

SVG_MAX_BYTES = 200_000


def _project(project_id: int) -> Project:
    return get_or_404(Project, project_id, "project")


def _run(run_id: int) -> SimulationRun:
    run = get_or_404(SimulationRun, run_id, "comparison run")
    if run.status == SimulationStatus.RUNNING:
        _fail_lost()
        get_db().refresh(run)
    return run


def _fail_lost() -> None:
    fail_lost_simulations(get_db(), current_app.config["HEMALOOP"].round_stale_seconds)


def _page(project: Project, strategy_form: StrategyForm, comparison_form: ComparisonForm,
          status: int = 200):
    db = get_db()
    _fail_lost()
    queues = db.scalars(select(ReviewQueue).where(ReviewQueue.project_id == project.id)
                        .order_by(ReviewQueue.id.desc()).limit(5)).all()
    runs = db.scalars(select(SimulationRun).where(SimulationRun.project_id == project.id)
                      .order_by(SimulationRun.id.desc()).limit(10)).all()
    return render_template("admin/active_learning.html", project=project, queues=queues,
                           runs=runs, strategy_form=strategy_form,
                           comparison_form=comparison_form), status


@bp.get("/projects/<int:project_id>/active-learning")
@role_required(Role.ADMIN)
def active_learning(project_id: int):
    project = _project(project_id)
    return _page(project, StrategyForm(obj=project), ComparisonForm())


@bp.post("/projects/<int:project_id>/active-learning/strategy")
@role_required(Role.ADMIN)
def save_strategy(project_id: int):
    project = _project(project_id)
    form = StrategyForm()
    if not form.validate_on_submit():
        return _page(project, form, ComparisonForm(), 400)
    project.al_strategy = form.al_strategy.data
    project.al_round_size = form.al_round_size.data
    project.review_random_share = float(form.review_random_share.data)
    get_db().commit()
    flash("Active-learning settings saved; they apply from the next review round.", "info")
    return redirect(url_for("admin.active_learning", project_id=project.id))


@bp.post("/projects/<int:project_id>/review-queue")
@role_required(Role.ADMIN)
def rebuild_review_queue(project_id: int):
    project = _project(project_id)
    try:
        celery().send_task(BUILD_REVIEW_QUEUE, args=[project.id, "admin"])
    except Exception:  # noqa: BLE001 - the broker is down: say so, keep the page
        current_app.logger.exception("could not enqueue the review queue of %s", project.id)
        flash("The review queue could not be queued for rebuilding; try again shortly.", "error")
    else:
        flash("The review queue is being rebuilt; readers keep the current one until the "
              "new one is complete.", "info")
    return redirect(url_for("admin.active_learning", project_id=project.id))


@bp.post("/projects/<int:project_id>/comparisons")
@role_required(Role.ADMIN)
def start_comparison(project_id: int):
    project = _project(project_id)
    form = ComparisonForm()
    if not form.validate_on_submit():
        return _page(project, StrategyForm(obj=project), form, 400)
    db = get_db()
    run = SimulationRun(project_id=project.id, created_by_id=current_user.id, params={
        "strategies": list(form.strategies.data), "initial": form.initial.data,
        "batch": form.batch.data, "rounds": form.rounds.data, "repeats": form.repeats.data})
    db.add(run)
    db.commit()
    try:
        celery().send_task(RUN_SIMULATION, args=[run.id])
    except Exception:  # noqa: BLE001
        current_app.logger.exception("could not enqueue comparison %s", run.id)
        run.status, run.error = SimulationStatus.FAILED, "It could not be queued; try again."
        db.commit()
    return redirect(url_for("admin.comparison", run_id=run.id))


def _svg(run: SimulationRun) -> Markup | None:
    """The run's plot, written by the worker's own SVG writer (no user text inside
    but strategy names, which it escapes)."""
    if run.status != SimulationStatus.SUCCEEDED or not run.output_dir:
        return None
    path = current_app.config["HEMALOOP"].storage_dir / run.output_dir / "curves.svg"
    try:
        if path.stat().st_size > SVG_MAX_BYTES:
            return None
        return Markup(path.read_text(encoding="utf-8"))
    except OSError:
        return None


@bp.get("/comparisons/<int:run_id>")
@role_required(Role.ADMIN)
def comparison(run_id: int):
    run = _run(run_id)
    project = get_db().get(Project, run.project_id)
    if not request.headers.get("HX-Request"):
        return render_template("admin/comparison.html", run=run, project=project, svg=_svg(run))
    return polled(render_template("admin/_comparison.html", run=run, project=project,
                                  svg=_svg(run)), finished=run.status.is_finished)


@bp.post("/comparisons/<int:run_id>/cancel")
@role_required(Role.ADMIN)
def cancel_comparison(run_id: int):
    run = _run(run_id)
    if not cancel_simulation(get_db(), run):
        return render_template("_error.html", title="Not cancelled",
                               message=f"Comparison {run.id} has already {run.status.value}."), 409
    return polled(render_template("admin/_comparison.html", run=run,
                                  project=get_db().get(Project, run.project_id), svg=None),
                  finished=True)
