"""Pairwise win rates of model A over model B with a pool of simulated annotators.

Follows AlpacaFarm (Dubois et al., 2023) for the pool and AlpacaEval's length-controlled
win rate (Dubois et al., 2024, "Length-Controlled AlpacaEval"; :mod:`simplesafe.eval.winrate`).

    simplesafe eval pairwise --a A.json --b B.json --annotators offline --out DIR

A and B are AlpacaEval-format files (JSON list or JSONL with ``instruction``, ``output``,
``generator``); items are matched by ``instruction`` (the k-th repeat in A with the
k-th repeat in B). For every item and every annotator the order in which the two outputs
are shown is drawn at random (seeded) and recorded; each verdict is mapped back so that
``preference`` 1 means A is better, 2 means B is better and 1.5 is a tie.

Outputs: ``DIR/annotations.jsonl`` (one row per item) and ``DIR/summary.json``.

Definitions used in ``summary.json``:

- ``win_rate``: mean over items of 1 (A wins), 0 (B wins), 0.5 (tie); ``ci_low``/``ci_high``
  is the 95% percentile bootstrap interval over items.
- ``length_bias``: among items the pool decided (1 or 2) whose outputs differ in length
  (characters), the fraction where the longer output won. 0.5 = no length preference,
  1.0 = the longer always wins (the ``length`` annotator scores exactly 1.0). ``null``
  when there is no such item.
- ``position_bias``: among all decided verdicts of all annotators (in shown order), the
  fraction that chose the output shown first, minus 0.5; in [-0.5, 0.5], 0 = none.
  ``position_bias_p`` is the two-sided binomial test p-value against 0.5.
- ``lc_win_rate``: AlpacaEval's length-controlled win rate of A over B (Dubois et al.,
  2024; :mod:`simplesafe.eval.winrate`): a logistic GLM of "A wins" (ties as soft labels
  0.5) on ``tanh(length gap / sd)`` and a model term, L1-regularised with C chosen by 5-fold
  cross-validation as AlpacaEval does, predicted at zero length difference.
- ``agreement``: mean over annotator pairs of the fraction of items where both gave the
  same verdict (1, 2 or tie); ``kappa`` the mean Cohen's kappa over pairs.
"""

from __future__ import annotations

import logging
import math
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml
from pydantic import ValidationError

from simplesafe.atomic import write_json
from simplesafe.config import read_yaml
from simplesafe.errors import ConfigError, DataError
from simplesafe.eval.annotators import (
    PoolConfig,
    aggregate_verdicts,
    annotator_names,
    apply_noise,
    build_annotator,
)
from simplesafe.eval.winrate import glm_lc_win_rate, read_json_or_jsonl
from simplesafe.io import read_rows, require, write_rows

log = logging.getLogger(__name__)

SHIPPED_POOLS = ("length", "offline")


# ---------------------------------------------------------------- inputs


