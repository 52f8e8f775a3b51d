"""The bad-input corpus: every kind of awkward file an import meets, built here as small files.

For each input the test states the outcome (imported, a duplicate, or rejected
with words its reason must contain) and then checks, after the import, that
nothing was lost (every input is accounted for exactly once), that rows and
stored files match one to one (no orphans), and that every imported image can
be loaded for training.  The counts are in docs/reliability.md.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from models import Annotation, Image, Project
from models.db import session_scope
from models.settings import load_settings
from tests import image_corpus as corpus
from tests.helpers import base_env
from webapp.bootstrap import create_project
from webapp.ingest import import_path
from worker.ml.data import load_image

IMPORTED, DUPLICATE = "imported", "duplicate"


def _nested_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("inner.jpg", corpus.cell(500))
    return out.getvalue()


def _tiny_png() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (4, 4)).save(out, "PNG")
    return out.getvalue()


def _files() -> dict[str, tuple[bytes, str]]:
    """name -> (content, expected outcome or words of the rejection reason)."""
    good = corpus.cell(501)
    real = corpus.cell(502, size=64)
    return {
        "a-good.jpg": (good, IMPORTED),
        "b-copy-of-a.jpg": (good, DUPLICATE),
        "bmp.bmp": (corpus.cell(503, fmt="BMP"), IMPORTED),
        "webp.webp": (corpus.cell(504, fmt="WEBP"), IMPORTED),
        "truncated.jpg": (real[: len(real) // 2], "corrupt image: image file is truncated"),
        "zero-bytes.jpg": (b"", "empty file"),
        "text-renamed.png": (b"these are my notes, not a cell\n" * 4, "not an image"),
        "header-bomb.png": (corpus.header_bomb(), "possible decompression bomb"),
        "pixel-bomb.png": (corpus.pixel_bomb(), "image too large: 6000x6000 pixels"),
        "tiny.png": (_tiny_png(), "image too small: 4x4"),
        "ramp-16bit.png": (corpus.png16_ramp(), IMPORTED),
        "rgb-48bit.png": (corpus.png48_ramp(), IMPORTED),
        "ramp-16bit.tif": (corpus.tiff_ramp("I;16B"), IMPORTED),
        "ramp-float.tif": (corpus.tiff_ramp("F"), IMPORTED),
        "scan.tif": (corpus.tiff_rgb(505), IMPORTED),
        "cmyk.jpg": (corpus.cmyk_jpeg(), IMPORTED),
        "palette-transparent.png": (corpus.palette_png_with_transparency(), IMPORTED),
        "animated.gif": (corpus.animated_gif(), "unsupported image format GIF"),
        "stereo.mpo": (corpus.mpo((200, 30, 30), (30, 200, 30)), IMPORTED),
        "nested.zip": (_nested_zip(), "a zip archive inside the import"),
    }


def _class_folder_corpus(root: Path) -> dict[str, str]:
    """The corpus as a class-folder import, plus an unknown class and a loose file."""
    expected = {}
    (root / "neutrophil").mkdir(parents=True)
    for name, (data, outcome) in _files().items():
        (root / "neutrophil" / name).write_bytes(data)
        expected[f"neutrophil/{name}"] = outcome
    (root / "megakaryocyte").mkdir()
    (root / "megakaryocyte" / "mk.jpg").write_bytes(corpus.cell(506))
    expected["megakaryocyte/mk.jpg"] = "unknown class 'megakaryocyte'"
    (root / "loose.jpg").write_bytes(corpus.cell(507))
    expected["loose.jpg"] = IMPORTED
    return expected


def _zip_corpus(path: Path) -> dict[str, str]:
    """The corpus as a zip, plus crafted names and unreadable members."""
    expected = {}
    good = {name: data for name, (data, _) in _files().items()}
    expected.update(corpus.zip_with_bad_members(path, good))
    for name, (_, outcome) in _files().items():
        expected[name] = outcome
    with zipfile.ZipFile(path, "a") as zf:
        for name, seed in (("../escape.jpg", 510), ("/etc/absolute.jpg", 511),
                           ("deep/../../climb.jpg", 512)):
            zf.writestr(name, corpus.cell(seed))
            expected[name] = "unsafe name in the archive"
        zf.writestr("folder/in-a-folder.jpg", corpus.cell(513))
        expected["folder/in-a-folder.jpg"] = IMPORTED
    return expected


@pytest.fixture
def corpus_settings(tmp_path, database_url):
    return load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=database_url,
                                  HEMALOOP_MAX_IMAGE_PIXELS="1000000"))


def _check(settings, project_id: int, report, expected: dict[str, str]) -> None:
    rejected = {r["file"]: r["reason"] for r in report.rejected}
    with session_scope(settings.database_url) as s:
        rows = dict(s.execute(select(Image.original_name, Image.storage_path)
                              .where(Image.project_id == project_id)).all())
        labeled = set(s.scalars(select(Image.original_name).join(Annotation)
                                .where(Image.project_id == project_id)))
    imported = {n for n, o in expected.items() if o == IMPORTED}
    duplicates = {n for n, o in expected.items() if o == DUPLICATE}

    # Each input has the outcome stated for it, with a reason a user can act on.
    assert set(rows) == imported
    assert report.imported == len(imported) and report.duplicates == len(duplicates)
    assert set(rejected) == set(expected) - imported - duplicates, rejected
    for name, reason in rejected.items():
        assert expected[name] in reason, (name, reason)
        assert "Traceback" not in reason and "Error(" not in reason
    # Nothing lost: every input is accounted for exactly once.
    assert report.imported + report.duplicates + len(report.rejected) == len(expected)
    assert labeled == {n for n in imported if n.startswith("neutrophil/")}
    # No orphans: stored files and rows match one to one.
    stored = {p.relative_to(settings.storage_dir).as_posix()
              for p in settings.images_dir.rglob("*") if p.is_file()}
    assert stored == set(rows.values())
    # Everything imported is what a browser shows and the network can load.
    for name, rel in rows.items():
        with PILImage.open(settings.storage_dir / rel) as img:
            assert img.format in {"JPEG", "PNG", "BMP", "WEBP"}, (name, img.format)
        x = load_image(settings.storage_dir / rel, 75)
        assert x.shape == (75, 75, 3) and np.isfinite(x).all()
    for name in (n for n in rows if "ramp" in n):  # 16-bit: a ramp, not a white square
        x = load_image(settings.storage_dir / rows[name], 75)
        assert x.min() < -0.9 and x.max() > 0.9, name


def _import(settings, project_id: int, path: Path):
    with session_scope(settings.database_url) as s:
        return import_path(s, settings.storage_dir, s.get(Project, project_id), path,
                           max_pixels=settings.max_image_pixels)


def test_corpus_as_class_folders(corpus_settings, tmp_path):
    expected = _class_folder_corpus(tmp_path / "corpus")
    assert len(expected) == 22
    with session_scope(corpus_settings.database_url) as s:
        pid = create_project(s, "corpus", "pbc8", test_share=0.0).id
    report = _import(corpus_settings, pid, tmp_path / "corpus")
    _check(corpus_settings, pid, report, expected)


def test_corpus_as_zip(corpus_settings, tmp_path):
    archive = tmp_path / "corpus.zip"
    expected = _zip_corpus(archive)
    assert len(expected) == 27
    with session_scope(corpus_settings.database_url) as s:
        pid = create_project(s, "corpus", "pbc8", test_share=0.0).id
    report = _import(corpus_settings, pid, archive)
    _check(corpus_settings, pid, report, expected)
    # A second run changes nothing: what was imported is now a duplicate.
    again = _import(corpus_settings, pid, archive)
    assert again.imported == 0
    assert again.duplicates == report.imported + report.duplicates
