"""Bulk verification: a grid of cells the active model puts in one class.

The reader clicks the wrong ones and confirms the rest with one key; each
confirmed cell becomes a normal vote, recorded as a verification (kind
``verify``) of the suggestion on screen.  Each cell marked wrong is recorded
as a rejection (kind ``reject``) of that suggestion: no vote, but it leaves
this reader's grid for that class for good, and the curator sees it.  The grid's cells are leased like
any other, so two readers never verify the same cell at once.
"""

from __future__ import annotations

from sqlalchemy import and_, exists, select
from sqlalchemy.orm import Session

from models import Annotation, Image, Kind, Lease, Origin, Prediction, Project, User, utcnow
from models.open_slots import lock_for_votes

from .decisions import DecisionError, take_lease
from .leases import release, sweep_expired, try_lease
from .queue import active_version, candidates

GRID_SIZE = 24


def grid(session: Session, project: Project, user: User, class_id: int, min_confidence: float
         ) -> list[tuple[Image, Prediction]]:
    """Lease and return up to GRID_SIZE cells predicted ``class_id`` at or above the threshold."""
    version = active_version(session, project.id)
    if version is None:
        return []
    now = utcnow()
    held = session.execute(
        select(Image, Prediction).join(Prediction, and_(
            Prediction.image_id == Image.id, Prediction.model_version_id == version.id))
        .where(Image.project_id == project.id)
        .where(Image.id.in_(_leased_ids(user.id, now)))
        .where(Prediction.predicted_class_id == class_id, Prediction.confidence >= min_confidence)
        .order_by(Prediction.confidence.desc())).all()
    out = [tuple(r) for r in held]
    if len(out) < GRID_SIZE:
        sweep_expired(session, now)
        stmt, params = candidates(project, version, None, user.id, now)
        query = (stmt.where(Prediction.predicted_class_id == class_id,
                            Prediction.confidence >= min_confidence,
                            ~rejected_by(user.id, class_id))
                 .order_by(None).order_by(Prediction.confidence.desc(), Image.id)
                 .limit(GRID_SIZE * 2))
        taken = {image.id for image, _ in out}
        for image, prediction, slot in session.execute(query, params).all():
            if len(out) >= GRID_SIZE:
                break
            if image.id not in taken and try_lease(session, project, image.id, user.id, slot, now):
                out.append((image, prediction))
        session.commit()
    return out


def rejected_by(user_id: int, class_id: int):
    """SQL condition: the reader rejected a suggestion of this class for the current ``Image``."""
    return exists().where(Annotation.image_id == Image.id, Annotation.user_id == user_id,
                          Annotation.kind == Kind.REJECT,
                          Annotation.suggested_class_id == class_id)


def _leased_ids(user_id: int, now):
    return select(Lease.image_id).where(Lease.user_id == user_id, Lease.expires_at > now)


def confirm(session: Session, project: Project, user: User, version_id: int, class_id: int,
            confirmed: list[int], wrong: list[int], batch: str) -> int:
    """Record the confirmed cells as verifications and the wrong ones as rejections.

    Returns the number of verifications written.  All or nothing: a cell that
    is not this project's, not predicted so, or (confirmed) not leased to the
    reader refuses the whole batch.  A repeated batch id (double keypress,
    retried request) writes nothing twice.
    """
    if set(confirmed) & set(wrong):
        raise DecisionError("A cell cannot be both confirmed and marked wrong.")
    if project.blind_reading:
        raise DecisionError("This project reads blind: bulk verification would show the "
                            "model's suggestions.", 409)
    version = active_version(session, project.id)
    if version is None or version.id != version_id:
        raise DecisionError("The model behind this grid is no longer active; nothing was saved. "
                            "Reload the grid.", 409)
    predicted = dict(session.execute(
        select(Prediction.image_id, Prediction.predicted_class_id)
        .join(Image, Image.id == Prediction.image_id)
        .where(Prediction.model_version_id == version.id, Image.project_id == project.id,
               Prediction.image_id.in_(confirmed + wrong or [-1]))).all())
    # The cells are locked before any lease is deleted (see lock_for_vote).
    lock_for_votes(session, confirmed + wrong)
    created = 0
    for image_id in confirmed:
        submission = f"{batch}-{image_id}"[:64]
        if session.scalar(select(Annotation.id).where(
                Annotation.user_id == user.id, Annotation.submission_id == submission)):
            continue  # this batch was recorded already
        if predicted.get(image_id) != class_id:
            session.rollback()
            raise DecisionError(f"Cell {image_id} is not in this grid; nothing was saved.", 404)
        take_lease(session, session.get(Image, image_id), user)
        session.add(Annotation(
            image_id=image_id, user_id=user.id, origin=Origin.READER, kind=Kind.VERIFY,
            label_class_id=class_id, model_version_id=version.id, suggested_class_id=class_id,
            submission_id=submission))
        created += 1
    for image_id in wrong:
        submission = f"{batch}-{image_id}"[:64]
        if session.scalar(select(Annotation.id).where(
                Annotation.user_id == user.id, Annotation.submission_id == submission)):
            continue  # this batch was recorded already
        if predicted.get(image_id) != class_id:
            session.rollback()
            raise DecisionError(f"Cell {image_id} is not in this grid; nothing was saved.", 404)
        release(session, image_id, user.id)
        session.add(Annotation(
            image_id=image_id, user_id=user.id, origin=Origin.READER, kind=Kind.REJECT,
            model_version_id=version.id, suggested_class_id=class_id, submission_id=submission))
    session.commit()
    return created
