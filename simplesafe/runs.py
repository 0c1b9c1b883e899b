"""Run directories: one folder per stage with its config, manifest, log and a done marker.

    with stage(run_dir, "sft", cfg, inputs=[train_file], seed=cfg.seed, force=False) as st:
        if st.skipped:          # finished before: a re-run is a no-op
            return st.dir
        ... write outputs into st.dir (atomically) ...

Layout of ``RUN/<stage>/``: ``config.yaml`` (resolved), ``manifest.json`` (package
versions, git commit, input file hashes, seed, timings), ``log.txt`` and ``DONE``.
A stage whose ``DONE`` is missing is re-run from scratch or resumed by its own
checkpoint logic; ``--force`` removes the marker first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from pydantic import BaseModel

from simplesafe.atomic import write_json, write_text

log = logging.getLogger("simplesafe")

DONE = "DONE"
_PACKAGES = (
    "simplesafe", "torch", "transformers", "trl", "peft", "datasets", "accelerate",
    "sentence-transformers", "bitsandbytes", "textstat", "alt-profanity-check", "faiss-cpu",
    "numpy", "pydantic",
)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def path_digest(path: str | Path) -> str:
    """SHA-256 of a file, or of the sorted (name, hash) list of a directory's files."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        h = hashlib.sha256()
        for p in sorted(path.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                h.update(str(p.relative_to(path)).encode())
                h.update(file_sha256(p).encode())
        return h.hexdigest()
    return "missing"


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def redact(obj):
    """Drop values whose key looks secret, so manifests never hold credentials."""
    secret_words = ("api_key", "apikey", "token", "secret", "password")
    if isinstance(obj, dict):
        return {
            k: ("<redacted>" if any(w in str(k).lower() for w in secret_words) and not str(k).endswith("_env") else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


@dataclass
class Stage:
    name: str
    dir: Path
    skipped: bool
    manifest: dict = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)


def is_done(run_dir: str | Path, name: str) -> bool:
    return (Path(run_dir) / name / DONE).exists()


def _attach_log(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("simplesafe").addHandler(handler)
    return handler


@contextlib.contextmanager
def stage(
    run_dir: str | Path,
    name: str,
    config: BaseModel | dict | None = None,
    inputs: Iterable[str | Path] = (),
    seed: int | None = None,
    force: bool = False,
) -> Iterator[Stage]:
    """Run a stage in ``run_dir/name``; skip it when its ``DONE`` marker exists."""
    sdir = Path(run_dir) / name
    marker = sdir / DONE
    if force and marker.exists():
        marker.unlink()
    if marker.exists():
        log.info("stage %s already done in %s (use --force to redo)", name, sdir)
        manifest_path = sdir / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        yield Stage(name, sdir, True, manifest)
        return
    sdir.mkdir(parents=True, exist_ok=True)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under DDP only rank 0 writes the stage's own files
    if main_rank:
        for stale in sdir.rglob(".*.tmp"):  # left by a kill during an atomic write
            stale.unlink(missing_ok=True)
    cfg_dict = config.model_dump(mode="json") if isinstance(config, BaseModel) else (config or {})
    import yaml

    if main_rank:
        write_text(sdir / "config.yaml", yaml.safe_dump(redact(cfg_dict), sort_keys=False, allow_unicode=True))
    manifest = {
        "stage": name,
        "seed": seed,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else [],
        "inputs": {str(p): path_digest(p) for p in inputs},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    manifest["command"] = [a if "key" not in a.lower() else "<redacted>" for a in manifest["command"]]
    handler = _attach_log(sdir / "log.txt")
    t0 = time.time()
    st = Stage(name, sdir, False, manifest)
    try:
        yield st
    finally:
        logging.getLogger("simplesafe").removeHandler(handler)
        handler.close()
    manifest["seconds"] = round(time.time() - t0, 3)
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if main_rank:
        write_json(sdir / "manifest.json", manifest)
        write_text(marker, manifest["finished"] + "\n")


def set_seed(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
