"""Markdown table of the robust_demo.py results: one column per preset, the audit's metrics as rows.

    python benchmarks/robust_table.py benchmarks/results/robust/recipe75/guide_*.json
"""

from __future__ import annotations

import json
import sys

ROWS = ("reinversion_default_recognised_before", "reinversion_default_recognised_after",
        "reinversion_scratch_recognised_before", "reinversion_scratch_recognised_after",
        "held_out_recognised_before", "held_out_recognised_after", "id", "id_others", "others_kept", "fd_pre",
        "leakage_recognised", "leakage_similarity")


def main(paths: list[str]) -> int:
    recs = [json.load(open(p)) for p in paths]
    print("| metric | " + " | ".join(r["preset"] for r in recs) + " |")
    print("|---" * (len(recs) + 1) + "|")
    for k in ROWS:
        vals = [r["metrics"].get(k) for r in recs]
        print(f"| `{k}` | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in vals) + " |")
    print("| erase seconds | " + " | ".join(f"{r['erase_seconds']:.0f}" for r in recs) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
