"""Where things live: the cache, the bundled demo data, the recipes.

The cache (built tiny models, the safety classifier, NLTK data) is
``$SIMPLESAFE_CACHE`` or ``~/.cache/simplesafe``.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def cache_dir() -> Path:
    root = os.environ.get("SIMPLESAFE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "simplesafe")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def bundled_data_dir() -> Path:
    """The small demo data shipped in the repository (``data/``)."""
    return Path(os.environ.get("SIMPLESAFE_DATA", REPO_DIR / "data"))


def shared_data_dir() -> Path | None:
    """``../shared/data`` next to the checkout, when present (tests and benches only)."""
    candidate = Path(os.environ.get("SIMPLESAFE_SHARED_DATA", REPO_DIR.parent / "shared" / "data"))
    return candidate if candidate.is_dir() else None
