"""Rebuild the bundled demo data in ``data/`` from ``../shared/data`` (deterministic).

    python scripts/make_demo_data.py [--shared ../shared/data]

Sources, licences and attribution are in ``data/README.md``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def head_lines(src: Path, dst: Path, n: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, encoding="utf-8") as fin, open(dst, "w", encoding="utf-8") as fout:
        for i, line in enumerate(fin):
            if i >= n:
                break
            fout.write(line.rstrip("\n") + "\n")


def gzip_head(src: Path, dst: Path, n: int | None) -> None:
    """The first ``n`` lines (all when None) of a JSON Lines file, gzip-compressed without a timestamp."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt", encoding="utf-8") as fin, open(dst, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            for i, line in enumerate(fin):
                if n is not None and i >= n:
                    break
                gz.write((line.rstrip("\n") + "\n").encode("utf-8"))


def harness_data(shared: Path, out: Path) -> None:
    """Task data for `simplesafe eval harness` (lm-evaluation-harness offline): the first 1,000 HellaSwag
    validation items; ARC-Challenge and TruthfulQA (multiple choice) complete. Same folder names and
    fields as ../shared/data, so `data_dir=../shared/data` is a drop-in for the full sets."""
    gzip_head(shared / "hellaswag-validation" / "validation.jsonl.gz", out / "hellaswag-validation" / "validation.jsonl.gz",
              1000)
    shutil.copyfile(shared / "hellaswag-validation" / "LICENSE", out / "hellaswag-validation" / "LICENSE")
    for split in ("train", "validation", "test"):
        gzip_head(shared / "arc-challenge" / f"{split}.jsonl", out / "arc-challenge" / f"{split}.jsonl.gz", None)
    gzip_head(shared / "truthfulqa" / "validation.jsonl", out / "truthfulqa" / "validation.jsonl.gz", None)
    shutil.copyfile(shared / "truthfulqa" / "LICENSE", out / "truthfulqa" / "LICENSE")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(REPO.parent / "shared" / "data"))
    args = ap.parse_args()
    shared = Path(args.shared)
    out = REPO / "data"
    wiki = shared / "d-wikipedia-simple-articles"
    head_lines(wiki / "test.tgt", out / "simplewiki" / "simple_articles.txt", 3000)
    head_lines(wiki / "valid.src", out / "simplewiki" / "english_articles.txt", 1500)
    head_lines(wiki / "valid.tgt", out / "simplewiki" / "simple_aligned.txt", 1500)
    (out / "eli5").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared / "haluquestqa-lfqa-preferences" / "preference_data.csv", out / "eli5" / "lfqa_preferences.tsv")
    shutil.copyfile(shared / "eli5-public-examples" / "examples_qda_short.json", out / "eli5" / "eli5_public_examples.json")
    # all 2,312 harmless-base test pairs (safety reward model, held-out red-team prompts)
    (out / "hh-rlhf").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared / "hh-rlhf-harmless-base-test" / "test.jsonl.gz", out / "hh-rlhf" / "harmless_base_test.jsonl.gz")
    # cased, untokenised Simple / English Wikipedia document pairs (Wiki-Auto via plan_simp), unchanged
    shutil.copyfile(shared / "plan-simp-wikiauto-docs" / "wikiauto_docs_valid.jsonl.gz",
                out / "simplewiki" / "wikiauto_docs.jsonl.gz")
    (out / "self-instruct").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shared / "self-instruct-seed-tasks" / "seed_tasks.jsonl", out / "self-instruct" / "seed_tasks.jsonl")
    harness_data(shared, out / "harness")
    print("wrote", out)


if __name__ == "__main__":
    main()
