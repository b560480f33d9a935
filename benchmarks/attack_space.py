"""Is the from-scratch attacker's success a property of W+? The same projector restricted to W, on saved patches.

    python benchmarks/robust_demo.py --person guide --presets lora,robust --patch-dir /tmp/patches ...
    python benchmarks/attack_space.py --patches /tmp/patches/guide_lora /tmp/patches/guide_robust \
        --photos guide_celebahq512/aligned_5.jpg guide_celebahq512/aligned_1.jpg ... --others 12 --threads 1

The audit's from-scratch attacker optimises a W+ code (one 512-d vector per synthesis layer, ``num_ws`` of them)
from w_avg with pixel MSE + perceptual loss (Adam, lr 0.03, 400 steps). This script runs that objective twice per
patch and per group of photos — in W+ (the audit's attacker) and in W (ONE code broadcast to every layer, the
space GUIDE's UFO target and neighbourhood live in) — through the base model and through the patched model, on
the person's photos and on ``--others`` other people of shared/faces (each judged against their own photo:
expressivity). offline-v1 judge (dlib, recognised = distance < 0.6). Prints one JSON line per (patch, space) and
appends them to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODES = HERE.parent / "tests" / "data" / "demo_faces_codes.safetensors"


def project(eraser, crops, space: str, steps: int, lr: float = 0.03):
    """The audit's scratch objective from w_avg on crops [N, 3, R, R]; ``space`` "w+" optimises [N, num_ws, w_dim],
    "w" one code [N, 1, w_dim] broadcast to every layer -> codes [N, num_ws, w_dim]."""
    import torch

    from guide_unlearn.adapters.projector.projector import frozen_weights

    g = eraser.generator
    layers = g.num_ws if space == "w+" else 1
    w = g.w_avg.detach().view(1, 1, -1).repeat(crops.shape[0], layers, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    with frozen_weights(g):
        for _ in range(steps):
            ws = w.expand(-1, g.num_ws, -1)
            out = g.synthesis(ws, None, noise_mode="const").images
            loss = (out - crops).square().flatten(1).mean(1) + eraser.perceptual(out, crops)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
    return w.detach().expand(-1, g.num_ws, -1).contiguous()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--patches", nargs="+", required=True, help="patch folders of demo-faces")
    p.add_argument("--photos", nargs="+", required=True, help="the person's photos, relative to shared/faces")
    p.add_argument("--others", type=int, default=12,
                   help="other people of shared/faces (evenly spaced in sorted order)")
    p.add_argument("--spaces", default="w+,w", help="comma-separated: w+ (per-layer codes, the audit's attacker) "
                   "and/or w (one code repeated over the layers)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--no-base", action="store_true", help="skip the unpatched model's figures")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(HERE / "results" / "robust" / "attack_space.jsonl"))
    args = p.parse_args()
    bad = [sp for sp in args.spaces.split(",") if sp not in ("w+", "w")]
    if bad:
        p.error(f"--spaces takes w+ and/or w, comma-separated; got {bad}")

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn import ForgetPatch, IdentityEraser
    from guide_unlearn.pipelines import audit as A
    from guide_unlearn.pipelines.audit.photos import landmarks_of, own_groups

    sys.path.insert(0, str(HERE.parent))
    from recipes.demo_faces.evaluate import load_codes

    faces = Path(os.environ.get("GUIDE_SHARED", HERE.parent.parent / "shared")) / "faces"
    eraser = IdentityEraser.from_pretrained("demo-faces")
    judge = A.make_judge(A.get_protocol("offline-v1"), eraser)
    person = A.load_photos([faces / n for n in args.photos], "request", judge, eraser)
    one_person = "guide_celebahq512/"  # the one folder of shared/faces that holds a single person
    same = any(n.startswith(one_person) for n in args.photos)
    names = [n for n in sorted(load_codes(CODES, eraser)) if n not in args.photos
             and not (same and n.startswith(one_person))]
    others = names[::max(1, len(names) // max(1, args.others))][:args.others] if args.others else []
    oth = A.load_photos([faces / n for n in others], "others", judge, eraser) if others else None

    def recognised(ws, pset, own: bool):
        imgs = eraser.synthesize(ws).cpu()
        groups = own_groups(pset.photos) if own else [list(range(len(pset)))] * len(pset)
        m = judge.match(imgs, landmarks_of(pset.photos), pset.descriptors, groups)
        return float(np.mean(m.recognised)), round(float(np.nanmean(m.score)), 3)

    def measure(label, patch):
        for space in args.spaces.split(","):
            t = time.perf_counter()
            if patch is not None:
                eraser.apply_patch(patch)
            try:
                rec = {"patch": label, "space": space, "steps": args.steps, "photos": args.photos}
                ws = project(eraser, person.crops.to(eraser.device), space, args.steps)
                rec["person_recognised"], rec["person_mean_distance"] = recognised(ws, person, False)
                if oth is not None:
                    ws = project(eraser, oth.crops.to(eraser.device), space, args.steps)
                    rec["others_recognised"], rec["others_mean_distance"] = recognised(ws, oth, True)
                    rec["others"] = len(oth)
            finally:
                if patch is not None:
                    eraser.remove_patch(patch)
            rec["seconds"] = round(time.perf_counter() - t, 1)
            line = json.dumps(rec)
            print(line, flush=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")

    if not args.no_base:
        measure("base (no patch)", None)
    for folder in args.patches:
        measure(Path(folder).name, ForgetPatch.from_pretrained(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
