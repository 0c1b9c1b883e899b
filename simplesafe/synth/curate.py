"""Humpback: instruction backtranslation with self-curation (Li et al., 2023).

"Self-Alignment with Instruction Backtranslation" (Li et al., 2023, Sec. 2):

0. seed data: (instruction x, output y) pairs; unlabelled passages y' (here: Simple
   Wikipedia leads or any text rows);
1. self-augmentation: fine-tune a *backward* model M_yx on (y -> x) seed pairs and let
   it write an instruction x^ for each passage: candidates A = {(x^, y')};
2. self-curation: fine-tune M_0 on the seed pairs (x -> y); ask it to rate every
   candidate with a 5-point rubric that ends in "Score: <n>" (our wording of the paper's
   Table 1, in :mod:`simplesafe.synth.prompts`) and keep A_k(1) = {score >= k};
3. iterate t = 2..T: fine-tune M_{t-1} on seed + A_k(t-1), re-score A with it, keep
   A_k(t).

The output ``train.jsonl`` is seed + A_k(T) as prompt/completion rows (``source``,
``id``, ``generator``, ``prompt_id``, ``round``) for ``simplesafe train sft``. Models are
trained with :func:`simplesafe.train.sft.train_sft` (the report's prompt format); each
trained model and each scoring pass is kept in the stage folder, and all generation goes
through the SQLite cache keyed by the model's weights digest, so an interrupted run
resumes where it stopped. Optionally ``label_backend`` / ``judge`` send labelling or
scoring to another backend (e.g. an OpenAI-compatible server) instead of the trained
tiny models; that departs from the paper's *self*-curation and is recorded in stats.

The judge's score is read only from the judge's own reply: lines that repeat a line of
the candidate answer are ignored, and the last remaining line of the form
``Score: <1-5>`` wins (see :func:`parse_score`).

    simplesafe synth humpback seed_data=runs/demo/data/sft unlabelled=runs/demo/data/wiki/train.jsonl \\
        rounds=2 k=4 --out runs/humpback
"""

from __future__ import annotations

import json
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
from simplesafe.llm.base import BackendConfig, GenParams, make_backend
from simplesafe.runs import file_sha256, stage
from simplesafe.synth import prompts as P
from simplesafe.synth.backtranslate import clean_question
from simplesafe.synth.self_instruct import is_repetitive, prompt_id

log = logging.getLogger(__name__)

_SCORE_LINE = re.compile(
    r"^[ \t>*#_\-]*(?:final[ \t]+)?(?:score|rating)[ \t*_]*[:=][ \t*_]*([1-5])(?:[ \t]*(?:/|out of)[ \t]*5)?[ \t*_.!]*$",
    re.I | re.M,
)


def parse_score(judge_output: str, candidate: str = "") -> int | None:
    """The judge's own final ``Score: n`` (1-5), or None.

    Only line-anchored ``Score: n`` lines count (a score inside a sentence does not), lines
    that repeat a line of the candidate answer are dropped (a judge echoing the candidate
    must not hand it the candidate's own "Score: 5"), and the last one left wins, as the
    rubric asks for the score on the last line.
    """
    if not judge_output:
        return None
    echoed = {l.strip() for l in (candidate or "").splitlines() if l.strip()}
    own = "\n".join(l for l in judge_output.splitlines() if l.strip() not in echoed)
    matches = list(_SCORE_LINE.finditer(own))
    return int(matches[-1].group(1)) if matches else None


class HumpbackConfig(StageConfig):
    """Humpback settings; defaults follow Li et al. (2023): T = 2 rounds, keep score >= 5 (A_5)."""

    seed_data: str | None = Field(None, description="seed (instruction, output) rows: a dataset folder with train.jsonl or a rows file")
    unlabelled: str | None = Field(None, description="rows with unlabelled passages (a folder with train.jsonl or a file)")
    prompt_field: str = Field("prompt", description="seed field holding the instruction")
    completion_field: str = Field("completion", description="seed field holding the output")
    text_field: str = Field("text", description="unlabelled field holding the passage")
    max_seed: int | None = Field(None, ge=1, description="use the first N seed rows (demo)")
    max_unlabelled: int | None = Field(None, ge=1, description="use the first N passages (demo)")
    max_passage_words: int = Field(300, ge=10, description="passages are cut to this many words")
    base_model: str = Field("embedded:tiny", description="model that M_yx and M_t are fine-tuned from")
    rounds: int = Field(2, ge=1, le=10, description="T: curation rounds")
    k: int = Field(5, ge=1, le=5, description="keep candidates with score >= k (the paper's A_5; A_4 is the other option)")
    sft: dict = Field(default_factory=lambda: {"epochs": 1, "max_length": 256}, description="SFTStageConfig fields for every fine-tune")
    label_params: GenParams = Field(default_factory=lambda: GenParams(max_new_tokens=48, temperature=0.7, seed=0))
    judge_params: GenParams = Field(default_factory=lambda: GenParams(max_new_tokens=96, temperature=0.0))
    batch_size: int = Field(16, ge=1, description="hf generation batch size")
    label_backend: BackendConfig | None = Field(None, description="label with this backend instead of the trained M_yx")
    judge: BackendConfig | None = Field(None, description="score with this backend instead of the trained M_t")
    min_instruction_words: int = Field(3, ge=1)
    max_instruction_words: int = Field(60, ge=3)
    seed: int = Field(0, description="random seed")


