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
from tests import image_corpus as corpus
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


# --- unreadable files and members (issue 11, defect 2) -------------------------------

def _stored_files(settings) -> set[str]:
    if not settings.images_dir.exists():
        return set()
    return {p.relative_to(settings.storage_dir).as_posix()
            for p in settings.images_dir.rglob("*") if p.is_file()}


def _rows(settings, project_id: int) -> dict[str, str]:
    """original_name -> storage_path of a project's images."""
    with session_scope(settings.database_url) as s:
        return dict(s.execute(select(Image.original_name, Image.storage_path)
                              .where(Image.project_id == project_id)).all())


def test_unreadable_zip_members_are_rejected_by_name(settings, tmp_path):
    good = {f"good-{i}.jpg": corpus.cell(i) for i in range(3)}
    archive = tmp_path / "mixed.zip"
    expected = corpus.zip_with_bad_members(archive, good)
    pid = _new_project(settings)
    report = _import(settings, pid, archive)
    got = {r["file"]: r["reason"] for r in report.rejected}
    assert set(got) == set(expected), got
    for name, words in expected.items():
        assert words in got[name], (name, got[name])
    assert "Traceback" not in str(got) and "ZipInfo" not in str(got)
    assert (report.imported, report.duplicates) == (3, 0)
    rows = _rows(settings, pid)
    assert set(rows) == set(good)
    assert _stored_files(settings) == set(rows.values())


def test_cli_prints_json_for_an_archive_with_unreadable_members(cli_env, tmp_path):
    good = {f"good-{i}.jpg": corpus.cell(10 + i) for i in range(2)}
    archive = tmp_path / "mixed.zip"
    expected = corpus.zip_with_bad_members(archive, good)
    report = _json_import(cli_env, archive)
    assert report["imported"] == 2
    assert {r["file"] for r in report["rejected"]} == set(expected)


def _nobody() -> int:
    import pwd

    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534


def test_file_without_read_permission_is_rejected_by_name(tmp_path, database_url):
    """chmod 000 stops every user but root; so the import runs as 'nobody' in a child."""
    import os
    import tempfile

    if not hasattr(os, "fork"):
        pytest.skip("needs fork to drop privileges")
    # Everything the child touches lives in a world-writable folder (pytest's
    # tmp_path is private to root).
    base = Path(tempfile.mkdtemp(prefix="hemaloop-perm-"))
    try:
        base.chmod(0o777)
        env = base_env(base, HEMALOOP_DATABASE_URL=database_url)
        if database_url.startswith("sqlite"):
            db = base / "db.sqlite"
            shutil.copy(database_url.removeprefix("sqlite:///"), db)
            db.chmod(0o666)
            env["HEMALOOP_DATABASE_URL"] = f"sqlite:///{db}"
        settings = load_settings(env)
        settings.storage_dir.mkdir(parents=True)
        for d in (settings.instance_dir, settings.storage_dir):
            d.chmod(0o777)
        pid = _new_project(settings)
        src = base / "cells"
        src.mkdir()
        src.chmod(0o777)
        for i in range(3):
            (src / f"ok-{i}.png").write_bytes(corpus.cell(20 + i, fmt="PNG"))
        secret = src / "secret.png"
        secret.write_bytes(corpus.cell(30, fmt="PNG"))
        secret.chmod(0o000)
        for p in src.iterdir():
            if p != secret:
                p.chmod(0o644)

        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child: drop to 'nobody', import, report, exit
            code = 1
            try:
                os.close(read)
                os.setgid(_nobody())
                os.setuid(_nobody())
                from models.db import get_sessionmaker
                # The parent's pooled connections are not ours to use or to close.
                get_sessionmaker(settings.database_url).kw["bind"].dispose(close=False)
                report = _import(settings, pid, src)
                os.write(write, json.dumps(report.as_dict()).encode())
                code = 0
            except BaseException as exc:  # noqa: BLE001 -- tell the parent, never return
                os.write(write, json.dumps({"error": repr(exc)}).encode())
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as fh:
            out = json.loads(fh.read() or "{}")
        os.waitpid(child, 0)
        assert "error" not in out, out
        assert out["imported"] == 3
        assert out["rejected"] == [{"file": "secret.png",
                                    "reason": "cannot read file: permission denied"}]
        assert _stored_files(settings) == set(_rows(settings, pid).values())
    finally:
        for p in base.rglob("*"):
            p.chmod(0o755) if p.is_dir() else p.chmod(0o644)
        shutil.rmtree(base, ignore_errors=True)


