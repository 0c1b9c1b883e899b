"""One planner per recipe stage: the phases of the stage and what each holds at its peak.

Every planner reads the stage's config exactly as the recipe runner builds it (the same
``simplesafe.recipe`` functions, so defaults and the recipe's overrides are the ones that will
run), and returns a :class:`StagePlan`. A stage's output that does not exist yet (the SFT model
before SFT ran) has the architecture of the recipe's base model. Formulas:
:mod:`simplesafe.plan.estimate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from simplesafe.plan.estimate import (
    BYTES,
    Item,
    Phase,
    activation_items,
    generation_items,
    no_grad_forward_bytes,
    optimizer_step_temp,
    own_logits_bytes,
    span_logits_bytes,
    training_weights,
    trl_logprob_bytes,
    weight_bytes,
)
from simplesafe.plan.shapes import ModelShape, model_shape


@dataclass
class Target:
    """The device a plan is for: ``cuda`` or ``cpu``, and what ``precision: auto`` resolves to there."""

    device: str = "cuda"
    auto_precision: str = "bf16"

    def precision(self, setting: str | None) -> str:
        from simplesafe.models.load import resolve_precision

        if setting in (None, "auto"):
            return self.auto_precision
        return resolve_precision(setting)


@dataclass
class StagePlan:
    stage: str
    phases: list[Phase] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def peak_phase(self) -> Phase | None:
        return max(self.phases, key=lambda p: p.total) if self.phases else None

    @property
    def peak(self) -> float:
        p = self.peak_phase
        return p.total if p else 0.0


# ----------------------------------------------------------------------------- helpers

def resolve_model(ctx, name: str) -> str:
    """A model path that exists (or a hub/embedded name); stage outputs not written yet become the base model."""
    base = ctx.base_model
    if not Path(base).exists() and ctx.recipe.base_model.startswith("embedded:"):
        base = ctx.recipe.base_model  # not built or converted yet: planned from its config
    if str(name) == ctx.base_model:
        return base
    p = Path(str(name)).expanduser()
    if p.exists():
        if (p / "config.json").exists() or (p / "adapter_config.json").exists():
            return str(p)
    try:
        inside = p.resolve().is_relative_to(ctx.run_dir.resolve())
    except (OSError, ValueError):
        inside = False
    if inside or (not p.exists() and ("/" in str(name) and Path(str(name)).parts[0] in ("runs", "."))):
        return base
    return str(name)


def shape_of(ctx, name: str, kind: str = "causal") -> ModelShape:
    return model_shape(resolve_model(ctx, name), kind)


def _shared(*groups: list[Item]) -> list[Item]:
    return [i for g in groups for i in g]


def reward_model_items(ctx, sources, target: Target) -> tuple[list[Item], list[str]]:
    """Weights of the scorers a composite reward keeps loaded: reward models (inference dtype) and the
    toxicity classifier (MiniLM, fp32)."""
    items, notes = [], []
    precision = target.auto_precision
    for src in sources:
        if src.kind == "rm":
            backbone = _rm_backbone(ctx, src.path)
            shape = shape_of(ctx, backbone, "classifier")
            items.append(Item(f"reward model '{src.label}' ({precision})", weight_bytes(shape, precision),
                              f"{shape.params / 1e9:.2f}B params, backbone {backbone}"))
        elif src.kind == "safety":
            shape = model_shape("embedded:minilm", "encoder")
            items.append(Item("toxicity classifier (MiniLM, fp32)", weight_bytes(shape, "fp32")))
    return items, notes


def _rm_backbone(ctx, path: str) -> str:
    """The backbone of a reward-model folder: its own config when it exists, else the recipe's rm section."""
    import json

    p = Path(str(path))
    if (p / "config.json").exists():
        return str(p)
    from simplesafe.recipe.evaluation import rm_name_of
    from simplesafe.recipe.stages import rm_configs

    name = rm_name_of(ctx, str(path))
    if name:
        cfg = rm_configs(ctx).get(name)
        if cfg is not None:
            return cfg.backbone
    if (p / "reward_config.json").exists():
        return json.loads((p / "reward_config.json").read_text()).get("backbone", ctx.base_model)
    return resolve_model(ctx, ctx.base_model)


