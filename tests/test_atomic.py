"""Atomic writes give outputs the permissions a plain open() would: umask for new files, old mode kept."""

from __future__ import annotations

import os
import stat

import pytest

from simplesafe.atomic import atomic_path, write_json, write_text
from simplesafe.io import write_rows


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_files_follow_the_umask_like_open(tmp_path, umask, mask, expected):
    umask(mask)
    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    write_text(tmp_path / "a.txt", "hello")
    write_json(tmp_path / "b.json", {"a": 1})
    write_rows(tmp_path / "c.jsonl", [{"a": 1}])
    write_rows(tmp_path / "d.parquet", [{"a": 1}])  # through atomic_path (pyarrow writes a file name)
    for name in ("a.txt", "b.json", "c.jsonl", "d.parquet"):
        assert mode(tmp_path / name) == expected == mode(tmp_path / "plain.txt"), name
    from simplesafe.atomic import default_mode

    assert default_mode() == expected


def test_existing_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    p = tmp_path / "shared.txt"
    p.write_text("old")
    os.chmod(p, 0o660)
    write_text(p, "new")
    assert p.read_text() == "new" and mode(p) == 0o660


def test_no_temp_file_left_and_folder_mode(tmp_path, umask):
    umask(0o022)
    with atomic_path(tmp_path / "sub" / "x.bin") as tmp:
        tmp.write_bytes(b"1")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.bin"]
    from simplesafe.atomic import default_mode

    assert default_mode(directory=True) == 0o755
