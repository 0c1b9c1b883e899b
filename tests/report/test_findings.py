"""Table 1's sentences are computed from the intervals: a cost is claimed only when an interval is below 0."""

from simplesafe.eval.harness_table import table1
from simplesafe.report import findings


def _res(scores: dict):
    return {"preset": "fast", "limit": 100, "data_dir": "/d", "lm_eval_version": "0.4.13", "skipped": {},
            "tasks": {t: {"score": s, "stderr": se, "n": 100, "shots": 0, "metric": m}
                      for t, (s, se, m) in scores.items()}}


def _table(sft_hellaswag: float, merge: bool = False):
    results = {"base": _res({"hellaswag": (0.43, 0.016, "acc_norm"), "truthfulqa_mc2": (0.40, 0.03, "mc2")}),
               "sft": _res({"hellaswag": (sft_hellaswag, 0.016, "acc_norm"), "truthfulqa_mc2": (0.41, 0.03, "mc2")})}
    if merge:
        results["dpo"] = _res({"hellaswag": (0.42, 0.016, "acc_norm"), "truthfulqa_mc2": (0.40, 0.03, "mc2")})
        results["dpo-simple-merge"] = _res({"hellaswag": (0.35, 0.016, "acc_norm"),
                                            "truthfulqa_mc2": (0.40, 0.03, "mc2")})
    t = table1(results, base="base", merge_pair=("dpo", "dpo-simple-merge") if merge else None)
    if merge:
        t["merge"]["built_row"] = "dpo-simple-merge"
    return t


def test_a_clear_drop_is_called_a_cost_with_its_interval():
    v = findings.capability_verdicts(_table(0.36))
    assert v[0].startswith("Did simplicity cost capability? Yes, measurably: sft scores below the base on hellaswag "
                           "-7.0 [-11.4, -2.6] points")
    assert "truthfulqa" not in v[0]  # +1 point with a +-8 interval is not a finding


def test_a_drop_inside_the_noise_is_not_a_cost_and_the_width_is_stated():
    v = findings.capability_verdicts(_table(0.41))
    assert v[0].startswith("Did simplicity cost capability? Not detectably")
    assert "±4.4 to ±8.3 points" in v[0]


def test_the_built_merge_is_compared_not_judged_as_a_model():
    t = _table(0.43, merge=True)
    v = findings.capability_verdicts(t)
    assert v[0].startswith("Did simplicity cost capability? Not detectably")  # dpo-simple-merge is not a model verdict
    assert any(s.startswith("Careful vs simple merge of the same adapter (dpo vs dpo-simple-merge): the merges differ "
                            "on hellaswag +7.0 [+2.6, +11.4] points") for s in v)
    rows = findings.merge_rows(t)
    assert rows[0]["careful (dpo)"] == "42.0 ± 1.6" and rows[0]["simple (dpo-simple-merge)"] == "35.0 ± 1.6"
    assert rows[0]["reading"] == "higher"


def test_table1_cells_are_points_with_the_harness_standard_error():
    rows = findings.table1_rows(_table(0.36))
    assert rows[0]["model"] == "base" and rows[0]["hellaswag (0-shot acc_norm)"] == "43.0 ± 1.6"
    assert rows[0]["truthfulqa_mc2 (0-shot mc2)"] == "40.0 ± 3.0"
    diffs = findings.table1_difference_rows(_table(0.36))
    assert diffs[0]["hellaswag (0-shot acc_norm)"] == "-7.0 [-11.4, -2.6] (lower)"
