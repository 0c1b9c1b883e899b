"""Table 1 arithmetic: differences of two independent proportions with 95% Wald intervals, averages, rows."""

import math

import pytest

from simplesafe.eval.harness_table import Z95, average, difference, table1


def _res(scores: dict, preset="fast", limit=100, skipped=None):
    return {"preset": preset, "limit": limit, "data_dir": "/d", "lm_eval_version": "0.4.13", "skipped": skipped or {},
            "tasks": {t: {"score": s, "stderr": se, "n": 100, "shots": 0, "metric": "acc_norm", "n_available": 1000,
                          "scored_split": "validation", "fewshot_from": None} for t, (s, se) in scores.items()}}


def test_difference_of_two_independent_proportions_by_hand():
    # p1 = 0.50, p2 = 0.40 with n = 100 each: SE_i = sqrt(p(1-p)/(n-1)) as the harness reports them
    se1, se2 = math.sqrt(0.25 / 99), math.sqrt(0.24 / 99)
    d = difference({"score": 0.5, "stderr": se1}, {"score": 0.4, "stderr": se2})
    se = math.sqrt(0.25 / 99 + 0.24 / 99)  # 0.070353...
    assert d["diff"] == pytest.approx(0.1)
    assert d["se"] == pytest.approx(0.0703526, abs=1e-6)
    assert d["ci"] == pytest.approx([0.1 - 1.959964 * se, 0.1 + 1.959964 * se], abs=1e-6)
    assert d["ci"][0] == pytest.approx(-0.037889, abs=1e-5)
    assert d["verdict"] == "no clear difference"
    # the same gap on 1,000 items each is outside the noise
    big = difference({"score": 0.5, "stderr": math.sqrt(0.25 / 999)}, {"score": 0.4, "stderr": math.sqrt(0.24 / 999)})
    assert big["ci"][0] > 0 and big["verdict"] == "higher"
    assert difference({"score": 0.4, "stderr": 0.01}, {"score": 0.5, "stderr": 0.01})["verdict"] == "lower"


def test_difference_needs_both_scores_and_says_when_it_has_no_interval():
    assert difference(None, {"score": 0.4, "stderr": 0.1}) is None
    assert difference({"score": None, "stderr": None}, {"score": 0.4, "stderr": 0.1}) is None
    d = difference({"score": 0.5, "stderr": None}, {"score": 0.4, "stderr": 0.1})
    assert d["ci"] is None and d["diff"] == pytest.approx(0.1) and "no interval" in d["verdict"]


def test_average_and_its_standard_error():
    a = average({"x": {"score": 0.3, "stderr": 0.03}, "y": {"score": 0.6, "stderr": 0.04}}, ["x", "y"])
    assert a["score"] == pytest.approx(0.45)
    assert a["stderr"] == pytest.approx(0.05 / 2)  # sqrt(0.03^2 + 0.04^2) / 2
    assert average({"x": {"score": 0.3, "stderr": 0.03}}, ["x", "y"]) is None  # a missing task: no average


def test_table1_rows_differences_and_merge_pair():
    results = {
        "base": _res({"hellaswag": (0.43, 0.016), "arc_challenge": (0.30, 0.013)}, skipped={"mmlu": "no local data: x"}),
        "sft": _res({"hellaswag": (0.38, 0.016), "arc_challenge": (0.31, 0.013)}),
        "dpo": _res({"hellaswag": (0.40, 0.016), "arc_challenge": (0.29, 0.013)}),
        "dpo-simple-merge": _res({"hellaswag": (0.41, 0.016), "arc_challenge": (0.29, 0.013)}),
    }
    t = table1(results, base="base", merge_pair=("dpo", "dpo-simple-merge"), not_run={"ppo": "no model at r/ppo"})
    assert [r["model"] for r in t["rows"]] == list(results)
    assert t["tasks"] == ["hellaswag", "arc_challenge"]
    assert t["skipped_tasks"] == {"mmlu": "no local data: x"} and t["not_run"] == {"ppo": "no model at r/ppo"}
    assert t["settings"]["preset"] == "fast" and t["settings"]["limit"] == 100
    hs = t["differences"]["sft"]["hellaswag"]
    assert hs["diff"] == pytest.approx(-0.05)
    assert hs["ci"][1] == pytest.approx(-0.05 + Z95 * math.sqrt(2) * 0.016)
    assert hs["verdict"] == "lower"  # -5 points, interval [-9.4, -0.6]
    assert t["differences"]["sft"]["arc_challenge"]["verdict"] == "no clear difference"
    avg = t["differences"]["sft"]["average"]
    assert avg["diff"] == pytest.approx(((0.38 + 0.31) - (0.43 + 0.30)) / 2)
    assert t["merge"]["careful"] == "dpo" and t["merge"]["differences"]["hellaswag"]["diff"] == pytest.approx(-0.01)
    assert "base" not in t["differences"]
