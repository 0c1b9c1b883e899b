"""PPO loop on the micro Llama: outputs, both memory modes, learning a reward, exact resume."""

from __future__ import annotations

import json
import math

import pytest

from simplesafe.errors import ConfigError, DataError
from simplesafe.train.ppo import batch_for_step, response_mask, run_ppo, train_ppo
from simplesafe.train.ppo_config import PPOStageConfig
from simplesafe.train.rewards import CompositeReward, RewardSource

QUESTIONS = [
    "Why is the sky blue?", "How do birds fly?", "What is a volcano?", "Why do we sleep?",
    "How does rain form?", "What makes a rainbow?", "Why do cats purr?", "How do plants eat?",
    "What is gravity?", "Why is the sea salty?", "How do magnets work?", "What is a cloud made of?",
]


@pytest.fixture(scope="module")
def rl_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rl")
    for split, qs in (("train", QUESTIONS), ("validation", QUESTIONS[:3]), ("test", QUESTIONS[3:6])):
        with open(d / f"{split}.jsonl", "w") as fh:
            for i, q in enumerate(qs):
                fh.write(json.dumps({"id": f"{split}-{i}", "source": "test", "question_id": f"q{i}", "prompt": q}) + "\n")
    return d


def fast_cfg(model_dir, rl_dir, **kw) -> PPOStageConfig:
    base = dict(policy=str(model_dir), data=[str(rl_dir)], steps=3, batch_size=4, mini_batch_size=2, ppo_epochs=2,
                max_new_tokens=12, lr=1e-3, save_every=2, seed=0,
                rewards=[{"kind": "simplicity"}, {"kind": "safety", "toxicity_backend": "profanity-check"}])
    base.update(kw)
    return PPOStageConfig(**base)


LOGGED = ("reward", "reward/simplicity", "reward/safety", "kl", "kl_coef", "entropy", "policy_loss", "value_loss",
          "clipfrac", "value_clipfrac", "approx_kl", "response_length", "eos_fraction")


def test_ppo_shared_mode_writes_logs_curves_and_a_loadable_policy(tiny_model_dir, rl_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "ppo"
    metrics = run_ppo(fast_cfg(tiny_model_dir, rl_dir), out, progress=False)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows:
        for key in LOGGED:
            assert math.isfinite(r[key]), (key, r)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # the adapters start as a no-op: policy == reference
    assert rows[-1]["kl"] != 0.0
    assert metrics["steps"] == 3 and metrics["memory_mode"] == "shared"
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "DONE").exists() and not (out / "checkpoint").exists()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model_dir)
    samples = (out / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 3 * 2 and "reward/simplicity" in json.loads(samples[0])
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in model.named_parameters())
    # a finished stage is skipped and returns its metrics
    assert run_ppo(fast_cfg(tiny_model_dir, rl_dir), out, progress=False) == json.loads((out / "metrics.json").read_text())


