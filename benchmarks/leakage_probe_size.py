"""The patch-leakage probe at several sizes on saved patches: does a patch name its person?

    python benchmarks/robust_demo.py --person guide --presets lora,robust --patch-dir /tmp/patches ...
    python benchmarks/leakage_probe_size.py --patches /tmp/patches/guide_lora /tmp/patches/guide_robust \
        --photos guide_celebahq512/aligned_5.jpg --sizes 4x20,16x100 --threads 1

For each patch and each probe size (starts x steps), ``guide_unlearn.audit`` with only the leakage attack
(offline-v1: dlib, recognised = distance < 0.6 to any of ``--photos``): the probe sees the base model and the
patch only, climbs the difference between G_u and G_s from seeded random codes, and its G_s renderings are
judged against the person. Prints one JSON line per (patch, size) and appends them to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patches", nargs="+", required=True, help="patch folders (same base model)")
    p.add_argument("--photos", nargs="+", required=True, help="the person's photos, relative to shared/faces")
    p.add_argument("--sizes", default="4x20,16x100", help="probe sizes STARTSxSTEPS, comma-separated")
    p.add_argument("--model", default="demo-faces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results" / "robust" / "leakage_probe_size.jsonl"))
    args = p.parse_args()
    try:
        sizes = [tuple(int(x) for x in s.lower().split("x")) for s in args.sizes.split(",")]
        if any(len(sz) != 2 or min(sz) < 1 for sz in sizes):
            raise ValueError
    except ValueError:
        p.error(f"--sizes must be STARTSxSTEPS pairs of positive integers, comma-separated (e.g. 4x20,16x100); "
                f"got {args.sizes!r}")

    import torch

    torch.set_num_threads(args.threads)
    import guide_unlearn
    from guide_unlearn import ForgetPatch, IdentityEraser

    shared = Path(os.environ.get("GUIDE_SHARED", HERE.parent.parent / "shared"))
    photos = [shared / "faces" / ph for ph in args.photos]
    eraser = IdentityEraser.from_pretrained(args.model)
    for folder in args.patches:
        patch = ForgetPatch.from_pretrained(folder)
        for starts, steps in sizes:
            t = time.perf_counter()
            report = guide_unlearn.audit(eraser, patch, photos, attacks=("leakage",), samples=2, seed=args.seed,
                                         leakage_starts=starts, leakage_steps=steps, progress=False)
            m = report.metrics
            rec = {"patch": Path(folder).name, "photos": args.photos, "starts": starts, "steps": steps,
                   "seed": args.seed, "leakage_recognised": m["leakage_recognised"],
                   "leakage_similarity": m["leakage_similarity"], "decoys": (patch.metadata.get("robust") or {})
                   .get("decoys", 0), "seconds": round(time.perf_counter() - t, 1)}
            line = json.dumps(rec)
            print(line, flush=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