def test_links_fifos_and_folder_links_are_reported(sqlite_settings, tmp_path):
    import os

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.png").write_bytes(corpus.cell(40, fmt="PNG"))
    src = tmp_path / "cells"
    (src / "neutrophil").mkdir(parents=True)
    (src / "neutrophil" / "real.jpg").write_bytes(corpus.cell(41))
    (src / "neutrophil" / "inside-link.jpg").symlink_to(src / "neutrophil" / "real.jpg")
    (src / "neutrophil" / "escape.png").symlink_to(outside / "private.png")
    (src / "neutrophil" / "relative-escape.png").symlink_to("../../elsewhere/private.png")
    (src / "neutrophil" / "broken.jpg").symlink_to(src / "neutrophil" / "gone.jpg")
    (src / "monocyte").symlink_to(outside, target_is_directory=True)
    (src / "lymphocyte").mkdir()
    (src / "lymphocyte" / "sub").symlink_to(src / "neutrophil", target_is_directory=True)
    os.mkfifo(src / "neutrophil" / "pipe.jpg")
    pid = _new_project(sqlite_settings)
    report = _import(sqlite_settings, pid, src)  # returns: the FIFO is never opened
    got = {r["file"]: r["reason"] for r in report.rejected}
    assert got == {
        "neutrophil/escape.png": "symbolic link leading outside the imported folder (refused)",
        "neutrophil/relative-escape.png":
            "symbolic link leading outside the imported folder (refused)",
        "neutrophil/broken.jpg": "broken symbolic link (its target does not exist)",
        "monocyte": "symbolic link leading outside the imported folder (refused)",
        "lymphocyte/sub": "symbolic link to a folder (not followed)",
        "neutrophil/pipe.jpg": "not a regular file (a FIFO (named pipe))",
    }
    # The link inside the folder is read: the same content, so a duplicate.
    assert (report.imported, report.duplicates, report.labeled) == (1, 1, 1)
    assert set(_rows(sqlite_settings, pid)) == {"neutrophil/inside-link.jpg"}  # sorted first


# --- an import that stops: no file without a row -------------------------------------

class _Stop(Exception):
    pass


def _stopping_at(n: int, exc: BaseException):
    seen = [0]

    def progress(step: int) -> None:
        seen[0] += step
        if seen[0] == n:
            raise exc
    return progress


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), _Stop("boom")], ids=["ctrl-c", "error"])
def test_stopped_import_leaves_no_orphan_files(settings, tmp_path, monkeypatch, exc):
    from webapp.ingest import ImportAborted, importer

    monkeypatch.setattr(importer, "COMMIT_EVERY", 3)  # batches of 3: one commits, one not
    src = tmp_path / "cells"
    src.mkdir()
    for i in range(8):
        (src / f"c{i}.jpg").write_bytes(corpus.cell(50 + i))
    pid = _new_project(settings)
    with session_scope(settings.database_url) as s:
        project = s.get(Project, pid)
        if isinstance(exc, KeyboardInterrupt):
            with pytest.raises(KeyboardInterrupt):
                import_path(s, settings.storage_dir, project, src,
                            max_pixels=settings.max_image_pixels, progress=_stopping_at(6, exc))
        else:
            with pytest.raises(ImportAborted) as stopped:
                import_path(s, settings.storage_dir, project, src,
                            max_pixels=settings.max_image_pixels, progress=_stopping_at(6, exc))
            report = stopped.value.report
            assert report.imported == 3
            assert "internal error (_Stop)" in report.aborted and "boom" not in report.aborted
            assert report.as_dict()["aborted"] == report.aborted
    rows = _rows(settings, pid)
    assert len(rows) == 3  # the first batch committed; c3, c4 were stored, then rolled back
    assert _stored_files(settings) == set(rows.values())
    # Run again: the rest comes in, the committed ones are duplicates.
    again = _import(settings, pid, src)
    assert (again.imported, again.duplicates) == (5, 3)
    assert _stored_files(settings) == set(_rows(settings, pid).values())


