"""Evaluation judges: one score per answer, one axis each, and whether training ever saw them.

A judge that trained a model must not grade it. The recipe names the judges of its
evaluation; the recipe runner works out from the same recipe which scorers trained a
model (PPO/GRPO reward terms, the reward models they used, the preference source of
DPO's pairs) and refuses a "held-out" judge that is among them
(:func:`check_independence`). Every table and ``summary.json`` says for each scorer
whether it is held out or was used in training.

Kinds (``kind``), each with its axis and direction:

- ``dale_chall``: the New Dale-Chall readability score (Chall & Dale, 1995, through
  textstat): share of words outside a list of 3,000 familiar words, plus sentence
  length. A different family from the Flesch formulas (syllable counts) that the
  training reward and the report's filter use. Lower is simpler.
- ``smog``: McLaughlin's SMOG grade (polysyllables per 30 sentences). Lower is simpler.
- ``fre`` / ``fkg``: Flesch reading ease (higher simpler) / Flesch-Kincaid grade (lower
  simpler), the report's measures.
- ``reward``: a reward model folder from ``simplesafe train rm`` (its own input format);
  higher is better.
- ``toxicity``: ``1 - toxicity`` of a :mod:`simplesafe.text.toxicity` backend; higher is safer.
- ``length``: words in the answer; higher "wins" (a baseline that shows how much of a
  judge's verdict length alone explains, as AlpacaEval's length-controlled analysis).

``value`` is the raw measurement (what tables show); ``score`` is oriented so that
higher is better (what pairwise verdicts compare). An empty answer gets NaN, which
loses every comparison.

    judge = build_judge(JudgeSpec(name="simplicity", axis="simplicity", kind="dale_chall"))
    judge.values(questions, answers)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError

Axis = Literal["simplicity", "helpfulness", "safety", "length", "other"]
JudgeKind = Literal["dale_chall", "smog", "fre", "fkg", "reward", "toxicity", "length"]
LOWER_IS_BETTER = {"dale_chall", "smog", "fkg"}


class JudgeSpec(StageConfig):
    """One judge of the evaluation."""

    name: str = Field(description="column name in tables and summary.json")
    axis: Axis = Field(description="what it judges: simplicity, helpfulness, safety, length (baseline), other")
    kind: JudgeKind = Field(description="dale_chall, smog, fre, fkg, reward, toxicity or length")
    model: str | None = Field(None, description="reward: a reward-model folder (relative paths: to the run directory)")
    backend: str | None = Field(None, description="toxicity: backend name (default: the package default, "
                                "simplesafe.text.toxicity.DEFAULT_BACKEND)")
    margin: float = Field(0.0, ge=0, description="pairwise: score differences up to this are ties")
    baseline: bool = Field(False, description="a reference point (e.g. length), not a judge of the goal")
    batch_size: int = Field(32, ge=1, description="reward: answers per forward pass")


class Judge:
    def __init__(self, spec: JudgeSpec):
        self.spec = spec
        self._scorer = None

    @property
    def lower_is_better(self) -> bool:
        return self.spec.kind in LOWER_IS_BETTER

    def values(self, questions: list[str], answers: list[str]) -> np.ndarray:
        """The raw measurement per answer (NaN for an empty answer)."""
        kind = self.spec.kind
        empty = np.array([not a.strip() for a in answers])
        if kind in ("dale_chall", "smog", "fre", "fkg"):
            from simplesafe.text import readability as R

            fn = {"dale_chall": R.dale_chall, "smog": R.smog_grade, "fre": R.flesch_reading_ease,
                  "fkg": R.flesch_kincaid_grade}[kind]
            out = np.array([fn(a) if a.strip() else math.nan for a in answers], dtype=float)
        elif kind == "length":
            from simplesafe.text.readability import word_count

            out = np.array([float(word_count(a)) for a in answers])
        elif kind == "toxicity":
            if self._scorer is None:
                from simplesafe.text.toxicity import DEFAULT_BACKEND, get_toxicity_scorer

                self._scorer = get_toxicity_scorer(self.spec.backend or DEFAULT_BACKEND)
            out = 1.0 - np.asarray(self._scorer.score(list(answers))["toxicity"], dtype=float)
        else:
            if self._scorer is None:
                from simplesafe.train.reward_model import RewardModel

                self._scorer = RewardModel(self.spec.model)
            out = np.asarray(self._scorer.score(list(questions), list(answers), self.spec.batch_size), dtype=float)
        out = out.astype(float)
        if kind != "length":
            out[empty] = math.nan
        return out

    def close(self) -> None:
        """Drop the loaded scorer (a reward model's memory is returned); the next call loads it again."""
        if self._scorer is not None and hasattr(self._scorer, "close"):
            self._scorer.close()
        self._scorer = None

    def scores(self, values: np.ndarray) -> np.ndarray:
        """Oriented so that higher is better; NaN stays NaN (it loses)."""
        return -values if self.lower_is_better else values

    def threshold(self) -> float | None:
        """A reward model's separating threshold (see :func:`simplesafe.train.reward.separating_threshold`)."""
        if self.spec.kind != "reward":
            return None
        import json

        cfg = Path(self.spec.model) / "reward_config.json"
        value = json.loads(cfg.read_text()).get("threshold") if cfg.exists() else None
        return float(value) if value is not None else None


def build_judge(spec: JudgeSpec, run_dir: str | Path | None = None) -> Judge:
    if spec.kind == "reward":
        if not spec.model:
            raise ConfigError(f"judge '{spec.name}' (kind reward) needs 'model': a reward-model folder")
        path = Path(spec.model)
        if not path.is_absolute() and run_dir is not None:
            path = Path(run_dir) / path
        if not (path / "reward_config.json").exists() and not (path / "config.json").exists():
            raise ConfigError(f"judge '{spec.name}': no reward model at {path}")
        spec = spec.model_copy(update={"model": str(path)})
    return Judge(spec)


# ------------------------------------------------------------------- independence from training

def scorer_key(kind: str, detail: str | None = None) -> str:
    """A name for "the same scorer": readability formulas by family, reward models by folder, toxicity by backend."""
    if kind in ("fre", "fkg", "flesch"):
        return "readability:flesch"
    if kind in ("dale_chall", "smog"):
        return f"readability:{kind}"
    if kind == "toxicity":
        from simplesafe.text.toxicity import DEFAULT_BACKEND

        return f"toxicity:{detail or DEFAULT_BACKEND}"
    if kind == "reward":
        return f"reward:{Path(str(detail)).resolve()}" if detail else "reward:?"
    return f"{kind}:{detail or ''}"


def check_independence(judges: list[dict], training: list[dict]) -> None:
    """Raise :class:`ConfigError` when a held-out judge is one of the training signals.

    ``judges``: ``{name, keys}``; ``training``: ``{keys, used_by}`` (scorer keys as built by
    :func:`scorer_key`, plus ``preferences:<source>`` for preference data).
    """
    for j in judges:
        for t in training:
            shared = set(j["keys"]) & set(t["keys"])
            if shared:
                raise ConfigError(f"judge '{j['name']}' cannot be held out: {t['used_by']} trained with the same "
                                  f"signal ({', '.join(sorted(shared))}). Pick another judge, or mark it "
                                  "`baseline: true` (it is then reported as used in training)")
