"""Which cell a reader sees next.

Pool cells that still need a reader's vote (models/labels.py decides; the
count of votes still needed is kept on the cell row, models/open_slots.py), most
uncertain first under the active model (highest predictive entropy); before
any model exists, in the fixed random order given at import.  For one reader,
cells they already decided on are never offered again, and cells other
readers hold leases on only while the cell needs more readers than that.
Cells the reader skipped this session come last in line, not never (so a
small pool can't run dry from skips alone).

The statements are built once and reused with
bound parameters: building these SQLAlchemy expressions costs more CPU than
running them, and labeling latency is what readers feel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Select, and_, bindparam, exists, false, func, or_, select, union_all
from sqlalchemy.orm import Session, aliased

from models import (Annotation, Image, Kind, LabelClass, Lease, ModelVersion, Origin, Prediction,
                    Project)
from models.labels import NEEDS_READERS, live_vote, vote_count
from models.review import ReviewQueue, ReviewQueueItem


@dataclass(frozen=True)
class Cell:
    image: Image
    prediction: Prediction | None
    suggestion: LabelClass | None


def active_version(session: Session, project_id: int) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion).where(ModelVersion.project_id == project_id, ModelVersion.is_active)
    )


# The queue counter stops counting here ("200+"): an exact count of a large
# pool would scan it all on every decision.
REMAINING_CAP = 200


def awaiting() -> tuple:
    """SQL conditions: a cell of the project (``:project_id``) that still needs a
    reader (models/open_slots.py keeps that count on the row)."""
    return Image.project_id == bindparam("project_id"), NEEDS_READERS


_REMAINING = select(func.count()).select_from(
    select(Image.id).where(*awaiting()).limit(REMAINING_CAP + 1).subquery())


def queue_order(version: bool, skipped: bool) -> list:
    """The ORDER BY of the queue, kept in one place so it can be swapped whole."""
    order = [Image.id.in_(bindparam("skipped", expanding=True))] if skipped else []
    if version:
        order += [Prediction.entropy.is_(None), Prediction.entropy.desc()]
    return order + [Image.shuffle_key, Image.id]


_ITEM = aliased(ReviewQueueItem, name="review_item")


def _current_queue_id():
    """Uncorrelated scalar subquery (run once per statement): the id of the
    project's current review queue, NULL when there is none."""
    return (select(ReviewQueue.id)
            .where(ReviewQueue.project_id == bindparam("project_id"), ReviewQueue.is_current)
            .scalar_subquery())


def current_review_item():
    """Join condition: the cell's item in the project's current review queue
    (the join uses the (image_id, queue_id) index)."""
    return and_(_ITEM.image_id == Image.id, _ITEM.queue_id == _current_queue_id())


def _review_cells():
    """Subquery: the cells of the project's current review queue."""
    return select(ReviewQueueItem.image_id).where(ReviewQueueItem.queue_id == _current_queue_id())


_MINE = aliased(Annotation, name="mine")
_READER = bindparam("reader_id")
_NOW = bindparam("now")


def live_leases(*conditions):
    """Scalar subquery: live leases (at ``:now``) on the current ``Image`` row that
    meet ``conditions``."""
    return (select(func.count(Lease.id))
            .where(Lease.image_id == Image.id, Lease.expires_at > _NOW, *conditions)
            .scalar_subquery())


def leases_by_others():
    """Scalar subquery: live leases of other readers on the current ``Image`` row."""
    return live_leases(Lease.user_id != _READER)


def for_reader() -> tuple:
    """SQL conditions: cells the reader (``:reader_id``) may be given at ``:now``."""
    return (
        # A reader never sees the same cell twice (an undo hands it back explicitly).
        # A suggestion rejected in the bulk grid is no decision: the cell still
        # comes to the reader one at a time (the grid leaves it out itself).
        ~exists().where(_MINE.image_id == Image.id, _MINE.user_id == _READER,
                        _MINE.origin == Origin.READER, _MINE.kind != Kind.REJECT),
        # Room left beside other readers' leases (the claim checks it exactly).
        leases_by_others() < Image.open_slots,
    )


@dataclass(frozen=True)
class ReaderStatus:
    remaining: int  # cells still needing a reader, up to REMAINING_CAP + 1
    held_id: int | None  # the cell the reader holds a lease on and has not decided


@lru_cache(maxsize=1)
def _status_stmt() -> Select:
    """Both answers in one round trip: each keypress asks both."""
    # Usually none: a decision uses the lease up.  An undo hands a cell back
    # on a lease, and a reloaded page shows the cell it showed before.
    undecided = ~exists().where(_MINE.image_id == Lease.image_id, _MINE.user_id == _READER,
                                live_vote(_MINE))
    held = (select(Lease.image_id).join(Image, Image.id == Lease.image_id)
            .where(Lease.user_id == _READER, Lease.expires_at > _NOW,
                   Image.project_id == bindparam("project_id"), undecided)
            .order_by(Lease.created_at.desc(), Lease.id.desc()).limit(1))
    return select(_REMAINING.scalar_subquery(), held.scalar_subquery())


def reader_status(session: Session, project: Project, reader_id: int, now: datetime
                  ) -> ReaderStatus:
    remaining_, held = session.execute(
        _status_stmt(), {"project_id": project.id, "reader_id": reader_id, "now": now}).one()
    return ReaderStatus(int(remaining_ or 0), held)


# The queue in segments, each a branch that an index can serve in order and
# stop after LIMIT rows: one ORDER BY over all of them sorts the whole pool
# (5,000 cells: 10 ms -> 130 ms p95 with 20 readers).  The branches run as one
# UNION ALL under an outer LIMIT, so a later branch runs only when the earlier
# ones came up short: one round trip per look at the queue.
REVIEW, SCORED, UNSCORED, SKIPPED = "review", "scored", "unscored", "skipped"


