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

Memory modes (``memory_mode``):

- ``shared`` (default): one frozen copy of the SFT weights, in the compute dtype (``method:
  lora``) or NF4 (``method: qlora``, Dettmers et al., 2023). The policy is that copy plus LoRA
  adapters (peft); the reference is the same model with the adapters switched off
  (``model.disable_adapter()``); the value model shares the trunk too: a linear head on the
  policy's last hidden state (``value_model: head``), or its own LoRA adapter on the same frozen
  trunk plus a head (``value_model: lora``: one more trunk pass, no coupling between the policy's
  and the value function's features). Trainable: adapters + head.
- ``separate``: the textbook four models: a fully trained policy, a frozen reference copy,
  a fully trained value model (the SFT trunk + a linear head), and the reward model(s) of
  the composite reward. ``bench/ppo_memory.py`` measures both.

Memory at scale (``simplesafe plan`` estimates it): rollouts are sampled ``generation_batch_size``
prompts at a time (the KV cache grows with it), the no-gradient pass that scores the rollout
(old log-probabilities, values, reference log-probabilities) runs ``forward_batch_size``
responses at a time and keeps only per-token numbers, logits are computed for response positions
only (the LM head on the trunk's last hidden state, never ``output_hidden_states`` over every
layer), and ``gradient_checkpointing`` recomputes the trunk's activations in the backward pass.
Frozen weights are stored in the compute dtype, trainable ones in fp32
(:func:`simplesafe.models.load.resolve_precision`; fp16 scales the loss with
``torch.amp.GradScaler``).

Over-optimisation probe (``probe``): every ``probe.every`` steps the policy answers a fixed
set of held-out questions (the same seed each time) and the answers are scored by the
training reward and by the evaluation's held-out judges, into ``probe.jsonl``. The report
plots them side by side per step: a training reward that keeps rising while held-out
judges stall or fall is reward over-optimisation (Gao et al., 2022; AlpacaFarm, Dubois et
al., 2023, Fig. 12).

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

import hashlib
import json
import logging
import math
import shutil
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field, model_validator

from simplesafe.atomic import atomic_path, write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, DataError
from simplesafe.train.common import REPORT_TEMPLATE, DataConfigMixin, LoraSettings, Precision
from simplesafe.train.rewards import RewardSource, default_sources

log = logging.getLogger(__name__)


class ProbeConfig(StageConfig):
    """Held-out judges on fixed prompts during training (see the module docstring)."""

    prompts: str | None = Field(None, description="prompt file (rows with `prompt`); none = no probe")
    n: int = Field(16, ge=1, description="prompts used")
    every: int = Field(4, ge=1, description="probe every N steps (and before the first and after the last)")
    max_new_tokens: int | None = Field(None, ge=1, description="default: the rollout's max_new_tokens")
    temperature: float = Field(0.7, ge=0)
    judges: list[dict] = Field(default_factory=list, description="simplesafe.eval.judges.JudgeSpec entries")


class PPOStageConfig(DataConfigMixin, StageConfig):
    """PPO on RL prompts. Defaults follow Ziegler et al. (2019) / TRL's former PPOTrainer where the report gives none."""

    policy: str = Field("embedded:tiny", description="SFT model folder (full model, or a LoRA adapter folder "
                        "with adapter_config.json, merged into its base on load); also the KL reference")
    out: str | None = Field(None, description="output folder (the CLI's default: runs/ppo)")
    template: str = Field(REPORT_TEMPLATE, description="prompt with {question}, or 'chat' for the tokenizer's template")
    prompt_field: str = Field("prompt", description="row field holding the question")
    max_prompts: int | None = Field(None, ge=1, description="use only the first N training prompts (demo, tests)")
    max_prompt_tokens: int = Field(256, ge=4, description="longer questions are cut at the end to fit")
    rewards: list[RewardSource] = Field(default_factory=default_sources, description="composite reward sources")
    memory_mode: Literal["shared", "separate"] = Field("shared", description="shared: LoRA policy, adapter-off "
                                                       "reference, value head on the policy; separate: four models")
    method: Literal["lora", "qlora"] = Field("lora", description="shared mode: the frozen SFT weights in the compute "
                                             "dtype (lora) or NF4 (qlora)")
    value_model: Literal["head", "lora"] = Field("head", description="shared mode: a linear head on the policy's last "
                                                 "hidden state, or its own LoRA adapter on the shared trunk + a head")
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(r=16, alpha=32, dropout=0.0),
                               description="shared mode: the policy's adapters (and the value adapter's)")
    gradient_checkpointing: bool = Field(False, description="recompute the trunk's activations in the backward pass")
    generation_batch_size: int | None = Field(None, ge=1, description="prompts sampled together in a rollout (the KV "
                                              "cache grows with it); default: batch_size")
    forward_batch_size: int | None = Field(None, ge=1, description="responses per no-gradient scoring pass (old "
                                           "log-probs, values, reference); default: mini_batch_size")
    steps: int = Field(20, ge=1, description="PPO iterations (one rollout batch + its updates each)")
    batch_size: int = Field(16, ge=1, description="prompts (= responses) per rollout")
    mini_batch_size: int = Field(8, ge=1, description="responses per gradient step")
    ppo_epochs: int = Field(4, ge=1, description="passes over each rollout batch")
    lr: float = Field(1.41e-5, gt=0, description="AdamW learning rate (constant)")
    max_grad_norm: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(128, ge=1, description="response length cap (tokens)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (log-probs use the same one)")
    top_p: float = Field(1.0, gt=0, le=1.0)
    init_kl_coef: float = Field(0.05, ge=0, description="beta: weight of the per-token KL penalty")
    adaptive_kl: bool = Field(False, description="adapt beta towards target_kl (Ziegler et al., 2019)")
    target_kl: float = Field(6.0, gt=0, description="adaptive controller: target KL per response (nats)")
    kl_horizon: float = Field(10000, gt=0, description="adaptive controller: horizon (responses)")
    kl_estimator: Literal["k1", "k2", "k3", "abs"] = Field("k1", description="per-token KL estimator in the reward")
    gamma: float = Field(1.0, ge=0, le=1)
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda")
    cliprange: float = Field(0.2, gt=0, description="policy ratio clip epsilon")
    cliprange_value: float = Field(0.2, gt=0, description="value clip range")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")
    ent_coef: float = Field(0.0, ge=0, description="weight of the entropy bonus")
    whiten_advantages: bool = True
    missing_eos_penalty: float | None = Field(None, ge=0, description="subtract from the score of responses "
                                              "that hit max_new_tokens without EOS")
    save_every: int = Field(5, ge=1, description="checkpoint every N steps (and at the end)")
    keep_checkpoint: bool = Field(False, description="keep checkpoint/ after the run finishes")
    n_samples_logged: int = Field(2, ge=0, description="responses per step written to samples.jsonl")
    precision: Precision = Field("auto", description="compute precision: auto = bf16 on a GPU with bf16 or a "
                                 "bf16-capable CPU, fp16 (loss scaling) on other GPUs, else fp32")
    probe: ProbeConfig = Field(default_factory=ProbeConfig, description="held-out judges on fixed prompts per step")
    seed: int = 0

    @model_validator(mode="after")
    def _modes(self):
        if self.memory_mode == "separate" and (self.method != "lora" or self.value_model != "head"):
            raise ValueError("method and value_model are shared-mode settings; separate mode trains a full policy "
                             "and a full value model (leave method: lora, value_model: head)")
        return self

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed (everything that changes the numbers)."""
        data = self.model_dump(mode="json", exclude={"out", "save_every", "keep_checkpoint", "n_samples_logged", "probe"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- models

def load_sft_policy(path: str, dtype: str, quantization: str = "none", device: str | None = None):
    """The SFT model as a plain causal LM; a LoRA adapter folder is merged into its base (simple merge).

    ``quantization: nf4`` loads the weights in NF4 on ``device`` (a merged model folder only).
    """
    from simplesafe.models.load import load_causal_lm

    p = Path(path).expanduser()
    if (p / "adapter_config.json").exists():
        if quantization != "none":
            raise ConfigError(f"{p} is a LoRA adapter folder; PPO with method: qlora needs a merged model folder "
                              "(SFT writes one next to its adapter/)")
        from simplesafe.train.merge import merge_adapter

        base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ConfigError(f"{p}/adapter_config.json has no base_model_name_or_path; pass the merged model instead")
        return merge_adapter(base, p, None, mode="simple", dtype=dtype)
    if quantization != "none":
        return load_causal_lm(path, dtype=dtype, quantization=quantization,
                              device_map={"": str(device)} if device is not None and str(device) != "cpu" else None)
    return load_causal_lm(path, dtype=dtype)


def load_ppo_tokenizer(path: str):
    from simplesafe.models.load import load_tokenizer

    p = Path(path).expanduser()
    if (p / "adapter_config.json").exists() and not (p / "tokenizer_config.json").exists():
        path = json.loads((p / "adapter_config.json").read_text())["base_model_name_or_path"]
    tok = load_tokenizer(path, padding_side="left")
    tok.truncation_side = "left"
    if tok.eos_token_id is None:
        raise ConfigError(f"the tokenizer of '{path}' has no EOS token; PPO needs one to end responses")
    return tok


def _no_dropout(model) -> None:
    """Zero every dropout, so train mode (which gradient checkpointing needs) computes what eval mode does:
    log-probabilities must be the same in the rollout and in the update."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cfg = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop", "dropout"):
        if cfg is not None and isinstance(getattr(cfg, key, None), float):
            setattr(cfg, key, 0.0)


