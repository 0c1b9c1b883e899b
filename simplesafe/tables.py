"""Plain aligned tables on stdout, for commands and stage summaries (no colour codes, so logs stay readable)."""

from __future__ import annotations


def print_table(rows: list[dict], title: str | None = None) -> None:
    """Plain aligned table on stdout (no colour codes, so logs stay readable)."""
    if not rows:
        return
    cols = list(rows[0].keys())
    for r in rows[1:]:
        for k in r:
            if k not in cols:
                cols.append(k)

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    widths = {c: max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in cols}
    if title:
        print(title)
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(fmt(r.get(c)).ljust(widths[c]) for c in cols))