# ----------------------------------------------------------------------------- training stages

def plan_sft(ctx, cfg, target: Target, stage: str = "sft") -> StagePlan:
    precision = target.precision(cfg.precision)
    shape = shape_of(ctx, cfg.model)
    plan = StagePlan(stage)
    held, grads, trainable = training_weights(shape, cfg.method, precision, cfg.lora.r, cfg.lora.target_modules,
                                              cfg.optim, target.device, trl_qlora_bf16_adapters=cfg.method == "qlora")
    tokens = cfg.batch_size * cfg.max_length
    step = Phase("training step", list(held))
    if cfg.grad_accum > 1:
        step.add("gradients (accumulated)", grads)
    step.extend(activation_items(shape, tokens, cfg.method, precision, cfg.gradient_checkpointing, cfg.lora.r,
                                 cfg.lora.dropout if cfg.method != "full" else 0.0))
    step.add("LM-head log-probs (TRL fused, chunked)",
             trl_logprob_bytes(shape, tokens, precision, target.device, outputs="sft"))
    opt = Phase("optimizer step", list(held)).add("gradients", grads)
    opt.add("optimizer temporaries", optimizer_step_temp(grads, cfg.optim, target.device))
    eval_tokens = max(cfg.batch_size, 8) * cfg.max_length
    ev = Phase("evaluation", list(held))
    ev.add("forward without gradients", no_grad_forward_bytes(shape, eval_tokens, precision), f"{eval_tokens:,} tokens")
    ev.add("LM-head log-probs (TRL fused, chunked)",
           trl_logprob_bytes(shape, eval_tokens, precision, target.device, backward=False, outputs="sft"))
    plan.phases = [step, opt, ev]
    if cfg.method == "qlora" and cfg.merge:
        plan.phases.append(Phase("careful merge after training", list(held)).add(
            "NF4 copy of the base for the careful merge", weight_bytes(shape, "nf4", compute=precision)))
    plan.notes.append(f"{cfg.method}, micro-batch {cfg.batch_size} x {cfg.max_length} tokens, "
                      f"checkpointing {'on' if cfg.gradient_checkpointing else 'off'}, {precision}")
    return plan


def plan_rm(ctx, cfg, target: Target) -> StagePlan:
    precision = target.precision(cfg.precision)
    shape = shape_of(ctx, cfg.backbone, "classifier")
    plan = StagePlan(f"rm {cfg.name}")
    extra = shape.hidden + 1
    held, grads, trainable = training_weights(shape, cfg.method, precision, cfg.lora.r, cfg.lora.target_modules,
                                              "adamw_torch", target.device, label="reward model")
    tokens = 2 * cfg.batch_size * cfg.max_length
    step = Phase("training step", list(held))
    if cfg.grad_accum > 1:
        step.add("gradients (accumulated)", grads)
    step.extend(activation_items(shape, tokens, cfg.method, precision, cfg.gradient_checkpointing, cfg.lora.r,
                                 cfg.lora.dropout if cfg.method != "full" else 0.0, seq_len=cfg.max_length))
    opt = Phase("optimizer step", list(held)).add("gradients", grads)
    opt.add("optimizer temporaries", optimizer_step_temp(grads, "adamw_torch", target.device))
    eval_pairs = cfg.eval_batch_size or max(cfg.batch_size, 32)
    ev = Phase("evaluation", list(held)).add("forward without gradients", no_grad_forward_bytes(
        shape, 2 * eval_pairs * cfg.max_length, precision), f"{eval_pairs} pairs x {cfg.max_length} tokens")
    plan.phases = [step, opt, ev]
    if cfg.method == "qlora":
        plan.phases.append(Phase("careful merge after training").add(
            "NF4 copy of the trunk for the careful merge", weight_bytes(shape, "nf4", compute=precision)))
    del extra, trainable
    plan.notes.append(f"{cfg.name}: {cfg.method} on {cfg.backbone}, {cfg.batch_size} pairs x {cfg.max_length} "
                      f"tokens, checkpointing {'on' if cfg.gradient_checkpointing else 'off'}, {precision}")
    return plan