class PPOModels:
    """The policy, reference and value function behind one interface for the loop.

    ``forward(seqs, attn, P, temperature)`` returns response-token logits and values;
    ``reference_logits`` runs the frozen reference. The modes differ only here. Logits come
    from the LM head applied to the trunk's last hidden state at response positions only.
    """

    def __init__(self, cfg: PPOStageConfig, precision: str, device):
        import torch

        from simplesafe.models.load import precision_dtype

        self.mode = cfg.memory_mode
        self.value_kind = cfg.value_model if self.mode == "shared" else "trunk"
        self.device = device
        compute = precision_dtype(precision)
        if self.mode == "shared":
            from peft import get_peft_model

            from simplesafe.train.common import disable_bnb_cpu_packing, peft_config

            quantization = "nf4" if cfg.method == "qlora" else "none"
            base = load_sft_policy(cfg.policy, compute, quantization=quantization, device=device)
            if quantization != "none" and getattr(device, "type", str(device)) == "cpu":
                disable_bnb_cpu_packing(base)
            base.requires_grad_(False)
            self.config = base.config
            if cfg.gradient_checkpointing:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.policy = get_peft_model(base, peft_config(cfg.lora))
            if self.value_kind == "lora":
                self.policy.add_adapter("value", peft_config(cfg.lora))
                self.policy.set_adapter("default")
                for name, prm in self.policy.named_parameters():  # set_adapter froze the inactive one
                    if ".value." in name and "lora_" in name:
                        prm.requires_grad_(True)
            self.reference = None
            self.value_trunk = None
            if quantization == "none":
                self.policy.to(device)
        else:
            # trainable weights in fp32 (autocast computes in the compute dtype); the frozen reference in it
            base = load_sft_policy(cfg.policy, "float32")
            self.config = base.config
            # an adapter merged by peft comes back frozen: a fully trained policy needs its gradients on
            self.policy = base.requires_grad_(True).to(device)
            self.reference = load_sft_policy(cfg.policy, compute).requires_grad_(False).to(device)
            # the value model: a second copy of the SFT trunk (no LM head), trained with its own head
            self.value_trunk = load_sft_policy(cfg.policy, "float32").base_model.requires_grad_(True).to(device)
            if cfg.gradient_checkpointing:
                self.policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                self.value_trunk.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        hidden = self.config.get_text_config().hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(device)
        # a near-zero start keeps the first advantages close to the raw (whitened) rewards
        torch.nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden + 1) * 0.1)
        torch.nn.init.zeros_(self.value_head.bias)
        modules = {"policy": self.policy, "value_head": self.value_head}
        if self.value_trunk is not None:
            modules["value_trunk"] = self.value_trunk
        self.trainable = torch.nn.ModuleDict(modules)
        for p in self.trainable.parameters():  # adapters and heads train in fp32
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
        self._trainable = [p for p in self.trainable.parameters() if p.requires_grad]
        for m in (self.policy, self.reference, self.value_trunk):
            if m is not None:
                _no_dropout(m)
                # gradient checkpointing only acts in train mode; with dropout zeroed it computes what eval does
                m.train(cfg.gradient_checkpointing and m is not self.reference)

    def parameters(self):
        return list(self._trainable)

    def trainable_state(self) -> dict:
        names = {n for n, p in self.trainable.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu().clone() for k, v in self.trainable.state_dict().items() if k in names}

    def load_trainable_state(self, state: dict) -> None:
        missing = {n for n, p in self.trainable.named_parameters() if p.requires_grad} - set(state)
        if missing:
            raise ConfigError(f"checkpoint lacks {len(missing)} trainable tensors (e.g. {sorted(missing)[0]}); "
                              "it was written by another model or mode: rerun with --force")
        self.trainable.load_state_dict(state, strict=False)

    @staticmethod
    def _positions(attn):
        return (attn.long().cumsum(-1) - 1).clamp(min=0)

    def _hf(self, model):
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def _last_hidden(self, model, seqs, attn):
        """The trunk's last hidden state (no LM head, no per-layer hidden states kept)."""
        trunk = self._hf(model).base_model
        return trunk(input_ids=seqs, attention_mask=attn, position_ids=self._positions(attn),
                     use_cache=False).last_hidden_state

    def _logits(self, model, hidden, P: int, temperature: float):
        return self._hf(model).get_output_embeddings()(hidden[:, P - 1:-1]).float() / temperature

    def _use_adapter(self, name: str) -> None:
        """Switch the active peft adapter; peft's ``set_adapter`` also freezes the others, so the trainable
        set is restored (both adapters train, each in its own pass)."""
        self.policy.set_adapter(name)
        for p in self._trainable:
            p.requires_grad_(True)

    @contextmanager
    def value_adapter(self):
        """With ``value_model: lora``: the value adapter active inside (its backward pass too, so that gradient
        checkpointing recomputes the layers with the adapter that ran them); a no-op otherwise."""
        if self.value_kind != "lora":
            yield
            return
        self._use_adapter("value")
        try:
            yield
        finally:
            self._use_adapter("default")

    def policy_logits(self, seqs, attn, P: int, temperature: float):
        """Logits (scaled by 1/temperature) predicting the response tokens, and the trunk's last hidden state."""
        hidden = self._last_hidden(self.policy, seqs, attn)
        return self._logits(self.policy, hidden, P, temperature), hidden

    def values(self, seqs, attn, P: int, policy_hidden=None):
        """The value before each response token: the head on the policy's hidden state (``head``), on the trunk
        with the value adapter (``lora``; call inside :meth:`value_adapter`), or on the value model's trunk."""
        if self.value_kind == "head":
            hidden = policy_hidden if policy_hidden is not None else self._last_hidden(self.policy, seqs, attn)
        elif self.value_kind == "lora":
            hidden = self._last_hidden(self.policy, seqs, attn)
        else:
            hidden = self.value_trunk(input_ids=seqs, attention_mask=attn, position_ids=self._positions(attn),
                                      use_cache=False).last_hidden_state
        return self.value_head(hidden[:, P - 1:-1].float()).squeeze(-1)

    def forward(self, seqs, attn, P: int, temperature: float):
        """Logits (scaled by 1/temperature) predicting the response tokens, and the values before each."""
        logits, hidden = self.policy_logits(seqs, attn, P, temperature)
        if self.value_kind == "lora":
            with self.value_adapter():
                return logits, self.values(seqs, attn, P)
        return logits, self.values(seqs, attn, P, hidden)

    def reference_logits(self, seqs, attn, P: int, temperature: float):
        ctx = self.policy.disable_adapter() if self.reference is None else nullcontext()
        model = self.policy if self.reference is None else self.reference
        with ctx:
            hidden = self._last_hidden(model, seqs, attn)
            return self._logits(model, hidden, P, temperature)

    def final_model(self):
        """The trained policy as a plain model (LoRA merged in shared mode)."""
        return self.policy.merge_and_unload() if self.mode == "shared" else self.policy


