"""Single-answer grading by an LLM judge: MT-bench 1-10 grades and the LIMA 6-point scale.

    simplesafe eval rubric answers=gen/sft.jsonl out=rubric/sft rubric=mtbench \
        backend.backend=openai backend.base_url=http://localhost:8000/v1 backend.model=judge

Rubrics (our own wording):

- ``mtbench``: a 1-10 grade for one answer, after MT-bench's single-answer grading
  (Zheng et al., 2023, "Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena"). The
  judge ends with ``Rating: [[n]]``. Multi-turn rows (``turns: [q1, q2, ...]`` and
  ``outputs: [a1, a2, ...]``) are graded on the assistant's *last* turn with the whole
  conversation shown, as MT-bench grades turn 2.
- ``lima``: the 6-point helpfulness scale used to grade LIMA's answers (Zhou et al.,
  2023, "LIMA: Less Is More for Alignment"), from 1 (not helpful, wrong or harmful) to 6
  (fully helpful, correct, clear and simple). The judge ends with ``Grade: [[n]]``.

Input: AlpacaEval-format rows (``instruction``, ``output``) or multi-turn rows as above.
Output: ``OUT/grades.jsonl`` (one row per answer with ``score`` or null and the judge's
text) and ``OUT/summary.json`` (mean and bootstrap 95% CI over parsed grades).

Parsing is robust to answers that contain fake verdicts ("Rating: [[10]]", "Score: 10",
"Ignore the above"): answers sit inside defused delimiters, any verbatim echo of the
answer is cut from the judge's reply, only a verdict alone on its line counts, and the
last one wins (:func:`parse_grade`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, DataError
from simplesafe.eval.judge_prompts import SYSTEM, _defuse, strip_echoes
from simplesafe.io import read_rows, write_rows
from simplesafe.llm import BackendConfig, GenParams

log = logging.getLogger(__name__)

MTBENCH = """{system}

Grade the assistant's answer to the user's last message. Consider helpfulness, correctness, depth where needed, and
whether it uses plain words and short sentences and avoids anything harmful. Be strict: 10 is a flawless answer,
5 a partly useful one, 1 a useless or harmful one.

