"""Self-Instruct: grow a pool of instructions from 175 seed tasks with an LLM.

Follows Wang et al., 2023 ("Self-Instruct: Aligning Language Models with Self-Generated
Instructions", Sec. 2): each generation prompt shows 8 in-context instructions (6 human
seed tasks and 2 machine-made ones once there are some) and asks for more; each new
instruction is

1. filtered: too short / too long, about images, pictures, graphs and other
   modalities a text model cannot handle, starting with punctuation or a non-ASCII
   character, repetitive, or ROUGE-L >= 0.7 with any instruction already in the pool
   (exact decision, computed with the index in :mod:`simplesafe.synth.novelty`);
2. classified as a classification task or not by a few-shot yes/no prompt;
3. given instances: input-first for ordinary tasks, output-first (label, then input)
   for classification tasks, so that the labels are not all the same;
4. kept when at least one instance survives (non-empty output, output != input).

Every dropped instruction goes to ``rejected.jsonl`` with its ``reason``. Calls go
through the backend's persistent cache and the sampling is seeded, so an interrupted
run replays the same prompts and resumes from its last finished call. Prompts are in
:mod:`simplesafe.synth.prompts`.

    simplesafe synth self-instruct --seed-tasks data/self-instruct/seed_tasks.jsonl \\
        --backend openai --base-url http://localhost:8000/v1 --model NAME \\
        --num-instructions 100 --out runs/si

Writes ``instructions.jsonl`` (``instruction``, ``instances: [{input, output}]``,
``is_classification`` and provenance), ``rejected.jsonl``, ``sft.jsonl`` (one
prompt/completion row per instance, ready for ``simplesafe train sft``) and
``stats.json``.
"""

from __future__ import annotations

import hashlib
import logging
import random
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
from simplesafe.synth import prompts as P
from simplesafe.synth.novelty import NoveltyIndex

log = logging.getLogger(__name__)

# Self-Instruct's keyword filter (tasks a text-only model cannot do), matched as whole words.
MODALITY_WORDS = (
    "image", "images", "graph", "graphs", "picture", "pictures", "photo", "photos", "file", "files",
    "map", "maps", "draw", "plot", "go to", "video", "videos", "audio", "music", "flowchart", "diagram",
)
_MODALITY_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in MODALITY_WORDS) + r")\b", re.I)
_TASK_SPLIT = re.compile(r"(?:^|\n)[ \t]*(?:[*#]+[ \t]*)?Task[ \t]*\d+[ \t]*(?:\*\*)?[ \t]*[:.)\-][ \t]*", re.I)
_NUMBERED_SPLIT = re.compile(r"(?:^|\n)[ \t]*\d{1,3}[.)][ \t]+")


class SelfInstructConfig(StageConfig):
    """Self-Instruct settings; defaults follow Wang et al. (2023)."""

    seed_tasks: str = Field("data/self-instruct/seed_tasks.jsonl", description="JSONL of seed tasks with 'instruction' (and optional 'instances', 'is_classification')")
    num_instructions: int = Field(100, ge=1, description="stop once this many instructions are kept")
    backend: BackendConfig = Field(default_factory=BackendConfig)
    cache: str | None = Field(None, description="SQLite generation cache; default OUT/cache.sqlite")
    num_prompt_instructions: int = Field(8, ge=2, description="in-context instructions per generation prompt")
    num_machine_instructions: int = Field(2, ge=0, description="of which machine-generated, once the pool has some")
    prompts_per_round: int = Field(8, ge=1, description="generation prompts sent together per round")
    max_prompts: int | None = Field(None, ge=1, description="give up after this many generation prompts (default 10 x num_instructions + 20)")
    patience: int = Field(5, ge=1, description="stop after this many rounds in a row that keep nothing new")
    rouge_threshold: float = Field(0.7, gt=0, le=1, description="reject an instruction with ROUGE-L >= this to any pooled one")
    min_words: int = Field(3, ge=1, description="shortest instruction kept (words)")
    max_words: int = Field(150, ge=1, description="longest instruction kept (words)")
    max_instances: int = Field(5, ge=1, description="instances kept per instruction")
    instruction_params: GenParams = Field(default_factory=lambda: GenParams(max_new_tokens=512, temperature=0.7, top_p=0.5))
    classify_params: GenParams = Field(default_factory=lambda: GenParams(max_new_tokens=4, temperature=0.0))
    instance_params: GenParams = Field(default_factory=lambda: GenParams(max_new_tokens=384, temperature=0.0))
    seed: int = 0


