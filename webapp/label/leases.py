"""Leasing cells to readers: race-free on SQLite and PostgreSQL.

A lease is a row (image, slot); the unique constraint on the pair means that
of two readers claiming the same free slot at once, the database lets one
insert through and ignores the other (ON CONFLICT DO NOTHING), who then
moves on to the next cell.  Expired leases are swept before each claim.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, exists, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import Annotation, Image, Lease, Prediction, Project, utcnow
from models.labels import live_vote

from .queue import Cell, active_version, candidates, suggestion_of

# How many queued cells one claim looks at: enough that a few readers racing
# for the same head of the queue all get a cell in one round trip.
CLAIM_WINDOW = 8
PREFETCH = 2
CLAIM_ATTEMPTS = 4


def _insert(session: Session):
    return (postgresql.insert if session.get_bind().dialect.name == "postgresql"
            else sqlite.insert)


def lease_until(project: Project, now: datetime) -> datetime:
    return now + timedelta(minutes=project.lease_minutes)


def try_lease(session: Session, project: Project, image_id: int, user_id: int, slot: int,
              now: datetime) -> bool:
    """Insert one lease; False when the slot was taken first."""
    stmt = _insert(session)(Lease).values(
        image_id=image_id, user_id=user_id, slot=slot, created_at=now,
        expires_at=lease_until(project, now)).on_conflict_do_nothing(
        index_elements=["image_id", "slot"]).returning(Lease.id)
    return session.execute(stmt).scalar() is not None


def sweep_expired(session: Session, now: datetime) -> None:
    session.execute(delete(Lease).where(Lease.expires_at <= now))


def held_cell(session: Session, project: Project, user_id: int, now: datetime,
              version=None) -> tuple[Image, Prediction | None] | None:
    """The newest live lease of this reader on a cell they have not decided on."""
    mine = select(Annotation.id).where(Annotation.image_id == Image.id,
                                       Annotation.user_id == user_id, live_vote(Annotation))
    join_on = (Prediction.image_id == Image.id) & (Prediction.model_version_id == version.id) \
        if version else (Prediction.id == -1)
    row = session.execute(
        select(Image, Prediction).join(Lease, Lease.image_id == Image.id)
        .outerjoin(Prediction, join_on)
        .where(Lease.user_id == user_id, Lease.expires_at > now, Image.project_id == project.id,
               ~exists(mine))
        .order_by(Lease.created_at.desc(), Lease.id.desc()).limit(1)).first()
    return tuple(row) if row else None


def next_for(session: Session, project: Project, user_id: int, skipped: list[int] | None = None,
             durable: bool = False) -> tuple[Cell | None, list[Image]]:
    """The reader's cell (held, or newly leased) and the next cells to prefetch.

    Commits (with whatever decision the caller flushed): the lease must be
    visible to other readers at once.  A lease alone is not worth a disk sync
    on PostgreSQL (a crash loses a lease, which then simply is not there);
    pass ``durable`` when the transaction carries a decision.
    """
    now = utcnow()
    version = active_version(session, project.id)
    held = held_cell(session, project, user_id, now, version)
    chosen = held
    later: list[Image] = []
    if chosen is None:
        sweep_expired(session, now)
    # Readers racing for the head of the queue take its cells from under each
    # other: look again (further down) until one is won or the queue is dry.
    for attempt in range(CLAIM_ATTEMPTS):
        stmt, params = candidates(project, version, skipped, user_id, now)
        rows = session.execute(stmt.limit(CLAIM_WINDOW * (attempt + 1)), params).all()
        for image, prediction, slot in rows:
            if chosen is None:
                if try_lease(session, project, image.id, user_id, slot, now):
                    chosen = (image, prediction)
                continue
            if image.id != chosen[0].id:
                later.append(image)
            if len(later) >= PREFETCH:
                break
        if chosen is not None or len(rows) < CLAIM_WINDOW * (attempt + 1):
            break
    if not durable and session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))
    session.commit()
    if chosen is None:
        return None, []
    image, prediction = chosen
    return Cell(image, prediction, suggestion_of(project, prediction)), later


def release(session: Session, image_id: int, user_id: int) -> None:
    session.execute(delete(Lease).where(Lease.image_id == image_id, Lease.user_id == user_id))


def take_back(session: Session, project: Project, image_id: int, user_id: int) -> None:
    """Lease a cell to a reader regardless of capacity (an undo hands it back)."""
    now = utcnow()
    release(session, image_id, user_id)
    top = session.scalar(select(func.max(Lease.slot)).where(Lease.image_id == image_id))
    try_lease(session, project, image_id, user_id, (top if top is not None else 0) + 1000, now)