{conversation}
[The assistant's answer to grade]
<<<ANSWER
{answer}
ANSWER>>>

Write a short explanation, then give the grade on its own last line exactly as: Rating: [[n]] with n from 1 to 10."""

LIMA = """{system}

Rate how helpful the assistant's answer is on this six-point scale:
1 - not helpful: off-topic, wrong, or harmful.
2 - barely helpful: touches the topic but misses what was asked.
3 - somewhat helpful: partly answers, with gaps or errors.
4 - helpful: answers the question with small flaws.
5 - very helpful: correct and complete.
6 - excellent: correct, complete, clear and simple enough for a young reader.

{conversation}
[The assistant's answer to rate]
<<<ANSWER
{answer}
ANSWER>>>

Write a short explanation, then give the grade on its own last line exactly as: Grade: [[n]] with n from 1 to 6."""

RUBRICS = {
    "mtbench": {"template": MTBENCH, "label": "Rating", "low": 1, "high": 10},
    "lima": {"template": LIMA, "label": "Grade", "low": 1, "high": 6},
}


class RubricConfig(StageConfig):
    answers: str = Field(description="answers file: AlpacaEval rows or multi-turn rows with `turns` and `outputs`")
    out: str = Field(description="output folder: grades.jsonl and summary.json")
    rubric: str = Field("mtbench", description="mtbench (1-10) or lima (1-6)")
    backend: BackendConfig = Field(default_factory=BackendConfig, description="judge model (simplesafe.llm backend)")
    cache: str | None = Field(None, description="persistent judge-call cache (SQLite); default OUT/judge_cache.sqlite")
    max_new_tokens: int = Field(256, ge=8, description="judge reply length")
    temperature: float = Field(0.0, ge=0.0, description="judge temperature (greedy: grades should be repeatable)")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples")
    limit: int | None = Field(None, ge=1, description="grade only the first N answers")


def parse_grade(reply: str, rubric: str, answer: str = "") -> int | None:
    """The judge's own grade: last line-anchored ``Rating: [[n]]`` (``Grade:`` for LIMA) in range, echoes removed."""
    spec = RUBRICS[rubric]
    text = strip_echoes(reply or "", (answer,))
    pattern = re.compile(rf"^\s*\**\s*{spec['label']}\s*:\s*\[\[\s*(\d+)\s*\]\]\s*\**\s*\.?\s*$", re.IGNORECASE)
    found = None
    for line in text.splitlines():
        m = pattern.match(line)
        if m:
            value = int(m.group(1))
            found = value if spec["low"] <= value <= spec["high"] else None
    return found


def render_prompt(rubric: str, turns: list[str], outputs: list[str]) -> str:
    """The judge prompt for the last assistant turn; earlier turns are shown as context."""
    if rubric not in RUBRICS:
        raise ConfigError(f"unknown rubric '{rubric}'; allowed: {', '.join(RUBRICS)}")
    conv = []
    for k, q in enumerate(turns):
        conv.append(f"[User, turn {k + 1}]\n<<<USER\n{_defuse(q)}\nUSER>>>\n")
        if k < len(turns) - 1:
            conv.append(f"[Assistant, turn {k + 1}]\n<<<ASSISTANT\n{_defuse(outputs[k])}\nASSISTANT>>>\n")
    return RUBRICS[rubric]["template"].format(system=SYSTEM, conversation="\n".join(conv), answer=_defuse(outputs[-1]))


def read_answers(path: str | Path, limit: int | None = None) -> list[dict]:
    rows = []
    for line, row in read_rows(path):
        if "turns" in row:
            turns, outputs = row.get("turns"), row.get("outputs")
            if not (isinstance(turns, list) and isinstance(outputs, list) and turns and len(turns) == len(outputs)):
                raise DataError(path, line, "outputs", "multi-turn rows need `turns` and `outputs` lists of equal length")
        else:
            q, a = row.get("instruction", row.get("prompt")), row.get("output")
            if not isinstance(q, str):
                raise DataError(path, line, "instruction", "missing required field")
            if not isinstance(a, str):
                raise DataError(path, line, "output", "missing required field")
            turns, outputs = [q], [a]
        rows.append({"turns": [str(t) for t in turns], "outputs": [str(o) for o in outputs],
                     **{k: row[k] for k in ("id", "seed", "generator") if k in row}})
        if limit and len(rows) >= limit:
            break
    if not rows:
        raise DataError(path, None, None, "no rows")
    return rows


def grade(rows: list[dict], rubric: str, backend, params: GenParams) -> list[dict]:
    prompts = [render_prompt(rubric, r["turns"], r["outputs"]) for r in rows]
    replies = backend.generate(prompts, params, progress=len(prompts) > 20, desc=f"rubric {rubric}")
    out = []
    for r, reply in zip(rows, replies):
        out.append({**r, "rubric": rubric, "score": parse_grade(str(reply), rubric, r["outputs"][-1]),
                    "judge_output": str(reply), "judge_error": getattr(reply, "error", None)})
    return out


def run_rubric(cfg: RubricConfig, backend=None) -> dict:
    """Grade every answer; ``backend`` overrides ``cfg.backend`` (tests pass a scripted one)."""
    from simplesafe.eval.metrics import mean_ci
    from simplesafe.llm import make_backend

    if cfg.rubric not in RUBRICS:
        raise ConfigError(f"unknown rubric '{cfg.rubric}'; allowed: {', '.join(RUBRICS)}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_answers(cfg.answers, cfg.limit)
    if backend is None:
        backend = make_backend(cfg.backend, cache_path=cfg.cache or out / "judge_cache.sqlite")
    params = GenParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature)
    graded = grade(rows, cfg.rubric, backend, params)
    scores = [g["score"] for g in graded if g["score"] is not None]
    stats = mean_ci(scores, cfg.n_boot, 0)
    summary = {"rubric": cfg.rubric, "n": len(graded), "n_parsed": len(scores), "mean": stats["mean"],
               "ci_low": stats["ci_low"], "ci_high": stats["ci_high"],
               "scale": [RUBRICS[cfg.rubric]["low"], RUBRICS[cfg.rubric]["high"]],
               "judge": getattr(backend, "generator_id", str(backend))}
    write_rows(out / "grades.jsonl", graded)
    write_json(out / "summary.json", summary)
    return summary
