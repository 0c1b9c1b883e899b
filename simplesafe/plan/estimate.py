"""The memory formulas of a plan: bytes of weights, adapters, gradients, optimizer states, activations,
logits and KV cache, for the code paths simplesafe runs.

accelerate's ``estimate-memory`` counts weights (and multiplies by four for Adam training); nothing in
transformers, peft, TRL or accelerate predicts activations, logits or the KV cache of a given loop, so
those are written here, each from the tensors the code keeps (checked against a tensor census of the
same steps, :mod:`simplesafe.plan.measure`, on SmolLM2-135M; ``tests/plan``):

- **weights**: trainable weights fp32; frozen weights in the compute dtype; NF4 (QLoRA) 0.5 byte per
  quantised weight plus the double-quantised block scales (1/64 byte, plus fp32 second-level scales per
  256 blocks); for QLoRA training peft's ``prepare_model_for_kbit_training`` casts every other weight
  (embeddings, LM head, norms) to fp32.
- **adapters, gradients, optimizer**: LoRA parameters counted by peft itself on an empty model
  (:mod:`simplesafe.plan.shapes`); fp32, except TRL's QLoRA adapters (TRL casts them to bf16);
  gradients as the trainable weights; AdamW two states of the parameter's dtype, 8-bit AdamW two bytes.
- **activations** of a Llama-family decoder layer per token (``c`` = compute bytes, ``H`` hidden, ``I``
  intermediate, ``q``/``kv`` attention widths, ``r`` LoRA rank): both RMSNorms keep their fp32 input
  (``2 x 4H``; full fine-tuning also the normalised fp32 output, the norm weight being trainable); every
  linear layer whose input must be saved keeps its own copy in the compute dtype (autocast casts per
  call: full fine-tuning and bitsandbytes' 4-bit matmul each keep one, a LoRA adapter one more, plus a
  one-byte dropout mask and its rank-``r`` output); SDPA keeps q, k, v and its output (``c(2q + 2kv)``);
  SwiGLU keeps gate, SiLU and up outputs (``3cI``). With gradient checkpointing each layer keeps only its
  input, and one layer is recomputed at a time (Korthikanti et al., 2022, for the accounting).
  Encoders (BERT, MPNet, MiniLM) use Korthikanti et al.'s per-layer count with eager attention.
- **logits**: simplesafe's own loops (PPO, merge comparison, KL) materialise fp32 logits over response
  positions (log-softmax, its gradient); TRL's trainers use a fused LM head that scores 4,096 tokens x
  32,768 vocabulary entries at a time (one tile in the compute dtype on a GPU with Triton; on a CPU its
  torch fallback holds about seven fp32 tiles).
- **KV cache**: ``2 x layers x kv-width x c`` per token of prompt and answer, for every sequence
  decoded together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simplesafe.plan.shapes import ModelShape

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
NF4_LAYER_BYTES = 256 * 4 + 16 * 4 + 4  # per 4-bit layer: the 8-bit code of the scales, the NF4 code, an offset
GiB = 2**30
TRL_TOKEN_TILE = 4096  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE
TRL_VOCAB_TILE = 32768  # trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE
# fp32 temporaries the torch fallback (no Triton: the CPU) holds per tile: the backward's z, log p, p, the gradient
# and its terms; the forward's z, z - max and exp, plus e*z and a masked copy with a boolean mask when SFT asks
# for entropy and top-1 accuracy (read off trl/kernels/chunked_logprob.py, checked with bench/memory_plan.py)
TRL_CPU_FP32_TILES_BACKWARD = 7
TRL_CPU_FP32_TILES_FORWARD = {"log_probs": 3, "sft": 5.25}


@dataclass
class Item:
    """One thing held in memory: what it is, its bytes, and a short note on how it was counted."""

    name: str
    bytes: float
    note: str = ""


@dataclass
class Phase:
    """A moment of a stage (a training step, a rollout ...) and everything held at its peak."""

    name: str
    items: list[Item] = field(default_factory=list)

    def add(self, name: str, nbytes: float, note: str = "") -> "Phase":
        if nbytes > 0:
            self.items.append(Item(name, float(nbytes), note))
        return self

    def extend(self, items: list[Item]) -> "Phase":
        self.items.extend(items)
        return self

    @property
    def total(self) -> float:
        return sum(i.bytes for i in self.items)

    @property
    def largest(self) -> Item | None:
        return max(self.items, key=lambda i: i.bytes) if self.items else None


# ----------------------------------------------------------------------------- weights and optimizer

def weight_bytes(shape: ModelShape, storage: str, kbit_prepared: bool = False, compute: str = "bf16") -> float:
    """Bytes of all weights stored as ``storage`` (fp32, bf16, fp16 or nf4)."""
    if storage == "nf4":
        rest = 4 if kbit_prepared else BYTES[compute]
        return (shape.quantizable * NF4_BYTES + shape.quantizable_layers * NF4_LAYER_BYTES
                + (shape.params - shape.quantizable) * rest)
    return shape.params * BYTES[storage]


def linear_params(shape: ModelShape) -> int:
    """Parameters in linear layers (the ones autocast casts every forward): quantisable ones plus the head."""
    head = shape.vocab * shape.hidden if shape.kind == "causal" else shape.hidden
    return shape.quantizable + head


def optimizer_bytes(optim: str, trainable: int, param_bytes: int) -> float:
    """Optimizer state: AdamW two moments in the parameter dtype; 8-bit AdamW two bytes; SGD none."""
    name = optim.lower()
    if "8bit" in name or "8_bit" in name:
        return 2 * trainable
    if name.startswith("sgd") or name == "adafactor":
        return 0.0
    return 2 * param_bytes * trainable


def training_weights(shape: ModelShape, method: str, precision: str, lora_r: int, targets, optim: str,
                     device: str, trl_qlora_bf16_adapters: bool = False, label: str = "model",
                     lora_copies: int = 1, extra_trainable: int = 0) -> tuple[list[Item], float, int]:
    """Items for a model being trained: weights, adapters, optimizer state; returns (items, grad bytes, trainable)."""
    items: list[Item] = []
    if method == "full":
        trainable = shape.params + extra_trainable
        items.append(Item(f"{label} weights (fp32, trainable)", shape.params * 4, f"{shape.params / 1e9:.2f}B params"))
        pbytes = 4
        if precision != "fp32":
            items.append(Item(f"{label} autocast weight copies ({precision})", linear_params(shape) * BYTES[precision],
                              "autocast caches a compute-dtype copy of every trainable linear weight"))
    else:
        if method == "qlora":
            items.append(Item(f"{label} weights (NF4, frozen)", weight_bytes(shape, "nf4", kbit_prepared=True),
                              f"{shape.quantizable / 1e9:.2f}B quantised; the rest fp32 (kbit preparation)"))
        else:
            items.append(Item(f"{label} weights ({precision}, frozen)", weight_bytes(shape, precision)))
        n_lora = shape.lora_params(lora_r, targets) * lora_copies
        trainable = n_lora + extra_trainable
        pbytes = 2 if trl_qlora_bf16_adapters else 4
        items.append(Item(f"{label} LoRA adapters r={lora_r} ({'bf16' if pbytes == 2 else 'fp32'})",
                          trainable * pbytes, f"{trainable / 1e6:.1f}M trainable (peft count)"))
    opt = optimizer_bytes(optim, trainable, pbytes)
    if opt:
        items.append(Item(f"{label} optimizer state ({optim})", opt))
    return items, trainable * pbytes, trainable


def optimizer_step_temp(trainable_bytes: float, optim: str, device: str) -> float:
    """torch's foreach AdamW (the default on a GPU) makes full-size temporaries of the trainable parameters."""
    if device == "cpu" or "8bit" in optim.lower() or optim.lower().startswith("sgd"):
        return 0.0
    return trainable_bytes


