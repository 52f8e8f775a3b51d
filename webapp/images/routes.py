from __future__ import annotations

from flask import abort, current_app, send_file
from flask_login import login_required

from models import Image

from ..db import get_or_404
from . import bp


@bp.get("/<int:image_id>")
@login_required
def file(image_id: int):
    image = get_or_404(Image, image_id, "image")
    path = current_app.config["HEMALOOP"].storage_dir / image.storage_path
    if not path.is_file():
        abort(404, description=f"The file of image {image_id} is missing from storage.")
    # Content-addressed: a given URL always serves the same bytes.
    response = send_file(path, etag=image.sha256, max_age=365 * 24 * 3600, conditional=True)
    response.cache_control.private = True
    response.cache_control.immutable = True
    return response