def plan_dpo(ctx, cfg, target: Target) -> StagePlan:
    precision = target.precision(cfg.precision)
    shape = shape_of(ctx, cfg.model)
    plan = StagePlan("dpo")
    held, grads, _ = training_weights(shape, cfg.method, precision, cfg.lora.r, cfg.lora.target_modules,
                                      "adamw_torch", target.device, trl_qlora_bf16_adapters=cfg.method == "qlora",
                                      label="policy")
    if cfg.method == "full" and not cfg.precompute_ref_log_probs:
        held = held + [Item(f"reference model ({precision}, frozen)", weight_bytes(shape, precision))]
    tokens = 2 * cfg.batch_size * cfg.max_length
    step = Phase("training step", list(held))
    if cfg.grad_accum > 1:
        step.add("gradients (accumulated)", grads)
    step.extend(activation_items(shape, tokens, cfg.method, precision, cfg.gradient_checkpointing, cfg.lora.r,
                                 cfg.lora.dropout if cfg.method != "full" else 0.0))
    step.add("LM-head log-probs (TRL fused, chunked)", trl_logprob_bytes(shape, tokens, precision, target.device))
    phases = [step]
    if not cfg.precompute_ref_log_probs:
        ref = Phase("reference forward", list(held))
        if cfg.grad_accum > 1:
            ref.add("gradients (accumulated)", grads)
        ref.add("reference forward without gradients", no_grad_forward_bytes(shape, tokens, precision))
        ref.add("reference log-probs (TRL fused)", trl_logprob_bytes(shape, tokens, precision, target.device, False))
        phases.append(ref)
    opt = Phase("optimizer step", list(held)).add("gradients", grads)
    opt.add("optimizer temporaries", optimizer_step_temp(grads, "adamw_torch", target.device))
    eval_tokens = 2 * max(cfg.batch_size, 8) * cfg.max_length
    ev = Phase("evaluation / reference precompute", list(held))
    ev.add("forward without gradients", no_grad_forward_bytes(shape, eval_tokens, precision), f"{eval_tokens:,} tokens")
    ev.add("LM-head log-probs (TRL fused)", trl_logprob_bytes(shape, eval_tokens, precision, target.device, False))
    plan.phases = phases + [opt, ev]
    if cfg.method == "qlora" and cfg.merge:
        plan.phases.append(Phase("careful merge after training", list(held)).add(
            "NF4 copy of the base for the careful merge", weight_bytes(shape, "nf4", compute=precision)))
    plan.notes.append(f"{cfg.method}, {cfg.batch_size} pairs x {cfg.max_length} tokens, checkpointing "
                      f"{'on' if cfg.gradient_checkpointing else 'off'}, {precision}")
    return plan


