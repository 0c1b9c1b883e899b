"""Batched text scoring: word count, Flesch reading ease, Flesch-Kincaid grade, toxicity.

:func:`score_texts` returns columns ``n_words, fre, fkg, toxicity`` plus one column per
label of the toxicity backend (:func:`simplesafe.text.toxicity.get_toxicity_scorer`).
Small inputs are scored in-process; inputs of at least ``parallel_min_rows`` rows with
``num_proc > 1`` go through ``datasets.Dataset.map(batched=True, num_proc=...)``, one
scorer per worker process. ``executor="ray"`` runs the same batch functions on Ray Data
instead (:mod:`simplesafe.data.ray_executor`, for more than one machine).

:func:`score_file` is the ``simplesafe data score`` command:

    simplesafe data score answers.jsonl --text-field answer --out scored.parquet
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from simplesafe.errors import DataError

log = logging.getLogger(__name__)

_SCORERS: dict[tuple, object] = {}


def _scorer(section, options: dict | None = None):
    """One scorer per distinct toxicity section and per process.

    ``section``: a backend name, a section mapping or a ToxicityConfig; ``options`` are folded into
    it. The process id is part of the key: a worker forked from a process that already holds a
    scorer must not reuse it (ONNX Runtime and torch thread pools do not survive a fork).
    """
    import os

    from simplesafe.text.toxicity_section import config_key, scorer_from_config, toxicity_config

    cfg = toxicity_config(_plain_section(section, options) if options else section)
    key = (config_key(cfg), os.getpid())
    if key not in _SCORERS:
        _SCORERS[key] = scorer_from_config(cfg)
    return _SCORERS[key]


def clear_scorers() -> None:
    """Drop this process's toxicity scorers (the recipe runner does, between stages)."""
    _SCORERS.clear()


def _plain_section(section, options: dict | None = None) -> dict:
    """The toxicity section (with ``options`` folded in) as a plain dict: what worker processes receive."""
    from simplesafe.text.toxicity_section import section_dict, toxicity_config

    d = {**section_dict(section), **(options or {})}
    return toxicity_config(d).model_dump(mode="json", exclude_unset=True)


def _score_batch(texts: list[str], backend, toxicity: bool = True) -> dict[str, list]:
    from simplesafe.text.readability import readability

    texts = [t if isinstance(t, str) else "" for t in texts]
    rs = [readability(t) for t in texts]
    out: dict[str, list] = {
        "n_words": [r.n_words for r in rs],
        "fre": [None if np.isnan(r.fre) else float(r.fre) for r in rs],
        "fkg": [None if np.isnan(r.fkg) else float(r.fkg) for r in rs],
    }
    if not toxicity:
        return out
    tox = _scorer(backend).score(texts)
    out["toxicity"] = [float(x) for x in tox["toxicity"]]
    for label, values in tox.items():
        if label != "toxicity":
            out[label] = [float(x) for x in values]
    return out


def _clean_score_batch(texts: list[str], backend, toxicity: bool = True) -> dict[str, list]:
    """Clean Reddit answers (edit notes flagged), then score the cleaned text."""
    from simplesafe.text.clean import clean_answer

    cleaned = [clean_answer(t) for t in texts]
    out = {"text": [c.text for c in cleaned], "edit_note": [c.edit_note for c in cleaned]}
    out.update(_score_batch(out["text"], backend, toxicity))
    return out


def _map_fn(batch, backend=None, clean=False, toxicity=True, threads=None):
    if threads:
        # One worker per core: each worker's torch / ONNX Runtime uses its share of the cores.
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    if clean:
        return _clean_score_batch(batch["text"], backend, toxicity)
    return _score_batch(batch["text"], backend, toxicity)


