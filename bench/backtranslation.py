"""Backtranslation with the report's prompt: the prompted base model vs Humpback's backward model, side by side.

    .venv/bin/python bench/backtranslation.py --run runs/demo            # after `simplesafe run recipes/demo.yaml`
    .venv/bin/python bench/backtranslation.py --run runs/demo --n 128 --show 8

Both generators get the same Simple Wikipedia leads (``RUN/data/wiki/train.jsonl``) in the
report's prompt (sec. 2.1), with the demo's decoding settings; every reply goes through the
same validation as the synth stage (:func:`simplesafe.synth.backtranslate.validate_question`).
Printed: the share of replies kept as questions, the reject reasons, and a few kept
questions of each, so a reader can judge whether the backward model (Li et al., 2023) is
worth its training time. The demo trains it because here it is: see the closing table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="runs/demo", help="a demo run directory with data/ and backward/")
    ap.add_argument("--base", default="embedded:smollm2")
    ap.add_argument("--n", type=int, default=96, help="leads")
    ap.add_argument("--show", type=int, default=5)
    args = ap.parse_args()

    from simplesafe.llm.base import GenParams
    from simplesafe.llm.hf import HFBackend
    from simplesafe.synth import prompts as P
    from simplesafe.synth.backtranslate import truncate_words, validate_question

    run = Path(args.run)
    leads = [json.loads(x) for x in (run / "data" / "wiki" / "train.jsonl").read_text().splitlines()][: args.n]
    import yaml

    cfg_file = run / "synth" / "config.yaml"
    cfg = yaml.safe_load(cfg_file.read_text()) if cfg_file.exists() else {}
    words = int(cfg.get("max_answer_words", 80))
    params = GenParams(max_new_tokens=40, temperature=0.7, seed=0)
    prompts = [P.backtranslate_messages(truncate_words(r["text"], words)) for r in leads]
    print(f"{len(leads)} leads from {run}/data/wiki/train.jsonl, answers cut to {words} words")
    print(f"{'generator':<34} {'kept':>6} {'seconds':>8}  reject reasons")
    shown = {}
    for name, model in (("prompted base (" + args.base + ")", args.base), ("backward model (Humpback)", str(run / "backward"))):
        backend = HFBackend(model, batch_size=64)
        t0 = time.time()
        outs = backend.generate(prompts, params, progress=False)
        secs = time.time() - t0
        reasons, kept = Counter(), []
        for lead, out in zip(leads, outs):
            q, why = validate_question(out, lead["text"])
            reasons[why or "kept"] += 1
            if why is None:
                kept.append(q)
        rest = ", ".join(f"{k} {v}" for k, v in reasons.most_common() if k != "kept")
        print(f"{name:<34} {len(kept) / len(leads):>6.2f} {secs:>8.1f}  {rest}")
        shown[name] = kept[: args.show]
    for name, qs in shown.items():
        print(f"\n{name}, first kept questions:")
        for q in qs:
            print("  -", q)
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
