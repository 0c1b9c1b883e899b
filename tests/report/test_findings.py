"""The report's verdicts are computed from intervals: a difference whose interval holds 0 is noise,
a win rate is a preference only when its interval excludes 0.5, and every judge carries its role.
Table 1's sentences likewise: a cost is claimed only when an interval is below 0."""

from simplesafe.eval.harness_table import table1
from simplesafe.report import findings
from simplesafe.report.findings import judge_rows, verdicts, winrate_rows


def _e(mean, lo, hi):
    return {"mean": mean, "ci": [lo, hi]}


SUMMARY = {
    "judges": [{"name": "helpfulness", "axis": "helpfulness", "kind": "reward_model", "role": "judge", "model": "/r/rm_judge"},
               {"name": "reward", "axis": "composite", "kind": "reward_model", "role": "training signal",
                "used_by": "ppo", "model": "/r/rm_simplicity"}],
    "models": {m: {"fre": _e(60, 55, 65)} for m in ("base", "base-prompted", "sft", "ppo")},
    "differences": {
        "sft-base": {"fre": _e(9.0, 4.0, 14.0), "fkg": _e(-0.5, -1.5, 0.5), "dale_chall": _e(0.4, 0.1, 0.7)},
        "ppo-sft": {"dale_chall": _e(-0.3, -0.6, -0.1), "fre": _e(1.0, -2.0, 4.0)},
        "ppo-base-prompted": {"dale_chall": _e(0.2, -0.1, 0.5)},
    },
    "win_rates": {"ppo_vs_sft": {"helpfulness": {"win_rate": 0.40, "ci": [0.33, 0.47]}},
                  "ppo_vs_base-prompted": {"helpfulness": {"win_rate": 0.55, "ci": [0.45, 0.65], "lc_win_rate": 0.52}}},
}


def test_verdicts_read_intervals():
    v = verdicts(SUMMARY)
    sft = next(x for x in v if x.startswith("Does SFT simplify"))
    assert "FRE +9 [4, 14] (simpler)" in sft
    assert "FKG -0.5 [-1.5, 0.5] (inside noise)" in sft
    assert "Dale-Chall +0.4 [0.1, 0.7] (less simple)" in sft
    ppo = next(x for x in v if x.startswith("Is ppo simpler than SFT"))
    assert "(simpler)" in ppo and "(not preferred)" in ppo  # the whole interval is below 0.5
    asking = next(x for x in v if "beat asking (ppo" in x)
    assert "(no clear preference)" in asking and "(inside noise)" in asking
    # the evaluation stores base-prompted − sft: read the other way round for "sft vs asking"
    s = {**SUMMARY, "differences": {"base-prompted-sft": {"fre": _e(13.7, 10.5, 17.0)}}}
    sft = next(x for x in verdicts(s) if "beat asking (sft" in x)
    assert "FRE -13.7 [-17, -10.5] (less simple)" in sft


def test_judges_labelled_by_role():
    rows = {r["scorer"]: r for r in judge_rows(SUMMARY)}
    assert rows["helpfulness"]["status"] == "held out (judge)"
    assert rows["reward"]["status"] == "used in training" and rows["reward"]["used by"] == "ppo"
    assert rows["reward"]["model"] == "rm_simplicity"


def test_winrate_rows_show_length_controlled_rate():
    rows = winrate_rows(SUMMARY)
    cell = next(r for r in rows if r["against"] == "base-prompted")["helpfulness"]
    assert cell.startswith("0.55 [0.45, 0.65]") and "(LC 0.52)" in cell



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