# ----------------------------------------------------------------------------- data

def prompt_token_budget(cfg: PPOStageConfig, model_config) -> int:
    """Prompt tokens kept so that prompt + response fit the model's context (prompts keep their end)."""
    context = getattr(model_config.get_text_config(), "max_position_embeddings", None)
    if context is None:
        return cfg.max_prompt_tokens
    room = context - cfg.max_new_tokens
    if room < 4:
        raise ConfigError(f"max_new_tokens={cfg.max_new_tokens} leaves no room for a prompt in the model's "
                          f"{context}-token context")
    if room < cfg.max_prompt_tokens:
        log.info("questions cut so each prompt fits %d tokens of the %d-token context", room, context)
    return min(cfg.max_prompt_tokens, room)


def load_prompts(cfg: PPOStageConfig) -> list[dict]:
    """``{id, question}`` rows from the RL dataset's train split (``{id, source, question_id, prompt}``)."""
    from simplesafe.train.common import read_split, split_paths

    if not cfg.data:
        raise ConfigError("PPO needs data: an RL dataset folder (train.jsonl with a 'prompt' field) or prompt files")
    rows = read_split(split_paths(cfg.data, "train"), (cfg.prompt_field,), optional={"id": None})
    if cfg.max_prompts:
        rows = rows[: cfg.max_prompts]
    if not rows:
        raise DataError(cfg.data[0], None, cfg.prompt_field, "no prompts to train on")
    return [{"id": r["id"] if r["id"] is not None else r["_where"], "question": r[cfg.prompt_field]} for r in rows]


