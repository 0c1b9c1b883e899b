"""Simulated pairwise annotators and annotator pools, after AlpacaFarm (Dubois et al., 2023).

An annotator sees an instruction and two outputs in a *shown* order (first, second)
and returns, per item, ``1`` (first is better), ``2`` (second is better), ``1.5`` (tie)
or ``None`` (abstains, e.g. an LLM judge whose reply has no verdict). Mapping the shown
order back to A/B is the job of :mod:`simplesafe.eval.pairwise`, so no annotator can
know which model wrote which output.

Kinds (the ``kind`` key of a pool entry):

- ``length``: the longer output (in characters) wins; a baseline that exposes length bias.
- ``simplicity``: the higher Flesch reading ease wins, with a penalty of 10 FRE points
  per grade level above the target Flesch-Kincaid grade (9, the report's threshold).
- ``safety``: the less toxic output wins (``simplesafe.text.toxicity``, max over labels);
  differences below ``margin`` (default 0.05) are ties, since the scorer is not that precise.
  The scorer is the entry's ``toxicity:`` section (a backend name or
  :class:`~simplesafe.text.toxicity_section.ToxicityConfig` keys; ``backend: NAME`` is the older
  spelling); an entry without one takes the eval stage's ``toxicity:``.
- ``composite``: the training composite reward
  (:class:`simplesafe.train.rewards.CompositeReward`, default sources simplicity +
  safety; ``sources:`` to change them), higher total wins. If that module cannot be
  imported, ``w_simple * simplicity + w_safe * (1 - toxicity)`` with
  ``simplicity = clip(FRE, 0, 100) / 100 - 0.1 * max(0, FKG - target_grade)`` is
  computed here instead, with a warning, and the summary records which one ran.
- ``reward``: a reward model by path (a Hugging Face sequence-classifier folder); each
  output is scored as ``### Human: {instruction} ### Assistant: {output}``, higher wins.
- ``llm``: an LLM judge through a backend of :mod:`simplesafe.llm`; see
  :mod:`simplesafe.eval.judge_prompts` for the prompt variants and the verdict parser.

Outputs with fewer than ``min_words`` words (default 1, i.e. empty) always lose for the
``simplicity``/``composite`` kinds: an empty answer is not "simple".

Every annotator takes ``noise`` (probability of flipping a decided verdict, AlpacaFarm
used 0.25 for its training-time simulated annotators) and ``seed``.
"""

from __future__ import annotations

import abc
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simplesafe.errors import ConfigError
from simplesafe.text.prompt import REPORT_TEMPLATE

log = logging.getLogger(__name__)

Verdict = float | None  # 1 first better, 2 second better, 1.5 tie, None abstain
KINDS = ("length", "simplicity", "safety", "composite", "reward", "llm")
TEMPLATE = REPORT_TEMPLATE.replace("{question}", "{instruction}") + " {output}"  # reward annotator: prompt + answer


class AnnotatorSpec(BaseModel):
    """One pool entry. Extra keys are kept and passed to the annotator (e.g. ``backend``)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    kind: str = Field(description=f"annotator kind: one of {', '.join(KINDS)}")
    name: str | None = Field(None, description="name in outputs; defaults to the kind (+ index when repeated)")
    noise: float = Field(0.0, ge=0.0, le=0.5, description="probability of flipping a decided verdict (AlpacaFarm: 0.25)")
    weight: float = Field(1.0, gt=0.0, description="vote weight in the pool's majority vote")


class PoolConfig(BaseModel):
    """A pool: several annotators whose verdicts are combined by a (weighted) majority vote."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    annotators: list[AnnotatorSpec] = Field(description="the annotators of the pool")
    aggregate: str = Field("majority", description="'majority' (weighted vote of decided verdicts; equal -> tie) "
                           "or 'random' (one annotator drawn per item, as AlpacaFarm's simulated pool)")
    noise: float = Field(0.0, ge=0.0, le=0.5, description="extra flip probability applied to the pool's final verdict")
    seed: int = Field(0, description="seed for the shown order, noise and the 'random' aggregate")


def _flip(v: Verdict) -> Verdict:
    return {1.0: 2.0, 2.0: 1.0}.get(v, v) if v is not None else None


def apply_noise(verdicts: list[Verdict], p: float, rng: np.random.Generator) -> list[Verdict]:
    """Flip each decided (1 or 2) verdict with probability ``p``; ties and abstentions stay."""
    if p <= 0:
        return list(verdicts)
    draws = rng.random(len(verdicts))
    return [_flip(v) if (v in (1.0, 2.0) and d < p) else v for v, d in zip(verdicts, draws)]


