"""lm-evaluation-harness offline on local task data: presets, the generated task configs keep the
harness's own task definitions, missing data is a clear error (exit 2), and real runs on a few items."""

import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simplesafe.errors import ConfigError
from simplesafe.eval.harness import (HarnessConfig, HarnessSettings, HarnessUnavailable, evaluate_model, plan,
                                     prepare_tasks, run_harness)

REPO = Path(__file__).resolve().parents[2]
BUNDLED = REPO / "data" / "harness"
has_lm_eval = importlib.util.find_spec("lm_eval") is not None
needs_lm_eval = pytest.mark.skipif(not has_lm_eval, reason="the harness extra is not installed (make test installs it)")


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "simplesafe.cli", "eval", "harness", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_missing_harness_is_a_clear_error(tmp_path, monkeypatch):
    """Without the extra: a message naming it and exit 2 (simulated: `make test` installs the extra)."""
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    with pytest.raises(HarnessUnavailable, match=r"simplesafe\[harness\]"):
        run_harness(HarnessConfig(model="x", out=str(tmp_path / "h.json")))
    code = ("import sys; sys.modules['lm_eval'] = None; from simplesafe.cli import main; "
            f"sys.argv = ['simplesafe', 'eval', 'harness', 'model=x', 'out={tmp_path}/h.json']; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 2
    assert "lm-evaluation-harness is not installed" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_task(tmp_path):
    with pytest.raises(ConfigError, match="unknown harness task"):
        run_harness(HarnessConfig(model="x", out=str(tmp_path / "h.json"), tasks=["gsm8k"]))


def test_presets_set_shots_tasks_and_limit():
    lb = plan(HarnessSettings(preset="leaderboard"))
    assert lb["shots"] == {"arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0}
    assert lb["limit"] is None
    fast = plan(HarnessSettings())
    assert fast["preset"] == "fast" and fast["limit"] == 100
    assert fast["tasks"] == ["arc_challenge", "hellaswag", "truthfulqa_mc2"]
    assert set(fast["shots"].values()) == {0}
    assert plan(HarnessSettings(limit="all"))["limit"] is None
    assert plan(HarnessSettings(limit=7, tasks=["hellaswag"]))["limit"] == 7
    assert plan(HarnessSettings(preset="leaderboard", num_fewshot=0, tasks=["arc_challenge"]))["shots"] == {
        "arc_challenge": 0}
    assert plan(HarnessSettings())["data_dir"] == str(BUNDLED)
    per_task = plan(HarnessSettings(limit={"hellaswag": 50, "truthfulqa_mc2": "all"}))
    assert per_task["limits"] == {"arc_challenge": 100, "hellaswag": 50, "truthfulqa_mc2": None}
    assert per_task["limit"] == per_task["limits"]
    with pytest.raises(ConfigError, match=r"limit names task\(s\) \['mmlu'\]"):
        plan(HarnessSettings(limit={"mmlu": 5}))
    with pytest.raises(ConfigError, match="limit must be >= 1"):
        plan(HarnessSettings(limit=0))


def _count_lines(path: Path) -> int:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


@needs_lm_eval
@pytest.mark.parametrize("preset", ["fast", "leaderboard"])
def test_task_configs_keep_the_harness_definitions_and_change_only_the_data(tmp_path, preset):
    from lm_eval.tasks._yaml_loader import load_yaml

    from simplesafe.eval.harness import harness_tasks_dir

    p, chosen, skipped = prepare_tasks(HarnessSettings(preset=preset, tasks=["arc_challenge", "hellaswag",
                                                                             "truthfulqa_mc2"]), tmp_path)
    assert skipped == {}
    source = {"arc_challenge": "arc/arc_challenge.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
              "truthfulqa_mc2": "truthfulqa/truthfulqa_mc2.yaml"}
    changed = {"dataset_path", "dataset_name", "dataset_kwargs", "num_fewshot", "training_split"}
    for task, rel in source.items():
        ours = load_yaml(tmp_path / f"{task}.yaml", resolve_func=False)
        theirs = load_yaml(harness_tasks_dir() / rel, resolve_func=False)
        # every key of the harness's task (prompt, choices, process_docs, metrics) is the harness's own
        for key, value in theirs.items():
            if key not in changed:
                assert ours[key] == value, (task, key)
        assert ours["dataset_path"] == "json" and ours["dataset_name"] is None
        assert ours["num_fewshot"] == p["shots"][task]
        for split, f in ours["dataset_kwargs"]["data_files"].items():
            assert Path(f).is_file() and Path(f).is_relative_to(BUNDLED.resolve()), f
    hs = load_yaml(tmp_path / "hellaswag.yaml", resolve_func=False)
    assert hs["training_split"] is None  # no local train split: few-shot examples come from validation
    assert list(hs["dataset_kwargs"]["data_files"]) == ["validation"]
    assert hs["process_docs"].endswith("hellaswag/utils.process_docs")  # the harness's preprocessing
    arc = load_yaml(tmp_path / "arc_challenge.yaml", resolve_func=False)
    assert set(arc["dataset_kwargs"]["data_files"]) == {"train", "validation", "test"}
    assert chosen["arc_challenge"].meta == {"scored_split": "test",
                                            "fewshot_from": "train" if preset == "leaderboard" else None}


@needs_lm_eval
def test_missing_task_data_exits_2_naming_the_files(tmp_path):
    res = _cli("model=x", f"out={tmp_path}/h.json", f"data_dir={tmp_path}/nothing", "tasks=[hellaswag,arc_challenge]")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"{tmp_path}/nothing/hellaswag-validation/validation.jsonl" in res.stderr
    assert f"{tmp_path}/nothing/arc-challenge/test.jsonl" in res.stderr
    # MMLU is not bundled: the leaderboard preset names what is missing instead of scoring three tasks silently
    res = _cli("model=x", f"out={tmp_path}/h.json", "preset=leaderboard")
    assert res.returncode == 2
    assert "mmlu" in res.stderr and "cais/mmlu" in res.stderr and "abstract_algebra" in res.stderr
    assert not (tmp_path / "h.json").exists()


@needs_lm_eval
def test_arc_without_its_scored_split_is_missing_not_silently_validation(tmp_path):
    d = tmp_path / "data" / "arc-challenge"
    d.mkdir(parents=True)
    (d / "validation.jsonl").write_bytes(gzip.decompress((BUNDLED / "arc-challenge" / "validation.jsonl.gz").read_bytes()))
    with pytest.raises(HarnessUnavailable, match=r"arc-challenge/test.jsonl \(the split the harness scores\)"):
        prepare_tasks(HarnessSettings(tasks=["arc_challenge"], data_dir=str(tmp_path / "data")), tmp_path / "t")


@needs_lm_eval
def test_skip_records_why_a_task_was_not_run(tmp_path):
    res = evaluate_model(HarnessSettings(tasks=["mmlu"], missing_data="skip"), "no-model-needed/x")
    assert res["tasks"] == {} and res["average"] is None
    assert res["skipped"]["mmlu"].startswith("no local data:") and "cais/mmlu" in res["skipped"]["mmlu"]


@needs_lm_eval
def test_micro_model_scores_every_task_from_the_local_files(tiny_model_dir, tmp_path):
    out = tmp_path / "h.json"
    res = _cli(f"model={tiny_model_dir}", f"out={out}", "limit=3", "batch_size=4")
    assert res.returncode == 0, res.stdout + res.stderr
    saved = json.loads(out.read_text())
    assert saved["preset"] == "fast" and saved["limit"] == 3 and saved["skipped"] == {}
    files = {"arc_challenge": BUNDLED / "arc-challenge" / "test.jsonl.gz",
             "hellaswag": BUNDLED / "hellaswag-validation" / "validation.jsonl.gz",
             "truthfulqa_mc2": BUNDLED / "truthfulqa" / "validation.jsonl.gz"}
    for task, f in files.items():
        t = saved["tasks"][task]
        assert t["n"] == 3 and t["shots"] == 0
        assert t["n_available"] == _count_lines(f)  # the harness read our file, every line of it
        assert 0.0 <= t["score"] <= 1.0 and t["stderr"] is not None and t["stderr"] >= 0
        assert t["score"] == t["metrics"][t["harness_metric"]]
        line = f"{task} 0-shot {t['metric']}: {t['score']:.4f} ± {t['stderr']:.4f} (n=3)"
        assert line in res.stdout
    assert saved["average"] == pytest.approx(sum(t["score"] for t in saved["tasks"].values()) / 3)


@needs_lm_eval
def test_leaderboard_shots_on_the_micro_model(tiny_model_dir, tmp_path):
    res = run_harness(HarnessConfig(model=str(tiny_model_dir), out=str(tmp_path / "h.json"), preset="leaderboard",
                                    tasks=["arc_challenge", "hellaswag"], limit={"arc_challenge": 2, "hellaswag": 3},
                                    batch_size=4))
    assert res["tasks"]["arc_challenge"]["shots"] == 25 and res["tasks"]["arc_challenge"]["fewshot_from"] == "train"
    assert res["tasks"]["hellaswag"]["shots"] == 10 and res["tasks"]["hellaswag"]["fewshot_from"] == "validation"
    assert res["limit"] == {"arc_challenge": 2, "hellaswag": 3}
    assert res["tasks"]["arc_challenge"]["n"] == 2 and res["tasks"]["hellaswag"]["n"] == 3


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from simplesafe.errors import ModelLoadError
    from simplesafe.eval.harness import _model_path

    with pytest.raises(ModelLoadError, match="no model folder"):
        _model_path(str(tmp_path / "runs" / "demo" / "sft"))
    assert _model_path("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"  # a hub id, for a filled cache


@needs_lm_eval
@pytest.mark.slow
def test_smollm2_hellaswag_prints_acc_norm_with_its_standard_error(smollm2_dir, tmp_path):
    """The issue's command on a few items (the 1,000-item figure is in the closing note)."""
    out = tmp_path / "hs.json"
    res = _cli("model=embedded:smollm2", "tasks=[hellaswag]", "limit=8", f"out={out}",
               env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"hellaswag 0-shot acc_norm: (\d\.\d{4}) ± (\d\.\d{4}) \(n=8\)", res.stdout)
    assert m, res.stdout
    saved = json.loads(out.read_text())["tasks"]["hellaswag"]
    assert float(m.group(1)) == pytest.approx(saved["score"], abs=5e-5)
    assert float(m.group(2)) == pytest.approx(saved["stderr"], abs=5e-5)
    # acc_norm of 8 items is k/8; its standard error is the harness's sqrt(p(1-p)/(n-1))
    p = saved["score"]
    assert p * 8 == pytest.approx(round(p * 8))
    assert saved["stderr"] == pytest.approx((p * (1 - p) / 7) ** 0.5)


def _fake_mmlu(root: Path) -> None:
    """A folder in cais/mmlu's layout: one folder per subject with test and dev (the 5-shot source) splits."""
    import yaml

    from simplesafe.eval.harness import harness_tasks_dir

    for f in sorted((harness_tasks_dir() / "mmlu" / "default").glob("mmlu_*.yaml")):
        subject = yaml.safe_load(f.read_text())["dataset_name"]
        (root / "mmlu" / subject).mkdir(parents=True)
        for split, n in (("test", 2), ("dev", 5)):
            rows = [{"question": f"{subject} question {i}?", "subject": subject, "choices": ["w", "x", "y", "z"],
                     "answer": i % 4} for i in range(n)]
            (root / "mmlu" / subject / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@needs_lm_eval
@pytest.mark.slow
def test_mmlu_from_a_user_folder_scores_all_57_subjects(tiny_model_dir, tmp_path):
    _fake_mmlu(tmp_path / "data")
    res = run_harness(HarnessConfig(model=str(tiny_model_dir), out=str(tmp_path / "h.json"), preset="leaderboard",
                                    tasks=["mmlu"], data_dir=str(tmp_path / "data"), batch_size=8))
    t = res["tasks"]["mmlu"]
    assert t["shots"] == 5 and t["fewshot_from"] == "dev" and t["scored_split"] == "test"
    assert t["n"] == 57 * 2 and t["n_available"] == 57 * 2  # the harness's group: every subject, weighted by size
    assert 0 <= t["score"] <= 1 and t["stderr"] is not None
    # one subject missing: named, not silently averaged over 56
    import shutil

    (tmp_path / "data" / "mmlu" / "virology" / "dev.jsonl").unlink()  # 0-shot needs no dev split ...
    prepare_tasks(HarnessSettings(tasks=["mmlu"], data_dir=str(tmp_path / "data")), tmp_path / "t0")
    with pytest.raises(HarnessUnavailable, match=r"missing: virology"):  # ... 5-shot does
        prepare_tasks(HarnessSettings(preset="leaderboard", tasks=["mmlu"], data_dir=str(tmp_path / "data")),
                      tmp_path / "t5")
    shutil.rmtree(tmp_path / "data" / "mmlu" / "anatomy")
    with pytest.raises(HarnessUnavailable, match=r"missing: anatomy"):
        prepare_tasks(HarnessSettings(tasks=["mmlu"], data_dir=str(tmp_path / "data")), tmp_path / "t")
