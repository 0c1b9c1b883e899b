"""SIGKILL during training, then rerun; and tiny-model determinism.

- PPO (a subprocess) is killed once a seeded random number of steps is logged; rerun, it
  resumes from ``checkpoint/state.pt`` and its per-step log equals an uninterrupted run's.
- SFT through `simplesafe train sft` (TRL) is killed after its first epoch checkpoint;
  rerun, it resumes from that checkpoint and ends with the same losses as an
  uninterrupted run.
- Two uninterrupted SFT runs with the same seed give the same losses (same machine).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SEED = 20261124
QUESTIONS = ["Why is the sky blue?", "How do birds fly?", "What is a volcano?", "Why do we sleep?",
             "How does rain form?", "What makes a rainbow?", "Why do cats purr?", "How do plants eat?"]


def kill_when(proc: subprocess.Popen, ready, timeout: float = 500) -> bool:
    """SIGKILL ``proc`` (its process group) as soon as ``ready()``; False if it ended first."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return True
        time.sleep(0.01)
    proc.communicate()
    return False


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


@pytest.fixture(scope="module")
def rl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rl")
    for split, qs in (("train", QUESTIONS), ("validation", QUESTIONS[:2]), ("test", QUESTIONS[2:4])):
        with open(d / f"{split}.jsonl", "w") as fh:
            for i, q in enumerate(qs):
                fh.write(json.dumps({"id": f"{split}-{i}", "source": "t", "question_id": f"q{i}", "prompt": q}) + "\n")
    return d


@pytest.mark.slow
def test_ppo_killed_mid_run_resumes_and_matches(tiny_model_dir, rl_dir, tmp_path, caplog):
    import logging

    from simplesafe.train.ppo import run_ppo
    from simplesafe.train.ppo_config import PPOStageConfig

    cfg = PPOStageConfig(policy=str(tiny_model_dir), data=[str(rl_dir)], steps=6, batch_size=4, mini_batch_size=2,
                         ppo_epochs=1, max_new_tokens=8, lr=1e-3, save_every=1, seed=0,
                         rewards=[{"kind": "simplicity"}, {"kind": "safety", "toxicity_backend": "profanity-check"}])
    straight = tmp_path / "straight"
    run_ppo(cfg, straight, progress=False)

    broken = tmp_path / "broken"
    cfg_file = tmp_path / "ppo.json"
    cfg_file.write_text(cfg.model_dump_json())
    script = ("import json, sys\nfrom simplesafe.train.ppo import run_ppo\nfrom simplesafe.train.ppo_config import PPOStageConfig\n"
              "cfg = PPOStageConfig(**json.loads(open(sys.argv[1]).read()))\nrun_ppo(cfg, sys.argv[2], progress=False)\n")
    kill_at = random.Random(SEED).randint(1, 4)  # steps logged before the kill
    proc = subprocess.Popen([sys.executable, "-c", script, str(cfg_file), str(broken)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    assert kill_when(proc, lambda: len(lines(broken / "log.jsonl")) >= kill_at), proc.stderr
    assert proc.returncode == -signal.SIGKILL and not (broken / "DONE").exists()
    assert (broken / "checkpoint").exists()

    caplog.set_level(logging.INFO, logger="simplesafe.train.ppo")
    run_ppo(cfg, broken, progress=False)  # the rerun resumes
    assert any("resuming PPO at step" in r.getMessage() for r in caplog.records)
    assert (broken / "DONE").exists()
    a, b = lines(straight / "log.jsonl"), lines(broken / "log.jsonl")
    assert [r["step"] for r in b] == list(range(6))
    for ra, rb in zip(a, b):
        for key in ("reward", "kl", "policy_loss", "value_loss", "response_length"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra["step"], key)
    assert not [p for p in broken.rglob("*.tmp") if not p.name.startswith(".")]


def _sft_data(root: Path) -> Path:
    from simplesafe.io import write_rows

    rows = [{"prompt": f"Question {i}: {q}", "completion": f"A short simple answer number {i} about it."}
            for i, q in enumerate(QUESTIONS * 4)]
    write_rows(root / "train.jsonl", rows)
    write_rows(root / "validation.jsonl", rows[:6])
    return root


def _sft_cmd(data: Path, model: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "simplesafe.cli", "train", "sft", f"data={data}", f"model={model}", f"out={out}",
            "epochs=3", "batch_size=8", "grad_accum=1", "lr=3e-3", "warmup_ratio=0.0", "early_stopping_patience=null"]


@pytest.mark.slow
def test_sft_killed_after_a_checkpoint_resumes_and_same_seed_same_loss(tiny_model_dir, tmp_path):
    data = _sft_data(tmp_path / "data")
    runs = {}
    for name in ("a", "b"):  # determinism: two uninterrupted runs
        out = tmp_path / name / "sft"
        res = subprocess.run(_sft_cmd(data, tiny_model_dir, out), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[name] = json.loads((out / "metrics.json").read_text())
    assert runs["a"]["eval_loss_per_epoch"] == runs["b"]["eval_loss_per_epoch"]
    assert runs["a"]["train_loss_mean"] == runs["b"]["train_loss_mean"]
    assert len(runs["a"]["eval_loss_per_epoch"]) == 3

    out = tmp_path / "killed" / "sft"
    proc = subprocess.Popen(_sft_cmd(data, tiny_model_dir, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    ckpts = out / "checkpoints"

    def first_checkpoint_complete():
        # the trainer writes trainer_state.json last: the checkpoint is complete then
        return any((c / "trainer_state.json").exists() for c in ckpts.glob("checkpoint-*")) if ckpts.is_dir() else False

    assert kill_when(proc, first_checkpoint_complete)
    assert proc.returncode == -signal.SIGKILL and not (out / "DONE").exists()
    res = subprocess.run(_sft_cmd(data, tiny_model_dir, out), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming SFT from" in (out / "log.txt").read_text()
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["steps"] == runs["a"]["steps"]
    assert resumed["eval_loss_per_epoch"][-1] == pytest.approx(runs["a"]["eval_loss_per_epoch"][-1], rel=1e-4)
    assert resumed["best_eval_loss"] == pytest.approx(runs["a"]["best_eval_loss"], rel=1e-4)
