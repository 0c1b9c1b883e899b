"""Fine-tune the bundled all-MiniLM-L6-v2 encoder with a linear head for hate/toxicity.

The model is the sentence-transformers pipeline itself (mean pooling over tokens, unit
normalisation) followed by a linear layer, so a fine-tuned classifier scores texts with the
ordinary ``SentenceTransformer.encode`` call and a dot product. The word-embedding matrix
(half of MiniLM's 22M parameters) stays frozen: only the six transformer layers train, which
is what the artifact stores (``encoder.safetensors``, float16, ~21 MB).

Training is seeded, uses length-bucketed batches (short tweets are not padded to the
length of Wikipedia comments), AdamW with linear warm-up and decay, per-example weights,
and bfloat16 autocast where the CPU supports it (about 1.8x faster with AMX).

    layers, head = finetune_encoder(texts, labels, weights, FinetuneSettings(epochs=2))
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# The pooled embedding is unit-length; the head sees it scaled, so that its weights start at
# a useful size (cosine similarities are small numbers).
POOL_SCALE = 10.0
TRAINED_PREFIX = "encoder."


@dataclass
class FinetuneSettings:
    epochs: int = 2
    lr: float = 1e-4
    head_lr: float = 1e-3
    batch_size: int = 64
    warmup: float = 0.06
    weight_decay: float = 0.01
    max_seq_length: int = 128
    seed: int = 0
    bf16: bool = True
    progress: bool = True


def bf16_supported() -> bool:
    """True when bfloat16 autocast works on this CPU (a tiny matmul runs)."""
    import torch

    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(2, 2) @ torch.ones(2, 2)
        return True
    except Exception:  # pragma: no cover - depends on the CPU and torch build
        return False


def fresh_encoder(name: str):
    """A private copy of the sentence encoder (the process-wide cached one is never modified, and no second copy
    stays in the cache), on the CPU: the safety classifier's fine-tuning loop runs there (CPU autocast), and 22M
    parameters score fast enough."""
    from simplesafe.models.load import load_sentence_encoder

    return load_sentence_encoder(name, device="cpu", cache=False)


def trained_state(encoder) -> dict:
    """The parameters that fine-tuning changes: the transformer layers (``encoder.layer.*``)."""
    model = encoder[0].auto_model
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(TRAINED_PREFIX)}


def load_trained_state(encoder, state: dict, source: str = "encoder weights") -> None:
    """Put fine-tuned layer weights into ``encoder``; every key must exist with the same shape."""
    import torch

    from simplesafe.errors import ModelLoadError

    model = encoder[0].auto_model
    own = model.state_dict()
    expected = {k for k in own if k.startswith(TRAINED_PREFIX)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelLoadError(f"{source}: does not fit the encoder (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ModelLoadError(f"{source}: {k} has shape {tuple(v.shape)}, the encoder needs {tuple(own[k].shape)}")
    with torch.no_grad():
        model.load_state_dict({k: torch.as_tensor(v).to(own[k].dtype) for k, v in state.items()}, strict=False)


def _batches(lengths: np.ndarray, idx: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: sort within chunks of 50 batches, shuffle the batches."""
    idx = rng.permutation(idx)
    chunk = batch_size * 50
    out = []
    for s in range(0, len(idx), chunk):
        c = idx[s: s + chunk]
        c = c[np.argsort(lengths[c], kind="stable")]
        out += [c[i: i + batch_size] for i in range(0, len(c), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def finetune_encoder(encoder, texts: list[str], labels: np.ndarray, weights: np.ndarray,
                     settings: FinetuneSettings) -> tuple[dict, dict[str, np.ndarray]]:
    """Train ``encoder`` (in place) and a linear head; returns ``(layer_state, head)``.

    ``head`` holds ``w`` (384,) and ``b`` (1,) acting on the unit-normalised sentence
    embedding, i.e. the same ``logreg`` head format the frozen-encoder build writes.
    """
    import torch
    import torch.nn as nn
    from tqdm.auto import tqdm

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    st = encoder
    model = st[0].auto_model
    tok = st.tokenizer
    for p in model.parameters():
        p.requires_grad = False
    layers = [p for n, p in model.named_parameters() if n.startswith(TRAINED_PREFIX)]
    for p in layers:
        p.requires_grad = True
    dim = model.config.hidden_size
    head = nn.Linear(dim, 1)
    ids = tok(list(texts), truncation=True, max_length=settings.max_seq_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    w = torch.as_tensor(np.asarray(weights), dtype=torch.float32)
    pad_id = tok.pad_token_id or 0

    opt = torch.optim.AdamW([{"params": layers, "lr": settings.lr},
                             {"params": head.parameters(), "lr": settings.head_lr}],
                            weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(ids) / settings.batch_size)
    total = settings.epochs * per_epoch
    warm = max(int(settings.warmup * total), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(total - warm, 1))))
    use_bf16 = settings.bf16 and bf16_supported()
    model.train()
    model.embeddings.eval()  # frozen, and without dropout, as measured
    t0 = time.time()
    bar = tqdm(total=total, desc="fine-tune", disable=not settings.progress, unit="batch")
    for epoch in range(settings.epochs):
        running, seen = 0.0, 0
        for b in _batches(lengths, np.arange(len(ids)), settings.batch_size, rng):
            width = int(lengths[b].max())
            inp = torch.full((len(b), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(b), width), dtype=torch.long)
            for j, i in enumerate(b):
                inp[j, : lengths[i]] = torch.as_tensor(ids[i])
                mask[j, : lengths[i]] = 1
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
                hidden = model(input_ids=inp, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = nn.functional.normalize(((hidden * m).sum(1) / m.sum(1)).float(), dim=-1)
                z = head(pooled * POOL_SCALE).squeeze(-1).float()
            loss = (nn.functional.binary_cross_entropy_with_logits(z, y[b], reduction="none") * w[b]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach()) * len(b)
            seen += len(b)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{running / seen:.4f}")
        log.info("fine-tune epoch %d: loss %.4f (%.0f s)", epoch + 1, running / max(seen, 1), time.time() - t0)
    bar.close()
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    head_w = (head.weight.detach().numpy().reshape(-1) * POOL_SCALE).astype(np.float32)
    head_b = head.bias.detach().numpy().astype(np.float32)
    return trained_state(st), {"w": head_w, "b": head_b}
