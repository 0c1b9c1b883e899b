"""The report's prompt format, defined once: ``### Human: {question} ### Assistant:``.

Every place that puts a question in front of a model (SFT, DPO, PPO/GRPO/best-of-n, reward
models, ``eval generate``, the tiny model's chat template, backtranslation) takes the format
from here, so a trained model is always asked in the format it was trained on.

    from simplesafe.text.prompt import REPORT_TEMPLATE, format_prompt
    format_prompt("Why is the sky blue?")              # '### Human: Why is the sky blue? ### Assistant:'
    format_prompt("Why?", "chat", tokenizer)           # the tokenizer's chat template, generation prompt added
"""

from __future__ import annotations

from simplesafe.errors import ConfigError

REPORT_TEMPLATE = "### Human: {question} ### Assistant:"
# the two turn markers, "### Human:" and "### Assistant:"
HUMAN_TURN, ASSISTANT_TURN = (part.strip() for part in REPORT_TEMPLATE.split("{question}"))


def chat_messages(question: str, system: str | None = None) -> list[dict]:
    """The chat turns before an answer: an optional system message, then the question."""
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": question}]


def format_prompt(question: str, template: str = REPORT_TEMPLATE, tokenizer=None, *, system: str | None = None) -> str:
    """The text the model sees before its answer.

    ``template`` is a string with ``{question}`` (``{q}``, the older spelling of ``eval
    generate``, also works), or ``chat`` for the tokenizer's chat template with the
    generation prompt appended (after ``system``, when given; else the template's default
    system message, if it has one).
    """
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ConfigError("template: chat needs a tokenizer with a chat_template; "
                              f"use a '{{question}}' template such as '{REPORT_TEMPLATE}'")
        return tokenizer.apply_chat_template(chat_messages(question, system), tokenize=False,
                                             add_generation_prompt=True)
    if "{question}" in template:
        return template.replace("{question}", question)
    if "{q}" in template:
        return template.replace("{q}", question)
    raise ConfigError(f"template must contain '{{question}}' or be 'chat', got {template!r}")
