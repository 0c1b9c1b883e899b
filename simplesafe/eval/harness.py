"""Open LLM Leaderboard (v1) tasks through lm-evaluation-harness, offline, on local task data.

    pip install 'simplesafe[harness]'                  # `make test` / `make demo` install it
    simplesafe eval harness model=embedded:smollm2 tasks=[hellaswag] limit=1000 out=hellaswag.json
    simplesafe eval harness model=runs/demo/sft preset=leaderboard data_dir=../shared/data out=sft.json

The harness (Gao et al., EleutherAI; the engine of the Open LLM Leaderboard, Beeching et
al., 2023) does all the scoring: its own task definitions (prompt format, answer choices,
``process_docs``, metrics) are used unchanged. Only where the documents come from changes.
For every task this module writes a small YAML file into a temporary folder::

    include: <site-packages>/lm_eval/tasks/hellaswag/hellaswag.yaml   # the harness's own task
    task: hellaswag
    dataset_path: json                      # instead of the hub dataset Rowan/hellaswag
    dataset_name: null
    dataset_kwargs: {data_files: {validation: DATA_DIR/hellaswag-validation/validation.jsonl.gz}}
    training_split: null                    # only when that split has no local file
    num_fewshot: 0                          # the preset's shots

and hands the folder to the harness as a ``TaskManager(include_path=..., include_defaults=False)``.
``include:`` pulls in every key of the harness's YAML (and its ``!function`` helpers, resolved
next to that file); the keys written after it replace only the data source, the splits that
have no local file, and the shot count. The generated overrides are written into the results.

Local data (``data_dir``; default: the subset bundled in ``data/harness``, see
``data/README.md``; ``data_dir=../shared/data`` has the full sets) follows the folder names of
``../shared/data``, one JSON Lines file per hub split with the hub dataset's fields:

    hellaswag-validation/validation.jsonl[.gz]        Rowan/hellaswag (no train split: few-shot
                                                      examples then come from validation, never
                                                      the item itself)
    arc-challenge/{train,validation,test}.jsonl[.gz]  allenai/ai2_arc, ARC-Challenge (test scored)
    truthfulqa/validation.jsonl[.gz]                  truthfulqa/truthful_qa, multiple_choice
    mmlu/<subject>/{test,dev}.{jsonl,parquet}         cais/mmlu, one folder per subject (the hub
                                                      repository's own layout); not bundled

A task whose scored split has no file stops the command with exit code 2 and a message that
names the missing files (``missing_data=skip`` records the reason in the results instead,
as the recipe's ``harness`` stage, :mod:`simplesafe.recipe.harness`, does).

Presets (``preset=``):

- ``leaderboard``: the Open LLM Leaderboard v1 settings, as the report's Table 1 used them:
  ARC-Challenge 25-shot acc_norm, HellaSwag 10-shot acc_norm, MMLU 5-shot acc (mean over the
  57 subjects, weighted by size), TruthfulQA mc2 0-shot; every item.
- ``fast`` (default): 0-shot, ARC-Challenge, HellaSwag and TruthfulQA mc2, the first ``limit``
  items of each task (100 unless given; ``limit=all`` for every item; ``limit={hellaswag: 200,
  truthfulqa_mc2: 20}`` per task: TruthfulQA's items cost about ten times HellaSwag's), for a laptop.

The preset, the shots, the limit and the number of items scored are written into the
results next to every score and its standard error (the harness's: the sample standard
deviation over sqrt(n) for these mean metrics).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from simplesafe.atomic import write_json
from simplesafe.config import StageConfig
from simplesafe.errors import ConfigError, ModelLoadError, SimplesafeError

log = logging.getLogger(__name__)

TASKS = ("arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2")
# the harness's task YAML (relative to lm_eval/tasks) and the local folder holding its data
HARNESS_YAML = {"arc_challenge": "arc/arc_challenge.yaml", "hellaswag": "hellaswag/hellaswag.yaml",
                "truthfulqa_mc2": "truthfulqa/truthfulqa_mc2.yaml", "mmlu": "mmlu/default"}
LOCAL_FOLDER = {"arc_challenge": "arc-challenge", "hellaswag": "hellaswag-validation",
                "truthfulqa_mc2": "truthfulqa", "mmlu": "mmlu"}
# the leaderboard's metric per task (truthfulqa_mc2's "acc" is the mc2 score)
HEADLINE = {"arc_challenge": "acc_norm", "hellaswag": "acc_norm", "mmlu": "acc", "truthfulqa_mc2": "acc"}
METRIC_LABEL = {"arc_challenge": "acc_norm", "hellaswag": "acc_norm", "mmlu": "acc", "truthfulqa_mc2": "mc2"}
PRESETS = {
    "leaderboard": {"shots": {"arc_challenge": 25, "hellaswag": 10, "mmlu": 5, "truthfulqa_mc2": 0},
                    "tasks": ["arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc2"], "limit": None,
                    "about": "the Open LLM Leaderboard v1 settings: ARC 25-shot, HellaSwag 10-shot, MMLU 5-shot, "
                             "TruthfulQA mc2 0-shot, every item unless limited"},
    "fast": {"shots": {t: 0 for t in TASKS}, "tasks": ["arc_challenge", "hellaswag", "truthfulqa_mc2"],
             "limit": 100, "about": "0-shot, the first `limit` items of each task (100 unless set)"},
}
DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


class HarnessUnavailable(SimplesafeError):
    """lm-evaluation-harness or a task's data is not available on this machine."""


