"""PPO for language models (the report's RLHF step 3), as one loop you can read top to bottom.

    simplesafe train ppo recipes/demo.yaml policy=runs/demo/sft data=runs/demo/data/rl out=runs/demo/ppo  # its 'ppo' section
    simplesafe train ppo policy=runs/demo/sft data=runs/demo/data/rl out=runs/demo/ppo steps=12 \
        batch_size=8 max_new_tokens=48 lr=3e-4
    python -m simplesafe.train.ppo policy=/path/to/sft data=/path/to/rl out=/tmp/ppo   # same, no CLI

TRL 1.x has no PPO trainer, so this is our own, following Ziegler et al. (2019,
"Fine-Tuning Language Models from Human Preferences") and Ouyang et al. (2022,
InstructGPT) on top of PPO-clip (Schulman et al., 2017). One step:

1. Rollout: ``batch_size`` prompts (``### Human: {question} ### Assistant:``, left-padded)
   are sampled from the policy; a response ends at its first EOS.
2. Score: the composite reward (:mod:`simplesafe.train.rewards`) of each decoded response,
   every source logged on its own.
3. Per-token reward: ``-beta * KL_t(policy || reference)`` on every response token and the
   score on the last one; ``beta`` is fixed or follows Ziegler's adaptive controller.
4. GAE advantages and value targets from the value head's estimates; advantages whitened.
5. ``ppo_epochs`` passes over shuffled minibatches of the rollout minimising the clipped
   policy loss + ``vf_coef`` x clipped value loss (- ``ent_coef`` x entropy).

The math lives in :mod:`simplesafe.train.losses.ppo`; this file is only the loop.

Memory modes (``memory_mode``: ``shared``, one frozen SFT trunk with LoRA adapters, or ``separate``,
the textbook four models) and how memory is kept down at scale: :mod:`simplesafe.train.ppo_models`.
Settings: :class:`~simplesafe.train.ppo_config.PPOStageConfig`. Prompts and the SFT policy are
loaded as every RL stage loads them (:mod:`simplesafe.train.rollout`). The over-optimisation
probe (``probe``: held-out judges on fixed prompts every few steps, ``probe.jsonl``):
:mod:`simplesafe.train.probe`.

Outputs in ``out``: ``log.jsonl`` (one row per step: reward and every reward source, KL,
KL coefficient, entropy, policy/value loss, clip fractions, response length),
``samples.jsonl`` (a few responses per step), ``curves.png`` (reward and KL),
``metrics.json``, and the trained policy as an ordinary Hugging Face model folder (LoRA
merged into the weights; in ``shared`` mode the adapter alone is also kept in
``adapter/``, its ``base_model_name_or_path`` naming the SFT policy). Every
``save_every`` steps ``checkpoint/state.pt`` (trainable weights, optimizer, RNG state,
step, KL coefficient) is written atomically; an interrupted run started again with the
same config continues from it and logs the same numbers it would have logged unbroken.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from simplesafe.atomic import atomic_path, write_json
from simplesafe.errors import ConfigError
from simplesafe.train.curves import plot_curves
from simplesafe.train.ppo_config import PPOStageConfig
from simplesafe.train.ppo_models import PPOModels, save_policy
from simplesafe.train.probe import Probe
from simplesafe.train.rollout import fit_prompt, load_ppo_tokenizer, load_prompts, prompt_token_budget

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- batches

def batch_for_step(n_prompts: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Prompt indices of a step: epochs of seeded permutations, a pure function of (step, seed) for exact resume."""
    import numpy as np

    out: list[int] = []
    start = step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n_prompts)
        perm = np.random.default_rng([seed, epoch]).permutation(n_prompts)
        out.extend(int(i) for i in perm[offset: offset + batch_size - len(out)])
    return out


def response_mask(responses, eos_id: int):
    """1 up to and including the first EOS of each response (the whole row when there is none)."""
    is_eos = responses == eos_id
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return (~after_eos).long(), is_eos.any(1)


# ----------------------------------------------------------------------------- the loop

