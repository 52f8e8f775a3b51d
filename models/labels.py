"""Current labels, derived from the append-only annotation history.

Nothing stores "the label of a cell": it is worked out here, the single place
the webapp (queue, curation, agreement) and the worker (training and test
labels) ask, so they can never disagree about which cells are labeled.  (One
number is cached for the labeling queue's speed, the votes a cell still needs:
models/open_slots.py computes it with the SQL below.)

- A reader's *vote* on a cell is their latest annotation that no undo (a
  ``retract`` row) has voided.  A ``reject`` row (a suggestion marked wrong in
  the bulk-verification grid) is no vote: it says what the cell is not, and
  is kept for the curator and for training (``CellState.rejected``).
- A cell needs k readers (the project's ``readers_per_cell``; its
  ``contested_readers`` when a reader voted a contested class or the cell is
  in the agreement sample).  Its label is *final* once k votes agree; k
  agreeing ``unusable`` votes exclude it.  Votes that reach k without k
  agreeing make it *disputed*; an ``ambiguous`` vote makes it *flagged*; both
  wait for a curator.
- A curator's latest resolution overrides everything: a class, or excluded.
- Reference labels (class-folder imports) are final where no reader or
  curator has spoken: always on the test split, on the pool only when the
  project trusts them for training.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from sqlalchemy import (
    BigInteger, and_, case, cast, exists, func, literal, literal_column, or_, select,
)
from sqlalchemy.orm import Session, aliased

from .annotations import Annotation, Flag, Kind, Origin
from .images import Image, Split
from .projects import Project

# The agreement sample: a fixed, evenly spread share of cells, chosen by a
# multiplicative hash of the id that SQL and Python compute identically.
SAMPLE_MULTIPLIER = 2654435761
SAMPLE_BUCKETS = 1000

OPEN, FINAL, EXCLUDED, DISPUTED, FLAGGED = "open", "final", "excluded", "disputed", "flagged"


@dataclass(frozen=True)
class ReadingRules:
    """The project settings that decide how many readers a cell needs; hashable, so
    SQL built from them (``needed_readers_sql``) can be cached per rules."""

    readers_per_cell: int
    contested_readers: int | None
    contested_class_ids: tuple[int, ...]
    agreement_share: float

    @classmethod
    def of(cls, project: Project) -> ReadingRules:
        return cls(project.readers_per_cell, project.contested_readers,
                   tuple(project.contested_class_ids or ()), project.agreement_share)


def sample_threshold(project: Project) -> int:
    return round(project.agreement_share * SAMPLE_BUCKETS)


def in_agreement_sample(project: Project, image_id: int) -> bool:
    return (image_id * SAMPLE_MULTIPLIER) % SAMPLE_BUCKETS < sample_threshold(project)


def needed_readers(project: Project | ReadingRules, image_id: int, voted_class_ids) -> int:
    k = project.readers_per_cell
    if project.contested_readers and (
            in_agreement_sample(project, image_id)
            or set(voted_class_ids) & set(project.contested_class_ids or [])):
        return max(k, project.contested_readers)
    return k


# --- SQL pieces (the labeling queue) -----------------------------------------------------

# Aliases made once: building one per query costs more than running the query.
_UNDO = aliased(Annotation, name="undo")
_VOTE = aliased(Annotation, name="vote")
_FLAGGED = aliased(Annotation, name="flagged")
_CURATED = aliased(Annotation, name="curated")
_CONTESTED = aliased(Annotation, name="contested")


def live_vote(vote=Annotation):
    """SQL condition on an annotations alias: a reader's decision no undo has voided."""
    return and_(vote.origin == Origin.READER, vote.kind.not_in((Kind.RETRACT, Kind.REJECT)),
                ~exists().where(_UNDO.retracts_id == vote.id))


def vote_count():
    """Scalar subquery: live votes on the current ``Image`` row."""
    return (select(func.count(_VOTE.id))
            .where(_VOTE.image_id == Image.id, live_vote(_VOTE)).scalar_subquery())


