from __future__ import annotations

import time
import uuid

from flask import abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from models import Annotation, Image, Project, Role, utcnow
from models.labels import live_vote

from ..auth.access import require_project, visible_projects
from ..auth.roles import role_required
from ..db import get_db
from ..routing import MAX_ID
from . import bp
from .decisions import DecisionError, parse, record, undo
from .leases import next_for, release, sweep_expired
from .queue import REMAINING_CAP
from .trust import suggestion_trust

SKIP_MEMORY = 500  # cells remembered as skipped per project in the session
UNDO_DEPTH = 10  # the last decisions of a session that Backspace can take back
# Cells per hour is shown only once it measures something: two quick decisions
# would read "120/h".
RATE_MIN_DECISIONS = 10
RATE_MIN_SECONDS = 120
CONFIRM_OVER = 4  # the grid asks before confirming more cells than this at once


def _project(project_id: int) -> Project:
    """The project with its classes and active model: one query, where lazy loads
    would cost each keypress two more."""
    return require_project(get_db(), current_user, project_id,
                           options=[joinedload(Project.classes), joinedload(Project.active_version)])


def _skipped(project_id: int) -> list[int]:
    return session.get("skipped", {}).get(str(project_id), [])


def _reading(project_id: int) -> dict:
    """This browser session's reading of a project: counter, start, undoable decisions."""
    state = session.setdefault("reading", {}).setdefault(
        str(project_id), {"n": 0, "since": time.time(), "recent": []})
    return state


def _count_decision(project_id: int, annotation: Annotation) -> None:
    state = _reading(project_id)
    state["n"] += 1
    state["recent"] = (state["recent"] + [annotation.id])[-UNDO_DEPTH:]
    session.modified = True  # (nested values: Flask does not see them change)
    if annotation.label_class_id is not None:  # a flag is a decision, not a label
        _add_done(1)


def _done(project_id: int, recount: bool = False) -> int:
    """The reader's live class labels in this project: votes naming a class, not
    undone; not flags (ambiguous, unusable: decisions, but no label), nor the bulk
    grid's rejections (which are no votes).

    Counted in SQL when a page loads, then kept up in the session by each
    decision and undo: counting on every keypress would read the reader's
    whole history, which grows all day.  Keyed by user and project, so a shared
    browser never shows the last reader's count, nor another project's.
    """
    kept = session.get("done")
    if recount or not kept or len(kept) != 3 or kept[:2] != [current_user.id, project_id]:
        n = get_db().scalar(select(func.count(Annotation.id))
                            .join(Image, Image.id == Annotation.image_id)
                            .where(Annotation.user_id == current_user.id,
                                   Image.project_id == project_id, live_vote(Annotation),
                                   Annotation.label_class_id.is_not(None)))
        session["done"] = kept = [current_user.id, project_id, int(n or 0)]
    return kept[2]


def _add_done(n: int) -> None:
    kept = session.get("done")
    if kept and len(kept) == 3:  # (a cookie from before the per-project count is recounted)
        kept[2] = max(kept[2] + n, 0)
    session.modified = True


def per_hour(decisions: int, seconds: float) -> int | None:
    """Cells per hour, or None while there is too little to measure."""
    if decisions < RATE_MIN_DECISIONS or seconds < RATE_MIN_SECONDS:
        return None
    return round(decisions * 3600 / seconds)


def _cell_context(project: Project, durable: bool = False, recount: bool = False,
                  undone: str | None = None) -> dict:
    done = _done(project.id, recount)  # (read before next_for commits: one transaction)
    turn = next_for(get_db(), project, current_user.id, _skipped(project.id), durable)
    state = _reading(project.id)
    return dict(project=project, cell=turn.cell, prefetch=turn.prefetch,
                remaining=turn.status.remaining, cap=REMAINING_CAP, done=done,
                session_count=state["n"], per_hour=per_hour(state["n"],
                                                             time.time() - state["since"]),
                rate_min=RATE_MIN_DECISIONS, undone=undone,
                trust=suggestion_trust(project, project.active_version),
                undoable=len(state["recent"]), blind=project.blind_reading,
                # A fresh id per cell shown: a repeated submission of it is recognised.
                submission_id=uuid.uuid4().hex)


def _cell_fragment(project: Project, durable: bool = False):
    return render_template("label/_cell.html", **_cell_context(project, durable))


def _refusal(exc: DecisionError):
    response = render_template("_error.html", title="Not saved", message=str(exc)), exc.status
    if exc.lease_lost:
        # The page fetches a fresh cell on this header instead of showing an error page.
        return (*response, {"HX-Lease-Lost": "1"})
    return response


@bp.get("/")
@role_required(Role.PATHOLOGIST)
def index():
    projects = get_db().scalars(
        visible_projects(get_db(), current_user).order_by(Project.name)).all()
    if len(projects) == 1:
        return redirect(url_for("label.page", project_id=projects[0].id))
    return render_template("label/index.html", projects=projects)


@bp.get("/<int:project_id>")
@role_required(Role.PATHOLOGIST)
def page(project_id: int):
    # Expired leases are swept here (a page load, not every keypress); a claim
    # meeting one on its slot sweeps that one itself.
    sweep_expired(get_db(), utcnow())
    return render_template("label/page.html", **_cell_context(_project(project_id), recount=True))


@bp.get("/<int:project_id>/next")
@role_required(Role.PATHOLOGIST)
def next_(project_id: int):
    return _cell_fragment(_project(project_id))