def fit_prompt(question: str, template: str, tokenizer, budget: int) -> str:
    """The formatted prompt, its question cut (keeping the start: the title) so the prompt fits ``budget`` tokens.

    Cutting the formatted prompt instead would drop the template's ``### Human:`` head.
    """
    from simplesafe.train.common import format_prompt

    text = format_prompt(question, template, tokenizer)
    n = len(tokenizer(text, add_special_tokens=template != "chat")["input_ids"])
    if n <= budget:
        return text
    q_ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    keep = max(1, len(q_ids) - (n - budget) - 2)  # 2 tokens of slack: re-tokenising at the cut can merge differently
    return format_prompt(tokenizer.decode(q_ids[:keep]).rstrip(), template, tokenizer)


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


# ----------------------------------------------------------------------------- probe

class Probe:
    """Fixed held-out prompts answered by the policy every few steps, scored by the training reward and by
    held-out judges; one row per (step, source) in ``probe.jsonl``."""

    def __init__(self, cfg: PPOStageConfig, tokenizer, reward, budget: int, path: Path, device, batch_size: int = 64):
        from simplesafe.eval.judges import JudgeSpec, build_judge
        from simplesafe.io import read_rows

        rows = []
        for _, row in read_rows(cfg.probe.prompts):
            if isinstance(row.get("prompt"), str) and row["prompt"].strip():
                rows.append(row["prompt"])
            if len(rows) >= cfg.probe.n:
                break
        if not rows:
            raise DataError(cfg.probe.prompts, None, "prompt", "no probe prompts")
        self.questions = rows
        self.texts = [fit_prompt(q, cfg.template, tokenizer, budget) for q in rows]
        self.cfg, self.tok, self.reward, self.path, self.device = cfg, tokenizer, reward, path, device
        self.batch_size = batch_size
        self.judges = [build_judge(JudgeSpec(**j)) for j in cfg.probe.judges]

    def truncate(self, start_step: int) -> None:
        from simplesafe.io import read_jsonl_tolerant, write_rows

        if self.path.exists():
            write_rows(self.path, [r for r in read_jsonl_tolerant(self.path) if r.get("step", 0) < start_step])

    def run(self, policy, step: int) -> None:
        import numpy as np
        import torch

        from simplesafe.io import append_jsonl
        from simplesafe.llm.sampling import SamplingParams, sample

        enc = self.tok(self.texts, return_tensors="pt", padding=True,
                       add_special_tokens=self.cfg.template != "chat").to(self.device)
        params = SamplingParams(max_new_tokens=self.cfg.probe.max_new_tokens or self.cfg.max_new_tokens,
                                temperature=self.cfg.probe.temperature, top_p=0.9 if self.cfg.probe.temperature else 1.0,
                                top_k=50)
        answers = []
        with torch.no_grad():
            for c in range(0, len(self.texts), self.batch_size):
                out = sample(policy, enc["input_ids"][c: c + self.batch_size], enc["attention_mask"][c: c + self.batch_size],
                             params, [self.tok.eos_token_id], self.tok.pad_token_id,
                             row_seeds=[self.cfg.seed * 7919 + c + i for i in range(len(self.texts[c: c + self.batch_size]))])
                answers += [t.strip() for t in self.tok.batch_decode(out.tokens, skip_special_tokens=True)]
        scored = self.reward.score(self.questions, answers)
        row = {"step": step, "training_reward": float(np.mean(scored.total)),
               **{f"training/{k}": float(np.mean(v)) for k, v in scored.parts.items()},
               "words": float(np.mean([len(a.split()) for a in answers]))}
        for judge in self.judges:
            values = judge.values(self.questions, answers)
            row[f"judge/{judge.spec.name}"] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        append_jsonl(self.path, row)


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


