"""Current labels, derived from the append-only annotation history.

Nothing stores "the label of a cell": it is the latest annotation of each
origin.  The webapp (queue, counts) and the worker (training and test labels)
both ask here, so they can never disagree about which cells are labeled.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, and_, exists, func, select
from sqlalchemy.orm import Session

from .annotations import Annotation, Origin
from .images import Image, Split
from .projects import Project


def _latest(origin: Origin) -> Select:
    """Latest annotation of one origin per image: (image_id, label_class_id, flag)."""
    ranked = (
        select(
            Annotation.image_id,
            Annotation.label_class_id,
            Annotation.flag,
            func.row_number()
            .over(
                partition_by=Annotation.image_id,
                order_by=(Annotation.created_at.desc(), Annotation.id.desc()),
            )
            .label("rn"),
        )
        .where(Annotation.origin == origin)
        .subquery()
    )
    return select(ranked.c.image_id, ranked.c.label_class_id, ranked.c.flag).where(ranked.c.rn == 1)


def has_reader_annotation():
    """SQL condition: some reader has decided on this image (class or flag)."""
    return exists().where(
        and_(Annotation.image_id == Image.id, Annotation.origin == Origin.READER)
    )


@dataclass(frozen=True)
class LabeledImage:
    image_id: int
    storage_path: str
    label_class_id: int


def labeled_images(session: Session, project: Project, split: Split) -> list[LabeledImage]:
    """Images of a split with a class label, the reader's over the reference.

    A reader's latest decision wins; a reader's flag (ambiguous, unusable)
    removes the cell.  Reference labels from an import count where no reader
    has decided, on the test split always (it needs ground truth) and on the
    pool only when the project trusts them for training.
    """
    reader = _latest(Origin.READER).subquery()
    reference = _latest(Origin.REFERENCE).subquery()
    use_reference = split == Split.TEST or project.train_on_reference
    label = func.coalesce(reader.c.label_class_id, reference.c.label_class_id) if use_reference \
        else reader.c.label_class_id
    rows = session.execute(
        select(Image.id, Image.storage_path, label.label("label"))
        .outerjoin(reader, reader.c.image_id == Image.id)
        .outerjoin(reference, reference.c.image_id == Image.id)
        .where(Image.project_id == project.id, Image.split == split)
        # A reader's flag excludes the cell even when a reference label exists.
        .where(reader.c.flag.is_(None))
        .order_by(Image.id)
    ).all()
    return [LabeledImage(r.id, r.storage_path, r.label) for r in rows if r.label is not None]


def unlabeled_pool(session: Session, project: Project) -> list[tuple[int, str]]:
    """(id, storage_path) of pool images no reader has decided on: the ones to rank."""
    rows = session.execute(
        select(Image.id, Image.storage_path)
        .where(Image.project_id == project.id, Image.split == Split.POOL)
        .where(~has_reader_annotation())
        .order_by(Image.id)
    )
    return [(image_id, path) for image_id, path in rows]


def label_counts(labeled: list[LabeledImage]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for item in labeled:
        counts[item.label_class_id] = counts.get(item.label_class_id, 0) + 1
    return counts
