"""common.files.atomic_write: the one way files are written in place."""

from __future__ import annotations

import pytest

from models.files import atomic_write


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    assert atomic_write(target, lambda tmp: tmp.write_bytes(b"old"), fsync=True)

    def half(tmp):
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["data.bin"]


def test_without_overwrite_the_first_file_wins(tmp_path):
    target = tmp_path / "secret"
    assert atomic_write(target, lambda tmp: tmp.write_text("first"), mode=0o600, overwrite=False)
    assert not atomic_write(target, lambda tmp: tmp.write_text("second"), overwrite=False)
    assert target.read_text() == "first" and target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]


def test_the_suffix_reaches_the_writer(tmp_path):
    seen = []
    atomic_write(tmp_path / "m.keras", lambda tmp: (seen.append(tmp.suffix), tmp.write_text("x")),
                 suffix=".keras")
    assert seen == [".keras"] and (tmp_path / "m.keras").read_text() == "x"