def load_outputs(path: str | Path) -> list[dict]:
    """AlpacaEval-format rows: ``instruction`` and ``output`` required, ``generator`` optional."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "file not found")
    name = path.name.lower()
    source = read_rows(path) if name.endswith((".csv", ".tsv", ".parquet", ".gz")) else read_json_or_jsonl(path)
    rows = []
    for line, row in source:
        instruction = require(row, "instruction", path, line)
        output = require(row, "output", path, line, allow_empty=True)
        rows.append({"instruction": instruction, "output": output,
                     "generator": str(row.get("generator") or path.stem), "_line": line})
    if not rows:
        raise DataError(path, None, None, "no rows")
    return rows


def match_by_instruction(a_rows: list[dict], b_rows: list[dict], path_a, path_b) -> tuple[list[dict], dict]:
    """Pair rows with the same instruction; the k-th repeat in A pairs with the k-th repeat in B."""
    b_index: dict[str, list[dict]] = {}
    for r in b_rows:
        b_index.setdefault(r["instruction"], []).append(r)
    used: dict[str, int] = {}
    items, unmatched_a = [], 0
    for r in a_rows:
        k = used.get(r["instruction"], 0)
        cands = b_index.get(r["instruction"], [])
        if k >= len(cands):
            unmatched_a += 1
            continue
        used[r["instruction"]] = k + 1
        b = cands[k]
        items.append({"instruction": r["instruction"], "output_1": r["output"], "output_2": b["output"],
                      "generator_1": r["generator"], "generator_2": b["generator"]})
    unmatched_b = len(b_rows) - len(items)
    if not items:
        raise DataError(path_a, None, "instruction", f"no instruction of {path_a} appears in {path_b}")
    if unmatched_a or unmatched_b:
        log.warning("pairwise: %d rows of A and %d rows of B have no partner and are left out", unmatched_a, unmatched_b)
    return items, {"unmatched_a": unmatched_a, "unmatched_b": unmatched_b}


TOXICITY_KINDS = ("safety", "composite")  # annotators that score toxicity


def with_default_toxicity(data: dict, toxicity) -> dict:
    """Give ``safety``/``composite`` entries without their own ``toxicity``/``backend`` the section ``toxicity``."""
    if toxicity is None:
        return data
    from simplesafe.text.toxicity_section import toxicity_config

    section = toxicity_config(toxicity).model_dump(mode="json", exclude_unset=True)
    data = dict(data)
    data["annotators"] = [dict(e, toxicity=section) if isinstance(e, dict) and e.get("kind") in TOXICITY_KINDS
                          and "toxicity" not in e and "backend" not in e else e for e in data["annotators"]]
    return data


def load_pool(pool: str | Path, extra_reward_models: list[str] | None = None, toxicity=None) -> PoolConfig:
    """A shipped pool by name (``length``, ``offline``) or a YAML file with ``annotators: [...]``.

    ``toxicity`` (a ``toxicity:`` section) is the scorer of ``safety``/``composite`` entries that name none.
    """
    name = str(pool)
    if name in SHIPPED_POOLS:
        data = yaml.safe_load(resources.files("simplesafe.eval").joinpath("pools", f"{name}.yaml").read_text())
        where = f"shipped pool '{name}'"
    else:
        path = Path(name)
        if not path.exists():
            raise ConfigError(f"annotator pool '{name}' is neither a shipped pool ({', '.join(SHIPPED_POOLS)}) "
                              "nor an existing YAML file")
        data = read_yaml(path)
        where = str(path)
    if not isinstance(data.get("annotators"), list) or not data["annotators"]:
        raise ConfigError(f"{where}: needs a non-empty list 'annotators: [{{kind: ...}}, ...]'")
    for i, entry in enumerate(data["annotators"]):
        if not isinstance(entry, dict) or "kind" not in entry:
            raise ConfigError(f"{where}: annotators[{i}] must be a mapping with a 'kind' key")
    for path in extra_reward_models or []:
        data["annotators"].append({"kind": "reward", "model": str(path), "name": f"rm_{Path(path).name}"})
    data = with_default_toxicity(data, toxicity)
    try:
        return PoolConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{where}: {loc}: {err['msg']}") from None


# ---------------------------------------------------------------- statistics


def pref_to_score(prefs) -> np.ndarray:
    """1 -> 1 (A wins), 2 -> 0, 1.5 -> 0.5."""
    p = np.asarray(prefs, dtype=float)
    return 2.0 - p


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return (math.nan, math.nan)
    if len(v) == 1:
        return (float(v[0]), float(v[0]))
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # chunks keep memory bounded for large n
        stop = min(n_boot, start + 256)
        idx = rng.integers(0, len(v), size=(stop - start, len(v)))
        means[start:stop] = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def length_bias(prefs, len_a, len_b) -> float | None:
    """Fraction of decided items with unequal lengths where the longer output won."""
    p = np.asarray(prefs, dtype=float)
    la, lb = np.asarray(len_a, dtype=float), np.asarray(len_b, dtype=float)
    mask = np.isin(p, (1.0, 2.0)) & (la != lb)
    if not mask.any():
        return None
    longer_won = ((p == 1.0) & (la > lb)) | ((p == 2.0) & (lb > la))
    return float(longer_won[mask].mean())


def position_bias(shown_verdicts) -> tuple[float | None, float | None, int]:
    """(fraction of decided verdicts for the first-shown output - 0.5, binomial p-value, n decided)."""
    v = np.asarray([x for x in shown_verdicts if x in (1.0, 2.0)], dtype=float)
    if len(v) == 0:
        return None, None, 0
    k = int((v == 1.0).sum())
    from scipy.stats import binomtest

    return float(k / len(v) - 0.5), float(binomtest(k, len(v), 0.5).pvalue), int(len(v))


def length_controlled_win_rate(prefs, len_a, len_b) -> float | None:
    """Length-controlled win rate of A over B: AlpacaEval's GLM (:func:`simplesafe.eval.winrate.glm_lc_win_rate`).

    ``prefs`` in this module's convention (1 = A wins, 2 = B wins, 1.5 tie, None abstain);
    A is the model and B the baseline of the GLM, with no instruction-difficulty term.
    """
    y = np.array([np.nan if p is None else 2.0 - float(p) for p in prefs], dtype=float)
    if len(y) == 0:
        return None
    lc, _ = glm_lc_win_rate(y, len_a, len_b)
    return lc


def agreement(per_annotator: dict[str, list]) -> dict[str, Any]:
    """Pairwise agreement and Cohen's kappa between annotators (on A/B-mapped verdicts)."""
    from sklearn.metrics import cohen_kappa_score

    names = list(per_annotator)
    pairs = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = per_annotator[names[i]], per_annotator[names[j]]
            both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
            if not both:
                continue
            xs = [str(x) for x, _ in both]
            ys = [str(y) for _, y in both]
            agree = float(np.mean([x == y for x, y in zip(xs, ys)]))
            kappa = float(cohen_kappa_score(xs, ys)) if len(set(xs) | set(ys)) > 1 else 1.0
            if math.isnan(kappa):
                kappa = None
            pairs[f"{names[i]}|{names[j]}"] = {"agreement": agree, "kappa": kappa, "n": len(both)}
    agrees = [p["agreement"] for p in pairs.values()]
    kappas = [p["kappa"] for p in pairs.values() if p["kappa"] is not None]
    return {"agreement": float(np.mean(agrees)) if agrees else None,
            "kappa": float(np.mean(kappas)) if kappas else None, "pairs": pairs}