# ----------------------------------------------------------------------------- activations

def layer_activation_bytes(shape: ModelShape, method: str, precision: str, lora_r: int = 0,
                           lora_dropout: float = 0.0, seq_len: int = 512) -> float:
    """Bytes one layer keeps for the backward pass, per token (see the module docstring)."""
    c = BYTES[precision]
    H, I, q, kv = shape.hidden, shape.intermediate, shape.q_dim, shape.kv_dim
    if not shape.decoder:  # encoder (BERT-like): Korthikanti et al. 2022, eq. 2 with eager attention
        return H * (34 * c / 2) + 5 * shape.heads * seq_len * c / 2
    inputs = [H, H, H, q, H, H, I]  # q k v o gate up down
    if precision == "fp32":
        # no autocast: linear inputs are the shared tensors themselves
        saved_inputs = 4 * (2 * H + q + I) if method in ("full", "lora") else 2 * sum(inputs)
        norms = 2 * 4 * H * (2 if method == "full" else 1)
        lora = (len(inputs) * 4 * lora_r + (sum(inputs) if lora_dropout > 0 else 0)) if method != "full" else 0
        return norms + saved_inputs + lora + 4 * (2 * q + 2 * kv) + 3 * 4 * I
    norms = 2 * 4 * H * (2 if method == "full" else 1)
    base = c * sum(inputs) if method in ("full", "qlora") else 0
    lora = 0.0
    if method in ("lora", "qlora"):
        lora = c * sum(inputs) + len(inputs) * c * lora_r + (sum(inputs) if lora_dropout > 0 else 0)
    attention = c * (2 * q + 2 * kv) + 4 * shape.heads
    mlp = 3 * c * I
    return norms + base + lora + attention + mlp


def residual_bytes(method: str, precision: str) -> int:
    """Bytes per hidden unit of the residual stream: fp32 when the embeddings are (full, QLoRA kbit prep)."""
    return 4 if method in ("full", "qlora") or precision == "fp32" else BYTES[precision]


