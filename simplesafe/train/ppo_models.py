"""The models of PPO (:mod:`simplesafe.train.ppo`): policy, reference and value function, and saving the policy.

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
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from pathlib import Path

from simplesafe.errors import ConfigError
from simplesafe.train.ppo_config import PPOStageConfig
from simplesafe.train.rollout import load_sft_policy


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
    from simplesafe.train.common import save_model_into

    save_model_into(model, tokenizer, out_dir)
    from simplesafe.models.templates import record_folder_templates

    record_folder_templates(out_dir, cfg.template)