def summarise(rows: list[dict], names: list[str], n_boot: int = 2000, seed: int = 0) -> dict:
    """All statistics of ``summary.json`` from annotation rows (see the module docstring)."""
    prefs = [r["preference"] for r in rows]
    len_a = [len(r["output_1"].strip()) for r in rows]
    len_b = [len(r["output_2"].strip()) for r in rows]
    scores = pref_to_score(prefs)
    lo, hi = bootstrap_ci(scores, n_boot=n_boot, seed=seed)
    shown_all: list = []
    per_annotator = {}
    ab = {}
    for name in names:
        col = [r["annotations"][name]["preference"] for r in rows]
        shown = [r["annotations"][name]["verdict_shown"] for r in rows]
        shown_all.extend(shown)
        decided = [c for c in col if c is not None]
        pb, pb_p, n_dec = position_bias(shown)
        per_annotator[name] = {
            "win_rate": float(pref_to_score(decided).mean()) if decided else None,
            "n_verdicts": len(decided),
            "n_abstained": len(col) - len(decided),
            "length_bias": length_bias([c if c is not None else 1.5 for c in col], len_a, len_b),
            "position_bias": pb,
            "position_bias_p": pb_p,
        }
        ab[name] = col
    pb, pb_p, n_dec = position_bias(shown_all)
    agr = agreement(ab) if len(names) > 1 else {"agreement": None, "kappa": None, "pairs": {}}
    return {
        "win_rate": float(scores.mean()),
        "ci_low": lo,
        "ci_high": hi,
        "n": len(rows),
        "n_wins": int((np.asarray(prefs) == 1.0).sum()),
        "n_losses": int((np.asarray(prefs) == 2.0).sum()),
        "n_ties": int((np.asarray(prefs) == 1.5).sum()),
        "length_bias": length_bias(prefs, len_a, len_b),
        "position_bias": pb,
        "position_bias_p": pb_p,
        "lc_win_rate": length_controlled_win_rate(prefs, len_a, len_b),
        "mean_length_a": float(np.mean(len_a)),
        "mean_length_b": float(np.mean(len_b)),
        "agreement": agr["agreement"],
        "kappa": agr["kappa"],
        "agreement_pairs": agr["pairs"],
        "annotators": per_annotator,
        "definitions": {
            "preference": "1 = A (output_1) better, 2 = B (output_2) better, 1.5 = tie",
            "win_rate": "mean of 1 (A wins), 0 (B wins), 0.5 (tie); 95% percentile bootstrap CI over items",
            "length_bias": "fraction of decided unequal-length items where the longer output (characters) won",
            "position_bias": "fraction of decided verdicts (all annotators) for the first-shown output minus 0.5",
            "lc_win_rate": "AlpacaEval's length-controlled GLM (Dubois et al. 2024) of A-wins on tanh(length gap / sd), "
                           "L1 with cross-validated C, predicted at zero gap; see simplesafe.eval.winrate",
        },
    }


# ---------------------------------------------------------------- annotation