def score_texts(
    texts: list[str],
    backend=None,
    batch_size: int = 256,
    num_proc: int = 1,
    parallel_min_rows: int = 20_000,
    progress: bool = False,
    clean: bool = False,
    toxicity: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
    toxicity_options: dict | None = None,
) -> dict[str, list]:
    """Score ``texts``; returns ``{column: list}`` with one value per text.

    ``toxicity_options`` are folded into the ``toxicity:`` section (e.g.
    ``{"runtime": "torch", "cascade": False}``). With ``num_proc > 1`` each worker process
    builds its own scorer and uses ``cpu_count // num_proc`` torch threads.

    With ``clean=True`` the texts are first cleaned as Reddit answers and the result
    also holds the cleaned ``text`` and the detected ``edit_note`` (or None). With
    ``toxicity=False`` only the readability columns are computed (the toxicity model is
    the expensive part, so the build scores it only on answers that survive the cheap
    filters). ``executor="ray"`` runs the same batch functions on Ray Data
    (:mod:`simplesafe.data.ray_executor`; ``ray_address`` None = local mode with
    ``num_proc`` CPUs) for any input size, with the same result. ``backend`` is the toxicity
    scorer: a backend name, a ``toxicity:`` section (mapping or
    :class:`~simplesafe.text.toxicity_section.ToxicityConfig`), or None for the default.
    """
    texts = list(texts)
    backend = _plain_section(backend, toxicity_options)  # validated once; a plain dict pickles into workers
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if executor == "ray":
        from simplesafe.data.ray_executor import require_ray, score_texts_ray

        require_ray()  # a missing extra is an error even for an empty input
        if texts:
            return score_texts_ray(texts, backend=backend, batch_size=batch_size, clean=clean, toxicity=toxicity,
                                   address=ray_address, num_cpus=num_proc)
    if num_proc > 1 and len(texts) >= parallel_min_rows:
        import os

        import datasets

        ds = datasets.Dataset.from_dict({"text": texts})
        threads = max(1, (os.cpu_count() or num_proc) // num_proc)
        scored = ds.map(
            _map_fn, batched=True, batch_size=batch_size, num_proc=num_proc,
            fn_kwargs={"backend": backend, "clean": clean, "toxicity": toxicity, "threads": threads},
            remove_columns=[] if clean else ["text"], desc="scoring", load_from_cache_file=False,
        )
        return {col: scored[col] for col in scored.column_names}
    out: dict[str, list] = {}
    from tqdm.auto import tqdm

    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress or len(texts) <= batch_size):
        chunk = texts[start: start + batch_size]
        part = (_clean_score_batch(chunk, backend, toxicity) if clean
                else _score_batch(chunk, backend, toxicity))
        for key, values in part.items():
            out.setdefault(key, []).extend(values)
    if not texts:
        out = {"text": [], "edit_note": []} if clean else {}
        out.update({"n_words": [], "fre": [], "fkg": []})
        if toxicity:
            out["toxicity"] = []
            for label in getattr(_scorer(backend), "labels", []):
                out.setdefault(label, [])
    return out


def score_file(
    input_path: str | Path,
    text_field: str,
    out_path: str | Path,
    backend=None,
    batch_size: int = 256,
    num_proc: int = 1,
) -> dict:
    """Read rows, add score columns, write every row (format by extension).

    An input without rows is an error (exit 2 from the CLI) and nothing is written.
    """
    from simplesafe.io import file_format, read_rows, write_rows

    file_format(out_path)  # fail on an unknown output type before the work
    rows: list[dict] = []
    texts: list[str] = []
    for line, row in read_rows(input_path):
        if text_field not in row or row[text_field] is None:
            raise DataError(input_path, line, text_field, "missing required field")
        value = row[text_field]
        if not isinstance(value, str):
            raise DataError(input_path, line, text_field, f"expected a string, got {type(value).__name__}")
        rows.append(row)
        texts.append(value)
    if not rows:  # an empty output would pass for a result downstream
        raise DataError(input_path, None, None, "no rows to score (the file is empty)")
    scores = score_texts(texts, backend=backend, batch_size=batch_size, num_proc=num_proc, progress=True)
    for i, row in enumerate(rows):
        for col, values in scores.items():
            row[col] = values[i]
    write_rows(out_path, rows)
    tox = np.asarray(scores["toxicity"], dtype=float)
    fre = np.asarray([np.nan if v is None else v for v in scores["fre"]], dtype=float)
    return {
        "rows": len(rows),
        "labels": [c for c in scores if c not in ("n_words", "fre", "fkg")],
        "mean_fre": float(np.nanmean(fre)) if len(rows) and not np.all(np.isnan(fre)) else None,
        "toxic_over_0.1": int((tox > 0.1).sum()),
        "out": str(out_path),
    }
