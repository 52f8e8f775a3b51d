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

from sqlalchemy import Select, and_, bindparam, exists, false, func, or_, select
from sqlalchemy.orm import Session, aliased

from models import Annotation, Image, LabelClass, Lease, ModelVersion, Origin, Prediction, Project
from models.labels import vote_count
from models.open_slots import IS_OPEN
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
    return Image.project_id == bindparam("project_id"), IS_OPEN


_REMAINING = select(func.count()).select_from(
    select(Image.id).where(*awaiting()).limit(REMAINING_CAP + 1).subquery())


def remaining(session: Session, project: Project) -> int:
    """Cells still needing a reader, counted up to REMAINING_CAP + 1."""
    return session.scalar(_REMAINING, {"project_id": project.id}) or 0


def queue_order(version: bool, skipped: bool) -> list:
    """The ORDER BY of the queue, kept in one place so it can be swapped whole."""
    order = [Image.id.in_(bindparam("skipped", expanding=True))] if skipped else []
    if version:
        order += [Prediction.entropy.is_(None), Prediction.entropy.desc()]
    return order + [Image.shuffle_key, Image.id]


_ITEM = aliased(ReviewQueueItem, name="review_item")


def current_review_item():
    """Join condition: the cell's item in the project's current review queue.

    The queue id is an uncorrelated subquery (run once per statement); the
    join uses the (image_id, queue_id) index.
    """
    current = (select(ReviewQueue.id)
               .where(ReviewQueue.project_id == bindparam("project_id"), ReviewQueue.is_current)
               .scalar_subquery())
    return and_(_ITEM.image_id == Image.id, _ITEM.queue_id == current)


_MINE = aliased(Annotation, name="mine")
_READER = bindparam("reader_id")
_NOW = bindparam("now")


def leases_by_others():
    """Scalar subquery: live leases of other readers on the current ``Image`` row."""
    return (select(func.count(Lease.id))
            .where(Lease.image_id == Image.id, Lease.user_id != _READER, Lease.expires_at > _NOW)
            .scalar_subquery())


def for_reader() -> tuple:
    """SQL conditions: cells the reader (``:reader_id``) may be given at ``:now``."""
    return (
        # A reader never sees the same cell twice (an undo hands it back explicitly).
        ~exists().where(_MINE.image_id == Image.id, _MINE.user_id == _READER,
                        _MINE.origin == Origin.READER),
        # Room left beside other readers' leases (the claim checks it exactly).
        leases_by_others() < Image.open_slots,
    )


# The queue in segments, each a statement that an index can serve in order and
# stop after LIMIT rows: one ORDER BY over all of them sorts the whole pool
# (5,000 cells: 10 ms -> 130 ms p95 with 20 readers).
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
    conditions = list(awaiting())
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
    if segment == SCORED:
        # SQLite's planner, without statistics, may start from images and sort
        # the whole pool; walking the entropy index stops after LIMIT rows.
        return (stmt.join(Prediction, join_on).where(*conditions, Prediction.entropy.is_not(None))
                .with_hint(Prediction, "INDEXED BY ix_predictions_version_entropy", "sqlite")
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


def queue_rows(session: Session, project: Project, version: ModelVersion | None, limit: int,
               skipped: list[int] | None = None, reader_id: int | None = None,
               now: datetime | None = None) -> list:
    """The first ``limit`` (Image, Prediction, slot) rows in queue order (see ``segments``)."""
    params = _params(project, version, skipped, reader_id, now)
    flags = (version is not None, bool(skipped), reader_id is not None)
    rows: list = []
    seen: set[int] = set()
    for segment in segments(version is not None, bool(skipped)):
        # ``limit`` rows hold at least the missing ones: at most len(rows)
        # of them can repeat a cell already taken (a review cell is scored too).
        for row in session.execute(_candidates_stmt(*flags, segment).limit(limit), params):
            if row[0].id not in seen and len(rows) < limit:
                seen.add(row[0].id)
                rows.append(row)
        if len(rows) >= limit:
            break
    return rows


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