def read_seed_tasks(path: str | Path) -> list[dict]:
    """Seed tasks with a non-empty ``instruction``; errors name file, line and field."""
    path = Path(path)
    tasks = []
    for line, row in read_rows(path):
        instruction = require(row, "instruction", path, line).strip()
        instances = row.get("instances") or []
        if not isinstance(instances, list):
            raise DataError(path, line, "instances", f"expected a list, got {type(instances).__name__}")
        is_clf = row.get("is_classification", False)
        if not isinstance(is_clf, bool):
            raise DataError(path, line, "is_classification", f"expected true/false, got {is_clf!r}")
        tasks.append({"id": str(row.get("id", f"seed-{line}")), "instruction": instruction,
                      "instances": instances, "is_classification": is_clf})
    if not tasks:
        raise DataError(path, None, None, "no seed tasks")
    return tasks


def prompt_id(kind: str, prompt) -> str:
    return f"{kind}:{hashlib.sha1(str(prompt).encode('utf-8')).hexdigest()[:10]}"


def parse_instructions(text: str) -> list[str]:
    """Instructions in a reply that continues ``Task 9:`` (labels ``Task N:`` or ``N.``)."""
    text = (text or "").replace("\r\n", "\n").strip()
    if not text:
        return []
    parts = _TASK_SPLIT.split(text)
    if len(parts) == 1:
        numbered = _NUMBERED_SPLIT.split(text)
        if len(numbered) > 1:
            parts = numbered
    out = []
    for i, part in enumerate(parts):
        part = part.strip().split("\n\n")[0]  # chatter after a blank line is not the task
        part = re.sub(r"\s+", " ", part).strip().strip("*").strip()
        if not part:
            continue
        if i == 0 and len(parts) > 1 and part.endswith(":"):
            continue  # a chat model's preamble ("Sure, here are more tasks:")
        out.append(part[0].upper() + part[1:])
    return out


def is_repetitive(text: str) -> bool:
    words = re.findall(r"\w+", text.lower())
    if len(words) >= 8 and len(set(words)) / len(words) < 0.4:
        return True
    trigrams = Counter(tuple(words[i: i + 3]) for i in range(len(words) - 2))
    return bool(trigrams) and max(trigrams.values()) >= 3


def cheap_filter(instruction: str, min_words: int, max_words: int) -> str | None:
    """The reason an instruction fails the heuristic filters, or None."""
    n = len(instruction.split())
    if n < min_words:
        return "too_short"
    if n > max_words:
        return "too_long"
    if _MODALITY_RE.search(instruction):
        return "unsupported_modality"
    if instruction.lower().startswith("write a program"):
        return "asks_for_a_program"
    first = instruction[0]
    if not first.isascii():
        return "not_english"
    if not first.isalnum():
        return "starts_with_punctuation"
    if is_repetitive(instruction):
        return "repetitive"
    return None


def parse_input_output(block: str) -> tuple[str, str]:
    """One ``[input] Output: output`` block (as in the Self-Instruct release)."""
    pieces = re.split(r"(?:^|\n)[ \t]*Output[ \t]*\d*[ \t]*:", block, maxsplit=1)
    if len(pieces) == 2:
        inp, out = pieces
    else:
        inp, out = "", block
    out = re.split(r"(?:^|\n)[ \t]*Input[ \t]*\d*[ \t]*:", out)[0]
    inp = re.sub(r"^\s*Input[ \t]*\d*[ \t]*:", "", inp)
    return inp.strip(), out.strip()


def _cut_next_task(text: str) -> str:
    return re.split(r"(?:^|\n)[ \t]*Task[ \t]*:", text or "")[0]


