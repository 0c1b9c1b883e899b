"""Composite reward: a weighted sum of named sources, each scored and logged on its own.

The report wants answers that are simple *and* safe *and* helpful, and notes that one
reward model judging everything at once is a blunt tool (section 1.1, footnote 1); DPO
cannot mix several judges, RL can. A composite reward is::

    R(x, y) = sum_i w_i * r_i(x, y)

with sources (``kind``):

- ``rm``: a learned reward model; the raw score, from :class:`simplesafe.train.reward_model.RewardModel`
  (the one reward-model scorer, also used by the eval judges and annotators). A ``train rm``
  folder is scored in the format it was trained on; any other sequence classifier scores
  ``### Human: {question} ### Assistant: {answer}`` (``template``).
- ``simplicity``: :func:`simplesafe.text.readability.simplicity_score` (the ``simplicity``
  annotator's too), a smooth step on readability, about 1 well below the target grade, 0.5
  at it, towards 0 above it (the report's bar: FKG < 9, FRE >= 60)::

      s = 0.5 * sigmoid((max_grade - FKG) / grade_softness)
        + 0.5 * sigmoid((FRE - min_fre) / fre_softness)

  An empty answer scores 0. Very short answers read as "simple", so pair this source with
  ``length`` (or an RM) to keep a policy from learning to say one word.
- ``safety``: ``1 - toxicity`` from the scorer of the source's ``toxicity:`` section
  (:class:`simplesafe.text.toxicity_section.ToxicityConfig`; e.g. ``{kind: safety, toxicity: {backend: detoxify,
  checkpoint: ..., config_path: ...}}``).
- ``length``: a penalty in [-1, 0] for words outside ``[min_words, max_words]``::

      l = -min(1, (max(0, min_words - n) + max(0, n - max_words)) / scale)

Every trainer uses the same object: PPO and best-of-n call :meth:`CompositeReward.score`
(the total and one array per source); GRPO/RLOO get :meth:`CompositeReward.trl_reward_funcs`,
TRL's ``(prompts, completions, **kw) -> list[float]`` callables named after the sources,
with the weights passed as TRL's ``reward_weights`` so TRL logs each source too.

    from simplesafe.train.rewards import CompositeReward, RewardSource
    reward = CompositeReward([RewardSource(kind="simplicity"), RewardSource(kind="safety", weight=0.5)])
    scores = reward.score(["Why is the sky blue?"], ["Light from the sun bounces off air."])
    scores.total, scores.parts["simplicity"]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import Field, model_validator

from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError
from simplesafe.text.readability import simplicity_score  # noqa: F401  (the simplicity source)
from simplesafe.text.prompt import REPORT_TEMPLATE
from simplesafe.text.toxicity_section import ToxicitySettings

log = logging.getLogger(__name__)

SourceKind = Literal["rm", "simplicity", "safety", "length"]


class RewardSource(ToxicitySettings, StageConfig):
    """One named term of the composite reward."""

    kind: SourceKind = Field(..., description="rm (learned reward model), simplicity, safety or length")
    name: str | None = Field(None, description="name in logs; default: the kind (rm: the folder name)")
    weight: float = Field(1.0, description="multiplier w_i in R = sum_i w_i r_i")
    # rm
    path: str | None = Field(None, description="rm: folder of a sequence-classification reward model")
    template: str = Field(REPORT_TEMPLATE, description="rm: prompt template with {question}; the answer follows it")
    batch_size: int = Field(16, ge=1, description="rm: texts per forward pass")
    max_length: int = Field(512, ge=8, description="rm: tokens per scored text (longer ones are cut from the left)")
    # simplicity
    max_grade: float = Field(9.0, description="simplicity: target Flesch-Kincaid grade (report: FKG < 9)")
    min_fre: float = Field(60.0, description="simplicity: target Flesch reading ease (report: FRE >= 60)")
    grade_softness: float = Field(2.0, gt=0, description="simplicity: grade points over which the step goes 0.27 -> 0.73")
    fre_softness: float = Field(10.0, gt=0, description="simplicity: FRE points over which the step goes 0.27 -> 0.73")
    # safety: the `toxicity:` section (or the older `toxicity_backend: NAME`), from ToxicitySettings
    # length
    min_words: int | None = Field(None, ge=0, description="length: fewer words are penalised")
    max_words: int | None = Field(None, ge=1, description="length: more words are penalised")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "rm" and not self.path:
            raise ValueError("an 'rm' reward source needs 'path' (a reward-model folder)")
        if self.kind == "length" and self.min_words is None and self.max_words is None:
            raise ValueError("a 'length' reward source needs min_words and/or max_words")
        if self.min_words is not None and self.max_words is not None and self.min_words > self.max_words:
            raise ValueError("min_words is larger than max_words")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.kind == "rm":
            return "rm_" + Path(str(self.path)).name
        return self.kind


def default_sources() -> list[RewardSource]:
    """The report's two automatic goals, equally weighted."""
    return [RewardSource(kind="simplicity"), RewardSource(kind="safety")]


def length_penalty(text: str, min_words: int | None, max_words: int | None) -> float:
    """``-min(1, words outside [min_words, max_words] / scale)`` with scale = max_words (or min_words)."""
    from simplesafe.text.readability import word_count

    n = word_count(text)
    excess = 0
    if min_words is not None:
        excess += max(0, min_words - n)
    if max_words is not None:
        excess += max(0, n - max_words)
    scale = max(max_words or min_words or 1, 1)
    return -min(1.0, excess / scale)


