"""One place that loads models: causal LMs, sequence classifiers, sentence encoders.

Each loader takes a Hugging Face hub id or a local directory (or an ``embedded:*``
name, see :mod:`simplesafe.models.embedded`). Weights load only from safetensors;
``trust_remote_code`` stays off unless the caller's config asks for it, and then a
warning is logged. When the hub cannot be reached the error says how to point at a
local copy instead.

    model = load_causal_lm("embedded:tiny")
    model = load_causal_lm("meta-llama/Llama-2-7b-hf", quantization="nf4")
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from simplesafe.atomic import default_mode
from simplesafe.errors import ModelLoadError
from simplesafe.models.embedded import resolve

log = logging.getLogger(__name__)

Quantization = Literal["none", "nf4", "int8"]


def _offline_help(name: str, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"could not load '{name}': it is not a local directory and the Hugging Face Hub did not provide it "
        f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).\n"
        f"  To use a local copy: download it where the hub is reachable, e.g. "
        f"`hf download {name} --local-dir /models/{name.split('/')[-1]}`, copy the folder here "
        f"and pass that folder's path instead of '{name}' (or set HF_HOME to a populated cache and HF_HUB_OFFLINE=1)."
    )


def _check_trust(trust_remote_code: bool, name: str) -> None:
    if trust_remote_code:
        log.warning("trust_remote_code=True for '%s': its Python code will run on this machine", name)


def _is_local(path: str) -> bool:
    return Path(path).expanduser().exists()


def _load(fn, name: str, **kwargs):
    path = resolve(name)
    local = _is_local(path)
    if not local and "/" not in path and not path.replace("-", "").replace("_", "").isalnum():
        raise ModelLoadError(f"model '{name}' is neither a local directory nor a hub id")
    try:
        return fn(str(Path(path).expanduser()) if local else path, **kwargs)
    except OSError as exc:
        if local:
            raise ModelLoadError(f"could not load model from '{path}': {exc}") from exc
        raise _offline_help(name, exc) from exc
    except ValueError as exc:
        msg = str(exc)
        if "safetensors" in msg.lower() or "use_safetensors" in msg:
            raise ModelLoadError(
                f"'{name}' has no safetensors weights; simplesafe loads only safetensors "
                "(convert the checkpoint with `transformers` save_pretrained(safe_serialization=True))"
            ) from exc
        raise


def torch_dtype(name: str | None):
    import torch

    if name in (None, "auto"):
        return None
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ModelLoadError(f"unknown dtype '{name}'; allowed: {', '.join(table)}")
    return table[name]


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 instructions (AVX512-BF16, AMX), where bf16 matmuls beat fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# --------------------------------------------------------------------------- the one dtype and device rule

Precision = Literal["auto", "fp32", "bf16", "fp16"]
_PRECISION_DTYPE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_DTYPE_PRECISION = {"float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16",
                    "fp16": "fp16"}


def resolve_device(device: str | None = "auto") -> str:
    """``auto``: ``cuda`` when a GPU is visible, else ``cpu``; anything else is returned as given."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_precision(precision: str | None, device: str | None = "auto") -> str:
    """The compute precision of every model in simplesafe, training and inference alike.

    ``auto`` is: bf16 on a GPU that has it; fp16 on a GPU without bf16 (a T4, a V100), where
    training scales the loss (transformers' ``fp16``, accelerate's ``mixed_precision="fp16"``,
    ``torch.amp.GradScaler`` in PPO); on a CPU bf16 when it has native bf16 instructions
    (AVX512-BF16/AMX), else fp32. ``fp32``, ``bf16`` and ``fp16`` (or ``float32`` ...) force one.

    What the precision means for memory (the same on every device, so a bf16 run on a CPU is the
    GPU code path minus CUDA): frozen weights (a LoRA base, a DPO reference, reward models and
    generators) are stored in the compute dtype; trainable weights (full fine-tuning, adapters,
    heads) stay fp32 and the forward and backward passes run under autocast in the compute
    dtype; QLoRA bases are NF4 with the compute dtype as bitsandbytes' compute dtype.
    """
    if precision not in (None, "auto"):
        if precision not in _DTYPE_PRECISION:
            raise ModelLoadError(f"unknown precision/dtype '{precision}'; allowed: auto, fp32, bf16, fp16 "
                                 "(or float32, bfloat16, float16)")
        return _DTYPE_PRECISION[precision]
    import torch

    device = resolve_device(device)
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def precision_dtype(precision: str) -> str:
    """``bf16`` -> ``bfloat16`` (the name :func:`torch_dtype` and ``load_*`` take)."""
    return _PRECISION_DTYPE[_DTYPE_PRECISION.get(precision, precision)]