def parse_instances(text: str, classification: bool) -> list[dict]:
    """Instances from an instance-generation reply, input-first or output-first."""
    text = _cut_next_task(text).strip()
    if not text:
        return []
    instances = []
    if classification:
        blocks = re.split(r"(?:^|\n)[ \t]*Class label[ \t]*:[ \t]*", text)
        if len(blocks) > 1:
            for b in blocks[1:]:
                label, _, rest = b.strip().partition("\n")
                instances.append({"input": rest.strip(), "output": label.strip()})
            return instances
    blocks = re.split(r"(?:^|\n)[ \t]*Example[ \t]*\d+[ \t]*[:.]?", text)
    for b in blocks:
        if b.strip():
            inp, out = parse_input_output(b)
            instances.append({"input": inp, "output": out})
    return instances


def clean_instances(instances: list[dict], limit: int) -> tuple[list[dict], Counter]:
    kept, why = [], Counter()
    seen = set()
    for inst in instances:
        if not inst["output"]:
            why["empty_output"] += 1
        elif inst["input"] and inst["input"].strip().lower() == inst["output"].strip().lower():
            why["output_equals_input"] += 1
        elif (inst["input"], inst["output"]) in seen:
            why["duplicate_instance"] += 1
        else:
            seen.add((inst["input"], inst["output"]))
            kept.append(inst)
    return kept[:limit], why


def parse_yes_no(text: str) -> bool | None:
    m = re.match(r"\s*[\"'*]*\s*(yes|no)\b", text or "", re.I)
    return None if m is None else m.group(1).lower() == "yes"


def sft_rows(rows: list[dict]) -> list[dict]:
    """One prompt/completion row per instance (instruction + input -> output)."""
    out = []
    for r in rows:
        for k, inst in enumerate(r["instances"]):
            prompt = r["instruction"] if not inst["input"] else f"{r['instruction']}\n\n{inst['input']}"
            out.append({"id": f"{r['id']}-{k}", "source": "self-instruct", "prompt": prompt,
                        "completion": inst["output"], "instruction_id": r["id"], "generator": r["generator"],
                        "prompt_id": r["prompt_id"], "round": r["round"]})
    return out


