"""The prompt template a model was trained with, recorded in its folder.

Every trainer writes ``prompt_template.json`` (``{"template": ...}``) next to the weights
it saves (and into an adapter folder), so that ``simplesafe eval generate model=FOLDER``
prompts the model the way it learnt to answer. A template is either ``chat`` (the
tokenizer's own chat template, e.g. SmolLM2-Instruct's ChatML) or a string with
``{question}`` such as the report's ``### Human: {question} ### Assistant:``.

When a folder records nothing (a hub model, a base model) the template is ``chat`` if
the tokenizer has a chat template (an instruct model) and the report's format otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

TEMPLATE_FILE = "prompt_template.json"


def record_template(folder: str | Path, template: str) -> None:
    from simplesafe.atomic import write_json

    write_json(Path(folder) / TEMPLATE_FILE, {"template": template})


def record_folder_templates(out_dir: str | Path, template: str) -> None:
    """A trainer's output folder: the template next to the weights, and in ``adapter/`` when there is one."""
    out_dir = Path(out_dir)
    record_template(out_dir, template)
    if (out_dir / "adapter").is_dir():
        record_template(out_dir / "adapter", template)


def recorded_template(model: str | Path) -> str | None:
    """The template recorded in ``model`` (a local folder), or in the adapter's base folder; None if none."""
    folder = Path(str(model)).expanduser()
    if not folder.is_dir():
        return None
    f = folder / TEMPLATE_FILE
    if f.exists():
        value = json.loads(f.read_text()).get("template")
        return value if isinstance(value, str) and value else None
    adapter_cfg = folder / "adapter_config.json"
    if adapter_cfg.exists():
        base = json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
        if base and Path(base).expanduser() != folder:
            return recorded_template(base)
    return None


def default_template(tokenizer) -> str:
    from simplesafe.text.prompt import REPORT_TEMPLATE

    return "chat" if getattr(tokenizer, "chat_template", None) else REPORT_TEMPLATE


def resolve_template(requested: str | None, model: str | Path, tokenizer) -> str:
    """``requested`` when given (not None/'auto'), else what ``model`` recorded, else :func:`default_template`."""
    if requested not in (None, "", "auto"):
        return requested
    return recorded_template(model) or default_template(tokenizer)