def test_interrupt_right_after_a_file_is_written_leaves_no_orphan(settings, tmp_path,
                                                                   monkeypatch):
    """A Ctrl-C or SIGTERM can land after the file is in place but before the write
    returns (CI caught the SIGTERM test leaving one file this way): the file must
    already be in the batch that roll_back removes."""
    from webapp.ingest import importer

    src = tmp_path / "cells"
    src.mkdir()
    for i in range(4):
        (src / f"c{i}.jpg").write_bytes(corpus.cell(60 + i))
    real_write = importer.write_atomic
    calls = [0]

    def write_then_interrupted(root, relative, data):
        real_write(root, relative, data)
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(importer, "write_atomic", write_then_interrupted)
    pid = _new_project(settings)
    with session_scope(settings.database_url) as s, pytest.raises(KeyboardInterrupt):
        import_path(s, settings.storage_dir, s.get(Project, pid), src,
                    max_pixels=settings.max_image_pixels)
    assert calls[0] == 2
    assert _rows(settings, pid) == {}
    assert _stored_files(settings) == set()


def test_rollback_keeps_a_file_another_project_committed(settings, tmp_path):
    """Storage is shared across projects by content: a rollback removes only its own files.

    While project 'second' imports c0 (file stored, row not yet committed), project
    'first' commits a row for the same content; then 'second' is interrupted.
    """
    src = tmp_path / "cells"
    src.mkdir()
    for i in range(2):
        (src / f"c{i}.jpg").write_bytes(corpus.cell(70 + i))
    first = _new_project(settings, "first")
    second = _new_project(settings, "second")
    seen = [0]

    def progress(step: int) -> None:
        seen[0] += step
        if seen[0] == 2:  # c0 is in storage, its row in second's open transaction
            (rel,) = _stored_files(settings)
            with session_scope(settings.database_url) as other:
                other.add(Image(project_id=first, sha256=_sha(corpus.cell(70)),
                                storage_path=rel, width=32, height=32, original_name="c0.jpg",
                                source="first", split=Split.POOL, shuffle_key=0.1))
            raise KeyboardInterrupt

    with session_scope(settings.database_url) as s, pytest.raises(KeyboardInterrupt):
        import_path(s, settings.storage_dir, s.get(Project, second), src,
                    max_pixels=settings.max_image_pixels, progress=progress)
    assert _rows(settings, second) == {}
    kept = _rows(settings, first)
    assert set(kept) == {"c0.jpg"}
    assert _stored_files(settings) == set(kept.values())  # kept: first's row needs it


def test_cli_storage_failure_prints_json_and_leaves_no_orphans(cli_env, tmp_path):
    settings = load_settings(cli_env)
    src = tmp_path / "cells"
    src.mkdir()
    datas = [corpus.cell(80 + i) for i in range(3)]
    for i, data in enumerate(datas):
        (src / f"c{i}.jpg").write_bytes(data)
    # The last file's shard folder is taken by a plain file: storing it fails.
    shard = _sha(datas[2])[:2]
    assert shard not in {_sha(d)[:2] for d in datas[:2]}
    settings.images_dir.mkdir(parents=True)
    (settings.images_dir / shard).write_bytes(b"in the way")
    result = _cli(cli_env, "import", str(src), "--project", "cells", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["imported"] == 0 and report["rejected"] == []
    assert report["aborted"].startswith("the import stopped early: cannot write to storage:")
    assert "error: the import stopped early" in result.stderr
    assert "Traceback" not in result.output
    assert _stored_files(settings) == {f"images/{shard}"}  # only the obstacle: no orphans
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(Image)).all() == []


# --- streaming and the size cap (defect 6) ----------------------------------------

