"""SFT tokenisation: the exact boundary between prompt and answer, so the loss is on the answer only.

The prompt (formatted with the template, :mod:`simplesafe.text.prompt`) and the answer are
tokenised separately and concatenated; every prompt position gets label -100. Used by SFT
(:mod:`simplesafe.train.sft`) and by the careful-merge comparison's log-likelihoods
(:mod:`simplesafe.train.merge`), which must score answers exactly as SFT trained them.
"""

from __future__ import annotations

import logging

from simplesafe.text.prompt import REPORT_TEMPLATE
from simplesafe.train.common import format_completion, format_prompt

log = logging.getLogger(__name__)


def tokenize_example(tokenizer, question: str, answer: str, template: str = REPORT_TEMPLATE,
                     max_length: int | None = None, system: str | None = None) -> dict | None:
    """``{"input_ids", "labels"}`` with -100 on every prompt position; None if no answer token fits.

    The prompt is encoded with the tokenizer's special tokens (BOS where it has one), the
    answer without, and EOS is appended so the model learns to stop.
    """
    prompt = format_prompt(question, template, tokenizer, system=system)
    completion = format_completion(question, answer, template, tokenizer, system=system)
    add_special = template != "chat"  # chat templates write their own BOS text
    prompt_ids = tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
    answer_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    input_ids = prompt_ids + answer_ids
    labels = [-100] * len(prompt_ids) + answer_ids
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    if all(x == -100 for x in labels):
        return None
    return {"input_ids": input_ids, "labels": labels}


def tokenize_rows(tokenizer, rows: list[dict], template: str, max_length: int,
                  prompt_field: str = "prompt", completion_field: str = "completion", system: str | None = None):
    """A ``datasets.Dataset`` of tokenised rows and the number dropped because the prompt filled ``max_length``."""
    from datasets import Dataset

    out, dropped = [], 0
    for row in rows:
        ex = tokenize_example(tokenizer, row[prompt_field], row[completion_field], template, max_length, system)
        if ex is None:
            dropped += 1
            continue
        out.append(ex)
    if dropped:
        log.warning("%d rows dropped: their prompt alone fills max_length=%d", dropped, max_length)
    return Dataset.from_list(out), dropped
