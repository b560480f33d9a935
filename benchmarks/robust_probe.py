"""Quick diagnostics of one erase against the from-scratch projector (minutes, not an audit).

    python benchmarks/robust_probe.py --preset robust --override '{"attack_steps": 400}' --threads 1

Erases the person's request photo with the preset, then, through G_u: the scratch projector (the audit's
objective: pixel MSE + perceptual from w_avg, Adam lr 0.03) on all the person's photos with codes snapshotted at
each step count -> recognised fraction and mean dlib distance (offline-v1 judge, < 0.6 = recognised); the fresh
default inverter's re-inversion; where the 400-step codes land in W+ (per-layer distance to the request code,
relative to the spread of mapped codes); and the scratch projector and the fresh default inverter on ``--others``
other people (expressivity; the default inverter is the attacker of the audit's ``others_kept``).
Writes one JSON (``--out``) and prints it.
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
GUIDE = "guide_celebahq512"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--person", default="guide")
    p.add_argument("--preset", default="robust")
    p.add_argument("--override", default="{}")
    p.add_argument("--steps", default="50,100,200,400")
    p.add_argument("--others", type=int, default=3, help="other people for the scratch projector (0 = none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="")
    args = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn import IdentityEraser
    from guide_unlearn.adapters.projector.projector import frozen_weights
    from guide_unlearn.pipelines import audit as A
    from guide_unlearn.pipelines.audit.photos import landmarks_of, own_groups

    sys.path.insert(0, str(HERE.parent))
    from recipes.demo_faces.evaluate import load_codes

    faces = Path(os.environ.get("GUIDE_SHARED", HERE.parent.parent / "shared")) / "faces"
    eraser = IdentityEraser.from_pretrained("demo-faces")
    g = eraser.generator
    codes = load_codes(CODES, eraser)
    if args.person == "guide":
        request, held = f"{GUIDE}/aligned_5.jpg", [f"{GUIDE}/aligned_{i}.jpg" for i in range(1, 5)]
    else:
        request, held = args.person, []
    over = json.loads(args.override)
    cfg = eraser.default_config(args.preset, **over)
    t = time.perf_counter()
    result = eraser.erase(faces / request, config=cfg, measure=False, progress=False)
    erase_s = time.perf_counter() - t
    patch = result.patch
    judge = A.make_judge(A.get_protocol("offline-v1"), eraser)
    person = A.load_photos([faces / n for n in [request] + held], "request", judge, eraser)
    steps = sorted(int(s) for s in args.steps.split(","))

    def scratch(crops, n_steps):
        ws = g.w_avg.detach().view(1, 1, -1).repeat(crops.shape[0], g.num_ws, 1).clone().requires_grad_(True)
        opt = torch.optim.Adam([ws], lr=0.03)
        snaps = {}
        with frozen_weights(g):
            for i in range(1, max(n_steps) + 1):
                out = g.synthesis(ws, None, noise_mode="const").images
                loss = (out - crops).square().flatten(1).mean(1) + eraser.perceptual(out, crops)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                if i in n_steps:
                    snaps[i] = ws.detach().clone()
        return snaps

    def judge_ws(ws, pset, own: bool):
        imgs = eraser.synthesize(ws).cpu()
        groups = own_groups(pset.photos) if own else [list(range(len(pset)))] * len(pset)
        m = judge.match(imgs, landmarks_of(pset.photos), pset.descriptors, groups)
        return float(np.mean(m.recognised)), [round(float(s), 3) for s in m.score]

    rec = {"person": args.person, "preset": args.preset, "override": over, "erase_seconds": round(erase_s, 1),
           "robust": patch.metadata.get("robust")}
    w_req = eraser.invert(person.crops[:1].to(eraser.device), align=False, progress=False).detach()  # via G_s
    eraser.apply_patch(patch)
    try:
        t = time.perf_counter()
        snaps = scratch(person.crops.to(eraser.device), steps)
        rec["scratch"] = {n: judge_ws(w, person, False) for n, w in snaps.items()}
        rec["scratch_seconds"] = round(time.perf_counter() - t, 1)
        inv = A.DefaultInverterAttack(eraser)
        ws_d = inv.invert_photos(person.photos, 0).to(eraser.device)
        rec["default"] = judge_ws(ws_d, person, False)
        # where the attacker's codes land: per-layer distance to the request code, in units of the mean per-layer
        # distance between two mapped codes (psi 1)
        with torch.no_grad():
            z = torch.randn(64, g.z_dim, generator=torch.Generator().manual_seed(0))
            wr = g.mapping(z.to(eraser.device), None)
            spread = (wr[:32] - wr[32:]).norm(dim=-1).mean(0)  # [num_ws]
            last = snaps[max(steps)]
            rec["w_layer_dist_request_vs_scratch"] = [round(float(v), 2) for v in
                                                      ((last[0] - w_req[0]).norm(dim=-1) / spread)]
            rec["w_layer_dist_heldout_vs_request"] = [round(float(v), 2) for v in
                                                      ((ws_d[1:] - w_req[0]).norm(dim=-1) / spread).mean(0)]
            rec["w_layer_dist_scratch_vs_wavg"] = [round(float(v), 2) for v in
                                                   ((last - g.w_avg).norm(dim=-1) / spread).mean(0)]
        if args.others:
            names = [n for n in sorted(codes) if not n.startswith(GUIDE) and n != request][::37][:args.others]
            oth = A.load_photos([faces / n for n in names], "others", judge, eraser)
            s = scratch(oth.crops.to(eraser.device), [max(steps)])[max(steps)]
            rec["others_scratch"] = judge_ws(s, oth, True)
            # the audit's others_kept re-inverts others with the default inverter from their code-book codes: the
            # scratch projector alone can miss damage that this attacker shows
            rec["others_default"] = judge_ws(inv.invert_photos(oth.photos, 0).to(eraser.device), oth, True)
            rec["others_names"] = names
    finally:
        eraser.remove_patch(patch)
    text = json.dumps(rec)
    print(text, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
