"""Uploads stream to disk: never whole in memory, never in the system's /tmp.

Werkzeug's multipart parser writes each uploaded file to the stream the
request's ``_get_file_stream`` returns; ours is an unnamed temporary file
under ``<instance>/uploads/.incoming`` (on the instance's disk, which has room
for imports), for every file whatever its size.  The view then copies each
file in chunks into the import job's folder (webapp/admin/imports.py), and the
temporary files vanish when the request ends.
"""

from __future__ import annotations

import tempfile
from typing import IO

from flask import Request, current_app

# A folder of class folders arrives as one part per file (webkitdirectory).
MAX_UPLOAD_PARTS = 100_000


def incoming_dir(settings):
    return settings.instance_dir / "uploads" / ".incoming"


class HemaloopRequest(Request):
    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None
                         ) -> IO[bytes]:
        folder = incoming_dir(current_app.config["HEMALOOP"])
        folder.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryFile("rb+", dir=folder)