def generate_self_instruct(cfg: SelfInstructConfig, backend: Backend, out_dir: str | Path, progress: bool = True) -> dict:
    """Run Self-Instruct with ``backend`` and write the outputs into ``out_dir``. Returns stats."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.num_machine_instructions >= cfg.num_prompt_instructions:
        raise ConfigError("num_machine_instructions must be smaller than num_prompt_instructions")
    seeds = read_seed_tasks(cfg.seed_tasks)
    human = [t["instruction"] for t in seeds]
    rng = random.Random(cfg.seed)
    index = NoveltyIndex(cfg.rouge_threshold, human)
    machine: list[str] = []
    kept: list[dict] = []
    rejected: list[dict] = []
    max_prompts = cfg.max_prompts or 10 * cfg.num_instructions + 20
    gen_id = backend.generator_id
    n_prompts = rnd = stale = 0
    t0 = time.time()

    def reject(instruction: str, reason: str, pid: str, detail: str | None = None, **extra) -> None:
        row = {"instruction": instruction, "reason": reason, "source": "self-instruct", "generator": gen_id,
               "prompt_id": pid, "round": rnd}
        if detail:
            row["detail"] = detail
        row.update(extra)
        rejected.append(row)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.num_instructions, desc="self-instruct", unit="instr")
    while len(kept) < cfg.num_instructions and n_prompts < max_prompts and stale < cfg.patience:
        rnd += 1
        batch = min(cfg.prompts_per_round, max_prompts - n_prompts)
        gen_prompts = []
        for _ in range(batch):
            n_m = min(cfg.num_machine_instructions, len(machine))
            shown = rng.sample(machine, n_m) + rng.sample(human, min(len(human), cfg.num_prompt_instructions - n_m))
            rng.shuffle(shown)
            gen_prompts.append(P.instruction_prompt(shown))
        n_prompts += batch
        replies = backend.generate(gen_prompts, cfg.instruction_params.model_copy(update={"seed": cfg.seed}))
        # 1. parse and filter, in prompt order so the novelty decisions are reproducible
        candidates: list[tuple[str, str]] = []
        for prompt, reply in zip(gen_prompts, replies):
            pid = prompt_id("si-generate", prompt)
            if not reply.ok:
                reject("", "generation_failed", pid, reply.error)
                continue
            found = parse_instructions(reply)
            if not found:
                reject("", "no_instruction_parsed", pid, str(reply)[:200])
            for instruction in found:
                why = cheap_filter(instruction, cfg.min_words, cfg.max_words)
                if why:
                    reject(instruction, why, pid)
                    continue
                res = index.check(instruction)
                if not res.novel:
                    reject(instruction, "too_similar", pid, f"ROUGE-L {res.max_rouge:.3f} with: {res.closest}",
                           max_rouge=round(res.max_rouge, 4))
                    continue
                index.add(instruction)  # the pool holds every instruction that passed the filters
                candidates.append((instruction, pid))
        # 2. classification or not
        clf_replies = backend.generate([P.classify_prompt(c) for c, _ in candidates], cfg.classify_params)
        is_clf = [parse_yes_no(r) is True for r in clf_replies]
        # 3. instances
        inst_prompts = [P.output_first_prompt(c) if k else P.input_first_prompt(c) for (c, _), k in zip(candidates, is_clf)]
        inst_replies = backend.generate(inst_prompts, cfg.instance_params)
        new = 0
        for (instruction, pid), clf, clf_reply, iprompt, reply in zip(candidates, is_clf, clf_replies, inst_prompts, inst_replies):
            if len(kept) >= cfg.num_instructions:
                reject(instruction, "target_reached", pid)
                continue
            if not reply.ok:
                reject(instruction, "instance_generation_failed", pid, reply.error)
                continue
            instances, why = clean_instances(parse_instances(reply, clf), cfg.max_instances)
            if not instances:
                reject(instruction, "no_valid_instances", pid, ", ".join(f"{k}={v}" for k, v in why.items()) or str(reply)[:200])
                continue
            row = {
                "id": f"si-{cfg.seed}-{len(kept)}",
                "source": "self-instruct",
                "instruction": instruction,
                "instances": instances,
                "is_classification": clf,
                "classification_reply": (str(clf_reply)[:40] if clf_reply.ok else None),
                "generator": gen_id,
                "prompt_id": pid,
                "instance_prompt_id": prompt_id("si-instances", iprompt),
                "round": rnd,
            }
            kept.append(row)
            machine.append(instruction)
            new += 1
        stale = 0 if new else stale + 1
        if bar is not None:
            bar.update(new)
        _write(out_dir, kept, rejected)
    if bar is not None:
        bar.close()
    _write(out_dir, kept, rejected)
    reasons = Counter(r["reason"] for r in rejected)
    stop = ("target_reached" if len(kept) >= cfg.num_instructions
            else "max_prompts" if n_prompts >= max_prompts else "no_progress")
    stats = {
        "kept": len(kept),
        "rejected": len(rejected),
        "reject_reasons": dict(reasons.most_common()),
        "classification": sum(r["is_classification"] for r in kept),
        "instances": sum(len(r["instances"]) for r in kept),
        "rounds": rnd,
        "generation_prompts": n_prompts,
        "stopped_because": stop,
        "model_calls": backend.calls,
        "cache_hits": backend.cache_hits,
        "novelty_exact_checks": index.exact_checks,
        "generator": gen_id,
        "seconds": round(time.time() - t0, 2),
    }
    write_json(out_dir / "stats.json", stats)
    if len(kept) < cfg.num_instructions:
        log.warning("self-instruct kept %d of %d requested instructions (stopped: %s); see %s",
                    len(kept), cfg.num_instructions, stop, out_dir / "rejected.jsonl")
    return stats


def _write(out_dir: Path, kept: list[dict], rejected: list[dict]) -> None:
    write_rows(out_dir / "instructions.jsonl", kept)
    write_rows(out_dir / "rejected.jsonl", rejected)
    write_rows(out_dir / "sft.jsonl", sft_rows(kept))


def run_self_instruct(cfg: SelfInstructConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Build the configured backend (cache at ``cfg.cache`` or ``OUT/cache.sqlite``) and run."""
    out_dir = Path(out_dir)
    cache = cfg.cache or str(out_dir / "cache.sqlite")
    with make_backend(cfg.backend, cache) as backend:
        return generate_self_instruct(cfg, backend, out_dir, progress=progress)
