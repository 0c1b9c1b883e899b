"""Question backtranslation: turn Simple Wikipedia leads into (question, answer) SFT pairs.

Follows the project report ("Training LLMs on Simple, Safe Text", Sec. 2.1), which asked
GPT-3.5 what question each lead answers, with the system message "You are a helpful
assistant that generates questions from text." and the prompt "Question: X / Answer:
{lead} / What kind of question, X, could this be an answer to? / X:" (exact texts in
:mod:`simplesafe.synth.prompts`). Only the question is machine-written; the answer is
the human-written lead, so the pair teaches the simple style of Simple Wikipedia.

Every generated question is validated and otherwise rejected with a reason:
``generation_failed`` (the call failed after retries), ``empty``, ``not_a_question`` (no
question mark), ``multiple_questions``, ``too_short`` / ``too_long`` (words),
``repetitive``, ``echoes_prompt`` (it repeats the request, e.g. "What kind of question
could this be?", or its placeholder X) and ``copied_from_text`` (a long verbatim stretch
of the lead). Labels a
model likes to add ("X:", "Question:", quotes) and anything after the first line or
after the question mark are removed first.

Input: rows ``{id, source, text}`` (``simplesafe data build`` writes them as
``wiki/{train,validation,test}.jsonl``), a folder of such split files or one file.
Output, per split: ``{split}.jsonl`` with SFT rows ``{id, source, prompt, completion,
question_id, lead_id, generator, prompt_id, round}`` (prompt = the question, completion
= the lead) that ``simplesafe train sft`` reads; ``rejected.jsonl``; ``stats.json``. When
the leads carry a ``contrast`` text (the aligned ordinary-English version, Wiki-Auto),
``pairs/{split}.jsonl`` also holds preference pairs ``{prompt, chosen, rejected, weight}``
with the generated question, the simple text as ``chosen`` and the ordinary one as
``rejected``: simplicity preferences for DPO, judged by Simple Wikipedia's editors.
Calls go through the backend's SQLite cache, so an interrupted run resumes.

    simplesafe synth backtranslate input=runs/demo/data/wiki --out runs/bt
    simplesafe synth backtranslate input=runs/demo/data/wiki backend.backend=openai \\
        backend.base_url=http://localhost:8000/v1 backend.model=NAME --out runs/bt
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import time
from collections import Counter
from pathlib import Path

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, DataError
from simplesafe.io import read_rows, require, write_rows
from simplesafe.llm.base import Backend, BackendConfig, GenParams, make_backend
from simplesafe.runs import stage
from simplesafe.synth import prompts as P
from simplesafe.synth.self_instruct import is_repetitive

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
PROMPT_ID = "backtranslate-report:" + hashlib.sha1((P.BACKTRANSLATE_SYSTEM + P.BACKTRANSLATE_PROMPT).encode()).hexdigest()[:10]
_LABEL = re.compile(r"^\s*(?:[*#>\-]+\s*)?(?:X|Q|Question|Generated question|Answer)\s*[:\-]\s*", re.I)


class BacktranslateConfig(StageConfig):
    """Backtranslation settings (prompt texts are the report's; limits are ours)."""

    input: str | None = Field(None, description="folder with {train,validation,test}.jsonl leads, or one rows file")
    splits: list[str] = Field(default_factory=lambda: list(SPLITS), description="split files to read from a folder")
    text_field: str = Field("text", description="field holding the lead")
    limit_per_split: int | None = Field(None, ge=1, description="use only the first N leads of each split (demo)")
    max_answer_words: int = Field(400, ge=10, description="leads are cut to this many words inside the prompt")
    backend: BackendConfig = Field(default_factory=BackendConfig)
    params: GenParams = Field(default_factory=lambda: GenParams(max_new_tokens=64, temperature=0.7, seed=0))
    cache: str | None = Field(None, description="SQLite generation cache; default OUT/cache.sqlite")
    min_question_words: int = Field(3, ge=1)
    max_question_words: int = Field(40, ge=3)
    copy_fraction: float = Field(0.8, gt=0, le=1, description="reject when this share of the question's words is one verbatim run of the lead")
    seed: int = 0


_QUOTED_QUESTION = re.compile(r"[\"“]([^\"“”\n]{8,300}?\?)")


def clean_question(raw: str) -> str:
    """Strip labels, quotes and everything after the first line or the first '?'.

    Small models often wrap the question in a sentence ('This is an answer to the question
    "Why ...?"'): a quoted question inside the reply is taken as the question.
    """
    text = (raw or "").replace("\r\n", "\n").strip()
    quoted = _QUOTED_QUESTION.search(text)
    if quoted and not text.lstrip("\"“").startswith(quoted.group(1)[:8]):
        return quoted.group(1).strip()
    lines = [l for l in text.split("\n") if l.strip()]
    text = lines[0].strip() if lines else ""
    text = re.split(r"\b(?:Answer|A)\s*:", text)[0]
    for _ in range(2):
        text = _LABEL.sub("", text).strip()
    text = text.strip().strip("\"'“”‘’`*").strip()
    return text


def validate_question(raw: str, lead: str, min_words: int = 3, max_words: int = 40,
                      copy_fraction: float = 0.8) -> tuple[str, str | None]:
    """``(question, None)`` when it is usable, else ``(cleaned_text, reason)``."""
    q = clean_question(raw)
    if not q:
        return q, "empty"
    n_marks = q.count("?")
    if n_marks == 0:
        return q, "not_a_question"
    first = q.index("?")
    if n_marks > 1 and re.search(r"\w", q[first + 1:]):
        return q, "multiple_questions"
    q = q[: first + 1].strip()
    words = q.split()
    if len(words) < min_words:
        return q, "too_short"
    if len(words) > max_words:
        return q, "too_long"
    if is_repetitive(q):
        return q, "repetitive"
    if echoes_instruction(q):
        return q, "echoes_prompt"
    qw = re.findall(r"\w+", q.lower())
    lw = re.findall(r"\w+", lead.lower())
    if qw and lw:
        m = difflib.SequenceMatcher(None, qw, lw, autojunk=False).find_longest_match(0, len(qw), 0, len(lw))
        if len(qw) >= 4 and m.size >= copy_fraction * len(qw):
            return q, "copied_from_text"
    return q, None


_INSTRUCTION_WORDS = re.findall(r"\w+", "what kind of question x could this be an answer to")


def echoes_instruction(question: str) -> bool:
    """The question repeats the prompt's own request ("What kind of question, X, could this be?") or its
    placeholder X instead of asking about the text: small models often do."""
    if re.search(r"\bX\b", question):
        return True
    qw = re.findall(r"\w+", question.lower())
    m = difflib.SequenceMatcher(None, qw, _INSTRUCTION_WORDS, autojunk=False).find_longest_match(
        0, len(qw), 0, len(_INSTRUCTION_WORDS))
    return m.size >= 3


def read_leads(path: Path, text_field: str, limit: int | None) -> list[dict]:
    rows = []
    for line, row in read_rows(path):
        text = require(row, text_field, path, line)
        rid = row.get("id")
        if rid is None or not str(rid).strip():
            raise DataError(path, line, "id", "missing required field")
        rows.append({"id": str(rid), "source": str(row.get("source") or "simplewiki"), "text": text,
                     "title": row.get("title"), "contrast": row.get("contrast")})
        if limit is not None and len(rows) >= limit:
            break
    return rows


def input_files(cfg: BacktranslateConfig) -> dict[str, Path]:
    if not cfg.input:
        raise ConfigError("backtranslation needs input=PATH: a folder with train/validation/test.jsonl leads or one file")
    path = Path(cfg.input)
    if path.is_dir():
        found = {}
        for split in cfg.splits:
            for suffix in (".jsonl", ".jsonl.gz", ".parquet", ".json"):
                if (path / f"{split}{suffix}").exists():
                    found[split] = path / f"{split}{suffix}"
                    break
        if not found:
            raise DataError(path, None, None, f"no split files ({', '.join(cfg.splits)}).jsonl in this folder")
        return found
    if not path.exists():
        raise DataError(path, None, None, "file not found")
    return {path.name.split(".")[0]: path}


def truncate_words(text: str, n: int) -> str:
    words = text.split(" ")
    return text if len(words) <= n else " ".join(words[:n])


def backtranslate_rows(leads: list[dict], backend: Backend, cfg: BacktranslateConfig, progress: bool = True,
                       desc: str = "backtranslate") -> tuple[list[dict], list[dict]]:
    """Generate and validate one question per lead: (SFT rows, rejects)."""
    prompts = [P.backtranslate_messages(truncate_words(r["text"], cfg.max_answer_words)) for r in leads]
    outs = backend.generate(prompts, cfg.params, progress=progress, desc=desc)
    kept, rejected = [], []
    for lead, out in zip(leads, outs):
        base = {"lead_id": lead["id"], "generator": backend.generator_id, "prompt_id": PROMPT_ID, "round": 1}
        if not out.ok:
            rejected.append({**base, "id": f"bt-{lead['id']}", "reason": "generation_failed", "detail": out.error,
                             "raw": ""})
            continue
        question, reason = validate_question(out, lead["text"], cfg.min_question_words, cfg.max_question_words,
                                             cfg.copy_fraction)
        if reason:
            rejected.append({**base, "id": f"bt-{lead['id']}", "reason": reason, "question": question,
                             "raw": str(out)[:300]})
            continue
        row = {"id": f"bt-{lead['id']}", "source": f"{lead['source']}-backtranslation", "prompt": question,
               "completion": lead["text"], "question_id": f"bt-{lead['id']}", "title": lead.get("title"), **base}
        if isinstance(lead.get("contrast"), str) and lead["contrast"].strip():
            row["contrast"] = lead["contrast"]
        kept.append(row)
    return kept, rejected


def preference_pairs(rows: list[dict]) -> list[dict]:
    """Simple (chosen) vs ordinary (rejected) answers to the generated question, from rows with a ``contrast``."""
    out = []
    for r in rows:
        contrast = r.get("contrast")
        if not isinstance(contrast, str) or not contrast.strip() or contrast.strip() == r["completion"].strip():
            continue
        out.append({"id": f"{r['id']}:pair", "source": r["source"], "question_id": r["question_id"],
                    "prompt": r["prompt"], "chosen": r["completion"], "rejected": contrast, "weight": 1.0,
                    "lead_id": r["lead_id"], "generator": r["generator"], "prompt_id": r["prompt_id"]})
    return out


def run_backtranslation(cfg: BacktranslateConfig, out_dir: str | Path, force: bool = False,
                        progress: bool = True) -> dict:
    """Backtranslate every split into ``out_dir`` (a stage folder with DONE marker). Returns stats."""
    out_dir = Path(out_dir)
    files = input_files(cfg)
    with stage(out_dir.parent, out_dir.name, cfg, inputs=list(files.values()), seed=cfg.seed, force=force) as st:
        if st.skipped:
            import json

            return json.loads((out_dir / "stats.json").read_text())
        t0 = time.time()
        cache = cfg.cache or str(out_dir / "cache.sqlite")
        all_rejects: list[dict] = []
        per_split = {}
        n_pairs: dict[str, int] = {}
        with make_backend(cfg.backend, cache) as backend:
            for split, path in files.items():
                leads = read_leads(path, cfg.text_field, cfg.limit_per_split)
                kept, rejected = backtranslate_rows(leads, backend, cfg, progress, desc=f"backtranslate {split}")
                for r in rejected:
                    r["split"] = split
                write_rows(out_dir / f"{split}.jsonl", [{k: v for k, v in r.items() if k != "contrast"} for r in kept])
                pairs = preference_pairs(kept)
                if pairs or any("contrast" in r for r in kept):
                    write_rows(out_dir / "pairs" / f"{split}.jsonl", pairs)
                    n_pairs[split] = len(pairs)
                all_rejects.extend(rejected)
                per_split[split] = {"leads": len(leads), "kept": len(kept), "rejected": len(rejected)}
            calls, hits, gen = backend.calls, backend.cache_hits, backend.generator_id
        write_rows(out_dir / "rejected.jsonl", all_rejects)
        n_leads = sum(s["leads"] for s in per_split.values())
        n_kept = sum(s["kept"] for s in per_split.values())
        stats = {
            "leads": n_leads,
            "kept": n_kept,
            "kept_fraction": round(n_kept / n_leads, 4) if n_leads else 0.0,
            "splits": per_split,
            **({"preference_pairs": n_pairs} if n_pairs else {}),
            "reject_reasons": dict(Counter(r["reason"] for r in all_rejects).most_common()),
            "generator": gen,
            "model_calls": calls,
            "cache_hits": hits,
            "seconds": round(time.time() - t0, 2),
        }
        write_json(out_dir / "stats.json", stats)
        return stats
