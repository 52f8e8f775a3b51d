"""Rows as the dicts the v1 schemas describe (one place, so lists and single
items answer alike)."""

from __future__ import annotations

from flask import url_for

from models import Annotation, Image, ModelVersion, Prediction, Project, TrainingRound, User
from models.labels import CellState


def class_names(project: Project) -> dict[int, str]:
    return {c.id: c.name for c in project.classes}


def project_json(project: Project) -> dict:
    return {
        "id": project.id, "name": project.name, "blind_reading": project.blind_reading,
        "classes": [{"id": c.id, "name": c.name, "hotkey": c.hotkey, "colour": c.colour}
                    for c in project.classes],
        "active_model_version_id": project.active_version.id if project.active_version else None,
        "feature_sources": project.feature_sources,
    }


def cell_json(image: Image, prediction: Prediction | None, names: dict[int, str],
              state: CellState | None = None) -> dict:
    return {
        "id": image.id, "project_id": image.project_id, "original_name": image.original_name,
        "sha256": image.sha256, "width": image.width, "height": image.height,
        "split": image.split.value, "created_at": image.created_at,
        "image_url": url_for("images.file", image_id=image.id),
        "prediction": None if prediction is None else {
            "model_version_id": prediction.model_version_id,
            "predicted_class": names.get(prediction.predicted_class_id),
            "confidence": prediction.confidence, "entropy": prediction.entropy,
            "margin": prediction.margin,
        },
        "state": state.status if state is not None else None,
        "final_label": names.get(state.class_id) if state is not None and state.class_id else None,
    }


def measurements_json(m, project) -> dict | None:
    """A ``cell_measurements`` row (or None) for API v1's cell detail."""
    if m is None:
        return None
    mpp = project.microns_per_pixel
    keys = ("descriptor_version", "error", "nucleus_found", "cytoplasm_found", "nucleus_area_px",
            "cell_area_px", "nucleus_lobes", "nucleus_to_cell", "nucleus_circularity",
            "nucleus_solidity", "chromatin_density", "chromatin_contrast")
    body = {k: getattr(m, k) for k in keys}
    body["nucleus_area_um2"] = (m.nucleus_area_px * mpp * mpp
                                if mpp and m.nucleus_area_px is not None else None)
    return body


def annotation_json(a: Annotation, names: dict[int, str], users: dict[int, str]) -> dict:
    return {
        "id": a.id, "image_id": a.image_id, "user": users.get(a.user_id) if a.user_id else None,
        "kind": a.kind.value, "origin": a.origin.value,
        "label": names.get(a.label_class_id) if a.label_class_id is not None else None,
        "flag": a.flag.value if a.flag is not None else None, "retracts_id": a.retracts_id,
        "model_version_id": a.model_version_id, "duration_ms": a.duration_ms,
        "submission_id": a.submission_id, "created_at": a.created_at,
    }


def usernames(session, ids) -> dict[int, str]:
    from sqlalchemy import select

    ids = {i for i in ids if i is not None}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


def round_json(rnd: TrainingRound) -> dict:
    return {
        "id": rnd.id, "project_id": rnd.project_id, "status": rnd.status.value,
        "progress": rnd.progress, "phase": rnd.phase, "trigger": rnd.trigger,
        "created_at": rnd.created_at, "started_at": rnd.started_at,
        "finished_at": rnd.finished_at, "error": rnd.error, "warnings": rnd.warnings or [],
        "n_train": rnd.n_train, "n_test": rnd.n_test, "n_scored": rnd.n_scored,
    }


def version_json(v: ModelVersion, names: dict[int, str]) -> dict:
    return {
        "id": v.id, "project_id": v.project_id, "round_id": v.round_id, "is_active": v.is_active,
        "activated_at": v.activated_at, "created_at": v.created_at, "input_size": v.input_size,
        "backbone_weights": v.backbone_weights, "temperature": v.temperature,
        "n_train": v.n_train, "classes": [names.get(c) for c in v.class_ids],
        "metrics": v.metrics or {},
    }
