"""The report's prompt format: one template string and one format_prompt, used by training and evaluation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from simplesafe.errors import ConfigError
from simplesafe.text.prompt import REPORT_TEMPLATE, format_prompt

PACKAGE = Path(__file__).resolve().parents[2] / "simplesafe"


def test_format_prompt_templates():
    assert format_prompt("Why is the sky blue?") == "### Human: Why is the sky blue? ### Assistant:"
    assert format_prompt("Why?", "Q: {question}\nA:") == "Q: Why?\nA:"
    assert format_prompt("Why?", "Q: {q}\nA:") == "Q: Why?\nA:"  # eval generate's older spelling
    with pytest.raises(ConfigError, match="must contain"):
        format_prompt("Why?", "no placeholder")
    with pytest.raises(ConfigError, match="chat_template"):
        format_prompt("Why?", "chat", None)


def test_training_and_evaluation_share_one_format_prompt():
    import simplesafe.eval.generate as generate
    import simplesafe.train.common as common
    import simplesafe.train.rewards as rewards
    from simplesafe.eval.annotators import TEMPLATE

    assert generate.format_prompt is common.format_prompt is format_prompt
    from simplesafe.models.templates import default_template

    # eval generate's default: the template the model recorded, else chat for instruct models, else the report's
    assert generate.GenerateConfig.model_fields["template"].default is None
    assert common.REPORT_TEMPLATE == rewards.REPORT_TEMPLATE == default_template(type("Tok", (), {"chat_template": None}))
    assert TEMPLATE.format(instruction="Why?", output="Because.") == format_prompt("Why?") + " Because."


def test_tiny_model_chat_template_is_the_report_format(tiny_model_dir):
    from simplesafe.models.load import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    assert format_prompt("Why is the sky blue?", "chat", tok) == format_prompt("Why is the sky blue?")


def _code_strings(tree: ast.AST):
    """String constants that are not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def test_the_report_template_is_written_in_one_place():
    marker = REPORT_TEMPLATE.split("{question}")[0].strip()  # "### Human:"
    found = sorted(f"{p.relative_to(PACKAGE.parent)}:{node.lineno}" for p in PACKAGE.rglob("*.py")
                   for node in _code_strings(ast.parse(p.read_text(encoding="utf-8"))) if marker in node.value)
    assert found == [f"simplesafe/text/prompt.py:{_line_of('REPORT_TEMPLATE = ')}"]


def _line_of(prefix: str) -> int:
    lines = (PACKAGE / "text" / "prompt.py").read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if line.startswith(prefix))
