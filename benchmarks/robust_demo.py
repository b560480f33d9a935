"""Default vs robust preset on the demo model, judged by guide_unlearn.audit (offline-v1), same person.

    python benchmarks/robust_demo.py --person guide --out benchmarks/results/robust/recipe75   # the GUIDE person
    python benchmarks/robust_demo.py --person stargan_v2_celebahq/<file> ...                   # another person

For each preset: erase the request photo (cached code from tests/data), audit it (re-inversion with the fresh
code-projector and the 400-step from-scratch projector, held-out photos, others_kept on a fixed subset of the
other people, FD-dlib, leakage probe), and the scratch attacker's recognised rate against its step count
(one projection, codes snapshotted at each count). Writes <out>/<person>_<preset>.json (the audit metrics and
timings) and <out>/<person>_steps.json; prints one JSON line per preset.

The attacker-budget curve alone (no audit; ``--base-curve`` adds the unpatched model's), then its plot:

    python benchmarks/robust_demo.py --person guide --no-audit --base-curve --steps 50,100,200,400,800 --threads 1
    python benchmarks/robust_demo.py --plot benchmarks/results/robust/recipe75/guide_steps.json --png docs/robust_attack_budget.png

The cost ratio alone, paired (alternating default / robust erases after a warm-up):

    python benchmarks/robust_demo.py --person guide --presets lora,robust --time-pairs 3 --threads 2
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
STEP_COUNTS = (25, 50, 100, 200, 400, 800)


def scratch_curve(eraser, patch, photos, judge_fn, perceptual, steps=STEP_COUNTS, lr=0.03):
    """The from-scratch projector's objective (pixel MSE + perceptual, W+ from w_avg, Adam lr 0.03) through G_u
    (through the base model when ``patch`` is None) on photos [N, 3, R, R], codes snapshotted at each step count
    -> {count: recognised fraction}."""
    import torch

    from guide_unlearn.adapters.projector.projector import frozen_weights

    g = eraser.generator
    if patch is not None:
        eraser.apply_patch(patch)
    try:
        ws = g.w_avg.detach().view(1, 1, -1).repeat(photos.shape[0], g.num_ws, 1).clone().requires_grad_(True)
        opt = torch.optim.Adam([ws], lr=lr)
        snaps = {}
        with frozen_weights(g):
            for i in range(1, max(steps) + 1):
                out = g.synthesis(ws, None, noise_mode="const").images
                loss = (out - photos).square().flatten(1).mean(1) + perceptual(out, photos)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                if i in steps:
                    snaps[i] = ws.detach().clone()
        return {n: judge_fn(eraser.synthesize(w)) for n, w in snaps.items()}
    finally:
        if patch is not None:
            eraser.remove_patch(patch)


SUMMARY_KEYS = ("reinversion_default_recognised_before", "reinversion_default_recognised_after",
                "reinversion_scratch_recognised_before", "reinversion_scratch_recognised_after", "id", "id_others",
                "others_kept", "fd_pre", "leakage_recognised", "leakage_similarity")


def summary(folder: str) -> str:
    """A markdown table over the audits ``<person>_<preset>.json`` in ``folder``: per preset, the mean of each
    metric over the persons (and, for the re-inversion rates, the count of persons recognised), the fd_pre ratio
    to the ``lora`` audit of the same person, and the mean erase seconds."""
    import statistics

    recs = [json.loads(f.read_text()) for f in sorted(Path(folder).glob("*.json")) if not f.name.endswith(
        "_steps.json")]
    recs = [r for r in recs if "metrics" in r and "preset" in r]
    by = {}
    for r in recs:
        by.setdefault(r["preset"], {})[r["person"]] = r
    presets = sorted(by, key=lambda p: (p != "lora", p))
    lines = ["| metric | " + " | ".join(f"`{p}` ({len(by[p])} persons)" for p in presets) + " |",
             "|---|" + "---|" * len(presets)]
    for k in SUMMARY_KEYS:
        cells = []
        for p in presets:
            vals = [r["metrics"][k] for r in by[p].values() if r["metrics"].get(k) is not None]
            cell = f"{statistics.mean(vals):.3f}" if vals else "—"
            if k.startswith("reinversion") and vals:
                cell += f" ({sum(v >= 0.5 for v in vals)}/{len(vals)})"
            cells.append(cell)
        lines.append(f"| `{k}` | " + " | ".join(cells) + " |")
    ratio = []
    for p in presets:
        rs = [r["metrics"]["fd_pre"] / by["lora"][n]["metrics"]["fd_pre"] for n, r in by[p].items()
              if "lora" in by and n in by["lora"] and by["lora"][n]["metrics"].get("fd_pre")]
        ratio.append(f"{statistics.mean(rs):.2f}x ({min(rs):.2f}..{max(rs):.2f})" if rs else "—")
    lines.append("| `fd_pre` / default's, same person | " + " | ".join(ratio) + " |")
    lines.append("| erase seconds (mean) | " + " | ".join(
        f"{statistics.mean(r['erase_seconds'] for r in by[p].values()):.0f}" for p in presets) + " |")
    return "\n".join(lines)


def plot(steps_json: str, png: str) -> None:
    """Recognised rate against the scratch projector's steps, one line per patch -> ``png``."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = json.loads(Path(steps_json).read_text())
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=120)
    markers = "osd^v"
    for i, (name, curve) in enumerate(curves.items()):
        xs = sorted(int(k) for k in curve)
        # a small vertical offset per line so that equal curves stay visible
        ax.plot(xs, [curve[str(x)] + 0.015 * i for x in xs], marker=markers[i % 5], ls="-" if i < 2 else "--",
                label=name)
    xs = sorted({int(k) for c in curves.values() for k in c})
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(-0.05, 1.1)
    ax.axhline(0.2, color="grey", lw=0.8, ls="--", label="goal (<= 0.2)")
    ax.set_xlabel("from-scratch projector steps (attacker budget)")
    ax.set_ylabel("re-inversions recognised (dlib < 0.6)")
    ax.set_title("GUIDE person, demo-faces: re-inversion through the patch", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--person", default="guide", help="'guide' or a photo name under shared/faces (one-photo person)")
    p.add_argument("--presets", default="lora,robust")
    p.add_argument("--override", default="{}", help="JSON overrides of the robust preset")
    p.add_argument("--tag", default="robust")
    p.add_argument("--others-every", type=int, default=6, help="every n-th other person for others_kept")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--leakage-starts", type=int, default=8)
    p.add_argument("--leakage-steps", type=int, default=40)
    p.add_argument("--no-curve", action="store_true")
    p.add_argument("--time-pairs", type=int, default=0,
                   help="only time the erases: N alternating rounds over --presets (after one warm-up erase), "
                        "print the seconds and the ratio to the first preset, then exit")
    p.add_argument("--no-audit", action="store_true", help="only the attacker-budget curve (no audit JSON)")
    p.add_argument("--base-curve", action="store_true", help="add the unpatched model's curve ('base')")
    p.add_argument("--steps", default=",".join(map(str, STEP_COUNTS)), help="step counts of the curve")
    p.add_argument("--plot", default="", help="plot this <person>_steps.json to --png and exit")
    p.add_argument("--summary", default="", help="print a markdown table of the <person>_<preset>.json files in "
                   "this folder (per preset: mean over persons; rates as recognised/persons) and exit")
    p.add_argument("--png", default=str(HERE.parent / "docs" / "robust_attack_budget.png"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--patch-dir", default="", help="also save each patch to <patch-dir>/<person>_<preset>/ "
                   "(for later measurements; keep it out of the repository: a patch is derived from a photo)")
    p.add_argument("--out", default=str(HERE / "results" / "robust"))
    args = p.parse_args()
    if args.plot:
        plot(args.plot, args.png)
        return 0
    if args.summary:
        print(summary(args.summary))
        return 0
    steps = tuple(sorted(int(x) for x in args.steps.split(",")))

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import guide_unlearn
    from guide_unlearn import IdentityEraser
    from guide_unlearn.pipelines import audit as A
    from guide_unlearn.pipelines.audit.photos import landmarks_of

    sys.path.insert(0, str(HERE.parent))
    from recipes.demo_faces.evaluate import load_codes

    shared = Path(os.environ.get("GUIDE_SHARED", HERE.parent.parent / "shared"))
    faces = shared / "faces"
    eraser = IdentityEraser.from_pretrained("demo-faces")
    codes = load_codes(CODES, eraser)
    if args.person == "guide":
        request, held = f"{GUIDE}/aligned_5.jpg", [f"{GUIDE}/aligned_{i}.jpg" for i in range(1, 5)]
    else:
        request, held = args.person, []
    others = [n for n in sorted(codes) if not n.startswith(GUIDE) and n != request][::args.others_every]
    abs_codes = {str(faces / n): w for n, w in codes.items()}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.person.replace("/", "_").rsplit(".", 1)[0]
    steps_path = out_dir / f"{stem}_steps.json"
    curves = json.loads(steps_path.read_text()) if steps_path.is_file() else {}

    def curve(name, patch):
        judge = A.make_judge(A.get_protocol("offline-v1"), eraser)
        request_set = A.load_photos([faces / n for n in [request] + held], "request", judge, eraser)
        refs = request_set.descriptors
        crops = request_set.crops.to(eraser.device)
        lms = landmarks_of(request_set.photos)

        def judge_fn(imgs):
            return float(np.mean(judge.match(imgs.cpu(), lms, refs, [list(range(len(refs)))] * len(refs)).recognised))

        curves[name] = {str(k): v for k, v in scratch_curve(eraser, patch, crops, judge_fn, eraser.perceptual,
                                                            steps).items()}
        steps_path.write_text(json.dumps(curves, indent=1))
        print(json.dumps({"curve": name, "recognised_by_steps": curves[name]}), flush=True)

    if args.time_pairs:
        presets = args.presets.split(",")
        cfgs = {pr: eraser.default_config(pr, **(json.loads(args.override) if pr == "robust" else {}))
                for pr in presets}
        eraser.erase(faces / request, config=cfgs[presets[0]], measure=False, progress=False)  # warm-up
        secs: dict[str, list] = {pr: [] for pr in presets}
        for _ in range(args.time_pairs):
            for pr in presets:
                t = time.perf_counter()
                eraser.erase(faces / request, config=cfgs[pr], measure=False, progress=False)
                secs[pr].append(round(time.perf_counter() - t, 2))
        base = presets[0]
        rec = {"person": args.person, "threads": args.threads, "pairs": args.time_pairs, "seconds": secs,
               "ratio_to_" + base: {pr: [round(a / b, 2) for a, b in zip(secs[pr], secs[base])] for pr in presets}}
        print(json.dumps(rec), flush=True)
        with open(out_dir / "robust_cost.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        return 0
    if args.base_curve:
        curve("base (no patch)", None)
    for preset in args.presets.split(","):
        over = json.loads(args.override) if preset == "robust" else {}
        cfg = eraser.default_config(preset, **over)
        t = time.perf_counter()
        result = eraser.erase(faces / request, config=cfg, measure=False, progress=False)
        erase_s = time.perf_counter() - t
        name = preset if preset != "robust" else args.tag
        if args.patch_dir:
            result.patch.save_pretrained(Path(args.patch_dir) / f"{stem}_{name}", overwrite=True)
        if args.no_audit:
            curve(name, result.patch)
            continue
        report = guide_unlearn.audit(eraser, result.patch, [faces / request],
                                     held_out=[faces / h for h in held] or None,
                                     others=[faces / o for o in others], samples=args.samples,
                                     projector_steps=400, leakage_starts=args.leakage_starts,
                                     leakage_steps=args.leakage_steps, codes=abs_codes)
        rec = {"person": args.person, "preset": name, "config_overrides": over, "erase_seconds": erase_s,
               "metrics": report.to_dict()["metrics"], "audit_seconds": report.seconds,
               "robust": result.patch.metadata.get("robust"), "others": len(others),
               "final_losses": result.patch.metadata.get("final_losses")}
        (out_dir / f"{stem}_{name}.json").write_text(json.dumps(A.jsonable(rec), indent=1))
        print(json.dumps(A.jsonable({k: rec[k] for k in ("person", "preset", "erase_seconds", "metrics")})),
              flush=True)
        if not args.no_curve:
            curve(name, result.patch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
