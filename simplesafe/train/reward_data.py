"""The preference pairs a reward model trains on (:mod:`simplesafe.train.reward`).

Pair sources (``pairs``; the ``auto`` default follows the reward model's name): ``rm_rows``
(curated ``{prompt, chosen, rejected, weight}`` rows, split by ``data build``), ``hh_rlhf``
(Anthropic's dialogue pairs) and ``simple_vs_english`` (Simple vs ordinary English Wikipedia, as
two line-aligned text files or one rows file), all read by :func:`load_pairs`; sources without
splits are split by a hash of the question so that a question never spans two splits. For
training, :class:`PairData` holds the pairs tokenised the way the reward model reads them
(:func:`simplesafe.train.reward_model.encode`) and :class:`LengthGroupedBatches` batches pairs of
similar length.
"""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from simplesafe.errors import ConfigError, DataError
from simplesafe.paths import bundled_data_dir
from simplesafe.train.common import read_split, split_paths
from simplesafe.train.reward_model import encode, pad_batch

if TYPE_CHECKING:
    from simplesafe.train.reward import RewardStageConfig

log = logging.getLogger(__name__)


def _bucket(key: str, val: float, test: float) -> str:
    """Deterministic split by a hash of the question, so a question never spans two splits."""
    x = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) / 2**32
    return "test" if x < test else "validation" if x < test + val else "train"


def split_hh_dialogue(text: str) -> tuple[str, str]:
    """hh-rlhf: (dialogue before the final assistant turn, that turn's text)."""
    marker = "\n\nAssistant:"
    idx = text.rfind(marker)
    if idx < 0:
        raise ValueError("no '\\n\\nAssistant:' turn")
    return text[:idx].strip(), text[idx + len(marker):].strip()


def hh_rlhf_pairs(paths: list[Path]) -> list[dict]:
    from simplesafe.io import read_rows, require

    out, skipped = [], []
    for path in paths:
        for line, row in read_rows(path):
            try:
                p_c, chosen = split_hh_dialogue(require(row, "chosen", path, line))
                p_r, rejected = split_hh_dialogue(require(row, "rejected", path, line))
            except ValueError as exc:
                raise DataError(path, line, "chosen", str(exc)) from None
            if p_c != p_r:
                # 5 of the 2,312 harmless-base test rows lose a turn marker ("  Human:" without the blank
                # line) on one side, so the two dialogues split differently: no clean pair, skip it
                skipped.append(f"{path}:{line}")
                continue
            if not chosen or not rejected:
                continue  # an empty final turn gives no preference signal
            out.append({"prompt": p_c, "chosen": chosen, "rejected": rejected, "weight": 1.0,
                        "_where": f"{path}:{line}", "_key": p_c})
    if skipped:
        log.warning("hh-rlhf: %d pair(s) skipped whose chosen and rejected dialogues differ before the final "
                    "turn (a lost turn marker): %s", len(skipped), ", ".join(skipped[:5]))
    return out


def simple_vs_english_pairs(simple_file: Path, english_file: Path) -> list[dict]:
    from simplesafe.io import read_lines
    from simplesafe.text.detok import detokenize

    simple = list(read_lines(simple_file))
    english = list(read_lines(english_file))
    if len(simple) != len(english):
        raise DataError(english_file, None, None, f"has {len(english)} lines but {simple_file} has {len(simple)}; "
                        "the two files must be line-aligned")
    out = []
    for (line, s), (_, e) in zip(simple, english):
        s, e = detokenize(s.strip()), detokenize(e.strip())
        if not s or not e or s == e:
            continue
        out.append({"prompt": "", "chosen": s, "rejected": e, "weight": 1.0,
                    "_where": f"{simple_file}:{line}", "_key": f"line{line}"})
    return out


ROW_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".csv", ".tsv")


def aligned_rows_pairs(path: Path, simple_field: str = "simple", english_field: str = "normal") -> list[dict]:
    """Simple (chosen) vs ordinary (rejected) pairs from a rows file with both texts per row (Wiki-Auto)."""
    from simplesafe.io import read_rows, require

    out = []
    for line, row in read_rows(path):
        s = require(row, simple_field, path, line).strip()
        e = require(row, english_field, path, line).strip()
        if s == e:
            continue  # no preference signal
        key = str(row.get("id", f"line{line}"))
        out.append({"prompt": "", "chosen": s, "rejected": e, "weight": 1.0, "_where": f"{path}:{line}", "_key": key})
    return out


