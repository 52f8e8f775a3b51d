"""Importing cells: class folders, flat folders and zips; bad files refused by name."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import select

from models import Annotation, Image, LabelClass, Origin, Project, Split
from models.db import session_scope
from models.settings import load_settings
from tests.helpers import DEMO_DIR, base_env, small_demo_copy
from webapp.bootstrap import create_project
from webapp.ingest import import_path

CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte",
           "neutrophil", "platelet"]


# --- helpers -------------------------------------------------------------------

def _demo_files(n: int, offset: int = 0) -> list[Path]:
    """n real demo cells, taken across the classes."""
    files = [f for d in sorted(DEMO_DIR.iterdir()) for f in sorted(d.iterdir())]
    return files[offset:offset + n]


def _flat_copy(dest: Path, files: list[Path]) -> Path:
    dest.mkdir(parents=True)
    for f in files:
        shutil.copy(f, dest / f.name)
    return dest


def _new_project(settings, name: str = "p", test_share: float = 0.0) -> int:
    with session_scope(settings.database_url) as s:
        return create_project(s, name, "pbc8", test_share=test_share).id


def _import(settings, project_id: int, path: Path, source: str | None = None):
    with session_scope(settings.database_url) as s:
        project = s.get(Project, project_id)
        return import_path(s, settings.storage_dir, project, path,
                           max_pixels=settings.max_image_pixels, source=source)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _snapshot(settings, project_id: int) -> dict:
    """Every row and stored file of a project, to prove an import changed nothing old."""
    with session_scope(settings.database_url) as s:
        images = {
            i.id: (i.sha256, i.storage_path, i.width, i.height, i.original_name, i.source,
                   i.split, i.shuffle_key, i.created_at)
            for i in s.scalars(select(Image).where(Image.project_id == project_id))
        }
        annotations = {
            a.id: (a.image_id, a.origin, a.label_class_id, a.flag, a.source, a.user_id,
                   a.created_at)
            for a in s.scalars(select(Annotation).join(Image).where(Image.project_id == project_id))
        }
    files = {}
    for sha, rel, *_ in images.values():
        path = settings.storage_dir / rel
        files[rel] = (_sha(path.read_bytes()), path.stat().st_mtime_ns)
        assert files[rel][0] == sha
    return {"images": images, "annotations": annotations, "files": files}


def _png_header_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG claiming huge dimensions, a few hundred bytes on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    PILImage.new("1", (width, height)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _bad_files(dest: Path) -> dict[str, str]:
    """Bad files beside good ones in a class-folder import; returns name -> expected reason."""
    real = _demo_files(1, offset=150)[0].read_bytes()  # a neutrophil
    folder = dest / "neutrophil"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "truncated.jpg").write_bytes(real[: len(real) // 2])
    (folder / "notes.jpg").write_text("this is a text file, not a cell\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "bomb.png").write_bytes(_png(6000, 6000))  # 36 Mpx, a few kB
    (folder / "header-bomb.png").write_bytes(_png_header_bomb(20000, 20000))
    gif = io.BytesIO()
    PILImage.new("RGB", (32, 32)).save(gif, "GIF")
    (folder / "cell.gif").write_bytes(gif.getvalue())
    unknown = dest / "megakaryocyte"
    unknown.mkdir()
    shutil.copy(_demo_files(1, offset=3)[0], unknown / "MK_0001.jpg")
    return {
        "neutrophil/truncated.jpg": "corrupt image: image file is truncated",
        "neutrophil/notes.jpg": "not an image",
        "neutrophil/empty.jpg": "empty file",
        "neutrophil/bomb.png": "image too large: 6000x6000 pixels exceeds the limit",
        "neutrophil/header-bomb.png": "possible decompression bomb",
        "neutrophil/cell.gif": "unsupported image format GIF",
        "megakaryocyte/MK_0001.jpg": "unknown class 'megakaryocyte'",
    }


def _check_rejected(rejected: list[dict], expected: dict[str, str]) -> None:
    got = {r["file"]: r["reason"] for r in rejected}
    assert set(got) == set(expected), got
    assert all(set(r) == {"file", "reason"} for r in rejected)
    for name, words in expected.items():
        assert words in got[name], (name, got[name])
    assert "basophil, eosinophil" in got["megakaryocyte/MK_0001.jpg"]  # lists the classes


@pytest.fixture
def sqlite_settings(tmp_path, sqlite_url):
    return load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=sqlite_url,
                                  HEMALOOP_MAX_IMAGE_PIXELS="1000000"))


@pytest.fixture
def low_pixel_settings(tmp_path, database_url):
    return load_settings(base_env(tmp_path, HEMALOOP_DATABASE_URL=database_url,
                                  HEMALOOP_MAX_IMAGE_PIXELS="1000000"))


# --- through import_path ---------------------------------------------------------

def test_class_folders_record_reference_labels(settings, tmp_path):
    src = small_demo_copy(tmp_path / "cells", per_class=2)
    pid = _new_project(settings)
    report = _import(settings, pid, src, source="PBC sample")
    assert (report.imported, report.duplicates, report.rejected, report.labeled) == (16, 0, [], 16)

    with session_scope(settings.database_url) as s:
        rows = s.execute(
            select(Image, Annotation, LabelClass)
            .join(Annotation, Annotation.image_id == Image.id)
            .join(LabelClass, LabelClass.id == Annotation.label_class_id)
            .where(Image.project_id == pid)
        ).all()
        assert len(rows) == 16
        for image, ann, cls in rows:
            folder, name = image.original_name.split("/")
            assert cls.name == folder and cls.project_id == pid
            assert (src / folder / name).read_bytes() == (
                settings.storage_dir / image.storage_path).read_bytes()
            assert image.sha256 in image.storage_path and image.split == Split.POOL
            assert (image.width, image.height) == PILImage.open(src / folder / name).size
            assert ann.origin == Origin.REFERENCE and ann.user_id is None and ann.flag is None
            assert ann.source == "PBC sample" == image.source
        assert sorted(c.name for _, _, c in rows) == sorted(CLASSES * 2)


def test_flat_folder_is_unlabeled(settings, tmp_path):
    src = _flat_copy(tmp_path / "batch-7", _demo_files(10, offset=20))
    pid = _new_project(settings)
    report = _import(settings, pid, src)
    assert (report.imported, report.duplicates, report.rejected, report.labeled) == (10, 0, [], 0)
    with session_scope(settings.database_url) as s:
        images = s.scalars(select(Image).where(Image.project_id == pid)).all()
        assert len(images) == 10
        assert {i.source for i in images} == {"batch-7"}  # the folder name by default
        assert {i.split for i in images} == {Split.POOL}
        assert s.scalars(select(Annotation)).all() == []


def test_loose_files_beside_class_folders_are_unlabeled(sqlite_settings, tmp_path):
    src = small_demo_copy(tmp_path / "cells", per_class=1, classes=["basophil", "monocyte"])
    loose = _demo_files(1, offset=100)[0]
    shutil.copy(loose, src / loose.name)
    (src / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden files are ignored
    pid = _new_project(sqlite_settings)
    report = _import(sqlite_settings, pid, src)
    assert (report.imported, report.labeled, report.rejected) == (3, 2, [])
    with session_scope(sqlite_settings.database_url) as s:
        unlabeled = s.scalars(select(Image.original_name).where(
            ~Image.id.in_(select(Annotation.image_id)))).all()
    assert unlabeled == [loose.name]


def test_zip_is_unlabeled_pool(settings, tmp_path):
    files = _demo_files(8, offset=40)
    archive = tmp_path / "scanner-export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, f in enumerate(files):
            # Folders inside a zip are not class names.
            zf.write(f, f"{'neutrophil/' if i % 2 else ''}{f.name}")
        zf.writestr("__MACOSX/._junk.jpg", b"resource fork")
        zf.writestr("empty-dir/", b"")
    pid = _new_project(settings)
    report = _import(settings, pid, archive)
    assert report.as_dict() == {"imported": 8, "duplicates": 0, "rejected": []}
    assert report.labeled == 0
    with session_scope(settings.database_url) as s:
        images = s.scalars(select(Image).where(Image.project_id == pid)).all()
        assert {i.split for i in images} == {Split.POOL}
        assert {i.source for i in images} == {"scanner-export.zip"}
        assert s.scalars(select(Annotation)).all() == []
        stored = {(settings.storage_dir / i.storage_path).read_bytes() for i in images}
    assert stored == {f.read_bytes() for f in files}


def test_duplicates_are_skipped_and_counted(settings, tmp_path):
    src = small_demo_copy(tmp_path / "cells", per_class=2)
    pid = _new_project(settings)
    assert _import(settings, pid, src).imported == 16
    before = _snapshot(settings, pid)

    again = _import(settings, pid, src)
    assert again.as_dict() == {"imported": 0, "duplicates": 16, "rejected": []}

    # The same content under other names and another class: still duplicates, and
    # the stored reference label is not changed by it.
    other = tmp_path / "renamed"
    (other / "lymphocyte").mkdir(parents=True)
    for i, f in enumerate(sorted((src / "basophil").iterdir())):
        shutil.copy(f, other / "lymphocyte" / f"copy-{i}.jpg")
    shutil.copy(f, other / "loose-copy.jpg")
    report = _import(settings, pid, other)
    assert report.as_dict() == {"imported": 0, "duplicates": 3, "rejected": []}
    assert _snapshot(settings, pid) == before


def test_duplicates_within_one_import(settings, tmp_path):
    f = _demo_files(1)[0]
    src = tmp_path / "twice"
    src.mkdir()
    shutil.copy(f, src / "a.jpg")
    shutil.copy(f, src / "b.jpg")
    pid = _new_project(settings)
    assert _import(settings, pid, src).as_dict() == {"imported": 1, "duplicates": 1, "rejected": []}


def test_bad_files_rejected_by_name_rest_imports(low_pixel_settings, tmp_path):
    settings = low_pixel_settings
    first = small_demo_copy(tmp_path / "first", per_class=2)
    pid = _new_project(settings)
    assert _import(settings, pid, first).imported == 16
    before = _snapshot(settings, pid)

    bad = small_demo_copy(tmp_path / "second", per_class=3, classes=["eosinophil", "monocyte"])
    expected = _bad_files(bad)
    report = _import(settings, pid, bad)
    _check_rejected(report.rejected, expected)
    # 3 eosinophils and 3 monocytes, of which the first 2 of each came with the first import.
    assert (report.imported, report.duplicates, report.labeled) == (2, 4, 2)

    after = _snapshot(settings, pid)
    for key in ("images", "annotations", "files"):
        assert {k: v for k, v in after[key].items() if k in before[key]} == before[key]
    assert len(after["images"]) == 18 and len(after["annotations"]) == 18
    # Rejected files left nothing in storage: every stored file is a known image.
    stored = {p.relative_to(settings.storage_dir).as_posix()
              for p in settings.images_dir.rglob("*") if p.is_file()}
    assert stored == set(after["files"])


def test_pixel_limit_follows_settings(sqlite_settings, tmp_path):
    src = tmp_path / "sizes"
    src.mkdir()
    (src / "ok.png").write_bytes(_png(1000, 1000))  # exactly the limit
    (src / "big.png").write_bytes(_png(1001, 1000))
    tiny = io.BytesIO()
    PILImage.new("RGB", (4, 4)).save(tiny, "PNG")
    (src / "tiny.png").write_bytes(tiny.getvalue())
    pid = _new_project(sqlite_settings)
    report = _import(sqlite_settings, pid, src)
    assert report.imported == 1
    reasons = {r["file"]: r["reason"] for r in report.rejected}
    assert set(reasons) == {"big.png", "tiny.png"}
    assert "1001x1000" in reasons["big.png"] and "1,000,000" in reasons["big.png"]
    assert "too small" in reasons["tiny.png"]


# --- the test split ----------------------------------------------------------------

def _splits(settings, project_id: int) -> dict[str, Split]:
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(Image.sha256, Image.split).where(Image.project_id == project_id))
        return {sha: split for sha, split in rows}


def test_test_share_holds_out_about_that_share(settings, tmp_path):
    src = small_demo_copy(tmp_path / "cells")  # 48 cells
    half = _new_project(settings, "half", test_share=0.5)
    assert _import(settings, half, src).imported == 48
    splits = _splits(settings, half)
    n_test = sum(1 for v in splits.values() if v == Split.TEST)
    assert 10 <= n_test <= 38

    none = _new_project(settings, "none", test_share=0.0)
    assert _import(settings, none, src).imported == 48  # per project, not duplicates
    assert set(_splits(settings, none).values()) == {Split.POOL}

    # Reference labels are kept on test cells too (evaluation needs them).
    with session_scope(settings.database_url) as s:
        labeled = s.scalars(select(Annotation.image_id).join(Image)
                            .where(Image.project_id == half)).all()
    assert len(labeled) == 48

    # The same file lands in the same split in a fresh project, whatever the order.
    again = _new_project(settings, "again", test_share=0.5)
    flat = _flat_copy(tmp_path / "reversed", sorted(src.rglob("*.jpg"), reverse=True)[:30])
    assert _import(settings, again, flat).imported == 30
    for sha, split in _splits(settings, again).items():
        assert split == splits[sha]


# --- through the CLI ---------------------------------------------------------------

def _cli(env: dict[str, str], *args: str):
    from webapp.cli import main

    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture
def cli_env(tmp_path, database_url) -> dict[str, str]:
    env = base_env(tmp_path, HEMALOOP_DATABASE_URL=database_url,
                   HEMALOOP_MAX_IMAGE_PIXELS="1000000")
    result = _cli(env, "create-project", "cells", "--test-share", "0")
    assert result.exit_code == 0, result.output
    assert "created project 'cells'" in result.stdout
    return env


def _json_import(env, path: Path) -> dict:
    result = _cli(env, "import", str(path), "--project", "cells", "--json")
    assert result.exit_code == 0, result.output
    # stdout holds exactly one JSON document; the progress bar went to stderr.
    report = json.loads(result.stdout)
    assert list(report) == ["imported", "duplicates", "rejected"]
    assert "importing" in result.stderr
    return report


def test_cli_import_json(cli_env, tmp_path):
    src = small_demo_copy(tmp_path / "cells", per_class=2)
    assert _json_import(cli_env, src) == {"imported": 16, "duplicates": 0, "rejected": []}
    assert _json_import(cli_env, src) == {"imported": 0, "duplicates": 16, "rejected": []}

    settings = load_settings(cli_env)
    with session_scope(settings.database_url) as s:
        pid = s.scalar(select(Project.id).where(Project.name == "cells"))
        origins = s.scalars(select(Annotation.origin)).all()
    assert origins == [Origin.REFERENCE] * 16
    before = _snapshot(settings, pid)

    bad = tmp_path / "bad"
    expected = _bad_files(bad)
    shutil.copy(_demo_files(1, offset=170)[0], bad / "neutrophil" / "good.jpg")
    report = _json_import(cli_env, bad)
    assert report["imported"] == 1 and report["duplicates"] == 0
    _check_rejected(report["rejected"], expected)

    after = _snapshot(settings, pid)
    for key in ("images", "annotations", "files"):
        assert {k: v for k, v in after[key].items() if k in before[key]} == before[key]
    assert len(after["images"]) == 17


def test_cli_import_zip_and_text_report(cli_env, tmp_path):
    archive = tmp_path / "cells.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in _demo_files(5, offset=60):
            zf.write(f, f.name)
        zf.writestr("broken.jpg", b"\xff\xd8\xff\xe0 not really")
    result = _cli(cli_env, "import", str(archive), "--project", "cells")
    assert result.exit_code == 0, result.output
    assert "imported 5 (0 with reference labels), 0 duplicate(s) skipped, 1 rejected" \
        in result.stdout
    assert "rejected broken.jpg:" in result.stderr


def test_cli_import_refusals(cli_env, tmp_path):
    src = small_demo_copy(tmp_path / "cells", per_class=1)
    result = _cli(cli_env, "import", str(src), "--project", "nope", "--json")
    assert result.exit_code != 0
    assert "no project named 'nope'" in result.stderr and "create-project" in result.stderr
    assert result.stdout == ""

    result = _cli(cli_env, "import", str(tmp_path / "missing"), "--project", "cells")
    assert result.exit_code != 0 and "does not exist" in result.stderr

    single = next(src.rglob("*.jpg"))
    result = _cli(cli_env, "import", str(single), "--project", "cells")
    assert result.exit_code != 0 and "neither a folder nor a .zip" in result.stderr

    result = _cli(cli_env, "create-project", "cells")
    assert result.exit_code != 0 and "already exists" in result.stderr

    settings = load_settings(cli_env)
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(Image)).all() == []