def needed_readers_sql(project: Project):
    """SQL expression: readers the current ``Image`` row needs (see needed_readers)."""
    k = project.readers_per_cell
    if not project.contested_readers or project.contested_readers <= k:
        return literal(k)
    contested = exists().where(_CONTESTED.image_id == Image.id, live_vote(_CONTESTED),
                               _CONTESTED.label_class_id.in_(project.contested_class_ids or [-1]))
    # 64-bit arithmetic: the product overflows PostgreSQL's integer.
    sampled = ((cast(Image.id, BigInteger) * literal(SAMPLE_MULTIPLIER, BigInteger))
               % SAMPLE_BUCKETS) < sample_threshold(project)
    return case((or_(sampled, contested), project.contested_readers), else_=k)


def curated():
    """SQL condition: a curator's resolution of the current ``Image`` row stands (an
    undone resolution, a curator's ``retract`` and what it voids, does not count)."""
    return exists().where(_CURATED.image_id == Image.id, _CURATED.origin == Origin.CURATOR,
                          _CURATED.kind != Kind.RETRACT,
                          ~exists().where(_UNDO.retracts_id == _CURATED.id))


def flagged():
    """SQL condition: a live vote on the current ``Image`` row calls it ambiguous."""
    return exists().where(_FLAGGED.image_id == Image.id, live_vote(_FLAGGED),
                          _FLAGGED.flag == Flag.AMBIGUOUS)


def awaits_readers(project: Project):
    """SQL conditions: the current ``Image`` row (a cell of ``project``) is a pool
    cell still needing a vote (models/open_slots.py keeps the count on the row)."""
    return (
        Image.split == Split.POOL,
        ~curated(),
        ~flagged(),
        vote_count() < needed_readers_sql(project),
    )


# --- the cells to work on ----------------------------------------------------------------
#
# Two meanings, one condition each.  With k > 1 they differ from "no reader has
# voted": a cell with one of its two votes still needs a reader (the queue offers
# it, a review round may pick it) and has no final label yet (the model scores it).

# A pool cell that still needs a reader's vote: what the labeling queue offers and
# review rounds choose from.  ``open_slots`` caches awaits_readers (models/open_slots.py);
# a literal 0 so that SQLite matches the partial index ``ix_images_open_queue`` (it
# cannot match a bound parameter).
NEEDS_READERS = Image.open_slots > literal_column("0")

_AGREEING = aliased(Annotation, name="agreeing")


def top_choice_votes():
    """Scalar subquery: live votes on the current ``Image`` row's most voted choice."""
    n = func.count(_AGREEING.id)
    return func.coalesce(
        select(n).where(_AGREEING.image_id == Image.id, live_vote(_AGREEING))
        .group_by(_AGREEING.label_class_id, _AGREEING.flag).order_by(n.desc()).limit(1)
        .scalar_subquery(), 0)


def decided(project: Project):
    """SQL condition: the current ``Image`` row's label is settled (final or excluded):
    a curator resolved it, or ``needed_readers`` live votes agree and none is ambiguous."""
    return or_(curated(), and_(~flagged(), top_choice_votes() >= needed_readers_sql(project)))


def undecided(project: Project):
    """SQL conditions: the current ``Image`` row (a cell of ``project``) is a pool cell
    without a final label: still needing readers, or disputed or flagged and waiting
    for a curator.  What the model scores (a round; re-scoring after an activation),
    so readers see suggestions and the curator the model's view.

    A cell that needs readers is undecided: the cached count answers for most
    cells before the subqueries run."""
    return Image.split == Split.POOL, or_(NEEDS_READERS, ~decided(project))


# --- cell states (curation, agreement, training) ----------------------------------------

@dataclass
class CellState:
    image_id: int
    split: Split
    storage_path: str
    # user id -> the live vote: a class id, or a Flag
    votes: dict[int, int | Flag] = field(default_factory=dict)
    vote_rows: dict[int, Annotation] = field(default_factory=dict)
    curator: Annotation | None = None
    # user id -> class ids whose suggestion that reader rejected (not votes)
    rejected: dict[int, set[int]] = field(default_factory=dict)
    reference_class_id: int | None = None
    need: int = 1
    status: str = OPEN
    class_id: int | None = None  # the final class

    @property
    def voted_classes(self) -> list[int]:
        return [v for v in self.votes.values() if isinstance(v, int)]