@bp.post("/<int:project_id>/cells/<int:image_id>")
@role_required(Role.PATHOLOGIST)
def decide(project_id: int, image_id: int):
    project = _project(project_id)
    try:
        # Flushed, then committed with the next cell's lease: one commit per keypress.
        annotation, created = record(get_db(), project, image_id, current_user,
                                     parse(request.form), commit=False)
    except DecisionError as exc:
        return _refusal(exc)
    if created:
        _count_decision(project.id, annotation)
    return _cell_fragment(project, durable=created)


@bp.post("/<int:project_id>/cells/<int:image_id>/skip")
@role_required(Role.PATHOLOGIST)
def skip(project_id: int, image_id: int):
    project = _project(project_id)
    skipped = session.setdefault("skipped", {})
    ids = [i for i in skipped.get(str(project_id), []) if i != image_id] + [image_id]
    skipped[str(project_id)] = ids[-SKIP_MEMORY:]
    session.modified = True
    release(get_db(), image_id, current_user.id)  # committed with the next cell's lease
    return _cell_fragment(project)


@bp.post("/<int:project_id>/undo")
@role_required(Role.PATHOLOGIST)
def undo_last(project_id: int):
    """Backspace: take back the latest decision of this session still standing."""
    project = _project(project_id)
    state = _reading(project.id)
    undone = None
    while state["recent"] and undone is None:
        undone = undo(get_db(), project, current_user, state["recent"].pop())
    session.modified = True
    if undone is None:
        return render_template("_error.html", title="Nothing to undo",
                               message=f"Only the last {UNDO_DEPTH} decisions of this session "
                                       "can be undone."), 409
    state["n"] = max(state["n"] - 1, 0)
    if undone.label_class_id is not None:  # what _count_decision added
        _add_done(-1)
    return render_template("label/_cell.html",
                           **_cell_context(project, undone=_undone_text(project, undone)))


def _undone_text(project: Project, annotation: Annotation) -> str:
    """What an undo took back, in words: "Undid monocyte on cell 12"."""
    what = next((c.name for c in project.classes if c.id == annotation.label_class_id),
                annotation.flag.value if annotation.flag else "the decision")
    return f"Undid {what} on cell {annotation.image_id}: it is back for you to read."


# --- bulk verification -------------------------------------------------------------------

def _threshold(raw: str | None) -> float:
    try:
        value = float(raw) if raw not in (None, "") else 0.9
    except ValueError:
        abort(400, description=f"The confidence threshold must be a number, not {raw!r}.")
    if not 0 <= value <= 1:
        abort(400, description="The confidence threshold must be from 0 to 1.")
    return value


@bp.get("/<int:project_id>/verify")
@role_required(Role.PATHOLOGIST)
def verify_page(project_id: int):
    from .verify import grid

    project = _project(project_id)
    db = get_db()
    name = request.args.get("class") or (project.classes[0].name if project.classes else "")
    label_class = project.class_by_name(name)
    if label_class is None:
        abort(400, description=f"Unknown class {name!r}.")
    threshold = _threshold(request.args.get("min"))
    version = project.active_version
    trust = suggestion_trust(project, version)
    precision = trust.class_precision(label_class.name)
    cells = [] if project.blind_reading or precision is None else grid(
        db, project, current_user, label_class.id, threshold)
    return render_template("label/verify.html", project=project, label_class=label_class,
                           threshold=threshold, version=version, cells=cells, trust=trust,
                           precision=precision, batch=uuid.uuid4().hex,
                           confirm_over=CONFIRM_OVER)


@bp.post("/<int:project_id>/verify")
@role_required(Role.PATHOLOGIST)
def verify_confirm(project_id: int):
    from .verify import confirm

    project = _project(project_id)
    form = request.form
    label_class = project.class_by_name(form.get("class", ""))
    if label_class is None:
        return _refusal(DecisionError(f"Unknown class {form.get('class', '')!r}."))
    try:
        ids = [int(i) for i in form.getlist("image_id")]
        wrong = [int(i) for i in form.getlist("wrong")]
        version_id = int(form.get("model_version_id", ""))
    except ValueError:
        return _refusal(DecisionError("Cell and model ids must be whole numbers."))
    if any(not 0 < i <= MAX_ID for i in [*ids, *wrong, version_id]):
        return _refusal(DecisionError("A cell or model id is out of range."))
    batch = (form.get("batch") or "").strip()
    if not batch or len(batch) > 40:
        return _refusal(DecisionError("The grid's batch id is missing or too long."))
    if suggestion_trust(project, project.active_version).class_precision(
            label_class.name) is None:
        return _refusal(DecisionError(
            f"Bulk verification of {label_class.name} opens once the model's precision for it "
            "is measured on test cells; nothing was saved.", 409))
    confirmed = [i for i in ids if i not in set(wrong)]
    try:
        n = confirm(get_db(), project, current_user, version_id, label_class.id, confirmed,
                    wrong, batch)
    except DecisionError as exc:
        return _refusal(exc)
    state = _reading(project.id)
    state["n"] += n
    _add_done(n)
    flash(f"Confirmed {n} cell(s) as {label_class.name}; {len(wrong)} marked wrong were recorded "
          "as rejections and left this grid (they stay in your queue for labeling).", "info")
    return redirect(url_for("label.verify_page", project_id=project.id,
                            **{"class": label_class.name, "min": form.get("min", "0.9")}))
