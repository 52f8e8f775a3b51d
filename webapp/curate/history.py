"""A cell's timeline: import, every label and undo, resolutions, model predictions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Annotation, Image, Kind, Origin, Prediction, Project, User


@dataclass(frozen=True)
class Event:
    at: datetime
    kind: str  # import, reference, label, verify, undo, resolution, prediction
    who: str | None
    what: str
    note: str | None = None
    annotation_id: int | None = None


def timeline(session: Session, image: Image) -> list[Event]:
    project = session.get(Project, image.project_id)
    names = {c.id: c.name for c in project.classes}
    events = [Event(image.created_at, "import", None,
                    f"imported from {image.source} as {image.original_name} ({image.split.value} split)")]
    rows = session.execute(
        select(Annotation, User.username).outerjoin(User, User.id == Annotation.user_id)
        .where(Annotation.image_id == image.id).order_by(Annotation.created_at, Annotation.id)).all()
    for a, username in rows:
        choice = names.get(a.label_class_id) if a.label_class_id else (a.flag.value if a.flag else "")
        if a.kind == Kind.RETRACT:
            events.append(Event(a.created_at, "undo", username, f"undid decision #{a.retracts_id}",
                                annotation_id=a.id))
        elif a.kind == Kind.REJECT:
            events.append(Event(a.created_at, "reject", username,
                                f"marked the suggestion {names.get(a.suggested_class_id)} wrong "
                                "in bulk verification", annotation_id=a.id))
        elif a.origin == Origin.REFERENCE:
            events.append(Event(a.created_at, "reference", None,
                                f"reference label {choice} ({a.source or 'import'})", annotation_id=a.id))
        elif a.origin == Origin.CURATOR:
            events.append(Event(a.created_at, "resolution", username,
                                f"resolved as {choice}", note=a.note, annotation_id=a.id))
        else:
            suggested = names.get(a.suggested_class_id)
            how = "verified the suggestion" if a.kind == Kind.VERIFY else "labeled"
            shown = f" (model suggested {suggested})" if suggested and a.kind != Kind.VERIFY else ""
            events.append(Event(a.created_at, a.kind.value, username, f"{how} {choice}{shown}",
                                annotation_id=a.id))
    for p in session.scalars(select(Prediction).where(Prediction.image_id == image.id)):
        events.append(Event(p.created_at, "prediction", f"model v{p.model_version_id}",
                            f"predicted {names.get(p.predicted_class_id)} "
                            f"({p.confidence * 100:.0f}%, entropy {p.entropy:.2f})"))
    events.sort(key=lambda e: e.at)
    return events


def event_json(e: Event) -> dict:
    return {"at": e.at.isoformat(), "kind": e.kind, "who": e.who, "what": e.what,
            "note": e.note, "annotation_id": e.annotation_id}