def plan_ppo(ctx, cfg, target: Target) -> StagePlan:
    precision = target.precision(cfg.precision)
    c = BYTES[precision]
    shape = shape_of(ctx, cfg.policy)
    plan = StagePlan("ppo")
    context = shape.max_positions or (cfg.max_prompt_tokens + cfg.max_new_tokens)
    P = min(cfg.max_prompt_tokens, context - cfg.max_new_tokens)
    N = cfg.max_new_tokens
    T = P + N
    gen_bs = cfg.generation_batch_size or cfg.batch_size
    fwd_bs = cfg.forward_batch_size or cfg.mini_batch_size
    held: list[Item] = []
    value_head = shape.hidden + 1
    if cfg.memory_mode == "shared":
        storage = "nf4" if cfg.method == "qlora" else precision
        held.append(Item(f"policy/reference weights ({'NF4' if storage == 'nf4' else precision}, frozen, shared)",
                         weight_bytes(shape, storage, compute=precision)))
        n_lora = shape.lora_params(cfg.lora.r, cfg.lora.target_modules) * (2 if cfg.value_model == "lora" else 1)
        trainable = n_lora + value_head
        held.append(Item(f"LoRA adapters r={cfg.lora.r}{' (policy + value)' if cfg.value_model == 'lora' else ''}"
                         " + value head (fp32)", trainable * 4, f"{trainable / 1e6:.1f}M trainable"))
    else:
        trainable = shape.params + (shape.params - shape.vocab * shape.hidden) + value_head
        held += [Item("policy weights (fp32, trainable)", shape.params * 4),
                 Item(f"reference weights ({precision}, frozen)", weight_bytes(shape, precision)),
                 Item("value model weights (fp32, trainable)", (shape.params - shape.vocab * shape.hidden) * 4)]
        if precision != "fp32":
            held.append(Item(f"autocast weight copies ({precision})", 2 * shape.quantizable * c))
    held.append(Item("gradients (kept between minibatches)", trainable * 4))
    held.append(Item("optimizer state (AdamW)", trainable * 8))
    rms, _ = reward_model_items(ctx, cfg.rewards, target)
    held += rms
    buffers = Item("rollout buffers", cfg.batch_size * T * (8 + 8 + 4 * 6))
    rollout = Phase("rollout (sampling)", held + [buffers]).extend(
        generation_items(shape, gen_bs, P, N, precision, label="rollout"))
    score = Phase("scoring pass (no gradients)", held + [buffers])
    score.add("forward without gradients", no_grad_forward_bytes(shape, fwd_bs * T, precision), f"{fwd_bs} x {T} tokens")
    score.add("response logits and log-probs", own_logits_bytes(shape, fwd_bs * N, precision, training=False))
    update = Phase("PPO update (minibatch)", held + [buffers])
    method = "full" if cfg.memory_mode == "separate" else ("qlora" if cfg.method == "qlora" else "lora")
    acts = activation_items(shape, cfg.mini_batch_size * T, method, precision, cfg.gradient_checkpointing, cfg.lora.r,
                            cfg.lora.dropout, label="policy")
    update.extend(acts)
    if cfg.memory_mode == "separate" or cfg.value_model == "lora":
        update.extend(activation_items(shape, cfg.mini_batch_size * T, method, precision, cfg.gradient_checkpointing,
                                       cfg.lora.r, cfg.lora.dropout, label="value model"))
    update.add("response logits, log-probs and their gradients",
               own_logits_bytes(shape, cfg.mini_batch_size * N, precision, training=True),
               f"{cfg.mini_batch_size} x {N} tokens x {shape.vocab} fp32")
    plan.phases = [rollout, score, update]
    if cfg.probe.prompts:
        n = min(cfg.probe.n, gen_bs)
        plan.phases.append(Phase("probe (held-out judges)", held).extend(
            generation_items(shape, n, P, cfg.probe.max_new_tokens or N, precision, label="probe")))
    plan.notes.append(f"{cfg.memory_mode} ({cfg.method if cfg.memory_mode == 'shared' else 'full'}, value "
                      f"{cfg.value_model if cfg.memory_mode == 'shared' else 'model'}), rollout {gen_bs} x {T} tokens, "
                      f"update {cfg.mini_batch_size} x {T}, checkpointing {'on' if cfg.gradient_checkpointing else 'off'}"
                      f", {precision}")
    return plan


