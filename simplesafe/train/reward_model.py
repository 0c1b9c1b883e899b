"""The one reward-model scorer, :class:`RewardModel`: how a reward model reads a (question, answer) and scores it.

A folder from ``simplesafe train rm`` (:mod:`simplesafe.train.reward`) is an ordinary
sequence-classification model (safetensors + tokenizer) with ``reward_config.json``
(:data:`REWARD_CONFIG`) describing how to build its inputs (:func:`encode`). Score with
:class:`RewardModel` (the caller holds it and drops it, or calls ``close()``, when done: no
module-level cache keeps a reward model on the accelerator), or :func:`score_texts` /
:func:`score_pairs` for one call. The PPO/GRPO ``reward_model`` reward
(:mod:`simplesafe.train.rewards`), the eval judges and the ``reward_model`` annotator score with it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from simplesafe.train.common import REPORT_TEMPLATE

log = logging.getLogger(__name__)

REWARD_CONFIG = "reward_config.json"


# --------------------------------------------------------------------------- inputs and outputs

def is_causal_backbone(model) -> bool:
    return bool(getattr(model.config, "is_decoder", False)) or model.config.model_type in (
        "llama", "mistral", "gpt2", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3", "gpt_neox", "opt")


def encode(tokenizer, prompts: list[str], responses: list[str], spec: dict) -> dict:
    """Tokenise (question, answer) inputs the way ``spec`` (the model's reward_config) says."""
    if spec["kind"] == "encoder":
        if spec["use_prompt"]:
            return tokenizer(prompts, responses, truncation="longest_first", max_length=spec["max_length"])
        return tokenizer(responses, truncation=True, max_length=spec["max_length"])
    from simplesafe.train.common import format_prompt

    texts = []
    for p, r in zip(prompts, responses):
        texts.append((format_prompt(p, spec["template"], tokenizer) + " " + r.strip()) if spec["use_prompt"] else r.strip())
    # keep the end: the score is read at the last token, which must be the answer's
    tokenizer.truncation_side = "left"
    return tokenizer(texts, truncation=True, max_length=spec["max_length"])


def pad_batch(tokenizer, features: list[dict]):
    """Pad tokenised inputs into one batch of tensors."""
    return tokenizer.pad(features, padding=True, return_tensors="pt")


def batch_rewards(model, batch) -> "torch.Tensor":  # noqa: F821
    """The reward per row: the one output, or "second minus first" for a two-output (rejected/chosen) head."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   **({"token_type_ids": batch["token_type_ids"]} if "token_type_ids" in batch else {})).logits
    return logits[:, 0] if logits.shape[-1] == 1 else logits[:, -1] - logits[:, 0]


# --------------------------------------------------------------------------- scoring

class RewardModel:
    """The one reward-model scorer: ``RewardModel(path).score(prompts, responses)``.

    Used by ``train rm``'s own accuracy, the PPO/GRPO ``reward_model`` reward, the eval judges
    and the ``reward_model`` annotator. A folder from ``simplesafe train rm`` carries its
    ``reward_config.json`` and is scored exactly as it was trained (template, encoder pairs,
    truncation). Any other sequence classifier is scored on ``template`` (the prompt format,
    ``{question}``) followed by the answer, cut from the left to ``max_length`` tokens; a head
    with two outputs scores "second minus first" (chosen minus rejected). ``use_prompt=False`` scores
    such a classifier on the response alone (a caller that formats the whole text itself).

    Loaded on ``device`` (``auto``: the GPU when there is one) in ``dtype`` (``auto``: the one rule,
    :func:`simplesafe.models.load.inference_dtype`: bf16 on a GPU with bf16, fp16 on others, bf16 on
    a CPU with native bf16, else fp32). Nothing caches it: whoever loads it holds it, and
    ``close()`` (or dropping the object) gives the memory back.
    """

    def __init__(self, path: str | Path, device: str | None = "auto", dtype: str | None = "auto",
                 template: str | None = None, max_length: int = 512, batch_size: int = 32, use_prompt: bool = True):
        from simplesafe.errors import ModelLoadError
        from simplesafe.models.load import inference_dtype, load_sequence_classifier, load_tokenizer, resolve_device

        self.path = Path(path).expanduser()
        self.batch_size = batch_size
        spec_file = self.path / REWARD_CONFIG
        self.tokenizer = load_tokenizer(str(self.path), padding_side="right")
        self.device = resolve_device(device)
        self.dtype = inference_dtype(dtype, self.device)
        self.model = load_sequence_classifier(str(self.path), dtype=self.dtype).eval().requires_grad_(False)
        self.model.to(self.device)
        n_out = getattr(self.model.config, "num_labels", 1)
        if n_out not in (1, 2):
            raise ModelLoadError(f"{self.path}: a reward model has one output (or two: chosen/rejected), "
                                 f"this classifier has {n_out}")
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id  # causal heads read the last non-pad token
        if spec_file.exists():
            self.spec = json.loads(spec_file.read_text())
            self.trained_here = True
        else:
            self.spec = {"kind": "encoder" if not is_causal_backbone(self.model) else "causal", "use_prompt": use_prompt,
                         "template": template or REPORT_TEMPLATE, "max_length": max_length}
            self.trained_here = False
            log.info("%s has no %s: scoring it as a plain sequence classifier on '%s' + answer",
                     self.path, REWARD_CONFIG, self.spec["template"])
        if not self.trained_here:
            self.tokenizer.truncation_side = "left"  # keep the answer's end

    def score(self, prompts: list[str] | None, responses: list[str], batch_size: int | None = None) -> np.ndarray:
        import torch

        if self.model is None:
            raise RuntimeError(f"reward model {self.path} was closed")
        batch_size = batch_size or self.batch_size
        prompts = list(prompts) if prompts is not None else [""] * len(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        out = []
        with torch.no_grad():
            for i in range(0, len(responses), batch_size):
                enc = encode(self.tokenizer, prompts[i: i + batch_size], responses[i: i + batch_size], self.spec)
                batch = {k: v.to(self.device) for k, v in pad_batch(self.tokenizer, [
                    {k: enc[k][j] for k in enc.keys()} for j in range(len(enc["input_ids"]))]).items()}
                out.append(batch_rewards(self.model, batch).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def close(self) -> None:
        """Drop the model (its accelerator memory is returned)."""
        from simplesafe.models.load import release_memory

        self.model = None
        release_memory()


def load_reward_model(path: str | Path, device: str | None = "auto") -> RewardModel:
    """A :class:`RewardModel` for ``path`` (not cached: keep the object while scoring, drop it after)."""
    return RewardModel(path, device=device)


def score_texts(rm_dir: str | Path, prompts: list[str] | None, responses: list[str], batch_size: int = 32) -> np.ndarray:
    """Reward of each (prompt, response); prompts are ignored by models trained with ``use_prompt: false``.

    Loads the model, scores, releases it: for repeated scoring hold a :class:`RewardModel`.
    """
    rm = RewardModel(rm_dir)
    try:
        return rm.score(prompts, responses, batch_size)
    finally:
        rm.close()


def score_pairs(rm_dir: str | Path, prompts: list[str], chosen: list[str], rejected: list[str],
                batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Rewards of the chosen and the rejected answers; ``(c > r).mean()`` is the pairwise accuracy."""
    rm = RewardModel(rm_dir)
    try:
        return rm.score(prompts, chosen, batch_size), rm.score(prompts, rejected, batch_size)
    finally:
        rm.close()
