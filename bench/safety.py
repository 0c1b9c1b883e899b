"""Safety scorer benchmark: the first version (old) and the default scorer (new), side by side, in one run.

Prints, at the default threshold (0.1, or ``--threshold``):

1. Held-out corpora: AUROC and recall / false-positive rate per corpus, for profanity-check
   alone, the old ensemble and the new one (and the new hate label alone). Each scorer is
   measured on the group-disjoint test split of ITS OWN build, rebuilt deterministically from
   the config stored in its artifact (the builds differ in corpora, so their splits differ;
   scoring the old model on the new split would count texts it trained on).
2. The out-of-template functional test set (:mod:`simplesafe.safety.functional`, templates
   never trained or calibrated on): AUROC, and per functionality the share flagged, for the
   old ensemble, the new ``hate`` label and the new ensemble (``toxicity``); then the same on
   the hand-written fixture set of issue 8 (tests/safety/fixtures, never trained on).
3. Profane offensive tweets (fixture): AUROC and recall, profanity alone vs old vs new.
4. Whole texts: a hateful sentence planted after 300 benign words (ELI5 answers), and the
   same answers without it: share flagged by old and new.
5. Flag rate on ordinary text (bundled ELI5 answers, Simple Wikipedia leads).
6. Speed: texts/second of profanity-check, old and new ensembles on tweet-length held-out
   texts and on ELI5 answers, with the ratio, the share of parts the new cascade sent to
   the encoder, the thread count and the load average.

    python bench/safety.py                              # ~5-10 minutes on 2 cores (first run embeds the corpora)
    python bench/safety.py --threshold recall_90 --speed-texts 4096
    python bench/safety.py --artifact DIR --old-artifact DIR

Needs ../shared/data for section 1 (skipped with a note when absent) and git history (or
``--old-artifact``) for the old scorer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

FIXTURES = REPO / "tests" / "safety" / "fixtures"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt(v, w=6) -> str:
    return f"{'-':>{w}}" if v is None else f"{v:{w}.3f}"


def metrics(y, p, threshold):
    from simplesafe.safety.calibration import binary_metrics

    return binary_metrics(np.asarray(y), np.asarray(p), threshold)


def print_corpus_table(title: str, rows: list[tuple[str, np.ndarray, dict]], threshold: float) -> None:
    keys = list(rows[0][2]) if rows else []
    print(f"\n{title}")
    head = f"{'set':<30}{'n':>6}{'pos':>6}" + "".join(f" | {k:>22} AUROC rec@t FPR@t" for k in keys)
    print(head)
    print("-" * len(head))
    for name, y, scores in rows:
        line = f"{name:<30}{len(y):>6}{int(np.sum(y)):>6}"
        for k in keys:
            m = metrics(y, scores[k], threshold)
            line += f" | {'':>22} {_fmt(m['auroc'], 5)} {_fmt(m['recall'], 5)} {_fmt(m['fpr'], 5)}"
        print(line)


def held_out(clf, label: str, threshold: float, prof, root: Path, old_style: bool, prof_shift: float = 0.0) -> list:
    """Test split of the build that made ``clf``: (name, y, {scorer: scores})."""
    from simplesafe.safety.build import SafetyBuildConfig
    from simplesafe.safety.build_data import load_and_split

    cfg = SafetyBuildConfig(**{k: v for k, v in clf.meta["config"].items() if k in SafetyBuildConfig.model_fields},
                            progress=False, data_dir=str(root))
    corpora, rows, _, _, splits, _ = load_and_split(cfg)
    te = np.flatnonzero(splits == "test")
    texts = [rows[i].text for i in te]
    y = np.array([rows[i].label for i in te])
    src = np.array([rows[i].source for i in te])
    hate = clf.score(texts)
    raw = prof.score(texts)["profanity"]
    from simplesafe.safety.classifier import calibrate

    p = calibrate({"method": "none", "shift": prof_shift}, np.log(np.clip(raw, 1e-12, 1 - 1e-12) / np.clip(1 - raw, 1e-12, 1)))
    out = []
    for name in list(corpora) + ["ALL"]:
        m = np.ones(len(te), bool) if name == "ALL" else src == name
        scores = {"raw profanity": raw[m], f"{label} ensemble": np.maximum(p[m], hate[m])}
        if not old_style:
            scores[f"{label} hate"] = hate[m]
        out.append((f"{name} (test)", y[m], scores))
    return out, texts


def functional_table(title: str, cases: list[dict], scores: dict[str, np.ndarray], threshold: float) -> dict:
    y = np.array([c["label"] for c in cases])
    print(f"\n{title} (n={len(cases)}; share flagged at {threshold:.3g} per functionality)")
    keys = list(scores)
    print(f"{'functionality':<30}{'label':>6}{'n':>5}" + "".join(f"{k:>16}" for k in keys))
    funcs = OrderedDict()
    for i, c in enumerate(cases):
        funcs.setdefault(c["functionality"], []).append(i)
    out = {}
    for f, idx in funcs.items():
        line = f"{f:<30}{cases[idx[0]]['label']:>6}{len(idx):>5}"
        out[f] = {}
        for k in keys:
            share = float(np.mean(scores[k][idx] > threshold))
            out[f][k] = share
            line += f"{share:16.3f}"
        print(line)
    for what, sel in (("hateful flagged", y == 1), ("non-hateful flagged", y == 0)):
        print(f"{what:<41}" + "".join(f"{np.mean(scores[k][sel] > threshold):16.3f}" for k in keys))
    print(f"{'AUROC':<41}" + "".join(f"{metrics(y, scores[k], threshold)['auroc']:16.3f}" for k in keys))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", default=None, help="new hate-classifier folder (default: cache build, else shipped)")
    ap.add_argument("--old-artifact", default=None, help="version-1 artifact folder (default: from git history)")
    ap.add_argument("--threshold", default="0.1", help="number or operating-point name (recall_90, fpr_05, ...)")
    ap.add_argument("--speed-texts", type=int, default=2048, help="texts used to time each scorer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-corpora", action="store_true", help="skip section 1 (held-out corpora)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from v1_scorer import V1_OPTIONS, v1_artifact

    from simplesafe.paths import bundled_data_dir, shared_data_dir
    from simplesafe.safety.functional import functional_test_set
    from simplesafe.text.toxicity import get_toxicity_scorer, resolve_threshold

    old = get_toxicity_scorer("ensemble", artifact=str(v1_artifact(args.old_artifact)), **V1_OPTIONS)
    new = get_toxicity_scorer("ensemble", artifact=args.artifact)
    prof = old.profanity
    threshold = resolve_threshold(args.threshold, args.artifact)
    m = new.classifier.meta
    print(f"new: {new.classifier.artifact_dir} (version {m.get('version', 1)}, calibration {m['calibration']['method']}"
          f" {m['calibration'].get('weighting', 'mixture')}, cascade below {(m.get('cascade') or {}).get('student_below')})")
    print(f"old: {old.classifier.artifact_dir} (version 1: first {old.classifier.max_seq_length} tokens, PyTorch, "
          f"no cascade); threshold {threshold:.4g}")

    def both(texts):
        so, sn = old.score(texts), new.score(texts)
        return {"old ensemble": so["toxicity"], "new hate": sn["hate"], "new profanity": sn["profanity"],
                "new ensemble": sn["toxicity"]}

    # 1. held-out corpora
    root = shared_data_dir()
    tweets: list[str] = []
    if root is None or args.skip_corpora:
        print("\n(held-out corpora skipped" + (": ../shared/data absent)" if root is None else ")"))
    else:
        rows_old, _ = held_out(old.classifier, "old", threshold, prof, root, old_style=True)
        print_corpus_table("[1a] old scorer on the test split of its own build", rows_old, threshold)
        rows_new, texts_new = held_out(new.classifier, "new", threshold, prof, root, old_style=False,
                                       prof_shift=new.profanity_shift)
        print_corpus_table("[1b] new scorer on the test split of its own build", rows_new, threshold)
        tweets = [t for t in texts_new if len(t.split()) <= 60]
        from simplesafe.safety.corpora import load_jigsaw_sample

        jig = load_jigsaw_sample(root)
        jt = [r.text for r in jig]
        s = both(jt)
        s["raw profanity"] = prof.score(jt)["profanity"]
        print_corpus_table("[1c] Jigsaw sample (101 comments, smoke test, trained on by neither)",
                           [("jigsaw sample", np.array([r.label for r in jig]), s)], threshold)

    # 2. functional tests
    func = functional_test_set()
    ft = [c["text"] for c in func]
    sf = both(ft)
    sf["raw profanity"] = prof.score(ft)["profanity"]
    functional_table("[2a] out-of-template functional test set (simplesafe.safety.functional, test templates)",
                     func, sf, threshold)
    fix = _read_jsonl(FIXTURES / "hate_functional.jsonl")
    xt = [r["text"] for r in fix]
    sx = both(xt)
    sx["raw profanity"] = prof.score(xt)["profanity"]
    functional_table("[2b] hand-written functional fixture of issue 8 (tests/safety/fixtures)", fix, sx, threshold)

    # 3. profane tweets
    tw = _read_jsonl(FIXTURES / "profane_tweets.jsonl")
    tt = [r["text"] for r in tw]
    st = both(tt)
    st["raw profanity"] = prof.score(tt)["profanity"]
    print_corpus_table("[3] profane offensive tweets (fixture)", [("profane tweets", np.array([r["label"] for r in tw]), st)],
                       threshold)

    # 4. whole texts; 5. ordinary text
    bundled = bundled_data_dir()
    import pandas as pd

    df = pd.read_csv(bundled / "eli5" / "lfqa_preferences.tsv", sep="\t")
    eli5 = [str(t) for t in df["preferred_response"].tolist()]
    hateful = [c["text"] for c in func if c["label"] == 1 and c["functionality"].startswith(("F1_", "F2_", "F3_", "F17"))]
    long_benign, planted = [], []
    for k, a in enumerate(eli5):
        words = a.split()
        while len(words) < 300:
            words += eli5[(k + len(words)) % len(eli5)].split()
        body = " ".join(words[:300])
        long_benign.append(body + " That is how it works.")
        planted.append(body + " " + hateful[k % len(hateful)])
        if len(planted) >= 200:
            break
    sp, sb = both(planted), both(long_benign)
    print(f"\n[4] whole texts: a hateful sentence after 300 benign words (n={len(planted)}), share flagged at "
          f"{threshold:.3g}; the same 300 words without it")
    for k in ("old ensemble", "new hate", "new ensemble"):
        print(f"    {k:<14} planted {np.mean(sp[k] > threshold):.3f}   without {np.mean(sb[k] > threshold):.3f}")
    sw = bundled / "simplewiki" / "simple_articles.txt"
    ordinary = {"ELI5 preferred answers": eli5[:500]}
    if sw.exists():
        ordinary["Simple Wikipedia leads (first 2 sentences)"] = [
            " ".join(line.split(" . ")[:2]) for line in sw.read_text(encoding="utf-8").splitlines()[:500]]
    print(f"\n[5] flag rate at {threshold:.3g} on ordinary text")
    for name, texts in ordinary.items():
        s = both(texts)
        s["raw profanity"] = prof.score(texts)["profanity"]
        print(f"    {name} (n={len(texts)}): " + "  ".join(f"{k} {np.mean(v > threshold):.3f}" for k, v in s.items()))

    # 6. speed
    print(f"\n[6] speed ({torch.get_num_threads()} threads)")
    pools = {}
    if tweets:
        pools["tweet-length held-out texts (<= 60 words)"] = tweets
    pools["tweet-length functional tests + profane tweets"] = ft + tt
    pools["ELI5 answers"] = eli5
    for name, pool in pools.items():
        n = args.speed_texts if "ELI5" not in name else min(args.speed_texts, 512)
        texts = (pool * (n // max(len(pool), 1) + 1))[:n]
        rates = {}
        for label, scorer in (("profanity-check", prof), ("old ensemble", old), ("new ensemble", new)):
            scorer.score(texts[:16])
            t0 = time.perf_counter()
            scorer.score(texts)
            rates[label] = len(texts) / (time.perf_counter() - t0)
        st = new.classifier.last_stats
        print(f"    {name} (n={len(texts)}, mean {np.mean([len(t.split()) for t in texts]):.0f} words, load average "
              f"{os.getloadavg()[0]:.1f}): " + "  ".join(f"{k} {v:,.0f}/s" for k, v in rates.items())
              + f"  -> new/old {rates['new ensemble'] / rates['old ensemble']:.1f}x; new cascade: "
              f"{st['by_encoder']}/{st['parts']} parts through the encoder")


if __name__ == "__main__":
    main()
