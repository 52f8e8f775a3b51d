"""Leasing cells to readers: race-free on SQLite and PostgreSQL.

A lease is a row (image, slot); the unique constraint on the pair means that
of two readers claiming the same free slot at once, the database lets one
insert through and ignores the other (ON CONFLICT DO NOTHING), who then
moves on to the next cell.  Expired leases are swept before each claim.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import Image, Lease, ModelVersion, Prediction, Project, utcnow
from models.labels import ReadingRules, needed_readers_sql, vote_count

from .queue import (Cell, ReaderStatus, leases_by_others, live_leases, queue_rows, reader_status,
                    suggestion_of)

# How many queued cells one claim looks at: enough that a few readers racing
# for the same head of the queue all get a cell in one round trip.
CLAIM_WINDOW = 8
PREFETCH = 2
CLAIM_ATTEMPTS = 6


def lease_until(project: Project, now: datetime) -> datetime:
    return now + timedelta(minutes=project.lease_minutes)


@lru_cache(maxsize=128)
def _claim_stmt(rules: ReadingRules, dialect: str):
    """INSERT a lease only if the cell still has room at this very statement.

    The candidates were chosen by an earlier statement, whose view may be
    stale by now (PostgreSQL's READ COMMITTED): another reader may meanwhile
    have leased the cell and labeled it, freeing the slot number.  Re-checking
    the cell's room inside the INSERT closes that gap; the unique slot settles
    claims that race within it.
    """
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    room = (select(Image.id, bindparam("slot"), bindparam("user_id"), bindparam("created_at"),
                   bindparam("expires_at"))
            .where(Image.id == bindparam("image_id"),
                   vote_count() + leases_by_others() < needed_readers_sql(rules)))
    table = Lease.__table__
    return (insert(table)
            .from_select([table.c.image_id, table.c.slot, table.c.user_id, table.c.created_at,
                          table.c.expires_at], room)
            .on_conflict_do_nothing(index_elements=["image_id", "slot"])
            .returning(table.c.id))


@lru_cache(maxsize=128)
def _overfull_stmt(rules: ReadingRules):
    """Whether the cell ``:image_id`` has more votes and live leases (anyone's)
    than readers it needs."""
    return select(vote_count() + live_leases() > needed_readers_sql(rules)).where(
        Image.id == bindparam("image_id"))


def _kept(conn, rules: ReadingRules, image_id: int, lease_id: int | None, now: datetime) -> bool:
    """Whether a claim holds, looked at again after the INSERT on PostgreSQL.

    The INSERT's room check reads the statement's snapshot.  When the slot it
    takes was just given up by a vote (that transaction deleted the lease, and
    the INSERT waited for it to commit), the snapshot still counts neither the
    vote nor the lease as gone for good: the cell may now be full.  A fresh
    statement sees the vote; the claim is then withdrawn.  (SQLite runs one
    writer at a time, so its check cannot be overtaken.)  Found by
    tests/test_open_slots.py: 20 readers at once with k = 2, a third vote.
    """
    if lease_id is None:
        return False
    if conn.dialect.name == "postgresql" and conn.execute(
            _overfull_stmt(rules), {"image_id": image_id, "now": now}).scalar():
        conn.execute(delete(Lease).where(Lease.id == lease_id))
        return False
    return True


def try_lease(session: Session, project: Project, image_id: int, user_id: int, slot: int,
              now: datetime) -> bool:
    """Lease a cell if it still has room; False when another reader got there first.

    A slot held by an expired lease is swept and tried once more (sweeping
    only then saves every claim a query).
    """
    rules = ReadingRules.of(project)
    stmt = _claim_stmt(rules, session.get_bind().dialect.name)
    params = {"image_id": image_id, "slot": slot, "user_id": user_id, "reader_id": user_id,
              "now": now, "created_at": now, "expires_at": lease_until(project, now)}
    # Core on the session's connection: no ORM object is involved, and its DML
    # bookkeeping would cost more than the statement.
    conn = session.connection()
    lease_id = conn.execute(stmt, params).scalar()
    if lease_id is not None:
        return _kept(conn, rules, image_id, lease_id, now)
    swept = conn.execute(delete(Lease).where(
        Lease.image_id == image_id, Lease.slot == slot, Lease.expires_at <= now)).rowcount
    return bool(swept) and _kept(conn, rules, image_id, conn.execute(stmt, params).scalar(), now)


def sweep_expired(session: Session, now: datetime) -> None:
    session.execute(delete(Lease).where(Lease.expires_at <= now))


def held_cell(session: Session, image_id: int, version: ModelVersion | None
              ) -> tuple[Image, Prediction | None] | None:
    """The cell a reader holds (``reader_status`` found it), with the active model's
    prediction."""
    join_on = ((Prediction.image_id == Image.id) & (Prediction.model_version_id == version.id)
               if version else (Prediction.id == -1))
    row = session.execute(select(Image, Prediction).outerjoin(Prediction, join_on)
                          .where(Image.id == image_id)).first()
    return (row[0], row[1]) if row is not None else None


@dataclass(frozen=True)
class Turn:
    """What a reader's page shows next."""

    cell: Cell | None
    prefetch: list[Image]
    status: ReaderStatus


def next_for(session: Session, project: Project, user_id: int, skipped: list[int] | None = None,
             durable: bool = False) -> Turn:
    """The reader's cell (held, or newly leased), the next cells to prefetch, and
    the counters.

    Commits (with whatever decision the caller flushed): the lease must be
    visible to other readers at once.  A lease alone is not worth a disk sync
    on PostgreSQL (a crash loses a lease, which then simply is not there);
    pass ``durable`` when the transaction carries a decision.  Everything is
    read in that one transaction: one connection checkout per keypress.
    """
    now = utcnow()
    version = project.active_version  # the label routes load it with the project
    status = reader_status(session, project, user_id, now)
    chosen = held_cell(session, status.held_id, version) if status.held_id is not None else None
    later: list[Image] = []
    # Readers racing for the head of the queue take its cells from under each
    # other: look again (further down) until one is won or the queue is dry.
    for attempt in range(CLAIM_ATTEMPTS):
        rows = queue_rows(session, project, version, CLAIM_WINDOW * (attempt + 1), skipped,
                          user_id, now)
        tries = list(rows)
        if attempt and chosen is None:
            # Lost the race for the head: spread out rather than queue up behind
            # the same few cells as every other reader who lost it too.
            random.shuffle(tries)
        if chosen is None:
            for image, prediction, slot in tries:
                if try_lease(session, project, image.id, user_id, slot, now):
                    chosen = (image, prediction)
                    break
        if chosen is not None:
            # Prefetch what comes next in queue order.
            later = [image for image, _p, _s in rows if image.id != chosen[0].id][:PREFETCH]
        if chosen is not None or len(rows) < CLAIM_WINDOW * (attempt + 1):
            break
    if not durable and session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO OFF"))
    session.commit()
    if chosen is None:
        return Turn(None, [], status)
    image, prediction = chosen
    return Turn(Cell(image, prediction, suggestion_of(project, prediction)), later, status)


def release(session: Session, image_id: int, user_id: int) -> None:
    session.execute(delete(Lease).where(Lease.image_id == image_id, Lease.user_id == user_id))


def take_back(session: Session, project: Project, image_id: int, user_id: int) -> None:
    """Lease a cell to a reader regardless of capacity (an undo hands it back)."""
    now = utcnow()
    release(session, image_id, user_id)
    top = session.scalar(select(func.max(Lease.slot)).where(Lease.image_id == image_id))
    # Above every slot a claim would compute: this lease never blocks one.
    session.add(Lease(image_id=image_id, user_id=user_id, slot=(top or 0) + 1000,
                      created_at=now, expires_at=lease_until(project, now)))
    session.flush()
