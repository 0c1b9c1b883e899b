"""The first version of the safety scorer, for side-by-side benchmarks.

Version 1 (issue 8, commit a088cb4) read only the first 128 tokens of a text, ran the
fine-tuned MiniLM in PyTorch for every text, and had no cascade. Its artifact is no longer
shipped; this module takes it from git history into the cache once, so that
``bench/safety.py`` and ``bench/curate.py`` can run old and new in one process:

    from v1_scorer import V1_OPTIONS, v1_artifact
    get_toxicity_scorer("ensemble", artifact=str(v1_artifact()), **V1_OPTIONS)

``--old-artifact DIR`` in both benchmarks points at a copy instead (e.g. where git history
is not available).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

V1_COMMIT = "a088cb4"
V1_PATH = "simplesafe/models/safety_artifacts/hate-minilm"
V1_FILES = ("encoder.safetensors", "head.safetensors", "safety.json")
V1_OPTIONS = {"runtime": "torch", "long_texts": "truncate", "cascade": False}
REPO = Path(__file__).resolve().parents[1]


def v1_artifact(path: str | None = None) -> Path:
    """The version-1 artifact folder: ``path`` if given, else extracted from git into the cache."""
    if path:
        return Path(path)
    from simplesafe.atomic import atomic_path
    from simplesafe.paths import cache_dir

    out = cache_dir() / "safety" / f"hate-minilm-v1-{V1_COMMIT}"
    for name in V1_FILES:
        target = out / name
        if target.exists():
            continue
        res = subprocess.run(["git", "-C", str(REPO), "show", f"{V1_COMMIT}:{V1_PATH}/{name}"], capture_output=True)
        if res.returncode != 0:
            raise SystemExit(f"cannot read the version-1 artifact from git ({V1_COMMIT}:{V1_PATH}/{name}): "
                             f"{res.stderr.decode().strip()}; pass --old-artifact DIR")
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(res.stdout)
    return out