def test_bomb_member_is_refused_after_reading_at_most_cap_plus_a_chunk(sqlite_settings,
                                                                       tmp_path):
    from webapp.ingest.sources import READ_CHUNK, SourceFile, TooLarge, read_capped

    cap = 1024 * 1024
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.jpg", b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros, ~64 kB zipped
        zf.writestr("cell.jpg", corpus.cell(90))
    assert archive.stat().st_size < 200_000
    pid = _new_project(sqlite_settings)
    with session_scope(sqlite_settings.database_url) as s:
        report = import_path(s, sqlite_settings.storage_dir, s.get(Project, pid), archive,
                             max_pixels=sqlite_settings.max_image_pixels, max_file_bytes=cap)
    assert report.imported == 1
    assert report.rejected == [{"file": "bomb.jpg", "reason":
                                f"file too large (67,108,864 bytes; the limit is {cap:,})"}]
    assert report.bytes_read <= cap + READ_CHUNK

    # The declared size is only a first look; reading enforces the cap itself.
    with zipfile.ZipFile(archive) as zf:
        liar = SourceFile("bomb.jpg", None, 0, lambda: zf.open("bomb.jpg"))
        counter = [0]
        with pytest.raises(TooLarge, match="more than 1,048,576 bytes"):
            read_capped(liar, cap, counter)
    assert cap < counter[0] <= cap + READ_CHUNK


def test_member_with_a_lying_size_is_refused_not_read_whole(sqlite_settings, tmp_path):
    """A header claiming 1,000 bytes for 64 MiB: zipfile stops at 1,000 and the CRC fails."""
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("liar.jpg", b"\0" * (64 * 1024 * 1024))
    data = bytearray(archive.read_bytes())
    central = corpus._central_entries(bytes(data))["liar.jpg"]
    struct.pack_into("<I", data, 22, 1000)  # local header: uncompressed size
    struct.pack_into("<I", data, central + 24, 1000)  # central directory: the same
    archive.write_bytes(bytes(data))
    pid = _new_project(sqlite_settings)
    report = _import(sqlite_settings, pid, archive)
    assert report.rejected == [{"file": "liar.jpg",
                                "reason": "corrupt archive member (bad CRC-32)"}]
    assert report.bytes_read <= 1000


def test_unsafe_names_and_nested_zips_are_refused(sqlite_settings, tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("x.jpg", corpus.cell(95))
    archive = tmp_path / "crafted.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../x.jpg", corpus.cell(96))
        zf.writestr("/abs/y.jpg", corpus.cell(97))
        zf.writestr("a/../../z.jpg", corpus.cell(98))
        zf.writestr("inner.zip", inner.getvalue())
        zf.writestr("ok/cell.jpg", corpus.cell(99))
    pid = _new_project(sqlite_settings)
    report = _import(sqlite_settings, pid, archive)
    got = {r["file"]: r["reason"] for r in report.rejected}
    unsafe = ("unsafe name in the archive (an absolute path or one leaving the archive's "
              "folder)")
    assert got == {
        "../x.jpg": unsafe, "/abs/y.jpg": unsafe, "a/../../z.jpg": unsafe,
        "inner.zip": "a zip archive inside the import: unpack it and import it separately",
    }
    assert report.imported == 1
    assert set(_rows(sqlite_settings, pid)) == {"ok/cell.jpg"}


# --- high bit depth, TIFF and MPO (defect 3) ---------------------------------------

