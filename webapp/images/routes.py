from __future__ import annotations

import io

from flask import abort, current_app, send_file
from flask_login import current_user, login_required
from PIL import Image as PILImage

from models import Image
from models.pixels import for_browser

from ..auth.access import require_cell
from ..db import get_db
from . import bp

# Browsers cannot show these in <img>. Imports since issue 11 store them as PNG
# (webapp/ingest/validate.py); files stored before that are converted here.
CONVERT_ON_SERVE = {".tif", ".tiff"}


@bp.get("/<int:image_id>")
@login_required
def file(image_id: int):
    # Only members of the image's project (and admins) may fetch it.
    image = require_cell(get_db(), current_user, Image, image_id, "image")
    path = current_app.config["HEMALOOP"].storage_dir / image.storage_path
    if not path.is_file():
        abort(404, description=f"The file of image {image_id} is missing from storage.")
    source = path
    if path.suffix.lower() in CONVERT_ON_SERVE:
        source = io.BytesIO()
        with PILImage.open(path) as stored:
            for_browser(stored).save(source, "PNG")
        source.seek(0)
    # Content-addressed: a given URL always serves the same bytes.
    response = send_file(source, mimetype="image/png" if source is not path else None,
                         etag=image.sha256, max_age=365 * 24 * 3600, conditional=True)
    response.cache_control.private = True
    response.cache_control.immutable = True
    return response
