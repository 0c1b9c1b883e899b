"""Win rates from AlpacaEval-format annotations: the raw win rate and the length-controlled one.

    simplesafe eval winrate annotations.json --out DIR [--difficulty difficulty.jsonl]

The input is what AlpacaEval writes (``annotations.json``; a JSON list or JSONL): one row
per instruction with ``instruction``, ``output_1`` (the baseline), ``output_2`` (the model),
``preference`` and optionally ``generator_1``/``generator_2``. AlpacaEval's convention,
kept here: ``preference`` 1 = output_1 wins, 2 = output_2 wins, 1.5 or 0 = tie, values in
between from weighted annotators (AlpacaEval 2.0's logprob-weighted judge), null = no
preference (dropped). Everything is reported for **output_2 against output_1**, as
AlpacaEval does. (``simplesafe eval pairwise`` reports A = output_1 against B = output_2
instead: its ``win_rate`` is ``1 - `` this one's on the same rows.)

Raw win rate (AlpacaEval's ``metrics.get_winrate`` -> ``describe_head2head``): with ties
(0) read as 1.5, ``win_rate`` is the mean of ``preference - 1`` over rows with a preference
and ``standard_error`` its standard error, ``std(ddof=1) / sqrt(n)`` (pandas ``sem``).
AlpacaEval reports both times 100; here they are fractions.

Length-controlled win rate (Dubois et al., 2024, "Length-Controlled AlpacaEval"; AlpacaEval's
``metrics.glm_winrate``, GLM ``length_controlled_v1``). A logistic GLM of the soft label
``y = preference - 1`` (P(output_2 wins)):

    logit P(model wins) = (theta_m - theta_b) + phi * tanh(std_delta_len) + (psi_m - psi_b) * gamma_x

with ``std_delta_len = (len(output_1) - len(output_2)) / std`` over the rows (characters;
pandas ``std``, ddof=1; AlpacaEval's sign, so ``phi`` has the opposite sign to the paper's
``len_model - len_baseline`` and the fit is otherwise identical) and ``gamma_x`` the
difficulty of instruction x, only when one is given. It is fitted as AlpacaEval does: no
intercept (``theta`` is the coefficient of a constant column), an L1 penalty with
``liblinear``, the soft labels turned into two rows per item (label 1 with weight y, label 0
with weight 1 - y), ``C`` chosen from sklearn's 10-value grid by 5-fold ``GroupKFold``
cross-validation (both rows of an item in one fold) on the soft-label log loss
(``LogisticRegressionCV``, ``random_state=123``). The LC win rate is the mean over rows of
the predicted probability with the length term set to 0 and each row's own difficulty term.

Where this differs from AlpacaEval, and why:

- AlpacaEval also fits on its "gamed" baselines (the baseline prompted to be verbose or
  concise; ``regularize_to_baseline_lambda=0.2``, read from a Hugging Face dataset), which
  pulls ``phi`` and ``psi`` towards the baseline's. That data is AlpacaEval's own and is not
  available offline, so only the annotations given are fitted; on AlpacaEval's 805
  instructions the two agree closely, on small sets the length term is less stable.
- AlpacaEval downloads its instruction difficulties; here they are optional (a per-row
  ``instruction_difficulty`` field or ``--difficulty FILE``), and without them the
  difficulty term is left out.
- With fewer items than folds, or a training fold holding only wins or only losses (tiny
  sets), C = 100 without cross-validation (AlpacaEval's setting when it does not
  cross-validate). When every preference is the same (all wins, all losses) the LC win rate
  is that value, with no fit. When every row has the same length difference the length
  term is 0 (AlpacaEval would divide by a zero standard deviation).
- When ``generator_1 == generator_2`` the LC win rate is 0.5 by construction, as in AlpacaEval.
- AlpacaEval silently drops preferences outside [1, 2]; here they are errors.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np

from simplesafe.atomic import write_json
from simplesafe.errors import DataError

log = logging.getLogger(__name__)

CV_FOLDS = 5  # AlpacaEval's length_controlled_v1: n_splits=5
C_NO_CV = 100.0  # AlpacaEval's C when it does not cross-validate
SEED = 123  # AlpacaEval's random_state


# ---------------------------------------------------------------- reading


def read_json_or_jsonl(path: Path):
    """(line, row) pairs from a JSON list or JSONL file, whatever its extension says (AlpacaEval ships both).

    For a JSON list the "line" is the item's 1-based position in the list.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(path, None, None, f"not valid UTF-8 (byte {exc.start})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        for i, obj in enumerate(data, start=1):
            if not isinstance(obj, dict):
                raise DataError(path, i, None, f"item {i} is {type(obj).__name__}, expected an object")
            yield i, obj
        return
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(path, line_no, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(path, line_no, None, f"expected a JSON object, got {type(obj).__name__}")
        yield line_no, obj


def _number(value, path, line, field) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(path, line, field, f"expected a number, got {value!r}")
    return float(value)


def read_annotations(path: str | Path) -> list[dict]:
    """Validated rows: ``instruction``, ``output_1``, ``output_2`` (strings), ``preference`` (float or NaN),
    ``generator_1``/``generator_2``/``instruction_difficulty`` when present, ``line``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, None, "file not found")
    rows = []
    for line, row in read_json_or_jsonl(path):
        out = {"line": line}
        for field in ("instruction", "output_1", "output_2"):
            if field not in row:
                raise DataError(path, line, field, "missing required field")
            if not isinstance(row[field], str):
                raise DataError(path, line, field, f"expected a string, got {type(row[field]).__name__}")
            out[field] = row[field]
        if "preference" not in row:
            raise DataError(path, line, "preference", "missing required field (null for no preference)")
        pref = row["preference"]
        if pref is None:
            out["preference"] = math.nan
        else:
            pref = _number(pref, path, line, "preference")
            if not (pref == 0 or 1 <= pref <= 2):
                raise DataError(path, line, "preference",
                                f"must be 1 (output_1 wins), 2 (output_2 wins), 0 or 1.5 (tie), or in between; got {pref:g}")
            out["preference"] = pref
        for field in ("generator_1", "generator_2"):
            if row.get(field) is not None:
                out[field] = str(row[field])
        if row.get("instruction_difficulty") is not None:
            out["instruction_difficulty"] = _number(row["instruction_difficulty"], path, line, "instruction_difficulty")
        rows.append(out)
    if not rows:
        raise DataError(path, None, None, "no annotations (the file is empty)")
    return rows


def read_difficulty(path: str | Path) -> dict[str, float]:
    """``{instruction: difficulty}`` from rows with ``instruction`` and ``instruction_difficulty``."""
    from simplesafe.io import read_rows

    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, None, "file not found")
    source = read_rows(path) if path.suffix.lower() in (".csv", ".tsv", ".parquet") else read_json_or_jsonl(path)
    out = {}
    for line, row in source:
        if not isinstance(row.get("instruction"), str):
            raise DataError(path, line, "instruction", "missing or not a string")
        if "instruction_difficulty" not in row:
            raise DataError(path, line, "instruction_difficulty", "missing required field")
        out[row["instruction"]] = _number(row["instruction_difficulty"], path, line, "instruction_difficulty")
    if not out:
        raise DataError(path, None, None, "no rows")
    return out


# ---------------------------------------------------------------- statistics


def alpacaeval_win_rate(preferences) -> dict:
    """AlpacaEval's ``describe_head2head`` as fractions: win rate of output_2, its standard error, counts.

    ``preferences``: 1 (output_1 wins) .. 2 (output_2 wins), 0 or 1.5 tie, NaN no preference (dropped).
    """
    import pandas as pd

    p = pd.Series(preferences, dtype=float).replace({0.0: 1.5})
    n_draws = int((p == 1.5).sum())
    p = p[p.between(1.0, 2.0)] - 1.0  # NaN is dropped here, as AlpacaEval drops "not a preference"
    sem = p.sem()
    return {
        "win_rate": float(p.mean()) if len(p) else None,
        "standard_error": None if len(p) < 2 or math.isnan(sem) else float(sem),
        "n": int(len(p)),
        "n_wins": int((p > 0.5).sum()),
        "n_wins_base": int((p < 0.5).sum()),
        "n_draws": n_draws,
    }


def glm_lc_win_rate(p_model, len_model, len_baseline, difficulty=None) -> tuple[float | None, dict]:
    """AlpacaEval's length-controlled win rate of the model over the baseline (see the module docstring).

    ``p_model``: soft label per item, P(model wins) in [0, 1] (NaN: no preference; left out of
    the fit, still predicted); ``len_*``: output lengths; ``difficulty``: optional per-item
    instruction difficulty. Returns ``(lc_win_rate, fit)`` with the fitted coefficients.
    """
    import pandas as pd
    from sklearn.exceptions import ConvergenceWarning

    y = np.asarray(p_model, dtype=float)
    delta = np.asarray(len_baseline, dtype=float) - np.asarray(len_model, dtype=float)  # AlpacaEval: len_1 - len_2
    sd = pd.Series(delta).std()  # ddof=1, over all rows
    x_len = np.tanh(delta / sd) if len(delta) > 1 and sd > 0 else np.zeros_like(delta)
    names = ["length"] + (["difficulty"] if difficulty is not None else []) + ["model"]
    cols = [x_len] + ([np.asarray(difficulty, dtype=float)] if difficulty is not None else []) + [np.ones_like(y)]
    X = np.column_stack(cols)
    keep = ~np.isnan(y)
    n = int(keep.sum())
    if n == 0:
        return None, {}
    # soft labels: every item twice, label 1 weighted y and label 0 weighted 1 - y (AlpacaEval's
    # fit_LogisticRegressionCV); the weighted log loss of these rows is the soft-label cross-entropy
    Xd = np.vstack([X[keep], X[keep]])
    yd = np.concatenate([np.ones(n), np.zeros(n)])
    wd = np.concatenate([y[keep], 1.0 - y[keep]])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    if not (wd[yd == 1].sum() > 0 and wd[yd == 0].sum() > 0):  # only wins or only losses: no length effect to fit
        return float(y[keep].mean()), {"note": "every preference is the same; nothing to control for", "n_fit": n}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model, c, cv_ok = _fit_glm(Xd, yd, wd, groups)
    # liblinear stops at AlpacaEval's 100 iterations on some grid values of small, separable sets; say so, quietly
    not_converged = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    X_test = X.copy()
    X_test[:, 0] = 0.0  # no length difference; each row keeps its difficulty
    pred = model.predict_proba(X_test)[:, 1]
    fit = dict(zip(names, (float(b) for b in model.coef_[0])), C=c, cv_folds=CV_FOLDS if cv_ok else 0,
               n_fit=n, length_sd=None if math.isnan(sd) else float(sd), not_converged=not_converged)
    return float(pred.mean()), fit


def _fit_glm(Xd, yd, wd, groups):
    """(model, C, cross-validated?) for the duplicated soft-label rows, as AlpacaEval's fit_LogisticRegressionCV."""
    import sklearn
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.metrics import get_scorer
    from sklearn.model_selection import GroupKFold

    common = dict(solver="liblinear", fit_intercept=False, random_state=SEED)
    n = len(yd) // 2
    splits = list(GroupKFold(n_splits=CV_FOLDS).split(Xd, yd, groups)) if n >= CV_FOLDS else []
    # a training fold with only wins or only losses cannot be fitted (tiny sets): then no cross-validation
    cv_ok = bool(splits) and all(wd[tr][yd[tr] == 1].sum() > 0 and wd[tr][yd[tr] == 0].sum() > 0 for tr, _ in splits)
    if cv_ok:
        with sklearn.config_context(enable_metadata_routing=True):
            scorer = get_scorer("neg_log_loss").set_score_request(sample_weight=True)
            model = LogisticRegressionCV(Cs=10, cv=splits, scoring=scorer, l1_ratios=(1.0,),
                                         use_legacy_attributes=False, **common)
            model.fit(Xd, yd, sample_weight=wd)
            return model, float(model.C_), True
    model = LogisticRegression(C=C_NO_CV, l1_ratio=1.0, **common)
    model.fit(Xd, yd, sample_weight=wd)
    return model, C_NO_CV, False


# ---------------------------------------------------------------- the command


def _one_name(rows, field, path) -> str | None:
    names = [r[field] for r in rows if field in r]
    if not names:
        return None
    for r in rows:
        if r.get(field, names[0]) != names[0]:
            raise DataError(path, r["line"], field, f"one model per file: '{r[field]}' after '{names[0]}'")
    return names[0]


def winrate_summary(rows: list[dict], path: str | Path = "annotations", difficulty: dict[str, float] | None = None) -> dict:
    """``summary.json`` for validated rows (:func:`read_annotations`)."""
    gen_1, gen_2 = _one_name(rows, "generator_1", path), _one_name(rows, "generator_2", path)
    prefs = np.array([r["preference"] for r in rows], dtype=float)
    summary = alpacaeval_win_rate(prefs)
    summary["n_dropped"] = int(np.isnan(prefs).sum())
    diff = None
    if difficulty is not None:
        missing = [r for r in rows if r["instruction"] not in difficulty]
        if missing:
            raise DataError(path, missing[0]["line"], "instruction", "no difficulty for this instruction in the difficulty file")
        diff = [difficulty[r["instruction"]] for r in rows]
    elif any("instruction_difficulty" in r for r in rows):
        missing = [r for r in rows if "instruction_difficulty" not in r]
        if missing:
            raise DataError(path, missing[0]["line"], "instruction_difficulty", "given on some rows but not on this one")
        diff = [r["instruction_difficulty"] for r in rows]
    if gen_1 is not None and gen_1 == gen_2:
        lc, fit = 0.5, {"note": "generator_1 == generator_2: 0.5 by construction"}
    else:
        soft = np.where(prefs == 0.0, 1.5, prefs) - 1.0
        lc, fit = glm_lc_win_rate(soft, [len(r["output_2"]) for r in rows], [len(r["output_1"]) for r in rows], diff)
    summary["lc_win_rate"] = lc
    summary.update(generator_1=gen_1, generator_2=gen_2, lc_fit=fit, difficulty=diff is not None, definitions={
        "preference": "AlpacaEval: 1 = output_1 wins, 2 = output_2 wins, 0 or 1.5 = tie, null = dropped",
        "win_rate": "output_2 against output_1: mean of preference - 1 (ties 0.5), as AlpacaEval's get_winrate (a fraction)",
        "standard_error": "std(ddof=1) / sqrt(n) of preference - 1 (pandas sem, as AlpacaEval)",
        "lc_win_rate": "AlpacaEval's length-controlled GLM (Dubois et al., 2024), predicted at zero length difference, "
                       "fitted without AlpacaEval's gamed-baseline data; see simplesafe.eval.winrate",
    })
    return summary


def run_winrate(annotations: str | Path, out_dir: str | Path, difficulty: str | Path | None = None) -> dict:
    """Read ``annotations``, write ``out_dir/summary.json``, return it."""
    rows = read_annotations(annotations)
    summary = winrate_summary(rows, annotations, read_difficulty(difficulty) if difficulty else None)
    summary["annotations"] = str(annotations)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "summary.json", summary)
    return summary
