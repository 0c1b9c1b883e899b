"""A persistent generation cache in SQLite (stdlib), safe for threads and processes.

Keys are SHA-256 digests of (backend, model, prompt, decoding params) made by
:func:`simplesafe.llm.base.cache_key`; values are the generated texts. Each result is
committed as soon as it arrives, so a job killed half-way keeps every finished call and
resumes from there; a rerun with the same settings makes no model calls at all. The
cache stores prompts' digests and outputs only, never credentials.

SQLite rather than diskcache because one file with WAL journaling is easy to copy
between machines and to inspect (``sqlite3 cache.sqlite 'select count(*) from gen'``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable


class GenerationCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # One connection shared by the worker threads, serialised by the lock.
        self._conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS gen (key TEXT PRIMARY KEY, text TEXT NOT NULL, meta TEXT, created REAL)"
        )

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT text FROM gen WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start: start + 500]
                q = f"SELECT key, text FROM gen WHERE key IN ({','.join('?' * len(chunk))})"
                out.update(dict(self._conn.execute(q, chunk).fetchall()))
        return out

    def put(self, key: str, text: str, meta: dict | None = None) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO gen (key, text, meta, created) VALUES (?, ?, ?, ?)",
                (key, text, json.dumps(meta or {}), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM gen").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