def load_pairs(cfg: RewardStageConfig) -> dict[str, list[dict]]:
    """``{"train", "validation", "test"}`` lists of pair rows for ``cfg``."""
    src = cfg.source()
    if src == "rm_rows":
        if not cfg.data:
            raise ConfigError(f"reward model '{cfg.name}': data must name the RM dataset folder or files")
        fields = ("prompt", "chosen", "rejected")
        optional = {"weight": 1.0}
        if cfg.margin_field:
            optional[cfg.margin_field] = 0.0
        # an empty prompt is allowed: some pair sets judge the answer alone
        splits = {
            "train": read_split(split_paths(cfg.data, "train"), fields, optional, allow_empty=("prompt",)),
            "validation": read_split(split_paths(cfg.data, "validation", cfg.validation), fields, optional,
                                     allow_empty=("prompt",)),
            "test": read_split(split_paths(cfg.data, "test", cfg.test), fields, optional, allow_empty=("prompt",)),
        }
    else:
        if src == "hh_rlhf":
            files = [Path(p) for p in cfg.data] or [bundled_data_dir() / "hh-rlhf" / "harmless_base_test.jsonl.gz"]
            rows = hh_rlhf_pairs(files)
        else:
            sdir = bundled_data_dir() / "simplewiki"
            simple = Path(cfg.simple_file or sdir / "simple_aligned.txt")
            if simple.name.endswith(ROW_SUFFIXES):
                if cfg.english_file:
                    raise ConfigError(f"reward model '{cfg.name}': english_file is for line-aligned text files; "
                                      f"{simple} is a rows file with both texts (simple_field/english_field)")
                rows = aligned_rows_pairs(simple, cfg.simple_field, cfg.english_field)
            else:
                rows = simple_vs_english_pairs(simple, Path(cfg.english_file or sdir / "english_articles.txt"))
        splits = {"train": [], "validation": [], "test": []}
        for r in rows:
            splits[_bucket(r["_key"], cfg.validation_fraction, cfg.test_fraction)].append(r)
    for name, rows in splits.items():
        for r in rows:
            w = r.get("weight", 1.0)
            if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 or not math.isfinite(w):
                raise DataError(r.get("_where", "?"), None, "weight", f"must be a non-negative number, got {w!r}")
    if cfg.max_train_rows:
        splits["train"] = splits["train"][: cfg.max_train_rows]
    if cfg.max_eval_rows:
        splits["validation"] = splits["validation"][: cfg.max_eval_rows]
        splits["test"] = splits["test"][: cfg.max_eval_rows]
    if not splits["train"]:
        raise DataError(cfg.data[0] if cfg.data else src, None, None, f"no training pairs for reward model '{cfg.name}'")
    return splits


# --------------------------------------------------------------------------- batches

class LengthGroupedBatches:
    """Seeded batches of similar-length pairs: shuffle, sort within windows of 32 batches, shuffle the batches.

    The same idea as transformers' ``group_by_length``; a new order every epoch, the same
    order for the same seed. On a CPU padding is paid in full, so this is most of a 2x.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, window: int = 32):
        self.lengths, self.batch_size, self.seed, self.window = lengths, batch_size, seed, window
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(len(self.lengths))
        span = self.batch_size * self.window
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start: start + span], key=lambda i: -self.lengths[i])
            batches += [list(map(int, chunk[i: i + self.batch_size])) for i in range(0, len(chunk), self.batch_size)]
        for j in rng.permutation(len(batches)):
            yield batches[j]


class PairData:
    """Pre-tokenised pairs; the collator pads chosen and rejected into one batch (chosen first)."""

    def __init__(self, tokenizer, rows: list[dict], spec: dict, cfg: RewardStageConfig):
        enc_c = encode(tokenizer, [r["prompt"] for r in rows], [r["chosen"] for r in rows], spec)
        enc_r = encode(tokenizer, [r["prompt"] for r in rows], [r["rejected"] for r in rows], spec)
        keys = [k for k in enc_c.keys() if k in ("input_ids", "attention_mask", "token_type_ids")]
        self.items = []
        for i, r in enumerate(rows):
            margin = cfg.margin + (float(r.get(cfg.margin_field, 0.0)) if cfg.margin_field else 0.0)
            self.items.append({
                "chosen": {k: enc_c[k][i] for k in keys}, "rejected": {k: enc_r[k][i] for k in keys},
                "weight": float(r.get("weight", 1.0)) if cfg.use_weights else 1.0, "margin": margin,
            })
        self.tokenizer = tokenizer

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def lengths(self) -> list[int]:
        return [max(len(it["chosen"]["input_ids"]), len(it["rejected"]["input_ids"])) for it in self.items]

    def sorted_batches(self, batch_size: int) -> list[list[int]]:
        lengths = self.lengths()
        order = sorted(range(len(self.items)), key=lambda i: lengths[i])
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]

    def collate(self, items):
        import torch

        batch = pad_batch(self.tokenizer, [it["chosen"] for it in items] + [it["rejected"] for it in items])
        batch["weight"] = torch.tensor([it["weight"] for it in items], dtype=torch.float32)
        batch["margin"] = torch.tensor([it["margin"] for it in items], dtype=torch.float32)
        return batch