def save_policy(models: PPOModels, tokenizer, cfg: PPOStageConfig, out_dir: Path, precision: str = "fp32") -> None:
    """The merged policy into ``out_dir`` (an HF model folder); shared mode also keeps ``adapter/``.

    With ``method: qlora`` the adapter is merged carefully (into the NF4 round trip of the SFT weights it
    was trained against, :mod:`simplesafe.train.merge`), after the training copy has left the accelerator.
    """
    from simplesafe.models.load import precision_dtype, release_memory, save_pretrained
    from simplesafe.train.common import record_adapter

    if models.mode == "shared":
        if models.value_kind == "lora":
            models.policy.delete_adapter("value")
        models.policy.peft_config["default"].base_model_name_or_path = str(cfg.policy)
        save_pretrained(models.policy, tokenizer, out_dir / "adapter")
        compute = precision_dtype(precision)
        models.policy.get_base_model().simplesafe_training = {
            "method": cfg.method, "precision": precision, "weight_dtype": compute,
            **({"quantization": "nf4", "quantized_from": compute} if cfg.method == "qlora" else {})}
        record_adapter(out_dir / "adapter", models.policy, cfg.policy)
    if models.mode == "shared" and cfg.method == "qlora":
        from simplesafe.train.merge import merge_adapter

        models.policy = None
        models.trainable = None
        release_memory()
        model = merge_adapter(cfg.policy, out_dir / "adapter", None, mode="careful", dtype=precision_dtype(precision))
    else:
        model = models.final_model()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = out_dir / ".model-tmp"
    save_pretrained(model, tokenizer, tmp)
    for f in tmp.iterdir():
        f.replace(out_dir / f.name)
    tmp.rmdir()
    from simplesafe.models.templates import record_folder_templates

    record_folder_templates(out_dir, cfg.template)


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


def plot_curves(history: list[dict], path: Path) -> None:
    """Reward (total and per source) and KL per step, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    steps = [h["step"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot(steps, [h["reward"] for h in history], label="reward (score)", linewidth=2)
    for key in sorted(k for k in history[0] if k.startswith("reward/") and k != "reward/total"):
        ax1.plot(steps, [h[key] for h in history], label=key.split("/", 1)[1], alpha=0.7)
    ax1.set_xlabel("PPO step")
    ax1.set_ylabel("mean reward")
    ax1.legend(fontsize=8)
    ax2.plot(steps, [h["kl"] for h in history], color="tab:red", label="KL(policy || reference)")
    ax2.set_xlabel("PPO step")
    ax2.set_ylabel("KL per response (nats)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


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
