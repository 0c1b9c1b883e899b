"""Atomic file writes: write to a temp file in the same folder, then rename.

A reader never sees a half-written file, and a job killed mid-write leaves the old
file (or none) in place. The result gets the permissions a plain ``open(path, "w")``
would give: an existing file keeps its mode, a new one gets ``0o666`` less the umask
(``mkstemp`` alone would leave every output ``0o600``, unreadable to colleagues).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator


def current_umask() -> int:
    """The process umask (read from /proc where it is shown, else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """What ``open()`` (0o666) or ``mkdir()`` (0o777) would give a new file or folder under the umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    Use for libraries that want a file name (``pyarrow``, ``matplotlib``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)  # an existing file keeps its mode, as with open()
        except FileNotFoundError:
            mode = default_mode()
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temp file for writing; it replaces ``path`` only if the block succeeds."""
    if "b" in mode:
        encoding = None
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=indent, ensure_ascii=False, default=str)
        fh.write("\n")
