"""Readers a cell still needs, kept on the cell row for the labeling queue.

``images.open_slots`` is a cache of ``models.labels``: the votes a pool cell
still needs (``needed_readers`` minus its live votes), 0 once it is final,
excluded, flagged, disputed or curated, and always 0 on the test split.  The
queue filters on it instead of running the vote, flag and curator subqueries
for every cell it walks past: after a round, the cells most uncertain under
the active model are also the ones readers have just decided, and stepping
over each of them cost five correlated subqueries per request.

The cache is refreshed in the same transaction as whatever changes it, by one
UPDATE computed from the same SQL the labels module defines, so it cannot drift
from the rules:

- every ORM flush that adds an annotation or a cell, moves a cell between
  splits, or changes a project's reading rules, refreshes the cells concerned
  (``after_flush`` below);
- code that bulk-inserts through Core calls :func:`refresh_open_slots` itself.

The queue treats the value as a filter only: a lease is granted only after
the exact check in ``webapp/label/leases.py``, so a value that is briefly too
high costs a retry, never a second vote.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields
from functools import lru_cache

from sqlalchemy import and_, bindparam, case, event, inspect, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from .annotations import Annotation, Origin
from .images import Image, Split
from .labels import ReadingRules, awaits_readers, needed_readers_sql, vote_count
from .projects import Project

# Project attributes that change how many readers a cell needs.
RULE_ATTRIBUTES = tuple(f.name for f in fields(ReadingRules))
# session.info key: new cells whose value needs their id (see _set_new_cells).
PENDING = "hemaloop.open_slots.pending"
# session.info key: cells this transaction already holds locked (lock_for_vote).
LOCKED = "hemaloop.open_slots.locked"
# Ids per UPDATE: well below SQLite's bound-parameter limit.
CHUNK = 500

_IDS = Image.id.in_(bindparam("ids", expanding=True))
# PostgreSQL's row lock of the cells ``:ids``, in id order.  NO KEY UPDATE: an
# annotation just inserted holds KEY SHARE on its cell (the foreign key), which a
# plain FOR UPDATE would wait on.
_LOCK = select(Image.id).where(_IDS).order_by(Image.id).with_for_update(key_share=True)


@lru_cache(maxsize=64)
def _update_stmts(rules: ReadingRules):
    """(UPDATE of the cells ``:ids``, UPDATE of every cell of ``:p_id``), built once
    per rules: building them costs more than running them, and one runs with
    every keypress."""
    # Where awaits_readers holds, votes < needed: at least one slot is open.
    value = case((and_(*awaits_readers(rules)), needed_readers_sql(rules) - vote_count()),
                 else_=0)
    whole = (update(Image).where(Image.project_id == bindparam("p_id")).values(open_slots=value)
             .execution_options(synchronize_session=False))
    return whole.where(_IDS), whole


def refresh_open_slots(session: Session, project: Project,
                       image_ids: Iterable[int] | None = None) -> None:
    """Recompute ``open_slots`` for these cells of the project (all, when None).

    On PostgreSQL the rows are locked first, in id order: two readers voting
    on one cell at once then refresh it one after the other, the second with a
    snapshot that sees the first one's vote.  (SQLite runs one writer at a time.)

    It runs on the session's connection without an autoflush (the hook below
    calls it in the middle of a flush): other callers flush their ORM changes
    first.
    """
    some, whole = _update_stmts(ReadingRules.of(project))
    # Core on the session's connection (same transaction): the ORM's DML
    # bookkeeping would cost more than the UPDATE, and loaded cells are
    # expired by the caller (_expire_cached_values).
    conn = session.connection()
    if image_ids is None:
        conn.execute(whole, {"p_id": project.id})
        return
    postgres = conn.dialect.name == "postgresql"
    held = session.info.get(LOCKED, set())
    ids = sorted(set(image_ids))
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start:start + CHUNK]
        if postgres and not held.issuperset(chunk):
            conn.execute(_LOCK, {"ids": chunk})
        conn.execute(some, {"p_id": project.id, "ids": chunk})


def lock_for_vote(session: Session, image_id: int) -> Image | None:
    """Load a cell about to get a vote; on PostgreSQL lock it as refresh_open_slots would.

    Taking the lock with the load, before the vote deletes its lease, rather
    than at the flush after it: the refresh then finds the row held (a round
    trip saved per keypress), and no transaction waits for this row while it
    holds a lease deletion that a lease claim in turn may be waiting on.
    """
    if session.get_bind().dialect.name != "postgresql":
        return session.get(Image, image_id)
    image = session.get(Image, image_id, with_for_update={"key_share": True})
    if image is not None:
        session.info.setdefault(LOCKED, set()).add(image.id)
    return image


def lock_for_votes(session: Session, image_ids: Iterable[int]) -> None:
    """lock_for_vote for many cells (bulk verification), in id order."""
    if session.get_bind().dialect.name != "postgresql":
        return
    ids = sorted(set(image_ids))
    conn = session.connection()
    for start in range(0, len(ids), CHUNK):
        conn.execute(_LOCK, {"ids": ids[start:start + CHUNK]})
    session.info.setdefault(LOCKED, set()).update(ids)


@event.listens_for(Session, "after_transaction_end")
def _forget_locks(session: Session, transaction) -> None:
    if transaction.parent is None:  # the database transaction ended: its locks went with it
        session.info.pop(LOCKED, None)


def _changed(obj, attributes: tuple[str, ...]) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in attributes)


def _initial_value(project: Project, image: Image) -> int | None:
    """A new cell's value when it can be known before its INSERT, else None.

    A new cell has no votes, so it needs k readers, unless the agreement sample
    (which hashes the id, unknown until the INSERT) may raise k.
    """
    if image.split != Split.POOL:
        return 0
    if project.contested_readers and project.contested_readers > project.readers_per_cell \
            and project.agreement_share > 0:
        return None
    return project.readers_per_cell


@event.listens_for(Session, "before_flush")
def _set_new_cells(session: Session, _flush_context, _instances) -> None:
    """New cells get their value in the INSERT itself: an import writes one
    statement per cell, not two."""
    later = session.info[PENDING] = []  # this flush's only (a failed one leaves its own)
    for obj in session.new:
        if isinstance(obj, Image):
            project = session.get(Project, obj.project_id) if obj.project_id else None
            value = _initial_value(project, obj) if project is not None else None
            if value is None:
                later.append(obj)  # refreshed once it has an id (after_flush)
            else:
                obj.open_slots = value


@event.listens_for(Session, "after_flush")
def _refresh_after_flush(session: Session, _flush_context) -> None:
    """Keep the cache in step with every ORM write that can change it."""
    projects = {obj.id: obj for obj in session.dirty
                if isinstance(obj, Project) and _changed(obj, RULE_ATTRIBUTES)}
    cells: dict[int, set[int]] = {}  # project id -> image ids
    for obj in session.info.pop(PENDING, []):
        cells.setdefault(obj.project_id, set()).add(obj.id)
    for obj in session.dirty:
        if isinstance(obj, Image) and _changed(obj, ("split",)):  # test cells need no reader
            cells.setdefault(obj.project_id, set()).add(obj.id)
    for obj in session.new:
        if isinstance(obj, Annotation) and obj.origin != Origin.REFERENCE:
            image = session.get(Image, obj.image_id)  # usually loaded already
            if image is not None:
                cells.setdefault(image.project_id, set()).add(image.id)
    for project in projects.values():
        refresh_open_slots(session, project)
    for project_id, ids in cells.items():
        if project_id not in projects:
            refresh_open_slots(session, session.get(Project, project_id), ids)
    _expire_cached_values(session, cells, projects)


def _expire_cached_values(session: Session, cells: dict[int, set[int]], projects) -> None:
    """Loaded Image objects reread ``open_slots`` rather than show the old value."""
    if projects:
        loaded = [o for o in session.identity_map.values()
                  if isinstance(o, Image) and o.project_id in projects]
    else:
        loaded = [session.identity_map.get(identity_key(Image, i))
                  for ids in cells.values() for i in ids]
    for obj in loaded:
        if obj is not None:
            session.expire(obj, ["open_slots"])