def _rows_path(path: str, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in ("train.jsonl", "train.jsonl.gz", "train.parquet"):
            if (p / name).exists():
                return p / name
        raise DataError(p, None, None, f"{what}: no train.jsonl in this folder")
    if not p.exists():
        raise DataError(p, None, None, f"{what}: file not found")
    return p


def _read(path: Path, fields: tuple[str, ...], limit: int | None) -> list[dict]:
    rows = []
    for line, row in read_rows(path):
        out = {f: require(row, f, path, line) for f in fields}
        out["id"] = str(row.get("id", f"{path.stem}-{line}"))
        out["source"] = str(row.get("source") or path.stem)
        rows.append(out)
        if limit is not None and len(rows) >= limit:
            break
    return rows


def _cut(text: str, n: int) -> str:
    words = text.split()
    return text if len(words) <= n else " ".join(words[:n])


def _train(cfg: HumpbackConfig, rows: list[dict], out: Path, progress: bool) -> Path:
    """Fine-tune ``cfg.base_model`` on prompt/completion rows; reuse a model trained on the same rows."""
    import hashlib

    from simplesafe.config import validate
    from simplesafe.train.sft import SFTStageConfig, train_sft

    sft_cfg = validate(SFTStageConfig, {"seed": cfg.seed, "early_stopping_patience": None, **cfg.sft},
                       source="humpback config", prefix="sft.")
    fingerprint = hashlib.sha256(json.dumps([cfg.base_model, sft_cfg.model_dump(mode="json"), rows],
                                            sort_keys=True).encode()).hexdigest()
    marker = out / "humpback_fingerprint.txt"
    if marker.exists() and marker.read_text().strip() == fingerprint and (out / "config.json").exists():
        log.info("reusing %s (trained on the same rows)", out)
        return out
    train_sft(cfg.base_model, rows, None, out, sft_cfg, progress=progress)
    marker.write_text(fingerprint + "\n")
    return out


def _hf_backend(model_dir: Path, cache_path: Path, batch_size: int):
    from simplesafe.llm.cache import GenerationCache
    from simplesafe.llm.hf import HFBackend

    digest = file_sha256(model_dir / "model.safetensors")[:16]
    return HFBackend(str(model_dir), batch_size=batch_size, cache=GenerationCache(cache_path),
                     cache_model=f"{model_dir.name}@{digest}")


def _template(cfg: HumpbackConfig) -> str:
    from simplesafe.train.common import REPORT_TEMPLATE

    return cfg.sft.get("template", REPORT_TEMPLATE)


def _as_prompt(text: str, template: str):
    """The prompt exactly as the SFT trainer formatted it (chat template: messages)."""
    if template == "chat":
        return [{"role": "user", "content": text}]
    return template.replace("{question}", text)


def run_humpback(cfg: HumpbackConfig, out_dir: str | Path, force: bool = False, progress: bool = True) -> dict:
    """Run Humpback into the stage folder ``out_dir``; returns stats (also ``stats.json``)."""
    out_dir = Path(out_dir)
    if not cfg.seed_data or not cfg.unlabelled:
        raise ConfigError("humpback needs seed_data=PATH (instruction/output rows) and unlabelled=PATH (passages)")
    seed_path, unl_path = _rows_path(cfg.seed_data, "seed_data"), _rows_path(cfg.unlabelled, "unlabelled")
    with stage(out_dir.parent, out_dir.name, cfg, inputs=[seed_path, unl_path], seed=cfg.seed, force=force) as st:
        if st.skipped:
            return json.loads((out_dir / "stats.json").read_text())
        t0 = time.time()
        pf, cf = cfg.prompt_field, cfg.completion_field
        seed = _read(seed_path, (pf, cf), cfg.max_seed)
        passages = _read(unl_path, (cfg.text_field,), cfg.max_unlabelled)
        if len(seed) < 2:
            raise DataError(seed_path, None, None, "Humpback needs at least 2 seed pairs")
        template = _template(cfg)
        cache = out_dir / "cache.sqlite"
        rejected: list[dict] = []

        # 1. self-augmentation with the backward model M_yx (output -> instruction)
        if cfg.label_backend is None:
            backward_rows = [{"prompt": _cut(r[cf], cfg.max_passage_words), "completion": r[pf]} for r in seed]
            m_yx = _train(cfg, backward_rows, out_dir / "m_yx", progress)
            labeller = _hf_backend(m_yx, cache, cfg.batch_size)
            label_prompts = [_as_prompt(_cut(p[cfg.text_field], cfg.max_passage_words), template) for p in passages]
        else:
            labeller = make_backend(cfg.label_backend, cache)
            label_prompts = [P.backtranslate_messages(_cut(p[cfg.text_field], cfg.max_passage_words)) for p in passages]
        with labeller:
            labels = labeller.generate(label_prompts, cfg.label_params, progress=progress, desc="humpback: label")
            label_gen = labeller.generator_id
        candidates = []
        for p, prompt, out in zip(passages, label_prompts, labels):
            base = {"id": f"hb-{p['id']}", "passage_id": p["id"], "generator": label_gen,
                    "prompt_id": prompt_id("humpback-label", prompt), "round": 0}
            instruction = clean_question(out) if out.ok else ""
            n = len(instruction.split())
            why = ("label_failed" if not out.ok else "empty_instruction" if n == 0
                   else "too_short" if n < cfg.min_instruction_words
                   else "too_long" if n > cfg.max_instruction_words
                   else "repetitive" if is_repetitive(instruction) else None)
            if why:
                rejected.append({**base, "reason": why, "detail": out.error or str(out)[:200]})
                continue
            candidates.append({**base, "source": f"{p['source']}-humpback", "prompt": instruction,
                               "completion": p[cfg.text_field]})
        write_rows(out_dir / "candidates.jsonl", candidates)

        # 2-3. self-curation rounds
        seed_rows = [{"id": r["id"], "source": r["source"], "prompt": r[pf], "completion": r[cf],
                      "generator": "human", "prompt_id": None, "round": 0} for r in seed]
        curated: list[dict] = []
        rounds = []
        for t in range(1, cfg.rounds + 1):
            train_rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in seed_rows + curated]
            if cfg.judge is None:
                m_t = _train(cfg, train_rows, out_dir / f"m_{t - 1}", progress)
                judge = _hf_backend(m_t, cache, cfg.batch_size)
            else:
                judge = make_backend(cfg.judge, cache)
            prompts = [_as_prompt(P.curation_prompt(c["prompt"], _cut(c["completion"], cfg.max_passage_words)), template)
                       for c in candidates]
            with judge:
                replies = judge.generate(prompts, cfg.judge_params, progress=progress, desc=f"humpback: score round {t}")
                judge_gen = judge.generator_id
            scored, curated = [], []
            for c, prompt, reply in zip(candidates, prompts, replies):
                score = parse_score(reply, c["completion"]) if reply.ok else None
                row = {**c, "score": score, "judge": judge_gen, "judge_prompt_id": prompt_id("humpback-rubric", prompt),
                       "round": t, "judge_reply": str(reply)[-200:], "judge_error": reply.error}
                scored.append(row)
                if score is not None and score >= cfg.k:
                    curated.append({k: row[k] for k in ("id", "source", "prompt", "completion", "generator",
                                                        "prompt_id", "round", "score", "passage_id")})
            write_rows(out_dir / f"round_{t}" / "scored.jsonl", scored)
            write_rows(out_dir / f"round_{t}" / "curated.jsonl", curated)
            hist = Counter(str(r["score"]) for r in scored)
            rounds.append({"round": t, "judge": judge_gen, "scored": len(scored), "kept": len(curated),
                           "unparsable": hist.get("None", 0),
                           "score_histogram": {s: hist.get(s, 0) for s in ("1", "2", "3", "4", "5", "None")}})
        final_scored = scored if cfg.rounds else []
        for row in final_scored:
            if row["score"] is None:
                rejected.append({"id": row["id"], "reason": "no_score" if not row["judge_error"] else "judge_failed",
                                 "detail": row["judge_error"] or row["judge_reply"], "round": row["round"]})
            elif row["score"] < cfg.k:
                rejected.append({"id": row["id"], "reason": f"score_below_{cfg.k}", "score": row["score"],
                                 "round": row["round"]})
        write_rows(out_dir / "train.jsonl", seed_rows + curated)
        write_rows(out_dir / "rejected.jsonl", rejected)
        stats = {
            "seed": len(seed_rows),
            "passages": len(passages),
            "candidates": len(candidates),
            "curated": len(curated),
            "train_rows": len(seed_rows) + len(curated),
            "k": cfg.k,
            "rounds": rounds,
            "reject_reasons": dict(Counter(r["reason"] for r in rejected).most_common()),
            "self_curation": cfg.judge is None,
            "labeller": label_gen,
            "seconds": round(time.time() - t0, 2),
        }
        write_json(out_dir / "stats.json", stats)
        return stats