class HarnessSettings(StageConfig):
    """What to run: shared by ``simplesafe eval harness`` and the recipe's ``harness`` stage."""

    preset: Literal["fast", "leaderboard"] = Field("fast", description="fast (0-shot, `limit` items per task) or "
                                                   "leaderboard (Open LLM Leaderboard v1 shots, every item)")
    tasks: list[str] | None = Field(None, description="subset of arc_challenge, hellaswag, mmlu, truthfulqa_mc2 "
                                    "(default: the preset's)")
    limit: int | Literal["all"] | dict[str, int | Literal["all"]] | None = Field(
        None, description="the first N items of each task (MMLU: of each subject); all = every item; a mapping "
                          "task -> N sets it per task; default: the preset's (fast 100, leaderboard all)")
    num_fewshot: int | None = Field(None, ge=0, description="shots for every task instead of the preset's")
    data_dir: str | None = Field(None, description="folder with the task data (layout in simplesafe.eval.harness); "
                                 "default: the subset bundled in data/harness")
    missing_data: Literal["error", "skip"] = Field("error", description="a task without local data: stop (exit 2) "
                                                   "or skip it with the reason written into the results")
    batch_size: int = Field(8, ge=1, description="harness batch size")
    device: str = Field("cpu", description="cpu or cuda")
    dtype: str = Field("float32", description="model dtype")
    apply_chat_template: bool = Field(False, description="wrap prompts in the tokenizer's chat template (the "
                                      "Open LLM Leaderboard v1 did not)")


class HarnessConfig(HarnessSettings):
    model: str = Field(description="local folder, embedded:NAME, or hub id with a populated cache, of the causal LM")
    adapter: str | None = Field(None, description="LoRA adapter folder (passed to the harness as peft=)")
    out: str = Field(description="results JSON file")


def plan(settings: HarnessSettings) -> dict:
    """The tasks, shots and limit the settings mean: ``{tasks, shots, limit, preset, data_dir}``."""
    preset = PRESETS[settings.preset]
    tasks = list(settings.tasks) if settings.tasks is not None else list(preset["tasks"])
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ConfigError(f"unknown harness task(s) {unknown}; allowed: {', '.join(TASKS)}")
    if not tasks:
        raise ConfigError("harness: tasks is empty; allowed: " + ", ".join(TASKS))
    shots = {t: settings.num_fewshot if settings.num_fewshot is not None else preset["shots"][t] for t in tasks}
    given = settings.limit if isinstance(settings.limit, dict) else {t: settings.limit for t in tasks}
    extra = [t for t in given if t not in tasks]
    if extra:
        raise ConfigError(f"harness: limit names task(s) {extra} that are not in tasks {tasks}")
    limits = {}
    for t in tasks:
        v = given.get(t)
        if isinstance(v, int) and v < 1:
            raise ConfigError(f"harness: limit must be >= 1 or 'all', got {v}" + (f" for {t}" if isinstance(
                settings.limit, dict) else ""))
        limits[t] = None if v == "all" else preset["limit"] if v is None else v
    uniform = len(set(limits.values())) == 1
    return {"preset": settings.preset, "tasks": tasks, "shots": shots, "limits": limits,
            "limit": limits[tasks[0]] if uniform else limits, "data_dir": str(data_dir(settings))}