def train_ppo(cfg: PPOStageConfig, out_dir: str | Path, progress: bool = True,
              on_step: Callable[[dict], None] | None = None, reward=None) -> dict:
    """Run (or resume) PPO into ``out_dir``; returns the headline metrics (also in ``metrics.json``).

    ``on_step(row)`` is called after each logged step (tests use it to interrupt a run);
    ``reward`` overrides ``cfg.rewards`` with a ready :class:`~simplesafe.train.rewards.CompositeReward`.
    """
    import torch
    from tqdm.auto import tqdm

    from simplesafe.io import append_jsonl, read_jsonl_tolerant, write_rows
    from simplesafe.llm.sampling import SamplingParams, sample
    from simplesafe.models.load import resolve_device, resolve_precision
    from simplesafe.runs import set_seed
    from simplesafe.train.losses.ppo import (
        adaptive_kl_coef, clipped_policy_loss, clipped_value_loss, entropy_from_logits, gae_advantages,
        kl_estimate, kl_penalized_rewards, masked_mean, token_logprobs, whiten,
    )
    from simplesafe.train.rewards import CompositeReward

    if cfg.mini_batch_size > cfg.batch_size:
        raise ConfigError(f"mini_batch_size ({cfg.mini_batch_size}) is larger than batch_size ({cfg.batch_size})")
    if cfg.whiten_advantages and cfg.batch_size < 2:
        raise ConfigError("whiten_advantages needs batch_size >= 2")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    set_seed(cfg.seed)
    device = torch.device(resolve_device("auto"))
    precision = resolve_precision(cfg.precision, device.type)

    prompts = load_prompts(cfg)
    tokenizer = load_ppo_tokenizer(cfg.policy)
    own_reward = reward is None
    reward = reward or CompositeReward(cfg.rewards)
    models = PPOModels(cfg, precision, device)
    max_prompt_tokens = prompt_token_budget(cfg, models.config)
    prompt_texts = [fit_prompt(p["question"], cfg.template, tokenizer, max_prompt_tokens) for p in prompts]
    params = models.parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # fp16: loss scaling
    n_trainable = sum(p.numel() for p in params)

    # ---- resume
    ckpt_path = out_dir / "checkpoint" / "state.pt"
    log_path, samples_path = out_dir / "log.jsonl", out_dir / "samples.jsonl"
    start_step, beta = 0, cfg.init_kl_coef
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["fingerprint"] != cfg.fingerprint():
            raise ConfigError(f"{ckpt_path} was written with a different config; rerun with --force to start over")
        models.load_trainable_state(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"])
        start_step, beta = int(state["step"]), float(state["beta"])
        log.info("resuming PPO at step %d from %s", start_step, ckpt_path)
    # the logs keep exactly the steps the model state has seen
    for path in (log_path, samples_path):
        if path.exists():
            write_rows(path, [r for r in read_jsonl_tolerant(path) if r.get("step", 0) < start_step])

    def save_checkpoint(step: int) -> None:
        state = {"step": step, "beta": beta, "fingerprint": cfg.fingerprint(), "trainable": models.trainable_state(),
                 "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
        if scaler.is_enabled():
            state["scaler"] = scaler.state_dict()
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None)

    gen_bs = cfg.generation_batch_size or cfg.batch_size
    fwd_bs = cfg.forward_batch_size or cfg.mini_batch_size

    rollout_params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                    top_k=0)
    probe = Probe(cfg, tokenizer, reward, max_prompt_tokens, out_dir / "probe.jsonl", device, gen_bs) \
        if cfg.probe.prompts else None
    if probe is not None:
        probe.truncate(start_step)
    bar = tqdm(total=cfg.steps, initial=start_step, disable=not progress, desc="ppo", unit="step")
    for step in range(start_step, cfg.steps):
        if probe is not None and step % cfg.probe.every == 0:
            with autocast():
                probe.run(models.policy, step)
        t0 = time.time()
        idx = batch_for_step(len(prompts), cfg.batch_size, step, cfg.seed)
        enc = tokenizer([prompt_texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_prompt_tokens, add_special_tokens=cfg.template != "chat").to(device)
        P = enc["input_ids"].shape[1]

        # 1. rollout, generation_batch_size prompts at a time; every row draws from its own seed
        row_seeds = [(cfg.seed * 1_000_003 + step) * 10_007 + r for r in range(len(idx))]
        chunks = []
        with torch.no_grad(), autocast():
            for c in range(0, len(idx), gen_bs):
                chunks.append(sample(models.policy, enc["input_ids"][c: c + gen_bs],
                                     enc["attention_mask"][c: c + gen_bs], rollout_params, [eos], pad,
                                     row_seeds=row_seeds[c: c + gen_bs]).tokens)
        width = max(t.shape[1] for t in chunks)
        responses = torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=pad) for t in chunks])
        del chunks
        seqs = torch.cat([enc["input_ids"], responses], dim=1)
        mask, ended = response_mask(responses, eos)
        attn = torch.cat([enc["attention_mask"], mask], dim=1)
        texts = tokenizer.batch_decode(responses * mask + pad * (1 - mask), skip_special_tokens=True)
        texts = [t.strip() for t in texts]

        # 2. score
        scored = reward.score([prompts[i]["question"] for i in idx], texts)
        scores = torch.tensor(scored.total, dtype=torch.float32, device=device)
        if cfg.missing_eos_penalty is not None:
            scores = scores - cfg.missing_eos_penalty * (~ended).float()

        # 3. log-probs, values, reference (forward_batch_size responses at a time, per-token numbers kept);
        #    per-token KL-penalised rewards
        old_logp, old_values, ref_logp = [], [], []
        with torch.no_grad():
            for c in range(0, len(idx), fwd_bs):
                sl = slice(c, c + fwd_bs)
                with autocast():
                    logits, values = models.forward(seqs[sl], attn[sl], P, cfg.temperature)
                old_logp.append(token_logprobs(logits, responses[sl]))
                old_values.append(values.float())
                del logits
                with autocast():
                    logits = models.reference_logits(seqs[sl], attn[sl], P, cfg.temperature)
                ref_logp.append(token_logprobs(logits, responses[sl]))
                del logits
            old_logp, old_values, ref_logp = torch.cat(old_logp), torch.cat(old_values), torch.cat(ref_logp)
            kl = kl_estimate(old_logp, ref_logp, cfg.kl_estimator) * mask
            rewards = kl_penalized_rewards(scores, kl, mask, beta)
            # 4. advantages
            advantages, returns = gae_advantages(rewards, old_values, mask, cfg.gamma, cfg.lam)
            if cfg.whiten_advantages:
                advantages = whiten(advantages, mask)

        # 5. PPO epochs over minibatches
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "clipfrac",
                                                          "value_clipfrac", "approx_kl", "ratio")}
        shuffle = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(cfg.batch_size, generator=shuffle)
            for s in range(0, cfg.batch_size, cfg.mini_batch_size):
                mb = perm[s: s + cfg.mini_batch_size].to(device)
                m = mask[mb]
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    logits, hidden = models.policy_logits(seqs[mb], attn[mb], P, cfg.temperature)
                logp = token_logprobs(logits, responses[mb])
                pg_loss, pg_stats = clipped_policy_loss(logp, old_logp[mb], advantages[mb], m, cfg.cliprange)
                # without an entropy bonus the entropy is only logged: no graph (and no memory) for it
                entropy = masked_mean(entropy_from_logits(logits if cfg.ent_coef else logits.detach()), m)
                if models.value_kind == "lora":
                    # the value function has its own adapter and shares no trainable weight with the policy: one
                    # backward pass per adapter, each with its adapter active (checkpointing recomputes with it)
                    scaler.scale(pg_loss - cfg.ent_coef * entropy).backward()
                    del logits, hidden
                    with models.value_adapter():
                        with autocast():
                            values = models.values(seqs[mb], attn[mb], P)
                        vf_loss, vf_stats = clipped_value_loss(values, old_values[mb], returns[mb], m,
                                                               cfg.cliprange_value)
                        scaler.scale(cfg.vf_coef * vf_loss).backward()
                else:
                    with autocast():
                        values = models.values(seqs[mb], attn[mb], P, hidden)
                    vf_loss, vf_stats = clipped_value_loss(values, old_values[mb], returns[mb], m, cfg.cliprange_value)
                    scaler.scale(pg_loss + cfg.vf_coef * vf_loss - cfg.ent_coef * entropy).backward()
                    del logits, hidden
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                del values
                for key, value in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("entropy", entropy),
                                   ("clipfrac", pg_stats["clipfrac"]), ("value_clipfrac", vf_stats["clipfrac"]),
                                   ("approx_kl", pg_stats["approx_kl"]), ("ratio", pg_stats["ratio"])):
                    stats[key].append(float(value.detach()))

        # 6. log, adapt beta, checkpoint
        kl_per_response = kl.sum(1)
        lengths = mask.sum(1).float()
        row = {"step": step, "reward": float(scores.mean()), **scored.means("reward/"),
               "kl": float(kl_per_response.mean()), "kl_coef": beta,
               "non_score_reward": float(-beta * kl_per_response.mean()),
               "total_reward": float((scores - beta * kl_per_response).mean()),
               **{k: sum(v) / len(v) for k, v in stats.items()},
               "response_length": float(lengths.mean()), "response_words": sum(len(t.split()) for t in texts) / len(texts),
               "eos_fraction": float(ended.float().mean()), "seconds": round(time.time() - t0, 3)}
        append_jsonl(log_path, row)
        for i in range(min(cfg.n_samples_logged, len(texts))):
            append_jsonl(samples_path, {"step": step, "id": prompts[idx[i]]["id"], "question": prompts[idx[i]]["question"],
                                        "response": texts[i], "reward": float(scored.total[i]),
                                        **{f"reward/{k}": float(v[i]) for k, v in scored.parts.items()}})
        if cfg.adaptive_kl:
            beta = adaptive_kl_coef(beta, row["kl"], cfg.target_kl, cfg.kl_horizon, cfg.batch_size)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(step + 1)
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.3f}", len=f"{row['response_length']:.0f}")
        if on_step is not None:
            on_step(row)
    bar.close()
    if probe is not None:
        with autocast():
            probe.run(models.policy, cfg.steps)

    # ---- outputs
    history = read_jsonl_tolerant(log_path)
    plot_curves(history, out_dir / "curves.png")
    if own_reward:
        reward.close()  # no reward model outlives the stage
    optimizer = None
    save_policy(models, tokenizer, cfg, out_dir, precision)
    models = None
    from simplesafe.models.load import release_memory

    release_memory()
    if not cfg.keep_checkpoint:
        shutil.rmtree(out_dir / "checkpoint", ignore_errors=True)
    metrics = summarize(history, cfg, n_trainable, time.time() - t_start)
    metrics["precision"] = precision
    write_json(out_dir / "metrics.json", metrics)
    return metrics