def test_16bit_tiff_and_mpo_are_stored_for_browsers(settings, tmp_path):
    import numpy as np

    src = tmp_path / "formats"
    src.mkdir()
    (src / "ramp16.png").write_bytes(corpus.png16_ramp())
    (src / "ramp16.tif").write_bytes(corpus.tiff_ramp("I;16B"))
    (src / "float.tif").write_bytes(corpus.tiff_ramp("F"))
    (src / "rgb.tif").write_bytes(corpus.tiff_rgb(1))
    (src / "rgb48.png").write_bytes(corpus.png48_ramp())
    (src / "stereo.jpg").write_bytes(corpus.mpo((200, 20, 20), (20, 200, 20)))
    pid = _new_project(settings)
    report = _import(settings, pid, src)
    assert report.rejected == [] and report.imported == 6
    rows = _rows(settings, pid)
    ramp = np.tile(np.arange(256, dtype=np.uint8), (8, 1))
    for name in ("ramp16.png", "ramp16.tif", "float.tif"):
        assert rows[name].endswith(".png"), name
        with PILImage.open(settings.storage_dir / rows[name]) as stored:
            assert (stored.format, stored.mode) == ("PNG", "L")
            np.testing.assert_array_equal(np.asarray(stored), ramp, err_msg=name)
    with PILImage.open(settings.storage_dir / rows["rgb.tif"]) as stored:
        assert stored.format == "PNG"
        original = PILImage.open(src / "rgb.tif")
        np.testing.assert_array_equal(np.asarray(stored), np.asarray(original))
    with PILImage.open(settings.storage_dir / rows["rgb48.png"]) as stored:
        rgb = np.asarray(stored.convert("RGB"))
        np.testing.assert_array_equal(rgb[0, :, 0], np.arange(256))
        np.testing.assert_array_equal(rgb[0, :, 1], np.arange(255, -1, -1))
    assert rows["stereo.jpg"].endswith(".jpg")
    stored_mpo = settings.storage_dir / rows["stereo.jpg"]
    with PILImage.open(stored_mpo) as stored:
        assert stored.format == "JPEG" and getattr(stored, "n_frames", 1) == 1
        r, g, _ = stored.convert("RGB").getpixel((20, 15))
        assert r > 150 and g < 60  # the first (red) frame
    assert stored_mpo.stat().st_size < len(corpus.mpo((200, 20, 20), (20, 200, 20)))
    # The content hash is the imported file's: importing it again is a duplicate.
    assert _import(settings, pid, src).as_dict() == {"imported": 0, "duplicates": 6,
                                                      "rejected": []}


def test_tiff_is_served_as_png_also_when_stored_before_conversion(app, settings, tmp_path):
    import numpy as np

    from tests.helpers import LoggedIn, make_user

    src = tmp_path / "tiffs"
    src.mkdir()
    (src / "new.tif").write_bytes(corpus.tiff_rgb(5))
    pid = _new_project(settings)
    assert _import(settings, pid, src).imported == 1
    # A TIFF stored as it came, the way imports before this change kept them.
    legacy = settings.images_dir / "legacy" / "old.tif"
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(corpus.tiff_ramp("I;16"))
    with session_scope(settings.database_url) as s:
        new_id = s.scalar(select(Image.id).where(Image.project_id == pid))
        old = Image(project_id=pid, sha256=_sha(legacy.read_bytes()),
                    storage_path="images/legacy/old.tif", width=256, height=8,
                    original_name="old.tif", source="before", split=Split.POOL,
                    shuffle_key=0.5)
        s.add(old)
        s.flush()
        old_id = old.id
    make_user(settings, "reader", "pathologist")
    reader = LoggedIn(app.test_client(), "reader")
    for image_id in (new_id, old_id):
        response = reader.get(f"/images/{image_id}")
        assert response.status_code == 200 and response.mimetype == "image/png"
        shown = PILImage.open(io.BytesIO(response.data))
        assert shown.format == "PNG"
    np.testing.assert_array_equal(np.asarray(shown)[0], np.arange(256))  # scaled, not clipped


def test_cli_sigterm_mid_import_leaves_no_orphans(cli_env, tmp_path):
    """SIGTERM (docker stop, kill) unwinds the import like Ctrl-C: rows and files agree."""
    import os
    import signal
    import threading
    import time

    settings = load_settings(cli_env)
    src = tmp_path / "many"
    src.mkdir()
    for i in range(600):
        (src / f"c{i:04d}.png").write_bytes(corpus.cell(1000 + i, size=8, fmt="PNG"))
    late = []  # a SIGTERM the import does not handle lands here, not in pytest
    previous = signal.signal(signal.SIGTERM, lambda *_: late.append(True))

    def terminate_once_files_are_stored() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(_stored_files(settings)) >= 3:
                break
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_once_files_are_stored)
    try:
        killer.start()
        result = _cli(cli_env, "import", str(src), "--project", "cells", "--json")
        killer.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    # The signal comes at the 3rd of 600 files: the import's own handler must take it.
    assert not late, "SIGTERM was not handled by the import"
    assert result.exit_code == 128 + signal.SIGTERM
    with session_scope(settings.database_url) as s:
        rows = set(s.scalars(select(Image.storage_path)))
    assert len(rows) < 600
    assert _stored_files(settings) == rows
