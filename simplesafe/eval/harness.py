"""Open LLM Leaderboard (v1) tasks through lm-evaluation-harness, when it and the data are local.

    pip install 'simplesafe[harness]'
    HF_DATASETS_OFFLINE=1 simplesafe eval harness model=runs/demo/sft/model out=runs/demo/eval/harness/sft.json

Tasks and shots as on the original Open LLM Leaderboard (Beeching et al., 2023):
``arc_challenge`` 25-shot (acc_norm), ``hellaswag`` 10-shot (acc_norm), ``mmlu`` 5-shot
(acc), ``truthfulqa_mc2`` 0-shot (acc). The harness (Gao et al., EleutherAI) is an
optional extra and its task data come from the Hugging Face hub; when the package is
missing, or a task's data are not in the local datasets cache, the command stops with
a message saying what to install or fetch, and exit code 2, instead of a traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, SimplesafeError

log = logging.getLogger(__name__)

LEADERBOARD = {"arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0}
HEADLINE = {"arc_challenge": "acc_norm,none", "hellaswag": "acc_norm,none", "mmlu": "acc,none",
            "truthfulqa_mc2": "acc,none"}


class HarnessUnavailable(SimplesafeError):
    """lm-evaluation-harness or a task's data is not available on this machine."""


class HarnessConfig(StageConfig):
    model: str = Field(description="local folder (or hub id with a populated cache) of the causal LM")
    adapter: str | None = Field(None, description="LoRA adapter folder (passed to the harness as peft=)")
    out: str = Field(description="results JSON file")
    tasks: list[str] = Field(list(LEADERBOARD), description="subset of arc_challenge, hellaswag, mmlu, truthfulqa_mc2")
    batch_size: int = Field(8, ge=1, description="harness batch size")
    limit: int | None = Field(None, ge=1, description="examples per task (a quick look, not a leaderboard number)")
    device: str = Field("cpu", description="cpu or cuda")
    dtype: str = Field("float32", description="model dtype")


def _import_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise HarnessUnavailable(
            "lm-evaluation-harness is not installed; install the optional extra with "
            "`pip install 'simplesafe[harness]'` (and make the task data available locally, "
            "e.g. by running the same command once on a machine with internet and copying HF_HOME)"
        ) from None
    return lm_eval


def run_harness(cfg: HarnessConfig) -> dict:
    """Run each task with its leaderboard shot count; write ``cfg.out``; return headline scores."""
    unknown = [t for t in cfg.tasks if t not in LEADERBOARD]
    if unknown:
        raise ConfigError(f"unknown harness task(s) {unknown}; allowed: {', '.join(LEADERBOARD)}")
    lm_eval = _import_lm_eval()
    model_args = f"pretrained={cfg.model},dtype={cfg.dtype}"
    if cfg.adapter:
        model_args += f",peft={cfg.adapter}"
    results: dict = {"model": cfg.model, "adapter": cfg.adapter, "tasks": {}}
    for task in cfg.tasks:
        shots = LEADERBOARD[task]
        log.info("harness: %s (%d-shot)", task, shots)
        try:
            res = lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=[task], num_fewshot=shots,
                                          batch_size=cfg.batch_size, limit=cfg.limit, device=cfg.device)
        except (ConnectionError, FileNotFoundError, OSError) as exc:
            raise HarnessUnavailable(
                f"task '{task}': its data are not available locally ({type(exc).__name__}: {str(exc)[:200]}); "
                "fetch them once with internet access (they land in the Hugging Face datasets cache) and rerun "
                "with HF_DATASETS_OFFLINE=1"
            ) from None
        except Exception as exc:  # the harness wraps hub errors in many types; name the task either way
            if "offline" in str(exc).lower() or "couldn't reach" in str(exc).lower() or "not found" in str(exc).lower():
                raise HarnessUnavailable(f"task '{task}': data not available locally: {str(exc)[:300]}") from None
            raise
        task_res = {k: v for k, v in (res or {}).get("results", {}).get(task, {}).items() if isinstance(v, (int, float))}
        results["tasks"][task] = {"shots": shots, "headline_metric": HEADLINE[task],
                                  "score": task_res.get(HEADLINE[task]), "metrics": task_res}
    scores = [t["score"] for t in results["tasks"].values() if t["score"] is not None]
    results["average"] = sum(scores) / len(scores) if scores else None
    write_json(Path(cfg.out), results)
    return results
