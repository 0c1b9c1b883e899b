"""`eval winrate`: AlpacaEval's win rate and standard error by hand, its length-controlled GLM, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simplesafe.errors import DataError
from simplesafe.eval.winrate import alpacaeval_win_rate, glm_lc_win_rate, read_annotations, run_winrate


def ann(pref, out1="x" * 10, out2="y" * 10, i=0, **extra):
    return {"instruction": f"instruction {i}", "output_1": out1, "output_2": out2, "preference": pref,
            "generator_1": "baseline", "generator_2": "model", **extra}


def write(path, rows, jsonl=False):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows, indent=1))
    return path


def run_cli(args):
    from simplesafe.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return exc.code
    return 0


# ---------------------------------------------------------------- raw win rate, by hand


def test_win_rate_and_standard_error_by_hand():
    # preference - 1 with ties (1.5, 0) at 0.5: [1, 1, 0, .5, .5, 1] -> mean 4/6;
    # deviations 1/3, 1/3, -2/3, -1/6, -1/6, 1/3 -> sum of squares 30/36, var (ddof=1) 1/6, sem = sqrt(1/6 / 6) = 1/6
    s = alpacaeval_win_rate([2, 2, 1, 1.5, 0, 2])
    assert s["win_rate"] == pytest.approx(4 / 6) and s["standard_error"] == pytest.approx(1 / 6)
    assert (s["n"], s["n_wins"], s["n_wins_base"], s["n_draws"]) == (6, 3, 1, 2)
    # a weighted annotator's continuous preferences, and a missing one dropped: [0.9, 0.2, 1.0]
    s = alpacaeval_win_rate([1.9, 1.2, float("nan"), 2.0])
    assert s["win_rate"] == pytest.approx(0.7) and s["n"] == 3
    assert s["standard_error"] == pytest.approx(math.sqrt(0.19 / 3))  # var = (.04 + .25 + .09) / 2


def test_cli_writes_summary_for_output_2_against_output_1(tmp_path, capsys):
    rows = [ann(p, i=i) for i, p in enumerate([2, 2, 1, 1.5, 0, 2])]
    for path in (write(tmp_path / "a.json", rows), write(tmp_path / "a.jsonl", rows, jsonl=True)):
        out = tmp_path / ("out_" + path.suffix[1:])
        assert run_cli(["eval", "winrate", str(path), "--out", str(out)]) == 0
        s = json.loads((out / "summary.json").read_text())
        assert {"win_rate", "standard_error", "n", "lc_win_rate"} <= set(s)
        assert s["win_rate"] == pytest.approx(4 / 6) and s["standard_error"] == pytest.approx(1 / 6) and s["n"] == 6
        # equal lengths: no length term, and the L1 penalty can only shrink the model term towards 0.5
        assert 0.5 <= s["lc_win_rate"] <= s["win_rate"]
        assert (s["generator_1"], s["generator_2"]) == ("baseline", "model")
        printed = capsys.readouterr().out
        assert "0.6667" in printed and "0.1667" in printed and "summary.json" in printed


def test_null_preference_is_dropped_and_counted(tmp_path):
    rows = [ann(1.9, i=0), ann(1.2, i=1), ann(None, i=2), ann(2, i=3)]
    s = run_winrate(write(tmp_path / "a.json", rows), tmp_path / "o")
    assert s["n"] == 3 and s["n_dropped"] == 1 and s["win_rate"] == pytest.approx(0.7)


# ---------------------------------------------------------------- length-controlled win rate


def synthetic(seed, n, quality, length_effect, difficulty=False, continuous=False):
    """Annotations where P(model wins) = sigmoid(quality + length_effect * tanh(gap / sd) [+ 0.5 * difficulty]).

    ``continuous``: the preference is that probability itself (a weighted annotator with no noise), so the
    GLM is exactly right and its LC win rate is known: the mean of sigmoid(quality [+ 0.5 * difficulty]).
    """
    rng = np.random.default_rng(seed)
    lb = rng.integers(100, 2500, n)
    lm = rng.integers(50, 4000, n)
    gap = (lm - lb).astype(float)
    diff = rng.normal(0, 1, n)
    p = 1 / (1 + np.exp(-(quality + length_effect * np.tanh(gap / gap.std(ddof=1)) + (0.5 * diff if difficulty else 0))))
    rows = []
    for i in range(n):
        if continuous:
            pref = float(1 + p[i])
        else:
            u = rng.random()
            pref = 2 if u < p[i] * 0.9 else (1.5 if u < p[i] * 0.9 + 0.1 else 1)
        rows.append(ann(pref, "a" * int(lb[i]), "b" * int(lm[i]), i=i,
                        **({"instruction_difficulty": float(diff[i])} if difficulty else {})))
    return rows


def test_pure_length_effect_is_removed_and_quality_shows_through(tmp_path):
    rows = synthetic(0, 800, quality=0.0, length_effect=3.0, continuous=True)
    s = run_winrate(write(tmp_path / "len.json", rows), tmp_path / "o1")
    assert s["win_rate"] > 0.58  # the model writes longer on average, and longer wins
    assert s["lc_win_rate"] == pytest.approx(0.5, abs=0.005)
    assert s["lc_fit"]["length"] == pytest.approx(-3.0, abs=0.05)  # AlpacaEval's gap is len_1 - len_2
    rows = synthetic(1, 800, quality=1.0, length_effect=3.0, continuous=True)
    s = run_winrate(write(tmp_path / "q.json", rows), tmp_path / "o2")
    assert s["lc_win_rate"] == pytest.approx(1 / (1 + math.exp(-1)), abs=0.005)
    rows = synthetic(2, 800, quality=-0.5, length_effect=-2.0, difficulty=True, continuous=True)
    s = run_winrate(write(tmp_path / "d.json", rows), tmp_path / "o3")
    d = np.array([r["instruction_difficulty"] for r in rows])
    assert s["lc_win_rate"] == pytest.approx(np.mean(1 / (1 + np.exp(0.5 - 0.5 * d))), abs=0.005)
    assert s["lc_fit"]["difficulty"] == pytest.approx(0.5, abs=0.05)


def test_swapping_the_outputs_gives_one_minus_the_lc_win_rate():
    rows = synthetic(2, 200, quality=0.4, length_effect=1.5, difficulty=True)
    y = np.array([r["preference"] for r in rows], dtype=float)
    y = np.where(y == 0, 1.5, y) - 1
    l1, l2 = [len(r["output_1"]) for r in rows], [len(r["output_2"]) for r in rows]
    d = [r["instruction_difficulty"] for r in rows]
    lc, fit = glm_lc_win_rate(y, l2, l1, d)
    lc_swapped, fit_swapped = glm_lc_win_rate(1 - y, l1, l2, d)
    assert fit["cv_folds"] == 5 and lc_swapped == pytest.approx(1 - lc, abs=1e-6)
    # both the gap and the label change sign, so phi stays; theta and psi change sign
    assert fit_swapped["model"] == pytest.approx(-fit["model"], abs=1e-5)
    assert fit_swapped["difficulty"] == pytest.approx(-fit["difficulty"], abs=1e-5)
    assert fit_swapped["length"] == pytest.approx(fit["length"], abs=1e-5)


# The same annotations through AlpacaEval 0.6.6's own code (metrics.get_winrate; the featurisation of
# metrics.glm_winrate._get_featurized_data with regularize_to_baseline_lambda=None, fit_LogisticRegressionCV
# with n_splits=5, predict_proba at std_delta_len=0; scikit-learn 1.9.1): an external oracle, not our output.
ALPACAEVAL_REFERENCE = [
    # (seed, n, difficulty, continuous): win_rate, standard_error, lc_win_rate
    ((3, 300, True, False), (0.696969696969697, 0.02529003493193701, 0.6454592874810925)),
    ((4, 60, False, True), (0.6492600344230965, 0.03209927935809855, 0.6034665529412833)),
]


def alpacaeval_case(seed, n, with_diff, continuous):
    """The generator the reference numbers were computed on (ties sometimes 0, 1% null preferences)."""
    rng = np.random.default_rng(seed)
    lb, lm = rng.integers(100, 2500, n), rng.integers(50, 4000, n)
    delta = (lb - lm).astype(float)
    x = np.tanh(delta / delta.std(ddof=1))
    diff = rng.normal(0, 1, n)
    p = 1 / (1 + np.exp(-(rng.normal(0.2, 0.5) - 1.2 * x + (0.5 * diff if with_diff else 0))))
    rows = []
    for i in range(n):
        if continuous:
            pref = float(1 + np.clip(p[i] + rng.normal(0, 0.15), 0, 1))
        else:
            u = rng.random()
            pref = 2 if u < p[i] * 0.9 else (1.5 if u < p[i] * 0.9 + 0.1 else 1)
            if pref == 1.5 and rng.random() < 0.5:
                pref = 0
        if rng.random() < 0.01:
            pref = None
        rows.append(ann(pref, "a" * int(lb[i]), "b" * int(lm[i]), i=i,
                        **({"instruction_difficulty": float(diff[i])} if with_diff else {})))
    return rows


@pytest.mark.parametrize("case, expected", ALPACAEVAL_REFERENCE)
def test_agrees_with_alpacaeval_on_the_same_annotations(tmp_path, case, expected):
    s = run_winrate(write(tmp_path / "a.json", alpacaeval_case(*case)), tmp_path / "o")
    assert (s["win_rate"], s["standard_error"], s["lc_win_rate"]) == pytest.approx(expected, abs=1e-6)


def test_same_generator_is_one_half_and_difficulty_file(tmp_path):
    rows = [dict(ann(p, "a" * (5 + i), i=i), generator_2="baseline") for i, p in enumerate([2, 2, 1, 2, 2, 1])]
    assert run_winrate(write(tmp_path / "same.json", rows), tmp_path / "o")["lc_win_rate"] == 0.5
    rows = [ann(p, "a" * (5 + 3 * i), i=i) for i, p in enumerate([2, 1, 2, 1.5, 2, 1, 2, 2])]
    path = write(tmp_path / "a.json", rows)
    diff = write(tmp_path / "d.jsonl", [{"instruction": r["instruction"], "instruction_difficulty": i / 4}
                                        for i, r in enumerate(rows)], jsonl=True)
    s = run_winrate(path, tmp_path / "o2", difficulty=diff)
    assert s["difficulty"] and "difficulty" in s["lc_fit"] and 0 < s["lc_win_rate"] < 1
    short = write(tmp_path / "short.jsonl", [{"instruction": "instruction 0", "instruction_difficulty": 1}], jsonl=True)
    with pytest.raises(DataError, match=r"a.json, line 2, field 'instruction'"):
        run_winrate(path, tmp_path / "o3", difficulty=short)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad, field, line", [
    ({"preference": 3}, "preference", 2),
    ({"preference": "2"}, "preference", 2),
    ({"preference": True}, "preference", 2),
    ({"output_2": None}, "output_2", 2),
    ({"instruction": 7}, "instruction", 2),
    ({"generator_2": "other"}, "generator_2", 2),
])
def test_bad_rows_exit_2_naming_file_line_and_field(tmp_path, capsys, bad, field, line):
    rows = [ann(2, i=0), {**ann(1, i=1), **bad}]
    for jsonl in (False, True):
        path = write(tmp_path / ("a.jsonl" if jsonl else "a.json"), rows, jsonl=jsonl)
        assert run_cli(["eval", "winrate", str(path), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"{path}, line {line}, field '{field}'" in err
        assert not (tmp_path / "o" / "summary.json").exists()


def test_missing_fields_empty_and_broken_files(tmp_path, capsys):
    row = ann(2)
    del row["preference"]
    path = write(tmp_path / "m.jsonl", [ann(1), row], jsonl=True)
    assert run_cli(["eval", "winrate", str(path), "--out", str(tmp_path / "o")]) == 2
    assert f"{path}, line 2, field 'preference'" in capsys.readouterr().err
    empty = tmp_path / "e.json"
    empty.write_text("")
    assert run_cli(["eval", "winrate", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert f"{empty}: no annotations" in capsys.readouterr().err
    broken = tmp_path / "b.jsonl"
    broken.write_text(json.dumps(ann(1)) + "\n{not json\n")
    assert run_cli(["eval", "winrate", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert f"{broken}, line 2" in capsys.readouterr().err
    with pytest.raises(DataError, match="file not found"):
        read_annotations(tmp_path / "nope.json")