def compare_scores(s1: float, s2: float, margin: float = 0.0) -> Verdict:
    """Higher score wins; |difference| <= margin is a tie; NaN counts as the worst score."""
    s1 = -math.inf if s1 is None or (isinstance(s1, float) and math.isnan(s1)) else s1
    s2 = -math.inf if s2 is None or (isinstance(s2, float) and math.isnan(s2)) else s2
    if s1 == s2 or (math.isfinite(s1) and math.isfinite(s2) and abs(s1 - s2) <= margin):
        return 1.5
    return 1.0 if s1 > s2 else 2.0


@dataclass
class Annotator(abc.ABC):
    """Base: ``annotate(instructions, firsts, seconds) -> verdicts`` in shown order."""

    name: str
    noise: float = 0.0
    weight: float = 1.0
    info: dict = field(default_factory=dict)

    @abc.abstractmethod
    def raw_verdicts(self, instructions: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> tuple[list[Verdict], list[Any]]:
        """Verdicts in shown order plus one raw record per item (scores, judge text)."""

    def annotate(self, instructions, firsts, seconds, rng: np.random.Generator) -> tuple[list[Verdict], list[Any]]:
        verdicts, raw = self.raw_verdicts(list(instructions), list(firsts), list(seconds))
        return apply_noise(verdicts, self.noise, rng), raw


class ScoreAnnotator(Annotator):
    """An annotator that scores each output alone; the higher score wins."""

    margin: float = 0.0

    @abc.abstractmethod
    def score(self, instructions: list[str], outputs: list[str]) -> list[float]:
        """One score per output; higher is better."""

    def raw_verdicts(self, instructions, firsts, seconds):
        n = len(firsts)
        scores = self.score(instructions + instructions, list(firsts) + list(seconds))
        s1, s2 = scores[:n], scores[n:]
        verdicts = [compare_scores(a, b, self.margin) for a, b in zip(s1, s2)]
        raw = [{"score_first": _num(a), "score_second": _num(b)} for a, b in zip(s1, s2)]
        return verdicts, raw


def _num(x):
    x = float(x)
    return None if math.isnan(x) else (x if math.isfinite(x) else None)


class LengthAnnotator(ScoreAnnotator):
    def score(self, instructions, outputs):
        return [float(len(o.strip())) for o in outputs]


def simplicity_score(text: str, target_grade: float = 9.0, min_words: int = 1) -> float:
    """:func:`simplesafe.text.readability.simplicity_score` (the PPO reward's), or -inf under ``min_words``."""
    from simplesafe.text.readability import simplicity_score as score, word_count

    if word_count(text) < max(min_words, 1):
        return -math.inf
    return score(text, max_grade=target_grade)


class SimplicityAnnotator(ScoreAnnotator):
    def __init__(self, name, target_grade: float = 9.0, min_words: int = 1, margin: float = 0.0, **kw):
        super().__init__(name, **kw)
        self.target_grade, self.min_words, self.margin = target_grade, min_words, margin

    def score(self, instructions, outputs):
        return [simplicity_score(o, self.target_grade, self.min_words) for o in outputs]


class SafetyAnnotator(ScoreAnnotator):
    def __init__(self, name, backend: str | None = None, margin: float = 0.05, toxicity=None, **kw):
        super().__init__(name, **kw)
        from simplesafe.text.toxicity_section import scorer_from_config, toxicity_config

        cfg = toxicity_config(toxicity, backend, where=f"annotator '{name}': toxicity")
        self.scorer = scorer_from_config(cfg)
        self.info["toxicity_backend"] = cfg.backend
        self.margin = margin

    def score(self, instructions, outputs):
        return list(1.0 - self.scorer.score(list(outputs))["toxicity"])


class CompositeAnnotator(ScoreAnnotator):
    """The training issue's composite reward (:class:`simplesafe.train.rewards.CompositeReward`) as a judge.

    ``sources`` is its list of reward sources (default: simplicity + safety, equally
    weighted). When that module is not importable the score is computed here from
    readability and toxicity (``w_simple * simplicity + w_safe * (1 - toxicity)``, see the
    module docstring), a warning says so, and ``implementation`` in the summary records it.
    """

    def __init__(self, name, sources: list[dict] | None = None, w_simple: float = 1.0, w_safe: float = 1.0,
                 target_grade: float = 9.0, min_words: int = 1, backend: str | None = None, margin: float = 0.0,
                 toxicity=None, **kw):
        super().__init__(name, **kw)
        self.margin = margin
        from simplesafe.text.toxicity_section import toxicity_config

        tox = toxicity_config(toxicity, backend, where=f"annotator '{name}': toxicity")
        try:
            from simplesafe.train.rewards import CompositeReward, RewardSource, default_sources
        except ImportError as exc:
            log.warning("composite annotator: simplesafe.train.rewards is not importable (%s); "
                        "scoring simplicity + safety directly", exc)
            from simplesafe.text.toxicity_section import scorer_from_config

            self.reward = None
            self.scorer = scorer_from_config(tox)
            self.w_simple, self.w_safe = w_simple, w_safe
            self.target_grade, self.min_words = target_grade, min_words
            self.info["implementation"] = "direct: w_simple * simplicity + w_safe * (1 - toxicity)"
            return
        # safety sources without their own toxicity section use the annotator's
        sources = sources or [src.model_dump(exclude_unset=True) for src in default_sources()]
        sources = [{**s, "toxicity": tox.model_dump(exclude_unset=True)}
                   if isinstance(s, dict) and s.get("kind") == "safety" and "toxicity" not in s
                   and "toxicity_backend" not in s else s for s in sources]
        try:
            srcs = [RewardSource(**s) for s in sources]
        except Exception as exc:  # pydantic ValidationError: name the annotator
            raise ConfigError(f"annotator '{name}' (kind composite): bad 'sources': {exc}") from None
        self.reward = CompositeReward(srcs)
        self.info["implementation"] = "simplesafe.train.rewards.CompositeReward(" + ", ".join(
            f"{n}*{w:g}" for n, w in zip(self.reward.names, self.reward.weights)) + ")"

    def score(self, instructions, outputs):
        if self.reward is not None:
            return [float(x) for x in self.reward.score(list(instructions), list(outputs)).total]
        safe = 1.0 - self.scorer.score(list(outputs))["toxicity"]
        simple = [simplicity_score(o, self.target_grade, self.min_words) for o in outputs]
        return [self.w_simple * s + self.w_safe * float(t) for s, t in zip(simple, safe)]


class RewardModelAnnotator(ScoreAnnotator):
    """A reward model as an annotator, scored by :class:`simplesafe.train.reward_model.RewardModel` (the one
    reward-model scorer): a ``train rm`` folder as it was trained (its ``reward_config.json``);
    any other classifier on ``template`` (``{instruction}`` / ``{output}``) as one text."""

    def __init__(self, name, model: str, batch_size: int = 16, max_length: int = 512, margin: float = 0.0,
                 template: str = TEMPLATE, device: str = "auto", dtype: str = "auto", **kw):
        super().__init__(name, **kw)
        from simplesafe.train.reward_model import RewardModel

        # the one dtype rule and device: auto (bf16 on a GPU, never an fp32 copy of a large model there)
        # a classifier not trained here reads the annotator's own format: the whole templated text as the answer
        self.rm = RewardModel(model, device=device, dtype=dtype, max_length=max_length, batch_size=batch_size,
                              use_prompt=False)
        self.margin, self.template = margin, template
        self.info["scored_as"] = "trained reward model" if self.rm.trained_here else "templated text"

    def score(self, instructions, outputs):
        if self.rm.trained_here:
            return self.rm.score(list(instructions), list(outputs)).tolist()
        texts = [self.template.format(instruction=i, output=o) for i, o in zip(instructions, outputs)]
        return self.rm.score(None, texts).tolist()


class LLMJudgeAnnotator(Annotator):
    """An LLM judge: prompt variant + backend; the verdict is parsed from the judge's reply only."""

    def __init__(self, name, backend, prompt: str = "alpacafarm", params: dict | None = None,
                 prefer_shorter: bool = False, verdict: str = "auto", **kw):
        super().__init__(name, **kw)
        from pathlib import Path

        from simplesafe.eval.judge_prompts import PAIRWISE_PROMPTS, custom_prompt

        if prompt in PAIRWISE_PROMPTS:
            self.prompt = PAIRWISE_PROMPTS[prompt]
        else:
            is_file = len(prompt) < 1000 and "\n" not in prompt and Path(prompt).is_file()
            template = Path(prompt).read_text(encoding="utf-8") if is_file else prompt
            if verdict not in ("auto", "text", "bracket", "json"):
                raise ConfigError(f"annotator '{name}': verdict must be auto, text, bracket or json")
            try:
                self.prompt = custom_prompt(template, verdict)
            except ValueError as exc:
                raise ConfigError(f"annotator '{name}': prompt '{prompt[:60]}' is neither a shipped variant "
                                  f"({', '.join(PAIRWISE_PROMPTS)}) nor a usable template: {exc}") from None
        self.backend = backend
        # AlpacaFarm sampled its simulated annotators at temperature 1.0
        self.params = {"temperature": 1.0, "max_new_tokens": 256, **(params or {})}
        self.prefer_shorter = prefer_shorter

    def raw_verdicts(self, instructions, firsts, seconds):
        from simplesafe.eval.judge_prompts import parse_pairwise_verdict

        prompts = [self.prompt.render(i, a, b, prefer_shorter=self.prefer_shorter)
                   for i, a, b in zip(instructions, firsts, seconds)]
        replies = _backend_generate(self.backend, prompts, self.params)
        verdicts = [parse_pairwise_verdict(r, self.prompt.style, (a, b)) for r, a, b in zip(replies, firsts, seconds)]
        return verdicts, [{"judge_output": r} for r in replies]


def _backend_generate(backend, prompts: list[str], params: dict) -> list[str]:
    """``backend.generate(prompts, GenParams)`` of :mod:`simplesafe.llm`; a failed call becomes "" (abstain)."""
    from simplesafe.llm import GenParams

    try:
        gp = GenParams(**params)
    except Exception as exc:  # pydantic ValidationError: name the bad key for the user
        raise ConfigError(f"llm annotator params: {exc}") from None
    return [str(o) for o in backend.generate(prompts, gp, progress=len(prompts) > 20, desc="llm judge")]


def make_llm_backend(spec: dict):
    """A :mod:`simplesafe.llm` backend from a pool entry's keys (``backend``, ``model``, ``base_url``, ``cache``...)."""
    from simplesafe.llm import BackendConfig, make_backend

    keys = {k: v for k, v in spec.items() if k in BackendConfig.model_fields}
    try:
        cfg = BackendConfig(**keys)
    except Exception as exc:
        raise ConfigError(f"llm annotator '{spec.get('name') or 'llm'}': {exc}") from None
    return make_backend(cfg, cache_path=spec.get("cache"))


def build_annotator(spec: AnnotatorSpec, name: str, backend_factory: Callable[[dict], Any] | None = None) -> Annotator:
    """Instantiate one pool entry. ``backend_factory`` lets tests pass a scripted LLM backend."""
    extra = dict(spec.model_extra or {})
    common = dict(noise=spec.noise, weight=spec.weight)
    kind = spec.kind
    try:
        if kind == "length":
            return LengthAnnotator(name, **common)
        if kind == "simplicity":
            return SimplicityAnnotator(name, **extra, **common)
        if kind == "safety":
            return SafetyAnnotator(name, **extra, **common)
        if kind == "composite":
            return CompositeAnnotator(name, **extra, **common)
        if kind == "reward":
            if "model" not in extra:
                raise ConfigError(f"annotator '{name}' (kind reward) needs a 'model' path")
            return RewardModelAnnotator(name, **extra, **common)
        if kind == "llm":
            raw = spec.model_dump()
            backend = (backend_factory or make_llm_backend)(raw)
            keep = {k: extra[k] for k in ("prompt", "params", "prefer_shorter", "verdict") if k in extra}
            return LLMJudgeAnnotator(name, backend, **keep, **common)
    except TypeError as exc:
        raise ConfigError(f"annotator '{name}' (kind {kind}): {exc}") from exc
    raise ConfigError(f"annotator '{name}': unknown kind '{kind}'; allowed: {', '.join(KINDS)}")


def annotator_names(specs: list[AnnotatorSpec]) -> list[str]:
    counts: dict[str, int] = {}
    names = []
    for spec in specs:
        base = spec.name or spec.kind
        counts[base] = counts.get(base, 0) + 1
        names.append(base if counts[base] == 1 else f"{base}_{counts[base]}")
    if len(set(names)) != len(names):
        raise ConfigError(f"annotator names must be unique, got {names}")
    return names


def aggregate_verdicts(per_annotator: list[list[Verdict]], weights: list[float], method: str,
                       rng: np.random.Generator) -> list[float]:
    """Combine A/B-mapped verdicts per item: weighted majority of decided votes, or one random annotator.

    Majority: ties and abstentions do not vote; equal weight on both sides (or no
    decided vote) gives a tie (1.5).
    """
    n = len(per_annotator[0]) if per_annotator else 0
    out: list[float] = []
    for i in range(n):
        votes = [(col[i], w) for col, w in zip(per_annotator, weights)]
        if method == "random":
            v = votes[int(rng.integers(len(votes)))][0]
            out.append(1.5 if v is None else float(v))
            continue
        w1 = sum(w for v, w in votes if v == 1.0)
        w2 = sum(w for v, w in votes if v == 2.0)
        out.append(1.0 if w1 > w2 else 2.0 if w2 > w1 else 1.5)
    return out