def activation_items(shape: ModelShape, tokens: int, method: str, precision: str, checkpointing: bool,
                     lora_r: int = 0, lora_dropout: float = 0.0, seq_len: int = 512, label: str = "") -> list[Item]:
    """Activations kept for the backward pass of ``tokens`` tokens through ``shape``."""
    per_layer = layer_activation_bytes(shape, method, precision, lora_r, lora_dropout, seq_len)
    head = (2 if method == "full" else 1) * 4 * shape.hidden + BYTES[precision] * shape.hidden  # final norm, head input
    tag = f"{label} " if label else ""
    if checkpointing:
        kept = shape.layers * residual_bytes(method, precision) * shape.hidden
        return [Item(f"{tag}activations, checkpointed ({shape.layers} layer inputs)", (kept + head) * tokens,
                     f"{tokens:,} tokens"),
                Item(f"{tag}one layer recomputed in the backward pass", per_layer * tokens)]
    return [Item(f"{tag}activations ({shape.layers} layers, no checkpointing)",
                 (per_layer * shape.layers + head) * tokens,
                 f"{tokens:,} tokens x {per_layer * shape.layers / 2**20:.2f} MiB/token")]


def no_grad_forward_bytes(shape: ModelShape, tokens: int, precision: str) -> float:
    """Transient peak of a forward pass without gradients: one layer's widest tensors at a time."""
    c = BYTES[precision]
    if not shape.decoder:
        return tokens * (4 * c * shape.hidden + 2 * c * shape.intermediate)
    return tokens * (3 * c * shape.intermediate + 3 * 4 * shape.hidden + c * (shape.q_dim + 2 * shape.kv_dim))


# ----------------------------------------------------------------------------- logits, KV cache

def trl_logprob_bytes(shape: ModelShape, tokens: int, precision: str, device: str, backward: bool = True,
                      outputs: str = "log_probs") -> float:
    """TRL's fused LM head (chunked log-probabilities): its tiles, plus the fp32 gradient of the hidden states.

    ``outputs``: ``log_probs`` (DPO, GRPO) or ``sft`` (SFT also asks for entropy and top-1 accuracy).
    """
    rows, cols = min(tokens, TRL_TOKEN_TILE), min(shape.vocab, TRL_VOCAB_TILE)
    tile = rows * cols
    out = tile * BYTES[precision]
    if device == "cpu":
        fp32_tiles = TRL_CPU_FP32_TILES_BACKWARD if backward else TRL_CPU_FP32_TILES_FORWARD[outputs]
        out += fp32_tiles * 4 * tile
    if backward:
        out += 4 * tokens * shape.hidden
    return out


def own_logits_bytes(shape: ModelShape, tokens: int, precision: str, training: bool) -> float:
    """simplesafe's own loops: fp32 logits and their log-softmax; in training also their gradients."""
    c = BYTES[precision]
    per = (16 + c) if training else (8 + c)
    return tokens * shape.vocab * per


def span_logits_bytes(shape: ModelShape, tokens: int) -> float:
    """One row's answer logits at a time (:func:`simplesafe.train.common.span_logprobs`): fp32 logits, logsumexp."""
    return tokens * shape.vocab * 4 * 3


def kv_cache_bytes(shape: ModelShape, sequences: int, length: int, precision: str) -> float:
    return 2 * shape.layers * shape.kv_dim * BYTES[precision] * sequences * length


def generation_items(shape: ModelShape, sequences: int, prompt: int, new: int, precision: str,
                     label: str = "") -> list[Item]:
    """KV cache and prefill of decoding ``sequences`` answers of ``new`` tokens after ``prompt`` tokens."""
    tag = f"{label} " if label else ""
    return [Item(f"{tag}KV cache", kv_cache_bytes(shape, sequences, prompt + new, precision),
                 f"{sequences} sequences x {prompt + new} tokens"),
            Item(f"{tag}prefill activations", no_grad_forward_bytes(shape, sequences * prompt, precision)
                 + sequences * shape.vocab * 4 * 3)]


def gib(nbytes: float) -> str:
    return f"{nbytes / GiB:.2f} GiB" if nbytes >= 0.01 * GiB else f"{nbytes / 2**20:.0f} MiB"


def parse_memory(text: str) -> float:
    """``24GiB``, ``40 GB``, ``80G``, ``512MiB`` -> bytes (GB and G read as GiB, as GPU makers mean them)."""
    import re

    from simplesafe.errors import ConfigError

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(i?B?)\s*", str(text), re.IGNORECASE)
    if not m:
        raise ConfigError(f"--device-memory {text!r}: write a size such as 24GiB, 40GB or 80G")
    value, unit = float(m.group(1)), m.group(2).upper()
    return value * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[unit] if unit or m.group(3) else \
        value * GiB


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