def segments(version: bool, skipped: bool) -> tuple[str, ...]:
    """Queue order: the current review round's cells in its frozen order, then
    the rest most uncertain first, then cells the active model has not scored
    (new imports) in import order, and the reader's skipped cells last."""
    return (REVIEW, *((SCORED,) if version else ()), UNSCORED, *((SKIPPED,) if skipped else ()))


@lru_cache(maxsize=64)
def _candidates_stmt(version: bool, skipped: bool, reader: bool,
                     segment: str | None = None) -> Select:
    join_on = and_(Prediction.image_id == Image.id,
                   Prediction.model_version_id == bindparam("version_id")) if version else false()
    in_project, is_open = awaiting()
    # The scored segment walks the version's entropy index, and the version's
    # predictions are all of this project's cells: the project test would only
    # tempt SQLite's planner (no statistics) to start from the images index and
    # sort the whole pool instead of stopping after LIMIT rows.
    conditions = [is_open] if segment == SCORED else [in_project, is_open]
    slot = vote_count()
    if reader:
        conditions += for_reader()
        slot = slot + leases_by_others()
    stmt = select(Image, Prediction, slot.label("slot"))
    if segment is None:  # the whole ranking in one ORDER BY (bulk verification reorders it)
        return stmt.outerjoin(Prediction, join_on).where(*conditions).order_by(
            *queue_order(version, skipped))
    skipped_ids = bindparam("skipped", expanding=True)
    if skipped and segment != SKIPPED:
        conditions.append(Image.id.not_in(skipped_ids))
    if segment == REVIEW:
        return (stmt.outerjoin(Prediction, join_on).join(_ITEM, current_review_item())
                .where(*conditions).order_by(_ITEM.position))
    if segment in (SCORED, UNSCORED):
        # The review round's cells are its segment's alone (skipped ones are
        # the skipped segment's): no cell comes twice, so the outer LIMIT of
        # the union counts distinct cells.
        conditions.append(Image.id.not_in(_review_cells()))
    if segment == SCORED:
        return (stmt.join(Prediction, join_on).where(*conditions, Prediction.entropy.is_not(None))
                .order_by(Prediction.entropy.desc(), Image.shuffle_key, Image.id))
    if segment == UNSCORED:
        if version:
            conditions.append(or_(Prediction.id.is_(None), Prediction.entropy.is_(None)))
        return (stmt.outerjoin(Prediction, join_on).where(*conditions)
                .order_by(Image.shuffle_key, Image.id))
    return (stmt.outerjoin(Prediction, join_on).where(*conditions, Image.id.in_(skipped_ids))
            .order_by(*queue_order(version, False)))


def _params(project: Project, version: ModelVersion | None, skipped: list[int] | None,
            reader_id: int | None, now: datetime | None) -> dict:
    params: dict = {"project_id": project.id}
    if version is not None:
        params["version_id"] = version.id
    if skipped:
        params["skipped"] = list(skipped)
    if reader_id is not None:
        params.update(reader_id=reader_id, now=now)
    return params


def candidates(project: Project, version: ModelVersion | None, skipped: list[int] | None = None,
               reader_id: int | None = None, now: datetime | None = None
               ) -> tuple[Select, dict]:
    """SELECT (Image, Prediction, next free lease slot) in ranking order, and its parameters.

    The ranking alone, without the review round (see ``queue_rows``): bulk
    verification orders these by confidence instead.
    """
    stmt = _candidates_stmt(version is not None, bool(skipped), reader_id is not None)
    return stmt, _params(project, version, skipped, reader_id, now)


@lru_cache(maxsize=32)
def _queue_stmt(version: bool, skipped: bool, reader: bool):
    """The segments' branches (each taking ``:limit`` rows in its own order) in
    one UNION ALL, cut at ``:limit`` rows.

    Both databases run a UNION ALL's branches in order and stop pulling rows at
    the outer LIMIT (PostgreSQL's Append, SQLite's compound select), so a
    branch after the ones that filled the LIMIT costs nothing.  Each branch is
    wrapped in a subquery: SQLite takes no ORDER BY or LIMIT on a branch itself.
    """
    limit = bindparam("limit")
    branches = [select(_candidates_stmt(version, skipped, reader, segment).limit(limit).subquery())
                for segment in segments(version, skipped)]
    union = union_all(*branches).limit(limit)
    return select(Image, Prediction, union.selected_columns.slot).from_statement(union)


def queue_rows(session: Session, project: Project, version: ModelVersion | None, limit: int,
               skipped: list[int] | None = None, reader_id: int | None = None,
               now: datetime | None = None) -> list:
    """The first ``limit`` (Image, Prediction, slot) rows in queue order (see ``segments``)."""
    params = _params(project, version, skipped, reader_id, now)
    stmt = _queue_stmt(version is not None, bool(skipped), reader_id is not None)
    return session.execute(stmt, {**params, "limit": limit}).all()


def ranked(session: Session, project: Project, limit: int, skipped: list[int] | None = None,
           version: ModelVersion | None = None, reader_id: int | None = None,
           now: datetime | None = None) -> list[tuple[Image, Prediction | None]]:
    """The next ``limit`` cells in queue order, with the active model's prediction."""
    version = version or active_version(session, project.id)
    rows = queue_rows(session, project, version, limit, skipped, reader_id, now)
    return [(image, prediction) for image, prediction, _slot in rows]


def suggestion_of(project: Project, prediction: Prediction | None) -> LabelClass | None:
    if prediction is None:
        return None
    return next((c for c in project.classes if c.id == prediction.predicted_class_id), None)
