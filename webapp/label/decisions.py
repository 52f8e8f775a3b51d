"""Turning a reader's keypress into an annotation row, or a clear refusal."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import (Annotation, Flag, Image, Kind, Lease, ModelVersion, Origin, Project, Split,
                    User, utcnow)
from models.labels import live_vote
from models.open_slots import lock_for_vote

from ..routing import MAX_ID

MAX_DURATION_MS = 24 * 3600 * 1000
# The reader's live lease on the cell, deleted as the claim on it (built once:
# every keypress runs it).
_USE_LEASE = delete(Lease).where(Lease.image_id == bindparam("image_id"),
                                 Lease.user_id == bindparam("user_id"),
                                 Lease.expires_at > bindparam("now"))


class DecisionError(ValueError):
    """The request cannot be recorded; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400, lease_lost: bool = False):
        super().__init__(message)
        self.status = status
        # The reader's hold on the cell ran out: the page fetches a fresh cell.
        self.lease_lost = lease_lost


@dataclass(frozen=True)
class Decision:
    choice: str  # a class name, or a flag value
    duration_ms: int | None
    model_version_id: int | None
    suggested_class_id: int | None
    submission_id: str | None


def _optional_int(raw: str | None, what: str) -> int | None:
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise DecisionError(f"{what} must be a whole number, not {raw!r}") from None


def _optional_id(raw: str | None, what: str) -> int | None:
    """An id from the form; one no id column can hold is refused like any bad id."""
    value = _optional_int(raw, what)
    if value is not None and not 0 < value <= MAX_ID:
        raise DecisionError(f"{what} {value} is not an id of this project.")
    return value


def parse(form) -> Decision:
    choice = (form.get("choice") or "").strip()
    if not choice:
        raise DecisionError("No class was chosen.")
    duration = _optional_int(form.get("duration_ms"), "duration_ms")
    if duration is not None:
        duration = min(max(duration, 0), MAX_DURATION_MS)
    submission = (form.get("submission_id") or "").strip() or None
    if submission is not None and len(submission) > 64:
        raise DecisionError("submission_id is too long.")
    return Decision(choice, duration, _optional_id(form.get("model_version_id"), "model_version_id"),
                    _optional_id(form.get("suggested_class_id"), "suggested_class_id"), submission)


def _earlier(session: Session, user: User, submission_id: str | None) -> Annotation | None:
    if not submission_id:
        return None
    return session.scalar(select(Annotation).where(
        Annotation.user_id == user.id, Annotation.submission_id == submission_id))


def take_lease(session: Session, image: Image, user: User) -> None:
    """Use up the reader's live lease on the cell, or refuse with the reason.

    The DELETE is the claim: of two requests racing on one lease, the second
    deletes nothing (PostgreSQL row lock, SQLite write lock) and is refused.
    """
    # Core, on the session's connection: the ORM's DML bookkeeping costs
    # several times the DELETE itself, and no Lease object is loaded here.
    taken = session.connection().execute(
        _USE_LEASE, {"image_id": image.id, "user_id": user.id, "now": utcnow()}).rowcount
    if taken:
        return
    session.rollback()
    if session.scalar(select(Annotation.id).where(
            Annotation.image_id == image.id, Annotation.user_id == user.id,
            live_vote(Annotation)).limit(1)) is not None:
        raise DecisionError(f"You have already labeled cell {image.id}; "
                            "Backspace undoes your last decisions.", 409)
    expired = session.scalar(select(Lease.id).where(
        Lease.image_id == image.id, Lease.user_id == user.id).limit(1))
    if expired is not None:
        raise DecisionError(f"Your hold on cell {image.id} ran out; nothing was saved. "
                            "Here is a fresh cell.", 409, lease_lost=True)
    raise DecisionError(f"Cell {image.id} is not leased to you (it was not shown to you, or "
                        "your hold on it ran out); nothing was saved.", 409, lease_lost=True)


def record(session: Session, project: Project, image_id: int, user: User, decision: Decision,
           kind: Kind = Kind.LABEL, commit: bool = True) -> tuple[Annotation, bool]:
    """Validate and store; returns (annotation, created). Nothing is written on error.

    A repeated submission id (double keypress, retried request) returns the
    first annotation instead of writing a second.  With ``commit=False`` the
    row is only flushed: the caller commits it together with the next lease
    (one commit, one disk sync, per keypress).
    """
    # A repeated submission is recognised below, when its lease is found used up:
    # checking for it first would cost every keypress a query.
    image = lock_for_vote(session, image_id)
    if image is None or image.project_id != project.id:
        raise DecisionError(f"Cell {image_id} does not exist in project {project.name!r}.", 404)
    if image.split != Split.POOL:
        raise DecisionError(f"Cell {image_id} is in the test split and is not labeled here.", 409)
    label_class = project.class_by_name(decision.choice)
    flag = None
    if label_class is None:
        try:
            flag = Flag(decision.choice)
            if flag == Flag.EXCLUDED:
                raise ValueError("a curator's decision")
        except ValueError:
            names = ", ".join(c.name for c in project.classes)
            raise DecisionError(
                f"Unknown class {decision.choice!r}; this project's classes are {names}.") from None
    if decision.model_version_id is not None:
        version = session.get(ModelVersion, decision.model_version_id)
        if version is None or version.project_id != project.id:
            raise DecisionError(f"Model version {decision.model_version_id} is not this project's.")
    if decision.suggested_class_id is not None and decision.suggested_class_id not in {
            c.id for c in project.classes}:
        raise DecisionError("The suggested class is not one of this project's classes.")
    try:
        take_lease(session, image, user)
    except DecisionError:
        # A retried request whose first copy went through meanwhile.
        earlier = _earlier(session, user, decision.submission_id)
        if earlier is not None:
            return earlier, False
        raise
    annotation = Annotation(
        kind=kind, image_id=image.id, user_id=user.id, origin=Origin.READER,
        label_class_id=label_class.id if label_class else None, flag=flag,
        duration_ms=decision.duration_ms, model_version_id=decision.model_version_id,
        suggested_class_id=decision.suggested_class_id, submission_id=decision.submission_id,
    )
    session.add(annotation)
    try:
        session.commit() if commit else session.flush()
    except IntegrityError:
        # Two copies of one submission raced; the other one won.
        session.rollback()
        earlier = session.scalar(select(Annotation).where(
            Annotation.user_id == user.id, Annotation.submission_id == decision.submission_id))
        if earlier is None:
            raise
        return earlier, False
    return annotation, True


def undo(session: Session, project: Project, user: User, annotation_id: int) -> Annotation | None:
    """Void one of the reader's decisions with a retract row; the cell is theirs again.

    Returns the voided decision, or None when it is not theirs, not in this
    project, or already undone (a repeated Backspace writes nothing twice).
    """
    from .leases import take_back

    target = session.scalar(
        select(Annotation).join(Image, Image.id == Annotation.image_id)
        .where(Annotation.id == annotation_id, Annotation.user_id == user.id,
               Image.project_id == project.id, live_vote(Annotation)))
    if target is None:
        return None
    session.add(Annotation(kind=Kind.RETRACT, image_id=target.image_id, user_id=user.id,
                           origin=Origin.READER, retracts_id=target.id,
                           submission_id=f"undo-{target.id}"))
    take_back(session, project, target.image_id, user.id)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # the same undo, raced: it is done once
        return None
    return target
