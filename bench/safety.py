"""Safety scorer benchmark: profanity-check alone vs the hate classifier alone vs the ensemble.

Prints, per held-out corpus (the group-disjoint test split of the build that the scorer
loads, rebuilt deterministically from its stored config), AUROC and recall / false-positive
rate at the default threshold (0.1), for the three scorers side by side; then the same on
the hand-written functional hate tests and profane tweets in tests/safety/fixtures, the
flag rate on ordinary bundled text (Simple Wikipedia, ELI5 answers), and texts/second of
each backend on this machine (2 CPU threads).

    python bench/safety.py                      # uses the cache build, else the shipped artifact
    python bench/safety.py --artifact DIR --threshold 0.1 --speed-texts 512

Needs ../shared/data for the held-out corpora (skipped with a note when absent). The
corpora's embeddings are read from the build's cache when present, else recomputed
(~4 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FIXTURES = REPO / "tests" / "safety" / "fixtures"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt(v) -> str:
    return "  -  " if v is None else f"{v:.3f}"


def _row(name: str, y, scores: dict[str, np.ndarray], threshold: float) -> dict:
    from simplesafe.safety.build import binary_metrics

    out = {"set": name, "n": len(y), "pos": int(np.sum(y))}
    for key, p in scores.items():
        m = binary_metrics(np.asarray(y), p, threshold)
        out[key] = (m["auroc"], m["recall"], m["fpr"])
    return out


def _print_table(rows: list[dict], keys: list[str], threshold: float) -> None:
    head = f"{'held-out set':<26}{'n':>6}{'pos':>6}"
    for k in keys:
        head += f" | {k + ' AUROC':>17} {'rec@' + format(threshold, '.3g'):>8} {'FPR@' + format(threshold, '.3g'):>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['set']:<26}{r['n']:>6}{r['pos']:>6}"
        for k in keys:
            a, rec, fpr = r[k]
            line += f" | {_fmt(a):>17} {_fmt(rec):>8} {_fmt(fpr):>8}"
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", default=None, help="hate-classifier folder (default: cache build, else shipped)")
    ap.add_argument("--threshold", default="0.1", help="number or operating-point name (recall_90, fpr_05, ...)")
    ap.add_argument("--speed-texts", type=int, default=512, help="texts used to time each backend")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from simplesafe.paths import bundled_data_dir, shared_data_dir
    from simplesafe.safety.build import SafetyBuildConfig, load_and_split
    from simplesafe.safety.classifier import HateClassifier
    from simplesafe.text.toxicity import ProfanityCheckScorer, get_toxicity_scorer, resolve_threshold

    clf = HateClassifier(args.artifact)
    threshold = resolve_threshold(args.threshold, args.artifact)
    prof = ProfanityCheckScorer()
    meta = clf.meta
    print(f"artifact: {clf.artifact_dir}  head: {meta['head']}  calibration: {meta['calibration']['method']}  "
          f"threshold: {threshold:.4g}")
    keys = ["profanity", "classifier", "ensemble"]

    def three(texts, hate=None):
        p = prof.score(texts)["profanity"]
        h = hate if hate is not None else clf.score(texts)
        return {"profanity": p, "classifier": h, "ensemble": np.maximum(p, h)}

    rows = []
    root = shared_data_dir()
    if root is None:
        print("(../shared/data absent: held-out corpora skipped)")
    else:
        cfg_dict = dict(meta["config"])
        cfg = SafetyBuildConfig(**cfg_dict, progress=False, data_dir=str(root))
        corpora, all_rows, emb, comp, splits, _ = load_and_split(cfg)
        src = np.array([r.source for r in all_rows])
        y = np.array([r.label for r in all_rows])
        te = splits == "test"
        texts = [r.text for r in all_rows]
        hate = np.full(len(all_rows), np.nan)
        idx = np.nonzero(te)[0]
        # A frozen-encoder build scores the cached frozen embeddings; a fine-tuned one must encode again.
        hate[idx] = (clf.score([texts[i] for i in idx]) if meta.get("encoder_weights")
                     else clf.score_embeddings(emb[idx]))
        for name in corpora:
            idx = np.nonzero(te & (src == name))[0]
            rows.append(_row(f"{name} (test)", y[idx], three([texts[i] for i in idx], hate[idx]), threshold))
        idx = np.nonzero(te)[0]
        rows.append(_row("ALL test splits", y[idx], three([texts[i] for i in idx], hate[idx]), threshold))
        from simplesafe.safety.corpora import load_jigsaw_sample

        jig = load_jigsaw_sample(root)
        rows.append(_row("jigsaw sample (smoke)", [r.label for r in jig], three([r.text for r in jig]), threshold))

    func = _read_jsonl(FIXTURES / "hate_functional.jsonl")
    core = [r for r in func if r["subset"] == "core"]
    rows.append(_row("functional hate (core)", [r["label"] for r in core], three([r["text"] for r in core]), threshold))
    hard = [r for r in func if r["subset"] == "core" and r["label"] == 1] + [r for r in func if r["subset"] == "hard"]
    rows.append(_row("functional: hate vs negation/counter", [r["label"] for r in hard],
                     three([r["text"] for r in hard]), threshold))
    tw = _read_jsonl(FIXTURES / "profane_tweets.jsonl")
    rows.append(_row("profane offensive tweets", [r["label"] for r in tw], three([r["text"] for r in tw]), threshold))
    _print_table(rows, keys, threshold)

    # Flag rate on ordinary text: what a 0.1 filter removes from clean training data.
    print()
    bundled = bundled_data_dir()
    ordinary = {}
    sw = bundled / "simplewiki" / "simple_articles.txt"
    if sw.exists():
        ordinary["Simple Wikipedia (first 2 sentences)"] = [
            " ".join(l.split(" . ")[:2]) for l in sw.read_text(encoding="utf-8").splitlines()[:500]]
    eli5 = bundled / "eli5" / "lfqa_preferences.tsv"
    if eli5.exists():
        import pandas as pd

        df = pd.read_csv(eli5, sep="\t")
        ordinary["ELI5 preferred answers"] = [str(t) for t in df["preferred_response"].tolist()[:500]]
    for name, texts in ordinary.items():
        s = three(texts)
        print(f"flag rate @ {threshold:.3g} on {name} (n={len(texts)}): " +
              "  ".join(f"{k} {np.mean(v > threshold):.3f}" for k, v in s.items()))

    # Throughput: each backend end to end on the same texts.
    print()
    pool = [r["text"] for r in func] + [r["text"] for r in tw]
    if ordinary:
        pool += [t for v in ordinary.values() for t in v]
    speed_texts = (pool * (args.speed_texts // max(len(pool), 1) + 1))[: args.speed_texts]
    for backend in ("profanity-check", "hate-classifier", "ensemble"):
        scorer = get_toxicity_scorer(backend, **({} if backend == "profanity-check" else {"artifact": args.artifact}))
        scorer.score(speed_texts[:8])  # warm-up: model load, first-call overheads
        t0 = time.perf_counter()
        scorer.score(speed_texts)
        dt = time.perf_counter() - t0
        print(f"{backend:<16} {len(speed_texts) / dt:9.1f} texts/s  ({len(speed_texts)} texts, "
              f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
