"""The report's verdicts are computed from intervals: a difference whose interval holds 0 is noise,
a win rate is a preference only when its interval excludes 0.5, and every judge carries its role."""

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


def test_judges_labelled_by_role():
    rows = {r["scorer"]: r for r in judge_rows(SUMMARY)}
    assert rows["helpfulness"]["status"] == "held out (judge)"
    assert rows["reward"]["status"] == "used in training" and rows["reward"]["used by"] == "ppo"
    assert rows["reward"]["model"] == "rm_simplicity"


def test_winrate_rows_show_length_controlled_rate():
    rows = winrate_rows(SUMMARY)
    cell = next(r for r in rows if r["against"] == "base-prompted")["helpfulness"]
    assert cell.startswith("0.55 [0.45, 0.65]") and "(LC 0.52)" in cell
