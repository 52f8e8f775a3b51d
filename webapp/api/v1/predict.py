"""Predict: upload cells, get the model's class, calibrated confidence, top three and
Grad-CAM heatmap (the Predict page's code path, webapp/predict/service.py)."""

from __future__ import annotations

import base64

from flask import current_app, request

from models import Scope
from worker.predict_spool import batch_folder

from ...auth.access import require_project
from ...db import get_db
from ...limits import accepts_upload
from ...predict import service
from ...predict.client import PredictFailed, PredictUnavailable
from ...predict.uploads import NothingToPredict
from . import bp
from .auth import acting_user, token_auth
from .errors import json_error
from .schemas import PredictIn, PredictOut


def _item(entry: dict, folder, with_png: bool) -> dict:
    heatmap = None
    path = service.heatmap_file(folder, entry) if with_png else None
    if path is not None:
        heatmap = base64.b64encode(path.read_bytes()).decode("ascii")
    return {"index": entry["index"], "file": entry["name"], "error": entry.get("error"),
            "predicted_class": entry.get("predicted_class"), "class_id": entry.get("class_id"),
            "confidence": entry.get("confidence"),
            "top": [{"class_name": t["class"], "class_id": t["class_id"],
                     "probability": t["probability"]} for t in entry.get("top") or []],
            "heatmap": entry.get("cam"), "heatmap_png": heatmap}


@bp.post("/projects/<int:project_id>/predict")
@accepts_upload
@bp.auth_required(token_auth, roles=[Scope.READ.value])
@bp.input(PredictIn, location="form_and_files", arg_name="body")
@bp.output(PredictOut)
@bp.doc(tags=["predict"], operation_id="predict", responses=[400, 403, 404, 409, 429, 502, 503])
def predict(project_id: int, body: dict):
    """Predict one or many uploaded cell images (multipart, field `files`, repeated).

    Each file gets the class, its calibrated confidence, the top three and a
    Grad-CAM heatmap, or the reason it was not predicted (not an image,
    corrupt, too large); the other files go on.  Nothing is added to the
    project.  503 when no predict worker answers in time."""
    db = get_db()
    user = acting_user()
    project = require_project(db, user, project_id)
    try:
        spooled, version = service.run(current_app.config["HEMALOOP"], db, project, user,
                                       request.files.getlist("files"), body.get("version"))
    except service.PredictRefused as exc:
        return json_error(exc.status, "Not predicted", str(exc))
    except NothingToPredict as exc:
        return json_error(400, "Not predicted", str(exc))
    except PredictUnavailable as exc:
        return json_error(503, "No predict worker", str(exc))
    except PredictFailed as exc:
        return json_error(502, "Prediction failed", str(exc))
    folder = batch_folder(current_app.config["HEMALOOP"].instance_dir, spooled.batch)
    result = spooled.manifest["result"]
    return {"model_version_id": version.id, "upload_id": spooled.batch, "note": result["note"],
            "heatmap_grid": result["grid"],
            "items": [_item(e, folder, body["heatmap_png"]) for e in spooled.entries]}
