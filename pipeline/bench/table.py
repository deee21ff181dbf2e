"""The plain-text table every benchmark prints (``bench models``, ``bench pipeline``, ``bench detectors``)."""
from __future__ import annotations

from typing import List, Sequence


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Left-aligned columns under a head and a dashed rule (the benchmarks' tables)."""
    lines = [list(head)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = []
    for i, r in enumerate(lines):
        out.append("  ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return out
