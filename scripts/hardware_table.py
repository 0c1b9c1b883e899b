"""Regenerate the README's hardware table from ``simplesafe plan`` (planned peak GiB per stage on a bf16 GPU).

    python scripts/hardware_table.py            # print the table
    python scripts/hardware_table.py --write    # replace it in README.md (between its markers)

``tests/test_recipes.py`` fails when the README's table differs from what this prints, so the table
cannot drift from the recipes or the estimates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = ["recipes/demo.yaml", "recipes/smoke.yaml", "recipes/small-gpu-qwen2.5-0.5b.yaml",
           "recipes/eli5-wiki-llama2-7b-qlora.yaml"]


def table() -> str:
    import os

    os.chdir(REPO)
    from simplesafe.plan import hardware_table

    return hardware_table([Path(r) for r in RECIPES])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="replace the table in README.md")
    args = ap.parse_args()
    text = table()
    if not args.write:
        print(text)
        return
    from simplesafe.plan import README_END, README_START

    readme = REPO / "README.md"
    body = readme.read_text()
    if README_START not in body or README_END not in body:
        sys.exit(f"README.md has no {README_START} ... {README_END} block")
    head, rest = body.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(f"{head}{README_START}\n{text}\n{README_END}{tail}")
    print("README.md: hardware table updated")


if __name__ == "__main__":
    main()