def _rm_scorer(src: RewardSource):
    """A ``reward_model`` source's scorer: :class:`simplesafe.train.reward_model.RewardModel`, the one scorer of
    reward models (a ``train rm`` folder is scored as it was trained; another classifier on ``template`` +
    answer); ``score(questions, answers)`` and ``close()``."""
    from simplesafe.train.reward_model import RewardModel

    return RewardModel(str(src.path), template=src.template, max_length=src.max_length, batch_size=src.batch_size)


@dataclass
class RewardScores:
    total: np.ndarray
    parts: dict[str, np.ndarray]

    def means(self, prefix: str = "reward/") -> dict[str, float]:
        out = {f"{prefix}{k}": float(np.mean(v)) for k, v in self.parts.items()}
        out[f"{prefix}total"] = float(np.mean(self.total))
        return out


class CompositeReward:
    """``R = sum_i w_i r_i`` over named sources; see the module docstring.

    ``custom`` adds Python sources ``{name: (fn(questions, answers) -> list[float], weight)}``.
    Scorers (reward models, toxicity classifiers) load once, on first use, and stay until
    :meth:`close` (trainers call it when they finish, so no reward model outlives its stage).
    """

    def __init__(self, sources: list[RewardSource] | None = None,
                 custom: dict[str, tuple[Callable[[list[str], list[str]], list[float]], float]] | None = None):
        self.sources = list(sources) if sources is not None else default_sources()
        self.custom = dict(custom or {})
        names = [s.label for s in self.sources] + list(self.custom)
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"reward sources need distinct names; repeated: {', '.join(sorted(dup))} "
                              "(set 'name' on each)")
        if not names:
            raise ConfigError("the composite reward has no sources")
        self._scorers: dict[str, object] = {}

    @property
    def names(self) -> list[str]:
        return [s.label for s in self.sources] + list(self.custom)

    @property
    def weights(self) -> list[float]:
        return [s.weight for s in self.sources] + [w for _, w in self.custom.values()]

    def _scorer(self, src: RewardSource):
        key = src.label
        if key not in self._scorers:
            if src.kind == "rm":
                self._scorers[key] = _rm_scorer(src)
            elif src.kind == "safety":
                from simplesafe.text.toxicity_section import scorer_from_config

                self._scorers[key] = scorer_from_config(src.toxicity)
        return self._scorers.get(key)

    def close(self) -> None:
        """Drop every loaded scorer (reward models give their accelerator memory back)."""
        from simplesafe.models.load import release_memory

        for scorer in self._scorers.values():
            if hasattr(scorer, "close"):
                scorer.close()
        self._scorers.clear()
        release_memory()

    def score_source(self, src: RewardSource, questions: list[str], answers: list[str]) -> np.ndarray:
        """The unweighted score of one source for each (question, answer)."""
        if src.kind == "simplicity":
            return np.array([simplicity_score(a, src.max_grade, src.min_fre, src.grade_softness, src.fre_softness)
                             for a in answers], dtype=np.float64)
        if src.kind == "length":
            return np.array([length_penalty(a, src.min_words, src.max_words) for a in answers], dtype=np.float64)
        if src.kind == "safety":
            tox = np.asarray(self._scorer(src).score(list(answers))["toxicity"], dtype=np.float64)
            return 1.0 - tox
        return np.asarray(self._scorer(src).score(list(questions), list(answers)), dtype=np.float64)

    def score(self, questions: list[str], answers: list[str]) -> RewardScores:
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        parts: dict[str, np.ndarray] = {}
        total = np.zeros(len(answers), dtype=np.float64)
        for src in self.sources:
            parts[src.label] = self.score_source(src, questions, answers)
            total += src.weight * parts[src.label]
        for name, (fn, weight) in self.custom.items():
            parts[name] = np.asarray(fn(list(questions), list(answers)), dtype=np.float64)
            if parts[name].shape != (len(answers),):
                raise ValueError(f"reward source '{name}' returned {parts[name].shape[0] if parts[name].ndim else 0} "
                                 f"scores for {len(answers)} answers")
            total += weight * parts[name]
        return RewardScores(total, parts)

    def trl_reward_funcs(self, question_of: Callable[[str], str] | None = None) -> list[Callable]:
        """One TRL reward function per source (unweighted; pass :attr:`weights` as ``reward_weights``).

        TRL calls ``f(prompts, completions, **columns)``; the question comes from the
        dataset's ``question`` column when present, else ``question_of(prompt)`` or the prompt.
        """
        funcs = []
        for i, name in enumerate(self.names):
            funcs.append(self._trl_func(i, name, question_of))
        return funcs

    def _trl_func(self, index: int, name: str, question_of):
        def reward_func(prompts, completions, **kwargs):
            questions = kwargs.get("question") or [question_of(p) if question_of else p for p in prompts]
            answers = [_completion_text(c) for c in completions]
            if index < len(self.sources):
                scores = self.score_source(self.sources[index], questions, answers)
            else:
                fn, _ = self.custom[name]
                scores = np.asarray(fn(questions, answers), dtype=np.float64)
            return [float(s) for s in scores]

        reward_func.__name__ = name
        return reward_func


def _completion_text(completion) -> str:
    """TRL passes plain strings, or chat messages ``[{"role": "assistant", "content": ...}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)