def plan_grpo(ctx, cfg, target: Target) -> StagePlan:
    precision = target.precision(cfg.precision)
    shape = shape_of(ctx, cfg.policy)
    plan = StagePlan("grpo" if cfg.algorithm == "grpo" else "rloo")
    held, grads, _ = training_weights(shape, cfg.method, precision, cfg.lora.r, cfg.lora.target_modules,
                                      "adamw_torch", target.device, trl_qlora_bf16_adapters=cfg.method == "qlora",
                                      label="policy")
    if cfg.method == "full" and cfg.beta > 0:
        held = held + [Item(f"reference model ({precision}, frozen)", weight_bytes(shape, precision))]
    rms, _ = reward_model_items(ctx, cfg.rewards, target)
    held = held + rms
    G, P, N = cfg.batch_size, cfg.max_prompt_tokens, cfg.max_new_tokens
    gen = Phase(f"generation ({G} completions: {G // cfg.num_generations} prompts x {cfg.num_generations})", held)
    gen.extend(generation_items(shape, G, P, N, precision))
    step = Phase("training step", list(held))
    step.extend(activation_items(shape, G * (P + N), cfg.method, precision, cfg.gradient_checkpointing, cfg.lora.r,
                                 cfg.lora.dropout if cfg.method != "full" else 0.0))
    step.add("LM-head log-probs (TRL fused, chunked)", trl_logprob_bytes(shape, G * N, precision, target.device))
    opt = Phase("optimizer step", list(held)).add("gradients", grads)
    opt.add("optimizer temporaries", optimizer_step_temp(grads, "adamw_torch", target.device))
    phases = [gen, step, opt]
    if cfg.beta > 0:
        phases.append(Phase("reference forward", list(held)).add(
            "forward without gradients", no_grad_forward_bytes(shape, G * (P + N), precision)).add(
            "reference log-probs (TRL fused)", trl_logprob_bytes(shape, G * N, precision, target.device, False)))
    plan.phases = phases
    plan.notes.append(f"{cfg.method}, {G} completions x ({P} + {N}) tokens, checkpointing "
                      f"{'on' if cfg.gradient_checkpointing else 'off'}, {precision}")
    return plan


# ----------------------------------------------------------------------------- inference stages

def plan_eval(ctx, cfg, settings, models: dict, target: Target) -> StagePlan:
    precision = target.auto_precision
    plan = StagePlan("eval")
    prompt_tokens = 512  # eval generate's max_prompt_tokens
    shapes = {name: shape_of(ctx, spec["model"]) for name, spec in models.items()}
    worst = max(shapes.values(), key=lambda s: s.params)
    gen = Phase(f"generation (largest model: {worst.name})",
                [Item(f"model weights ({precision})", weight_bytes(worst, precision))])
    gen.extend(generation_items(worst, settings.batch_size, prompt_tokens, settings.max_new_tokens, precision))
    phases = [gen]
    judges = Phase("judges")
    for j in settings.judges:
        if j.kind == "reward" and j.model:
            path = Path(j.model) if Path(j.model).is_absolute() else ctx.path(j.model)
            shape = shape_of(ctx, _rm_backbone(ctx, str(path)), "classifier")
            judges.add(f"judge '{j.name}' reward model ({precision})", weight_bytes(shape, precision))
            judges.add(f"judge '{j.name}' scoring batch", no_grad_forward_bytes(
                shape, j.batch_size * (prompt_tokens + settings.max_new_tokens), precision))
            break  # judges score one after another; the first reward judge stands for them
    if judges.items:
        phases.append(judges)
    kl_tokens = 16 * (prompt_tokens + settings.max_new_tokens)
    phases.append(Phase("KL estimate (one model at a time)", [Item(f"model weights ({precision})",
                                                                   weight_bytes(worst, precision))])
                  .add("forward without gradients", no_grad_forward_bytes(worst, kl_tokens, precision))
                  .add("one answer's logits (fp32)", span_logits_bytes(worst, settings.max_new_tokens)))
    plan.phases = phases
    plan.notes.append(f"{len(models)} models, batch {settings.batch_size} x ({prompt_tokens} + "
                      f"{settings.max_new_tokens}) tokens, {precision}")
    return plan