def annotate(items: list[dict], pool: PoolConfig, backend_factory: Callable | None = None) -> tuple[list[dict], list[str], dict]:
    """Ask every annotator of ``pool`` about every item in a random shown order; map back to A/B."""
    names = annotator_names(pool.annotators)
    n = len(items)
    order_rng = np.random.default_rng([pool.seed, 0])
    swaps = order_rng.random((n, len(names))) < 0.5  # True: B is shown first
    instructions = [it["instruction"] for it in items]
    a_out = [it["output_1"] for it in items]
    b_out = [it["output_2"] for it in items]
    rows = [dict(it, annotations={}) for it in items]
    columns, weights, infos = [], [], {}
    for k, (spec, name) in enumerate(zip(pool.annotators, names)):
        annotator = build_annotator(spec, name, backend_factory=backend_factory)
        sw = swaps[:, k]
        firsts = [b if s else a for a, b, s in zip(a_out, b_out, sw)]
        seconds = [a if s else b for a, b, s in zip(a_out, b_out, sw)]
        log.info("pairwise: annotator %s on %d items", name, n)
        shown, raw = annotator.annotate(instructions, firsts, seconds, np.random.default_rng([pool.seed, 1, k]))
        col = []
        for i, (v, s) in enumerate(zip(shown, sw)):
            pref = None if v is None else (({1.0: 2.0, 2.0: 1.0}.get(v, v)) if s else v)
            col.append(pref)
            rows[i]["annotations"][name] = {"preference": pref, "verdict_shown": v,
                                            "shown_first": "B" if s else "A", **(raw[i] or {})}
            rows[i][f"preference_{name}"] = pref
        columns.append(col)
        weights.append(annotator.weight)
        infos[name] = dict(annotator.info)
    agg = aggregate_verdicts(columns, weights, pool.aggregate, np.random.default_rng([pool.seed, 2]))
    agg = apply_noise(agg, pool.noise, np.random.default_rng([pool.seed, 3]))
    for r, p in zip(rows, agg):
        r["preference"] = p
    return rows, names, infos


def _json_pref(v):
    """1 and 2 as integers, 1.5 as a float, None as null: the AlpacaEval convention."""
    return None if v is None else (int(v) if v in (1.0, 2.0) else float(v))


def run_pairwise(a_path: str | Path, b_path: str | Path, pool: str | Path | PoolConfig, out_dir: str | Path,
                 seed: int | None = None, n_boot: int = 2000, reward_models: list[str] | None = None,
                 backend_factory: Callable | None = None, toxicity=None) -> dict:
    """Annotate A vs B with ``pool`` and write ``annotations.jsonl`` and ``summary.json`` into ``out_dir``.

    ``toxicity``: the ``toxicity:`` section for the pool's safety/composite annotators that set none.
    """
    if isinstance(pool, PoolConfig):
        pool_cfg = PoolConfig.model_validate(with_default_toxicity(pool.model_dump(), toxicity))
    else:
        pool_cfg = load_pool(pool, reward_models, toxicity=toxicity)
    if seed is not None:
        pool_cfg = pool_cfg.model_copy(update={"seed": seed})
    a_rows, b_rows = load_outputs(a_path), load_outputs(b_path)
    items, unmatched = match_by_instruction(a_rows, b_rows, a_path, b_path)
    rows, names, infos = annotate(items, pool_cfg, backend_factory=backend_factory)
    summary = summarise(rows, names, n_boot=n_boot, seed=pool_cfg.seed)
    for name, info in infos.items():
        if info:
            summary["annotators"][name]["info"] = info
    summary.update(unmatched)
    summary["generator_a"] = a_rows[0]["generator"]
    summary["generator_b"] = b_rows[0]["generator"]
    summary["pool"] = str(pool) if not isinstance(pool, PoolConfig) else "custom"
    summary["pool_config"] = pool_cfg.model_dump(mode="json")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = [{k: r[k] for k in ("instruction", "output_1", "output_2", "generator_1", "generator_2")}
               | {"preference": _json_pref(r["preference"])}
               | {k: _json_pref(v) for k, v in r.items() if k.startswith("preference_")}
               | {"annotations": {n: {k: (_json_pref(v) if k in ("preference", "verdict_shown") else v)
                                      for k, v in a.items()} for n, a in r["annotations"].items()}}
               for r in rows]
    write_rows(out_dir / "annotations.jsonl", ordered)
    write_json(out_dir / "summary.json", summary)
    return summary
