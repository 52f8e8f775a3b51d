"""Training rounds: start, status, cancel (admins; the admin page's code path)."""

from __future__ import annotations

from flask import abort

from models import Scope, TrainingRound
from worker.launch import RoundRefused, cancel_round, create_round, enqueue_round

from ...admin.overview import recent_rounds
from ...auth.access import require_project
from ...db import get_db
from ...queueing import celery
from . import bp
from .auth import acting_user, token_auth
from .errors import json_error
from .schemas import RoundList, RoundOut
from .serialize import round_json


def _round(round_id: int) -> TrainingRound:
    db = get_db()
    rnd = db.get(TrainingRound, round_id)
    if rnd is None:
        abort(404, description=f"There is no round {round_id}.")
    require_project(db, acting_user(), rnd.project_id)
    return rnd


@bp.get("/projects/<int:project_id>/rounds")
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.output(RoundList)
@bp.doc(tags=["rounds"], operation_id="list_rounds")
def list_rounds(project_id: int):
    """The project's latest 20 rounds, newest first."""
    db = get_db()
    project = require_project(db, acting_user(), project_id)
    return {"items": [round_json(r) for r in recent_rounds(db, project.id)]}


@bp.post("/projects/<int:project_id>/rounds")
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.output(RoundOut, status_code=202)
@bp.doc(tags=["rounds"], operation_id="start_round", responses=[404, 409])
def start_round(project_id: int):
    """Queue a training round; 409 when one is already queued or running, or the
    labels cannot train a model yet (the message says why)."""
    db = get_db()
    user = acting_user()
    project = require_project(db, user, project_id)
    try:
        rnd = create_round(db, project, trigger="api", user=user)
    except RoundRefused as exc:
        return json_error(409, "Round not started", str(exc))
    enqueue_round(db, celery(), rnd)
    return round_json(rnd)


@bp.get("/rounds/<int:round_id>")
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.output(RoundOut)
@bp.doc(tags=["rounds"], operation_id="get_round")
def get_round(round_id: int):
    """A round's status, progress and outcome."""
    return round_json(_round(round_id))


@bp.post("/rounds/<int:round_id>/cancel")
@bp.auth_required(token_auth, roles=[Scope.ADMIN.value])
@bp.output(RoundOut)
@bp.doc(tags=["rounds"], operation_id="cancel_round", responses=[404, 409])
def cancel(round_id: int):
    """Ask a queued or running round to stop; 409 when it has already ended."""
    rnd = _round(round_id)
    if not cancel_round(get_db(), rnd):
        return json_error(409, "Not cancelled", f"Round {rnd.id} has already {rnd.status.value}.")
    return round_json(rnd)