def _first_last(history: list[dict], key: str, k: int) -> tuple[float | None, float | None]:
    vals = [h[key] for h in history if key in h]
    if not vals:
        return None, None
    k = max(1, min(k, len(vals) // 2 or 1))
    return sum(vals[:k]) / k, sum(vals[-k:]) / k


def summarize(history: list[dict], cfg: PPOStageConfig, n_trainable: int, seconds: float) -> dict:
    """Headline numbers: each logged series averaged over its first and last few steps."""
    k = max(1, len(history) // 4)
    metrics: dict = {"steps": len(history), "memory_mode": cfg.memory_mode, "trainable_parameters": n_trainable,
                     "seconds": round(seconds, 1), "seconds_per_step": round(sum(h["seconds"] for h in history)
                                                                             / max(1, len(history)), 2),
                     "averaged_over_steps": k}
    keys = [key for key in (history[0] if history else {}) if key.startswith("reward")] + [
        "kl", "kl_coef", "entropy", "response_length", "response_words", "eos_fraction", "policy_loss", "value_loss"]
    for key in keys:
        first, last = _first_last(history, key, k)
        metrics[f"{key}_first"], metrics[f"{key}_last"] = first, last
    return metrics
def run_ppo(cfg: PPOStageConfig, out_dir: str | Path, force: bool = False, progress: bool = True) -> dict:
    """The ``train ppo`` stage: a finished stage is skipped; an interrupted one resumes from its checkpoint."""
    from simplesafe.runs import stage
    from simplesafe.train.common import split_paths

    out_dir = Path(out_dir)
    if force:
        for name in ("checkpoint", "log.jsonl", "samples.jsonl"):
            p = out_dir / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    inputs = split_paths(cfg.data, "train") if cfg.data else []
    with stage(out_dir.parent, out_dir.name, cfg, inputs=inputs, seed=cfg.seed, force=force) as st:
        if st.skipped:
            return json.loads((out_dir / "metrics.json").read_text())
        return train_ppo(cfg, out_dir, progress=progress)


if __name__ == "__main__":  # python -m simplesafe.train.ppo key=value ...
    from simplesafe.config import load_config

    logging.basicConfig(level=logging.INFO)
    _cfg = load_config(PPOStageConfig, None, sys.argv[1:])
    print(json.dumps(run_ppo(_cfg, _cfg.out or "runs/ppo"), indent=2))
