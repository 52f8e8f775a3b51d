"""Final labels as class folders in a zip, the layout Keras and torchvision read as it is:

    train/<class>/<cell id>-<file name>     the project's pool split
    test/<class>/<cell id>-<file name>      its test split (never trained on)

Only cells with a final label (readers agreeing, a curator, or a reference label the
project trains or tests on: the labels training itself uses).  Streamed: one image is
in memory at a time.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

from PIL import Image as PILImage
from sqlalchemy.orm import Session

from models import Project
from models.images import Split
from models.pixels import for_browser

from .filters import ALL, LABELED, ExportError, Filters
from .labels import Progress, iter_label_rows
from .zipstream import Member, stream_zip

SPLIT_FOLDERS = {Split.POOL.value: "train", Split.TEST.value: "test"}
# What tf.keras.utils.image_dataset_from_directory lists (torchvision reads these too).
# Other stored formats (WebP, TIFF) go in as lossless PNG.
READABLE = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_name(text: str, fallback: str = "cell") -> str:
    """A file or folder name with no separators, no leading dots, nothing odd."""
    name = _UNSAFE.sub("_", text).strip("._") or fallback
    return name[:120]


def member_name(split: str, class_name: str, cell_id: int, file_name: str, suffix: str) -> str:
    stem = Path(file_name.replace("\\", "/")).stem
    return f"{SPLIT_FOLDERS[split]}/{safe_name(class_name, 'class')}/{cell_id}-{safe_name(stem)}{suffix}"


def _as_png(path: Path) -> bytes:
    with PILImage.open(path) as image:
        image.seek(0)
        out = io.BytesIO()
        for_browser(image).save(out, format="PNG")
    return out.getvalue()


def _members(session: Session, project: Project, storage_dir: Path, filters: Filters,
             progress: Progress | None) -> Iterator[Member]:
    # Final labels only, whatever states were asked for.
    only_labeled = Filters(frozenset({LABELED}), filters.class_id, filters.since)
    for row in iter_label_rows(session, project, only_labeled, progress=progress):
        path = storage_dir / row.storage_path
        if not path.is_file():
            # Found only midway: the CLI removes what it wrote, a download ends short.
            raise ExportError(f"The file of cell {row.cell_id} ({row.file_name}) is missing "
                              "from the store.", 410)
        suffix = path.suffix.lower()
        modified = row.labeled_at.timestamp() if row.labeled_at else None
        if suffix in READABLE:
            yield Member(member_name(row.split, row.final_label, row.cell_id, row.file_name,
                                     suffix), path=path, modified=modified)
        else:
            yield Member(member_name(row.split, row.final_label, row.cell_id, row.file_name,
                                     ".png"), data=_as_png(path), modified=modified)


def folders_zip(session: Session, project: Project, storage_dir: Path,
                filters: Filters = ALL, progress: Progress | None = None) -> Iterator[bytes]:
    """The class-folder zip's bytes, streamed (see the module's docstring)."""
    return stream_zip(_members(session, project, Path(storage_dir), filters, progress))