def limit_phrase(limit) -> str:
    """``None`` -> 'every item'; ``50`` -> 'the first 50 items of each task'; a mapping -> per task."""
    if limit is None:
        return "every item"
    if isinstance(limit, dict):
        return "the first " + ", ".join(f"{'all' if v is None else v} {t}" for t, v in limit.items()) + " items"
    return f"the first {limit} items of each task"


def data_dir(settings: HarnessSettings) -> Path:
    if settings.data_dir:
        return Path(settings.data_dir).expanduser()
    from simplesafe.paths import bundled_data_dir

    return bundled_data_dir() / "harness"


def _import_lm_eval():
    try:
        import lm_eval  # noqa: F401
        import lm_eval.tasks  # noqa: F401
    except ImportError:
        raise HarnessUnavailable(
            "lm-evaluation-harness is not installed; install the optional extra with "
            "`pip install 'simplesafe[harness]'` (`make test` and `make demo` install it)"
        ) from None
    return lm_eval


def harness_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def _find_split_file(folder: Path, split: str) -> Path | None:
    for suffix in DATA_SUFFIXES:
        p = folder / f"{split}{suffix}"
        if p.is_file():
            return p
    shards = sorted(folder.glob(f"{split}-*.parquet"))  # the hub's own file names, e.g. test-00000-of-00001.parquet
    return shards[0] if len(shards) == 1 else None