def _settle(project: Project | ReadingRules, cell: CellState) -> None:
    cell.need = needed_readers(project, cell.image_id, cell.voted_classes)
    if cell.curator is not None:
        cell.class_id = cell.curator.label_class_id
        cell.status = FINAL if cell.class_id is not None else EXCLUDED
        return
    if Flag.AMBIGUOUS in cell.votes.values():
        cell.status = FLAGGED
        return
    if len(cell.votes) < cell.need:
        cell.status = OPEN
        return
    choice, n = Counter(cell.votes.values()).most_common(1)[0]
    if n >= cell.need:
        if choice == Flag.UNUSABLE:
            cell.status = EXCLUDED
        else:
            cell.status, cell.class_id = FINAL, choice
    else:
        cell.status = DISPUTED


def cell_states(session: Session, project: Project, split: Split | None = None,
                image_ids: list[int] | None = None) -> dict[int, CellState]:
    """Every cell's votes, curator resolution, reference label and status."""
    image_filter = [Image.project_id == project.id]
    if split is not None:
        image_filter.append(Image.split == split)
    if image_ids is not None:
        image_filter.append(Image.id.in_(image_ids))
    cells = {i: CellState(i, s, p) for i, s, p in session.execute(
        select(Image.id, Image.split, Image.storage_path).where(*image_filter))}
    rows = session.scalars(
        select(Annotation).join(Image, Image.id == Annotation.image_id)
        .where(*image_filter).order_by(Annotation.created_at, Annotation.id)).all()
    voided = {a.retracts_id for a in rows if a.kind == Kind.RETRACT}
    for a in rows:
        cell = cells[a.image_id]
        if a.kind == Kind.RETRACT or a.id in voided:
            continue  # an undo, and the decision it undid
        if a.kind == Kind.REJECT:
            cell.rejected.setdefault(a.user_id, set()).add(a.suggested_class_id)
            continue
        if a.origin == Origin.READER:
            cell.vote_rows[a.user_id] = a
            cell.votes[a.user_id] = a.label_class_id if a.label_class_id is not None else a.flag
        elif a.origin == Origin.CURATOR:
            cell.curator = a
        elif a.origin == Origin.REFERENCE and a.label_class_id is not None:
            cell.reference_class_id = a.label_class_id
    for cell in cells.values():
        _settle(project, cell)
    return cells


@dataclass(frozen=True)
class LabeledImage:
    image_id: int
    storage_path: str
    label_class_id: int


def training_label(project: Project, cell: CellState) -> int | None:
    """The class a cell trains (or tests) with, or None when it has none yet."""
    if cell.status == FINAL:
        return cell.class_id
    if cell.status == OPEN and not cell.votes and (
            cell.split == Split.TEST or project.train_on_reference):
        return cell.reference_class_id
    return None


def labeled_images(session: Session, project: Project, split: Split) -> list[LabeledImage]:
    """Images of a split with a final label: consensus, curator, or trusted reference.

    Cells still waiting for readers or a curator, and excluded cells, are left out.
    """
    out = []
    for cell in sorted(cell_states(session, project, split).values(), key=lambda c: c.image_id):
        label = training_label(project, cell)
        if label is not None:
            out.append(LabeledImage(cell.image_id, cell.storage_path, label))
    return out


def unsettled_by(session: Session, project: Project, rules: ReadingRules) -> int:
    """How many cells that have a training (or test) label now would lose it, or change
    class, under the proposed reading rules: asked before the rules are saved, so
    that raising k never silently drops earlier labels from training."""
    lost = 0
    for cell in cell_states(session, project).values():
        before = training_label(project, cell)
        if before is None:
            continue
        proposed = replace(cell, votes=dict(cell.votes))
        _settle(rules, proposed)
        if training_label(project, proposed) != before:
            lost += 1
    return lost


def unlabeled_pool(session: Session, project: Project) -> list[tuple[int, str]]:
    """(id, storage_path) of the project's undecided pool cells (see undecided), by id."""
    return [(i, p) for i, p in session.execute(
        select(Image.id, Image.storage_path)
        .where(Image.project_id == project.id, *undecided(project)).order_by(Image.id))]


def label_counts(labeled: list[LabeledImage]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for item in labeled:
        counts[item.label_class_id] = counts.get(item.label_class_id, 0) + 1
    return counts