def inference_dtype(dtype: str | None, device: str = "cpu") -> str:
    """Weight dtype for inference: ``auto`` follows :func:`resolve_precision` (bf16 on a GPU that has it, else
    fp16; bf16 on a CPU with native bf16 (generation about 1.4x faster than fp32 with SmolLM2-135M on 2
    AVX512-BF16 cores), else fp32); an explicit dtype is kept."""
    if dtype not in (None, "auto"):
        return precision_dtype(dtype) if dtype in _DTYPE_PRECISION else dtype
    return precision_dtype(resolve_precision("auto", device))


def release_memory() -> None:
    """Return freed accelerator memory once the models that held it are gone (between stages)."""
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def quantization_config(quantization: Quantization, compute_dtype: str = "bfloat16"):
    if quantization in (None, "none"):
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype(compute_dtype),
        )
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ModelLoadError(f"unknown quantization '{quantization}'; allowed: none, nf4, int8")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, padding_side: str = "right"):
    from transformers import AutoTokenizer

    _check_trust(trust_remote_code, name_or_path)
    tok = _load(AutoTokenizer.from_pretrained, name_or_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def load_causal_lm(
    name_or_path: str,
    dtype: str | None = "float32",
    quantization: Quantization = "none",
    trust_remote_code: bool = False,
    device_map=None,
):
    """Load a causal LM from safetensors; ``quantization="nf4"`` gives a QLoRA base."""
    from transformers import AutoModelForCausalLM

    _check_trust(trust_remote_code, name_or_path)
    kwargs = dict(use_safetensors=True, trust_remote_code=trust_remote_code)
    if dtype not in (None, "auto"):
        kwargs["dtype"] = torch_dtype(dtype)
    qc = quantization_config(quantization, compute_dtype=dtype if dtype in ("bfloat16", "float16") else "bfloat16")
    if qc is not None:
        kwargs["quantization_config"] = qc
    if device_map is not None:
        kwargs["device_map"] = device_map
    return _load(AutoModelForCausalLM.from_pretrained, name_or_path, **kwargs)


def load_sequence_classifier(name_or_path: str, num_labels: int | None = None, trust_remote_code: bool = False,
                             dtype: str | None = "float32", quantization: Quantization = "none", device_map=None):
    """A sequence classifier (reward models, toxicity classifiers); ``quantization="nf4"`` for a QLoRA reward model."""
    from transformers import AutoModelForSequenceClassification

    _check_trust(trust_remote_code, name_or_path)
    kwargs = dict(use_safetensors=True, trust_remote_code=trust_remote_code)
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
    if dtype not in (None, "auto"):
        kwargs["dtype"] = torch_dtype(dtype)
    qc = quantization_config(quantization, compute_dtype=dtype if dtype in ("bfloat16", "float16") else "bfloat16")
    if qc is not None:
        kwargs["quantization_config"] = qc
    if device_map is not None:
        kwargs["device_map"] = device_map
    return _load(AutoModelForSequenceClassification.from_pretrained, name_or_path, **kwargs)


_ENCODERS: dict[tuple[str, str], object] = {}


def load_sentence_encoder(name_or_path: str = "embedded:minilm", device: str = "auto", trust_remote_code: bool = False,
                          cache: bool = True):
    """A sentence-transformers encoder, cached per process (loading costs ~1 s); ``device: auto`` puts it on the
    GPU when there is one. :func:`clear_encoder_cache` drops the cache (the recipe runner does, between stages);
    ``cache=False`` loads a private copy (to be modified) without keeping a second one in the cache."""
    device = resolve_device(device)
    key = (name_or_path, device)
    if cache and key in _ENCODERS:
        return _ENCODERS[key]
    from sentence_transformers import SentenceTransformer

    _check_trust(trust_remote_code, name_or_path)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model = _load(SentenceTransformer, name_or_path, device=device, trust_remote_code=trust_remote_code)
    if cache:
        _ENCODERS[key] = model
    return model


def clear_encoder_cache() -> None:
    _ENCODERS.clear()


def save_pretrained(model, tokenizer, out_dir: str | Path) -> Path:
    """Save as safetensors into ``out_dir`` (written to a temp folder, then renamed)."""
    import shutil
    import tempfile

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's folder is private (0o700); mkdir's follows the umask
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
