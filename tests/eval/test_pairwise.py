"""Pairwise statistics on synthetic annotations with known answers, and the CLI contract."""

import json
import subprocess
import sys

import numpy as np
import pytest

from simplesafe.errors import ConfigError, DataError
from simplesafe.eval.annotators import AnnotatorSpec, PoolConfig, aggregate_verdicts, apply_noise
from simplesafe.eval.pairwise import (
    bootstrap_ci,
    length_bias,
    length_controlled_win_rate,
    load_pool,
    position_bias,
    run_pairwise,
)
from simplesafe.llm.scripted import ScriptedBackend


def _write(path, rows, jsonl=False):
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


@pytest.fixture
def ab_files(tmp_path):
    rng = np.random.default_rng(0)
    a, b = [], []
    for i in range(40):
        la, lb = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        if la == lb:
            lb += 1
        a.append({"instruction": f"question {i}?", "output": " ".join(["word"] * la), "generator": "model_a"})
        b.append({"instruction": f"question {i}?", "output": " ".join(["word"] * lb), "generator": "model_b"})
    b = b[::-1]  # matching is by instruction, not position
    return _write(tmp_path / "a.json", a), _write(tmp_path / "b.jsonl", b, jsonl=True), a, b


def test_length_pool_has_length_bias_one_and_exact_win_rate(ab_files, tmp_path):
    a_path, b_path, a, b = ab_files
    s = run_pairwise(a_path, b_path, "length", tmp_path / "out", n_boot=500)
    b_by = {r["instruction"]: r["output"] for r in b}
    expected = np.mean([len(r["output"]) > len(b_by[r["instruction"]]) for r in a])
    assert s["n"] == 40
    assert s["length_bias"] == 1.0
    assert s["win_rate"] == pytest.approx(expected)
    assert s["ci_low"] <= s["win_rate"] <= s["ci_high"]
    rows = [json.loads(line) for line in (tmp_path / "out" / "annotations.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    for r in rows:
        assert r["preference"] in (1, 2, 1.5)
        assert r["output_1"] == next(x["output"] for x in a if x["instruction"] == r["instruction"])
        longer_a = len(r["output_1"]) > len(r["output_2"])
        assert r["preference"] == (1 if longer_a else 2)
        assert r["annotations"]["length"]["shown_first"] in ("A", "B")
    # both orders were shown (randomised per item)
    assert {r["annotations"]["length"]["shown_first"] for r in rows} == {"A", "B"}


def test_length_bias_definition():
    assert length_bias([1, 2, 1], [10, 5, 3], [5, 10, 3]) == 1.0  # third item equal length: excluded
    assert length_bias([2, 1], [10, 5], [5, 10]) == 0.0
    assert length_bias([1.5, 1.5], [10, 5], [5, 10]) is None


def test_position_bias_detected_for_first_position_judge(ab_files, tmp_path):
    a_path, b_path, _, _ = ab_files
    # a judge that always names the first-shown output
    backend = ScriptedBackend([(r".*", "Both are fine.\nOutput (a)")])
    pool = PoolConfig(annotators=[AnnotatorSpec(kind="llm", prompt="alpacafarm")], seed=3)
    s = run_pairwise(a_path, b_path, pool, tmp_path / "o", n_boot=200, backend_factory=lambda spec: backend)
    assert s["position_bias"] == 0.5
    assert s["position_bias_p"] < 1e-6
    # randomised order: the position-biased judge's win rate is near 0.5, not 1.0
    assert 0.25 < s["win_rate"] < 0.75


def test_unbiased_position():
    rng = np.random.default_rng(1)
    shown = list(rng.choice([1.0, 2.0], size=2000))
    pb, p, n = position_bias(shown)
    assert abs(pb) < 0.05 and p > 0.01 and n == 2000


def test_bootstrap_ci_covers_true_rate_in_simulation():
    true_p, covered = 0.65, 0
    rng = np.random.default_rng(7)
    trials = 200
    for t in range(trials):
        x = (rng.random(150) < true_p).astype(float)
        lo, hi = bootstrap_ci(x, n_boot=400, seed=t)
        covered += lo <= true_p <= hi
    assert 0.89 <= covered / trials <= 0.99


def test_length_controlled_win_rate_removes_pure_length_effect():
    rng = np.random.default_rng(0)
    n = 2000
    diff = rng.normal(0, 50, n)
    # A wins with prob sigmoid(0.0 + 3 * tanh(diff/sd)): at zero gap, 50%
    x = np.tanh(diff / diff.std())
    p = 1 / (1 + np.exp(-3 * x))
    wins = rng.random(n) < p
    prefs = np.where(wins, 1.0, 2.0)
    len_a = 100 + np.clip(diff, 0, None)
    len_b = 100 + np.clip(-diff, 0, None)
    lc = length_controlled_win_rate(prefs, len_a, len_b)
    assert abs(lc - 0.5) < 0.05
    # a true quality edge shows through
    p2 = 1 / (1 + np.exp(-(1.0 + 3 * x)))
    prefs2 = np.where(rng.random(n) < p2, 1.0, 2.0)
    assert abs(length_controlled_win_rate(prefs2, len_a, len_b) - 1 / (1 + np.exp(-1))) < 0.05


def test_noise_flips_about_a_quarter():
    v = [1.0] * 4000 + [1.5] * 10
    out = apply_noise(v, 0.25, np.random.default_rng(0))
    assert abs(np.mean([o == 2.0 for o in out[:4000]]) - 0.25) < 0.03
    assert out[4000:] == [1.5] * 10


def test_majority_aggregate():
    cols = [[1.0, 1.0, 2.0, None], [1.0, 2.0, 2.0, None], [2.0, 1.5, 1.5, 1.0]]
    assert aggregate_verdicts(cols, [1, 1, 1], "majority", np.random.default_rng(0)) == [1.0, 1.5, 2.0, 1.0]


def test_offline_pool_prefers_simple_safe(tmp_path, monkeypatch):
    # the toxicity backend is the safety area's choice; pin the light one so this test is about the pool
    import simplesafe.text.toxicity as toxicity

    monkeypatch.setattr(toxicity, "DEFAULT_BACKEND", "profanity-check")
    a = [{"instruction": f"q{i}", "output": "The sun is hot. It gives us light.", "generator": "simple"} for i in range(5)]
    b = [{"instruction": f"q{i}", "output": "Photospheric thermonuclear fusion processes generate electromagnetic radiation continuously.",
          "generator": "complex"} for i in range(5)]
    s = run_pairwise(_write(tmp_path / "a.json", a), _write(tmp_path / "b.json", b), "offline", tmp_path / "o", n_boot=100)
    assert s["win_rate"] == 1.0
    assert set(s["annotators"]) == {"simplicity", "safety", "composite"}
    assert s["agreement"] is not None
    assert "implementation" in s["annotators"]["composite"]["info"]


def test_bad_inputs(tmp_path):
    a = _write(tmp_path / "a.json", [{"instruction": "x", "output": "y"}])
    b = _write(tmp_path / "b.json", [{"instruction": "z", "output": "y"}])
    with pytest.raises(DataError, match="instruction"):
        run_pairwise(a, b, "length", tmp_path / "o")
    bad = _write(tmp_path / "bad.jsonl", [{"instruction": "x"}], jsonl=True)
    with pytest.raises(DataError, match="line 1.*output"):
        run_pairwise(a, bad, "length", tmp_path / "o")
    with pytest.raises(ConfigError, match="neither a shipped pool"):
        load_pool("no-such-pool")
    pool = tmp_path / "pool.yaml"
    pool.write_text("annotators:\n  - kind: magic\n")
    with pytest.raises(ConfigError, match="unknown kind 'magic'"):
        run_pairwise(a, a, pool, tmp_path / "o")


def test_pool_yaml_with_extra_keys(tmp_path):
    pool = tmp_path / "pool.yaml"
    pool.write_text("annotators:\n  - {kind: length, note: anything, noise: 0.0}\n  - {kind: simplicity}\nextra_top_level: 1\n")
    cfg = load_pool(pool)
    assert [s.kind for s in cfg.annotators] == ["length", "simplicity"]


@pytest.mark.slow
def test_cli_contract(ab_files, tmp_path):
    a_path, b_path, _, _ = ab_files
    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, "-m", "simplesafe.cli", "eval", "pairwise", "--a", str(a_path), "--b", str(b_path),
                          "--annotators", "length", "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    s = json.loads((out / "summary.json").read_text())
    for key in ("win_rate", "ci_low", "ci_high", "n", "length_bias", "position_bias", "lc_win_rate", "annotators"):
        assert key in s
    assert 0 <= s["win_rate"] <= 1 and s["length_bias"] == 1.0
    res = subprocess.run([sys.executable, "-m", "simplesafe.cli", "eval", "pairwise", "--a", str(a_path), "--b",
                          str(tmp_path / "missing.json"), "--annotators", "length", "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "missing.json" in res.stderr


def test_json_list_and_jsonl_whatever_the_extension(tmp_path):
    from simplesafe.eval.pairwise import load_outputs

    rows = [{"instruction": "q", "output": "a", "generator": "g"}, {"instruction": "r", "output": "", "generator": "g"}]
    _write(tmp_path / "list.jsonl", rows)  # a JSON list named .jsonl
    _write(tmp_path / "lines.json", rows, jsonl=True)  # JSONL named .json
    for name in ("list.jsonl", "lines.json"):
        assert [r["instruction"] for r in load_outputs(tmp_path / name)] == ["q", "r"]
    (tmp_path / "bad.json").write_text('{"instruction": "q", "output": "a"}\n{"instruction": 3, "output": "b"}\n')
    with pytest.raises(DataError, match="bad.json, line 2, field 'instruction'"):
        load_outputs(tmp_path / "bad.json")


def test_pool_level_noise_flips_a_quarter(tmp_path):
    a = [{"instruction": f"q{i}", "output": "a much longer answer", "generator": "A"} for i in range(400)]
    b = [{"instruction": f"q{i}", "output": "short", "generator": "B"} for i in range(400)]
    pool = tmp_path / "pool.yaml"
    pool.write_text("annotators:\n  - kind: length\nnoise: 0.25\nseed: 5\n")
    s = run_pairwise(_write(tmp_path / "a.json", a), _write(tmp_path / "b.json", b), pool, tmp_path / "o", n_boot=100)
    assert 0.68 < s["win_rate"] < 0.82  # 1 - 0.25 in expectation
    assert s["annotators"]["length"]["win_rate"] == 1.0  # the annotator itself was noiseless


def test_pairwise_lc_is_alpacaeval_glm_on_its_own_annotations(ab_files, tmp_path):
    """`eval pairwise` reports A (output_1) over B; `eval winrate` on the same annotations output_2 over output_1."""
    from simplesafe.eval.winrate import run_winrate

    a_path, b_path, _, _ = ab_files
    pool = tmp_path / "pool.yaml"
    pool.write_text("annotators:\n  - {kind: length, noise: 0.25}\n")
    s = run_pairwise(a_path, b_path, pool, tmp_path / "pw", n_boot=50)
    w = run_winrate(tmp_path / "pw" / "annotations.jsonl", tmp_path / "wr")
    assert w["n"] == s["n"] == 40
    assert w["win_rate"] == pytest.approx(1 - s["win_rate"])
    assert s["lc_win_rate"] == pytest.approx(1 - w["lc_win_rate"], abs=1e-6)
    assert w["lc_fit"]["cv_folds"] == 5
