"""Predicting uploaded cells on the predict worker: class, calibrated confidence,
top three and a Grad-CAM map per file (as numbers: the web process draws the
picture when it is shown, webapp/predict/overlay.py).

The web request has spooled the files (worker/predict_spool.py) and waits for
this answer (webapp/predict/client.py), so everything here is quick once the
model is loaded: the model stays loaded between tasks (worker/model_cache.py),
and one forward pass gives both the probabilities and the map.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from models import ModelVersion, Project
from models.db import session_scope
from models.settings import Settings

from . import model_cache
from .predict_spool import SpoolError, spooled_file

log = logging.getLogger(__name__)

TOP = 3


class PredictRefused(Exception):
    """The version or the files cannot be predicted; the message is for the user."""


def _version(settings: Settings, version_id: int) -> tuple[Path, float, list[int], dict[int, str]]:
    with session_scope(settings.database_url) as s:
        version = s.get(ModelVersion, version_id)
        if version is None:
            raise PredictRefused(f"There is no model version {version_id}.")
        project = s.get(Project, version.project_id)
        names = {c.id: c.name for c in project.classes}
        return (settings.storage_dir / version.artifact_path, float(version.temperature or 1.0),
                list(version.class_ids), names)


def explain_files(clf, paths: list[Path], temperature: float,
                  class_names: dict[int, str]) -> dict:
    """Predictions (calibrated with ``temperature``) and Grad-CAM maps for ``paths``.

    Each item's ``cam`` is its map as rows of values in [0, 1] (None without
    one).  Files that do not decode get their reason instead.
    """
    from worker.ml import calibration
    from worker.ml.gradcam import NO_PIXELS_NOTE, grad_cam, grid_of, image_input_index

    failures: list[tuple[int, str]] = []
    inputs, ok = clf.model_inputs(paths, failures)
    # Only the rows that loaded (the loop below walks them in order), keyed as
    # the saved model names its inputs: a one-input model saved before the
    # two-input head named its image input itself.
    inputs = {name: x[ok] for name, x in inputs.items()}
    if len(clf.model.inputs) == 1:
        inputs = {clf.model.inputs[0].name: next(iter(inputs.values()))}
    probs, cams = grad_cam(clf.model, inputs)
    # No maps: either no file decoded (each says why below) or the model does
    # not look at pixels (its probabilities came from the same pass).
    note = NO_PIXELS_NOTE if image_input_index(clf.model) is None else None
    # softmax(log p / T) = softmax(logits / T): the shift log p - logits is the
    # same for every class, so the model's output calibrates as its logits do.
    calibrated = calibration.softmax(np.log(np.maximum(probs, 1e-38)), temperature)
    reasons = dict(failures)
    items: list[dict] = []
    row = 0
    for i, path in enumerate(paths):
        if not ok[i]:
            items.append({"file": path.name, "error": f"cannot read the image "
                          f"({reasons.get(i, 'unknown reason')})"})
            continue
        p = calibrated[row]
        order = np.argsort(-p)[:TOP]
        top = [{"class": class_names.get(clf.class_ids[j], str(clf.class_ids[j])),
                "class_id": int(clf.class_ids[j]), "probability": round(float(p[j]), 4)}
               for j in order]
        cam = None if cams is None else np.round(cams[row].astype(float), 4).tolist()
        items.append({"file": path.name, "error": None, "predicted_class": top[0]["class"],
                      "class_id": top[0]["class_id"], "confidence": top[0]["probability"],
                      "top": top, "cam": cam})
        row += 1
    grid = grid_of(cams) if cams is not None else None
    return {"items": items, "note": note, "grid": list(grid) if grid else None}


def predict_batch(settings: Settings, version_id: int, batch: str, files: list[str]) -> dict:
    """The Celery task's body: ``{"model_version_id", "items", "note", "grid", "ms"}``,
    or ``{"error": ...}`` for a refusal the user can act on."""
    started = time.perf_counter()
    try:
        artifact, temperature, class_ids, names = _version(settings, version_id)
        paths = [spooled_file(settings.instance_dir, batch, f) for f in files]
        if not artifact.is_file():
            raise PredictRefused(f"The file of model version {version_id} is missing on the "
                                 "predict worker; train or activate another version.")
    except SpoolError:
        return {"error": "The uploaded files are no longer on the server; upload them again."}
    except PredictRefused as exc:
        return {"error": str(exc)}
    clf = model_cache.classifier(artifact)
    looked_up = time.perf_counter()
    result = explain_files(clf, paths, temperature, names)
    result["model_version_id"] = version_id
    # The task's own time, and the part before the model ran (the version's row,
    # the spool's files, the model cache): where a slow worker spends it.
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    result["lookup_ms"] = round((looked_up - started) * 1000, 1)
    return result


def warm(settings: Settings) -> list[int]:
    """Load the active model of each project (up to the cache's size) and run
    one prediction through it, so the first request does not pay for loading
    and tracing.  Returns the versions warmed."""
    import tempfile

    from PIL import Image
    from sqlalchemy import select

    with session_scope(settings.database_url) as s:
        rows = s.execute(select(ModelVersion.id, ModelVersion.artifact_path)
                         .where(ModelVersion.is_active)
                         .order_by(ModelVersion.activated_at.desc().nulls_last())
                         .limit(model_cache.KEEP)).all()
    warmed = []
    with tempfile.TemporaryDirectory(prefix="hemaloop-warm-") as tmp:
        # A real file through the real path: a model with inputs beside the
        # image gets them from model_inputs, as in a request.
        cell = Path(tmp) / "warm.png"
        noise = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
        Image.fromarray(noise, "RGB").save(cell)
        for version_id, artifact in rows:
            path = settings.storage_dir / artifact
            if not path.is_file():
                continue
            try:
                explain_files(model_cache.classifier(path), [cell], 1.0, {})
                warmed.append(version_id)
            except Exception:  # noqa: BLE001 - a bad file must not stop the worker starting
                log.warning("could not warm model version %s", version_id, exc_info=True)
    return warmed