def test_ppo_separate_mode_from_a_lora_adapter_policy(tiny_model_dir, rl_dir, tmp_path):
    """Four models (policy, reference, value model, reward) and an SFT policy given as a LoRA adapter folder."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    peft_model.peft_config["default"].base_model_name_or_path = str(tiny_model_dir)
    adapter = tmp_path / "sft-adapter"
    peft_model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(adapter)

    out = tmp_path / "ppo"
    metrics = train_ppo(fast_cfg(adapter, rl_dir, memory_mode="separate", steps=2), out, progress=False)
    assert metrics["memory_mode"] == "separate"
    assert metrics["trainable_parameters"] > 1.5 * sum(p.numel() for p in base.parameters())  # policy + value model
    assert not (out / "adapter").exists()
    AutoModelForCausalLM.from_pretrained(str(out))


@pytest.mark.slow
def test_ppo_learns_to_answer_briefly_when_rewarded_for_it(tiny_model_dir, rl_dir, tmp_path):
    """A reward that only prefers short answers must shorten them: the test fails if learning is broken.

    The micro model is close to random (entropy ~5.4 nats/token), so the effect is modest;
    on it this run went from ~3.2 to ~2.1 words per answer (first vs last four steps). It runs in
    fp32: in bf16 the frozen base is stored in bf16 (the GPU rule), and with a hidden size of 64 the
    bf16 residual stream rounds away most of twelve steps' adapter updates (~3.4 to ~3.2 words).
    """
    brevity = CompositeReward([], custom={"brevity": (lambda qs, ans: [-len(a.split()) / 10 for a in ans], 1.0)})
    cfg = fast_cfg(tiny_model_dir, rl_dir, steps=12, batch_size=16, mini_batch_size=8, ppo_epochs=4, max_new_tokens=10,
                   lr=5e-3, init_kl_coef=0.01, precision="fp32")
    train_ppo(cfg, tmp_path / "ppo", progress=False, reward=brevity)
    rows = [json.loads(line) for line in (tmp_path / "ppo" / "log.jsonl").read_text().splitlines()]
    first = sum(r["response_words"] for r in rows[:4]) / 4
    last = sum(r["response_words"] for r in rows[-4:]) / 4
    assert last < 0.9 * first, (first, last)
    assert sum(r["reward"] for r in rows[-4:]) > sum(r["reward"] for r in rows[:4])


class _Interrupt(Exception):
    pass


def test_resumed_run_continues_the_same_run(tiny_model_dir, rl_dir, tmp_path):
    cfg = fast_cfg(tiny_model_dir, rl_dir, steps=5, save_every=2, adaptive_kl=True, target_kl=0.5, kl_horizon=20)
    straight = tmp_path / "straight"
    train_ppo(cfg, straight, progress=False)

    broken = tmp_path / "broken"

    def crash_after_step_3(row):
        if row["step"] == 2:  # three steps logged, the last checkpoint holds two
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_ppo(cfg, broken, progress=False, on_step=crash_after_step_3)
    assert (broken / "checkpoint" / "state.pt").exists()
    assert len((broken / "log.jsonl").read_text().splitlines()) == 3
    # a checkpoint from another config is refused rather than silently mixed in
    with pytest.raises(ConfigError, match="different config"):
        train_ppo(cfg.model_copy(update={"lr": 5e-4}), broken, progress=False)
    train_ppo(cfg, broken, progress=False)

    a = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (broken / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for key in LOGGED + ("response_words", "total_reward"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra["step"], key)
    assert a[-1]["kl_coef"] != cfg.init_kl_coef  # the adaptive controller state was resumed too


def test_response_mask_stops_after_the_first_eos():
    import torch

    mask, ended = response_mask(torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8]]), eos_id=2)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert ended.tolist() == [True, False]


def test_batches_cover_every_prompt_each_epoch_and_depend_only_on_step_and_seed():
    seen = [i for step in range(3) for i in batch_for_step(12, 4, step, seed=1)]
    assert sorted(seen) == list(range(12))
    assert batch_for_step(12, 4, 5, seed=1) == batch_for_step(12, 4, 5, seed=1)
    assert batch_for_step(12, 4, 0, seed=1) != batch_for_step(12, 4, 0, seed=2)
    assert len(batch_for_step(5, 8, 0, seed=0)) == 8  # a batch may wrap into the next epoch


def test_bad_inputs_are_named(tiny_model_dir, rl_dir, tmp_path):
    with pytest.raises(ConfigError, match="mini_batch_size"):
        train_ppo(fast_cfg(tiny_model_dir, rl_dir, mini_batch_size=8), tmp_path / "a", progress=False)
    bad = tmp_path / "rl"
    bad.mkdir()
    (bad / "train.jsonl").write_text(json.dumps({"id": "x", "prompt": "ok?"}) + "\n" + json.dumps({"id": "y"}) + "\n")
    with pytest.raises(DataError, match=r"train.jsonl, line 2, field 'prompt'"):
        train_ppo(fast_cfg(tiny_model_dir, bad), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError):
        train_ppo(fast_cfg(tiny_model_dir, rl_dir, max_new_tokens=127), tmp_path / "c", progress=False)
    with pytest.raises(ValueError):
        RewardSource(kind="rm")


def test_ppo_value_lora_qlora_base_and_checkpointing(tiny_model_dir, rl_dir, tmp_path):
    """Shared mode with an NF4 base, the value function's own LoRA adapter, checkpointing, chunked sampling and
    scoring: it trains, both adapters learn, the policy is merged carefully, and the reward model is released."""
    import gc
    import weakref

    import torch

    from simplesafe.train.merge import adapter_record
    from simplesafe.train.ppo_models import PPOModels

    cfg = fast_cfg(tiny_model_dir, rl_dir, steps=2, method="qlora", value_model="lora", gradient_checkpointing=True,
                   generation_batch_size=2, forward_batch_size=1, precision="bf16")
    models = PPOModels(cfg, "bf16", torch.device("cpu"))
    names = {n for n, p in models.trainable.named_parameters() if p.requires_grad}
    assert any(".default." in n for n in names) and any(".value." in n for n in names)
    seqs = torch.randint(0, 100, (2, 10))
    attn = torch.ones_like(seqs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = models.policy_logits(seqs, attn, 4, 1.0)
    (logits.float() ** 2).mean().backward()
    with models.value_adapter():  # its backward inside: checkpointing recomputes with the value adapter
        with torch.autocast("cpu", dtype=torch.bfloat16):
            values = models.values(seqs, attn, 4)
        values.float().sum().backward()
    grads = {n for n, p in models.trainable.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any("lora_B.value." in n for n in grads)  # the value adapter gets gradients
    assert any("lora_B.default." in n for n in grads)  # and the policy's
    del models

    out = tmp_path / "ppo"
    metrics = train_ppo(cfg, out, progress=False)
    assert metrics["steps"] == 2 and metrics["precision"] == "bf16"
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["value_loss"]) and math.isfinite(r["policy_loss"]) for r in rows)
    rec = adapter_record(out / "adapter")
    assert rec["method"] == "qlora" and rec["quantized_from"] == "bfloat16"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in model.named_parameters())

    # the run's reward models do not outlive it
    from simplesafe.train.rewards import CompositeReward

    refs = []
    real_init = CompositeReward.__init__

    def tracking_init(self, *a, **kw):
        real_init(self, *a, **kw)
        refs.append(weakref.ref(self))

    CompositeReward.__init__ = tracking_init
    try:
        train_ppo(fast_cfg(tiny_model_dir, rl_dir, steps=1), tmp_path / "ppo2", progress=False)
    finally:
        CompositeReward.__init__ = real_init
    gc.collect()
    assert refs and all(r() is None or not r()._scorers for r in refs)