def _harness_yaml(path: Path) -> dict:
    """A harness task YAML with its includes merged, ``!function`` values left as strings."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=False)


def _splits(cfg: dict) -> dict:
    """Which splits the harness task reads: ``{role: split name}`` and the one it scores."""
    roles = {r: cfg.get(f"{r}_split") for r in ("training", "validation", "test", "fewshot")}
    roles = {r: s for r, s in roles.items() if s}
    scored = roles.get("test") or roles.get("validation")
    return {"roles": roles, "scored": scored}


def _override(task_yaml: Path, folder: Path, shots: int) -> tuple[dict | None, dict | str]:
    """The override keys for one harness task on ``folder`` and ``{scored_split, fewshot_from}``,
    or ``(None, what is missing)``."""
    cfg = _harness_yaml(task_yaml)
    sp = _splits(cfg)
    files, nulled = {}, []
    for role, split in sp["roles"].items():
        f = _find_split_file(folder, split)
        if f is not None:
            files[split] = str(f.resolve())
        elif split == sp["scored"]:
            return None, f"{folder}/{split}.jsonl (the split the harness scores)"
        elif role == "fewshot" and shots:
            return None, f"{folder}/{split}.jsonl (the task's few-shot examples)"
        else:
            nulled.append(role)
    kinds = {"parquet" if f.endswith(".parquet") else "json" for f in files.values()}
    if len(kinds) > 1:
        return None, f"{folder}: mixes parquet and JSON files; use one format"
    over = {"include": str(task_yaml), "task": cfg["task"], "dataset_path": kinds.pop(), "dataset_name": None,
            "dataset_kwargs": {"data_files": files}, "num_fewshot": shots}
    for role in nulled:
        over[f"{role}_split"] = None
    # where the harness takes few-shot examples from: fewshot split, else train, else validation, else test
    kept = [sp["roles"][r] for r in ("fewshot", "training", "validation", "test") if r in sp["roles"] and r not in nulled]
    return over, {"scored_split": sp["scored"], "fewshot_from": (kept[0] if kept else None) if shots else None}


class LocalTask:
    """One leaderboard task on local data: the YAML overrides to write (one per harness task;
    57 for MMLU), the harness group files to copy, and what is missing."""

    def __init__(self, name: str, overrides: list[dict], groups: list[Path], missing: str | None, meta: dict):
        self.name, self.overrides, self.groups, self.missing, self.meta = name, overrides, groups, missing, meta


def local_task(task: str, root: Path, shots: int) -> LocalTask:
    tasks_dir = harness_tasks_dir()
    folder = root / LOCAL_FOLDER[task]
    if task != "mmlu":
        yaml_path = tasks_dir / HARNESS_YAML[task]
        if not yaml_path.is_file():
            raise HarnessUnavailable(f"this lm-evaluation-harness has no {yaml_path}; install the tested version "
                                     "(constraints.txt)")
        over, meta = _override(yaml_path, folder, shots)
        if over is None:
            return LocalTask(task, [], [], meta, {})
        return LocalTask(task, [over], [], None, meta)
    mmlu_dir = tasks_dir / HARNESS_YAML["mmlu"]
    subjects = sorted(mmlu_dir.glob("mmlu_*.yaml"))
    groups = sorted(mmlu_dir.glob("_mmlu*.yaml"))
    if not subjects or not groups:
        raise HarnessUnavailable(f"this lm-evaluation-harness has no MMLU task files in {mmlu_dir}")
    overs, missing, meta = [], [], {}
    for path in subjects:
        subject = _harness_yaml(path)["dataset_name"]
        over, m = _override(path, folder / subject, shots)
        if over is None:
            missing.append(subject)
        else:
            overs.append(over)
            meta = m
    if missing:
        shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} of {len(subjects)} subjects)" if len(missing) > 4
                                          else "")
        return LocalTask(task, [], groups, f"{folder}/<subject>/test.jsonl and dev.jsonl (hub dataset cais/mmlu, "
                                           f"one folder per subject); missing: {shown}", {})
    return LocalTask(task, overs, groups, None, meta)


def write_task_dir(task_dir: Path, overrides: list[dict], group_files: list[Path]) -> None:
    import yaml

    task_dir.mkdir(parents=True, exist_ok=True)
    for over in overrides:
        (task_dir / f"{over['task']}.yaml").write_text(yaml.safe_dump(over, sort_keys=False), encoding="utf-8")
    for g in group_files:  # MMLU's group definitions (no data in them), so `mmlu` means what it means in the harness
        (task_dir / g.name).write_text(g.read_text(encoding="utf-8"), encoding="utf-8")


def prepare_tasks(settings: HarnessSettings, task_dir: Path) -> tuple[dict, dict[str, LocalTask], dict]:
    """Write the task folder; return ``(plan, {task: LocalTask}, {task: reason skipped})``.

    A task without local data is an error (exit 2) unless ``missing_data=skip``.
    """
    p = plan(settings)
    root = Path(p["data_dir"])
    chosen, missing = {}, {}
    for task in p["tasks"]:
        lt = local_task(task, root, p["shots"][task])
        if lt.missing:
            missing[task] = f"no local data: {lt.missing}"
            continue
        write_task_dir(task_dir, lt.overrides, lt.groups)
        chosen[task] = lt
    if missing and settings.missing_data == "error":
        lines = "\n  ".join(f"{t}: {m}" for t, m in missing.items())
        raise HarnessUnavailable(
            f"harness task data not found in {root}:\n  {lines}\n"
            "Pass data_dir=FOLDER holding them (layout: simplesafe/eval/harness.py; ../shared/data has ARC-Challenge, "
            "HellaSwag and TruthfulQA), or leave the task out of tasks=[...]. MMLU is not bundled.")
    return p, chosen, missing


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _model_path(model: str) -> str:
    """A local folder (``embedded:NAME`` resolved) or, offline with a populated cache, a hub id ``org/name``."""
    from simplesafe.models.embedded import resolve

    path = Path(resolve(model)).expanduser()
    if (path / "config.json").is_file():
        return str(path)
    is_hub_id = model.count("/") == 1 and not model.startswith((".", "/", "~")) and not path.exists()
    if not is_hub_id:
        raise ModelLoadError(f"{model}: no model folder (config.json) at {path}")
    return model


def evaluate_model(settings: HarnessSettings, model: str, adapter: str | None = None) -> dict:
    """Score one model on the settings' tasks; the results dict (not written)."""
    lm_eval = _import_lm_eval()
    from lm_eval.tasks import TaskManager

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="simplesafe-harness-") as tmp:
        p, chosen, skipped = prepare_tasks(settings, Path(tmp))
        path = _model_path(model)
        out: dict = {"model": model, "model_path": path, "adapter": adapter, "preset": p["preset"],
                     "preset_about": PRESETS[p["preset"]]["about"], "limit": p["limit"], "data_dir": p["data_dir"],
                     "tasks": {}, "skipped": skipped,
                     "settings": {"batch_size": settings.batch_size, "dtype": settings.dtype, "device": settings.device,
                                  "apply_chat_template": settings.apply_chat_template,
                                  "num_fewshot_override": settings.num_fewshot}}
        try:
            from importlib.metadata import version

            out["lm_eval_version"] = version("lm_eval")
        except Exception:  # noqa: BLE001 - a version string is provenance, not a requirement
            out["lm_eval_version"] = None
        if not chosen:
            out["average"] = None
            out["seconds"] = round(time.time() - t0, 1)
            return out
        model_args = {"pretrained": path, "dtype": settings.dtype}
        if adapter:
            model_args["peft"] = str(adapter)
        tm = TaskManager(include_path=tmp, include_defaults=False)
        log.info("harness: %s on %s (%s preset, limit %s)", model, ", ".join(chosen), p["preset"], p["limit"])
        try:  # the model is loaded once, the way simple_evaluate would load it from model="hf"
            from lm_eval.api.registry import get_model

            lm = get_model("hf").create_from_arg_obj(model_args, {"batch_size": settings.batch_size,
                                                                  "device": settings.device})
        except OSError as exc:
            raise ModelLoadError(f"{model}: the harness could not load it ({type(exc).__name__}: {str(exc)[:300]})") \
                from None
        results, n_samples = {}, {}
        by_limit: dict = {}
        for task in chosen:  # the harness takes one limit per call: one call per distinct limit
            by_limit.setdefault(p["limits"][task], []).append(task)
        for lim, group in by_limit.items():
            res = lm_eval.simple_evaluate(model=lm, tasks=group, num_fewshot=None, limit=lim, task_manager=tm,
                                          log_samples=False, apply_chat_template=settings.apply_chat_template)
            results.update(res.get("results", {}))
            n_samples.update(res.get("n-samples", {}))
        del lm
    for task, lt in chosen.items():
        r = results.get(task, {})
        metric = HEADLINE[task]
        subtasks = [o["task"] for o in lt.overrides]
        n = sum(int(n_samples.get(s, {}).get("effective", 0)) for s in subtasks)
        n_avail = sum(int(n_samples.get(s, {}).get("original", 0)) for s in subtasks)
        lim = p["limits"][task]
        if lim is not None and n < lim * len(subtasks):
            log.warning("harness: %s: limit %d but only %d items in the local data", task, lim, n_avail)
        first = lt.overrides[0]
        single = len(lt.overrides) == 1
        out["tasks"][task] = {
            "shots": p["shots"][task], "limit": lim, "metric": METRIC_LABEL[task], "harness_metric": f"{metric},none",
            "score": _num(r.get(f"{metric},none")), "stderr": _num(r.get(f"{metric}_stderr,none")),
            "n": n, "n_available": n_avail, **lt.meta,
            "harness_yaml": str(Path(first["include"]).relative_to(harness_tasks_dir())),
            "overrides": {k: v for k, v in first.items() if k != "include"} if single else
            {"dataset_path": first["dataset_path"], "num_fewshot": first["num_fewshot"],
             "data": f"{len(lt.overrides)} subjects under {Path(p['data_dir']) / LOCAL_FOLDER[task]}"},
            "metrics": {k: _num(v) for k, v in r.items() if _num(v) is not None},
        }
    scores = [t["score"] for t in out["tasks"].values() if t["score"] is not None]
    out["average"] = sum(scores) / len(scores) if scores else None
    out["seconds"] = round(time.time() - t0, 1)
    return out


def run_harness(cfg: HarnessConfig) -> dict:
    """The ``eval harness`` command: score ``cfg.model``, write ``cfg.out``, return the results."""
    plan(cfg)  # unknown tasks and bad limits are config errors, before anything is imported
    res = evaluate_model(cfg, cfg.model, cfg.adapter)
    write_json(Path(cfg.out), res)
    return res