def plan_merge(ctx, cfg, dpo_cfg, target: Target) -> StagePlan:
    precision = target.precision(dpo_cfg.precision)
    shape = shape_of(ctx, dpo_cfg.model)
    plan = StagePlan("merge")
    phases = []
    if cfg.mode == "careful" or cfg.compare:
        phases.append(Phase("NF4 quantisation (careful merge)").add(
            "NF4 copy of the base", weight_bytes(shape, "nf4", compute=precision),
            "dequantised one weight at a time into the base on the CPU"))
    if cfg.compare:
        tokens = 8 * 512
        phases.append(Phase("log-likelihood comparison (one model at a time)").add(
            "merged model (bf16)", weight_bytes(shape, "bf16")).add(
            "forward without gradients", no_grad_forward_bytes(shape, tokens, "bf16")).add(
            "one answer's logits (fp32)", span_logits_bytes(shape, 512)))
    plan.phases = phases
    plan.notes.append(f"{cfg.mode} merge of the DPO adapter; weights assembled on the CPU")
    return plan


def plan_synth(ctx, cfg, target: Target) -> StagePlan:
    plan = StagePlan("synth")
    backend = cfg.backend
    if backend.backend != "hf":
        plan.notes.append(f"{backend.backend} backend: generation runs elsewhere")
        return plan
    from simplesafe.models.load import inference_dtype, precision_dtype

    precision = target.auto_precision if backend.dtype == "auto" else \
        {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}[inference_dtype(backend.dtype)]
    del precision_dtype
    shape = shape_of(ctx, backend.model)
    plan.phases = [Phase("generation", [Item(f"generator weights ({precision})", weight_bytes(shape, precision))])
                   .extend(generation_items(shape, backend.batch_size, backend.max_prompt_tokens,
                                            cfg.params.max_new_tokens, precision))]
    plan.notes.append(f"hf backend, batch {backend.batch_size} x ({backend.max_prompt_tokens} + "
                      f"{cfg.params.max_new_tokens}) tokens")
    return plan


def plan_data(ctx, cfg, target: Target) -> StagePlan:
    plan = StagePlan("data")
    shape = model_shape(cfg.encoder if not cfg.encoder.startswith("embedded:") or cfg.encoder == "embedded:minilm"
                        else cfg.encoder, "encoder")
    tox = model_shape("embedded:minilm", "encoder")
    plan.phases = [Phase("embedding (leakage) and toxicity scoring")
                   .add(f"sentence encoder {cfg.encoder} (fp32)", weight_bytes(shape, "fp32"))
                   .add("toxicity classifier (MiniLM, fp32)", weight_bytes(tox, "fp32"))
                   .add("encoder batch", no_grad_forward_bytes(shape, 64 * 256, "fp32"))]
    return plan


def plan_tiny(ctx, target: Target) -> StagePlan:
    from simplesafe.models.tiny import TinyModelConfig
    from simplesafe.recipe.config import section

    cfg = section(TinyModelConfig, ctx.recipe.tiny_model, "tiny_model")
    shape = model_shape("embedded:tiny")
    precision = "bf16" if target.auto_precision == "bf16" and cfg.precision != "fp32" else "fp32"
    held, grads, _ = training_weights(shape, "full", precision, 0, "all-linear", "adamw_torch", "cpu")
    step = Phase("pretraining step (CPU)", held).add("gradients", grads)
    step.extend(activation_items(shape, cfg.batch_size * cfg.max_seq_len, "full", precision, False))
    step.add("logits and their gradients", own_logits_bytes(shape, cfg.batch_size * cfg.max_seq_len, precision, True))
    plan = StagePlan("tiny_model", [step], ["runs on the CPU"])
    return plan
