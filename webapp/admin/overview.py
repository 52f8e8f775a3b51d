"""Figures for the admin page, one query each."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Annotation, Image, Kind, ModelVersion, Origin, Project, Split, TrainingRound
from models.labels import label_counts, labeled_images

from .charts import Chart, line_chart


@dataclass(frozen=True)
class ProjectOverview:
    project: Project
    pool: int
    test: int
    reader_labeled: int
    training_labels: dict[str, int]
    active: ModelVersion | None
    rounds: list[TrainingRound]


def project_overview(session: Session, project: Project, n_rounds: int = 20) -> ProjectOverview:
    per_split = {split: n for split, n in session.execute(
        select(Image.split, func.count(Image.id)).where(Image.project_id == project.id)
        .group_by(Image.split))}
    reader_labeled = session.scalar(
        select(func.count(func.distinct(Annotation.image_id)))
        .join(Image, Image.id == Annotation.image_id)
        .where(Image.project_id == project.id, Annotation.origin == Origin.READER,
               # a rejection of a suggestion is no label
               Annotation.kind != Kind.REJECT)) or 0
    names = {c.id: c.name for c in project.classes}
    counts = label_counts(labeled_images(session, project, Split.POOL))
    return ProjectOverview(
        project=project,
        pool=per_split.get(Split.POOL, 0), test=per_split.get(Split.TEST, 0),
        reader_labeled=reader_labeled,
        training_labels={names[c]: n for c, n in sorted(counts.items())},
        active=session.scalar(select(ModelVersion).where(
            ModelVersion.project_id == project.id, ModelVersion.is_active)),
        rounds=recent_rounds(session, project.id, n_rounds),
    )


def recent_rounds(session: Session, project_id: int, n: int = 20) -> list[TrainingRound]:
    return list(session.scalars(
        select(TrainingRound).where(TrainingRound.project_id == project_id)
        .order_by(TrainingRound.id.desc()).limit(n)))


def versions_of(session: Session, project_id: int) -> list[ModelVersion]:
    return list(session.scalars(
        select(ModelVersion).where(ModelVersion.project_id == project_id)
        .order_by(ModelVersion.id.desc())))


def quality_chart(versions: list[ModelVersion]) -> Chart | None:
    """Test accuracy, macro-F1 and calibration error per version, oldest first."""
    ordered = sorted(versions, key=lambda v: v.id)
    test = [v.metrics.get("test") or {} for v in ordered]
    return line_chart(
        {"accuracy": [t.get("accuracy") for t in test],
         "macro-F1": [t.get("macro_f1") for t in test],
         "ECE": [t.get("ece") for t in test]},
        x_labels=[f"v{v.id}" for v in ordered], y_range=(0.0, 1.0),
        title="Test split by model version", x_title="model version (oldest first)",
        y_title="score, 0 to 1 (ECE: lower is better)")


def history_chart(version: ModelVersion) -> Chart | None:
    """Loss per epoch, head phase then fine-tuning, training and validation."""
    history = version.metrics.get("history") or {}
    series: dict[str, list[float | None]] = {}
    for phase in ("head", "fine_tune"):
        h = history.get(phase) or {}
        for key in ("loss", "val_loss"):
            series.setdefault(key, []).extend(h.get(key) or [None] * len(h.get("loss", [])))
    return line_chart(series, x_labels=None,
                      title="Loss per epoch (head, then fine-tuning)",
                      x_title="epoch (head epochs first, then fine-tuning epochs)",
                      y_title="cross-entropy loss (nats)")
