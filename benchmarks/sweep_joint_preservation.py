"""Settings sweep for a joint ``erase_many`` of 8 demo-faces people: how many of the 8 are erased, and what share of
the other recognised people stays recognised, for each set of EraseConfig overrides (docs/benchmarks.md).

    OMP_NUM_THREADS=1 python benchmarks/sweep_joint_preservation.py --diagnose
    OMP_NUM_THREADS=1 python benchmarks/sweep_joint_preservation.py --variant NAME '{"field": value, ...}' ...

Tuning is done on a set of 8 people DISJOINT from the report set of ``bench_many.py`` (``--offset 7``: every
15th recognised person from the 8th; the report set starts at 0); preservation is judged on the remaining
recognised people. Each variant is one joint run with the model's default config plus the given EraseConfig
overrides; one JSON line per variant is appended to benchmarks/results/many/joint_preservation_sweep.jsonl
(erased of 8, others kept, the kept share among the others nearest to an erased person, seconds).
``--trace N`` also measures the erased people and the others under the current G_u every N steps of each run
(the per-visit L_local of every person too); ``--singles`` erases each person alone and reports the union of the
others the single patches lose; ``--identity faceapi`` gives the eraser dlib's own network (cut to dlib's chip)
for the ID terms, so figures made with it are optimistic and the rows say so.
``--diagnose`` prints the W-space distances that set the scale of the neighbourhood (typical ||w - w_avg||,
the resolved adjacency range, distances between different people's codes) and appends them as one line.
Needs shared/. Its seconds are meaningful only with nothing else on the machine; bench_joint_time.py is the
paired timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUT = HERE / "results" / "many" / "joint_preservation_sweep.jsonl"


def _setup(offset: int, n: int):
    import torch

    from bench_many import CODES, _people
    from guide_unlearn import IdentityEraser
    from guide_unlearn.recipes.demo_faces import evaluate as E
    from guide_unlearn.recipes.demo_faces.data import build_face_set, faces_root, list_photos

    eraser = IdentityEraser.from_pretrained("demo-faces")
    root = faces_root()
    faces = build_face_set(root, list_photos(root))
    metric = E.metric_for(faces)
    codes = E.load_codes(CODES, eraser)
    chosen, others, _ = _people(faces, codes, metric, eraser, n, offset)
    ws = torch.stack([codes[faces.names[i]] for i in chosen])
    ws_others = torch.stack([codes[faces.names[i]] for i in others])
    return eraser, faces, metric, chosen, others, ws, ws_others


def _dist(a, b):
    """Frobenius distances [len(a), len(b)] between codes [N, num_ws, w_dim]."""
    import torch

    return torch.cdist(a.flatten(1), b.flatten(1))


def diagnose(eraser, ws, ws_others) -> dict:
    import torch

    from guide_unlearn.targets import resolve_distances, typical_distance

    g = eraser.generator
    cfg = eraser.default_config()
    d, alpha = resolve_distances(cfg, g)
    typical = typical_distance(g.mapping, g.w_avg, g.z_dim)
    typical_psi = typical_distance(g.mapping, g.w_avg, g.z_dim, truncation_psi=cfg.truncation_psi)
    allw = torch.cat([ws, ws_others])
    pair = _dist(allw, allw)
    pair.fill_diagonal_(float("inf"))
    nearest = pair.min(1).values
    to_erased = _dist(ws_others, ws).min(1).values
    q = lambda t: [round(float(x), 2) for x in torch.quantile(t, torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0]))]
    return {"typical_w_minus_avg": round(typical, 2), "typical_at_psi": round(typical_psi, 2),
            "real_codes_w_minus_avg_q": q((allw - g.w_avg).flatten(1).norm(dim=1)),
            "target_distance_used": round(d, 2), "adjacency_alpha_used": [round(alpha[0], 2), round(alpha[1], 2)],
            "nearest_other_person_q": q(nearest), "other_to_nearest_erased_q": q(to_erased),
            "quantiles": [0, 0.1, 0.5, 0.9, 1]}


def _traced(eraser, faces, metric, chosen, others, ws, ws_others, every: int, trace: list):
    """Context: while it is open, every ``every``-th call of the engine's step render first measures (no grad, no
    draw from the run's generator) the dlib distances of the erased people's request renderings and the kept
    share of the others under the CURRENT G_u, appending {'step', 'dlib_erased', 'others_kept'} to ``trace``."""
    import contextlib

    import torch

    from guide_unlearn import engine
    from guide_unlearn.methods import joint
    from guide_unlearn.recipes.demo_faces import evaluate as E

    inner, calls = engine.render_step, [0]
    record, local = joint.record_people, {}

    def recorded(per_person, visited, rows, step):  # every visit's L_local per person (for calibration)
        record(per_person, visited, rows, step)
        if rows is not None:
            for p in visited.unique().tolist():
                local.setdefault(int(p), []).append(round(float(rows["local"][visited == p].mean()), 5))

    def wrapped(*args, **kwargs):
        step = calls[0]
        calls[0] += 1
        if step % every == 0:
            with torch.no_grad():
                after = E.distances_to(metric.describe(E.render(eraser, ws), faces.landmarks[chosen]),
                                       faces.descriptors[chosen])
                oth = E.distances_to(metric.describe(E.render(eraser, ws_others), faces.landmarks[others]),
                                     faces.descriptors[others])
            trace.append({"step": step, "dlib_erased": [round(float(x), 3) for x in after],
                          "erased": int((after > E.THRESHOLD).sum()),
                          "others_kept": round(float((oth < E.THRESHOLD).mean()), 4)})
            print(json.dumps(trace[-1]), flush=True)
        return inner(*args, **kwargs)

    @contextlib.contextmanager
    def scope():
        engine.render_step, joint.record_people = wrapped, recorded
        try:
            yield
        finally:
            engine.render_step, joint.record_people = inner, record
            trace.append({"local_per_visit": {str(p): v for p, v in sorted(local.items())}})
    return scope()


def run_variant(eraser, faces, metric, chosen, others, ws, ws_others, over: dict, trace_every: int = 0) -> dict:
    import contextlib

    import numpy as np
    import torch

    from guide_unlearn.recipes.demo_faces import evaluate as E

    cfg = eraser.default_config("joint", **over)
    req = {f"r{k}": ws[k:k + 1] for k in range(len(chosen))}
    trace: list = []
    scope = (_traced(eraser, faces, metric, chosen, others, ws, ws_others, trace_every, trace) if trace_every
             else contextlib.nullcontext())
    t = time.perf_counter()
    with scope:
        joint = eraser.erase_many(req, cfg, measure=False, progress=False)
    seconds = time.perf_counter() - t
    eraser.apply_patch(joint.patch)
    try:
        after = E.distances_to(metric.describe(E.render(eraser, ws), faces.landmarks[chosen]),
                               faces.descriptors[chosen])
        oth = E.distances_to(metric.describe(E.render(eraser, ws_others), faces.landmarks[others]),
                             faces.descriptors[others])
        found = E.faces_found(E.render(eraser, ws))
    finally:
        eraser.remove_patch(joint.patch)
    kept = oth < E.THRESHOLD
    near = _dist(ws_others, ws).min(1).values.numpy()
    close = near <= np.quantile(near, 0.25)
    return {"erased": int((after > E.THRESHOLD).sum()), "dlib_joint": [round(float(x), 3) for x in after],
            "others_kept": round(float(kept.mean()), 4), "n_others": len(others),
            "kept_nearest_quarter": round(float(kept[close].mean()), 4),
            "kept_farther": round(float(kept[~close].mean()), 4), "faces_found": int(found.sum()),
            "iterations": cfg.iterations, "seconds": round(seconds, 1),
            "recipe": {"iterations": cfg.iterations, "lr": cfg.lr}, "threads": torch.get_num_threads(),
            "requests": joint.patch.metadata.get("requests"), **({"trace": trace} if trace_every else {})}


def singles(eraser, faces, metric, chosen, others, ws, ws_others, over: dict) -> dict:
    """Each of the people erased ALONE (the model's default config + ``over``): is the request erased, which of the
    others each single patch loses, and how many are lost by at least one single patch (the union). If the joint
    run loses about the union, a joint-specific change cannot reach a preservation the singles do not have."""
    import numpy as np

    from guide_unlearn.recipes.demo_faces import evaluate as E

    cfg = eraser.default_config("joint", **over)  # for one person, the joint method is the default one
    lost, erased, kept = np.zeros(len(others), dtype=bool), [], []
    for k in range(len(chosen)):
        patch = eraser.erase(ws[k:k + 1], cfg, measure=False, progress=False).patch
        eraser.apply_patch(patch)
        try:
            d = E.distances_to(metric.describe(E.render(eraser, ws[k:k + 1]), faces.landmarks[chosen[k:k + 1]]),
                               faces.descriptors[chosen[k:k + 1]])
            oth = E.distances_to(metric.describe(E.render(eraser, ws_others), faces.landmarks[others]),
                                 faces.descriptors[others])
        finally:
            eraser.remove_patch(patch)
        erased.append(round(float(d[0]), 3))
        kept.append(round(float((oth < E.THRESHOLD).mean()), 4))
        lost |= oth >= E.THRESHOLD
    return {"singles": True, "over": over, "recipe": {"iterations": cfg.iterations, "lr": cfg.lr},
            "dlib_single": erased, "erased": int(sum(x > E.THRESHOLD for x in erased)), "others_kept_each": kept,
            "others_kept_by_all_singles": round(float(1 - lost.mean()), 4), "n_others": len(others)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--offset", type=int, default=7, help="selection offset: 7 = the tuning set, 0 = the report set")
    p.add_argument("--people", type=int, default=8)
    p.add_argument("--diagnose", action="store_true")
    p.add_argument("--variant", nargs=2, action="append", default=[], metavar=("NAME", "JSON"))
    p.add_argument("--identity", choices=("none", "faceapi"), default="none",
                   help="the eraser's identity model for the ID terms (id_weight, global_id_weight): faceapi (cut to "
                        "dlib's chip) carries dlib's weights, i.e. it is the JUDGE network: figures made with it are "
                        "optimistic and are labelled so")
    p.add_argument("--singles", action="store_true",
                   help="also erase each person alone and report the union of the others the single patches lose")
    p.add_argument("--trace", type=int, default=0, metavar="EVERY",
                   help="also measure the erased people and the others under G_u every EVERY steps (slower; the "
                        "seconds then include the measuring)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    setup = _setup(args.offset, args.people)
    eraser, faces, metric, chosen, others, ws, ws_others = setup
    people = [faces.people[i] for i in chosen]
    if args.identity == "faceapi":
        from guide_unlearn.recipes.demo_faces import evaluate as E

        eraser.identity_model = E.faceapi_chip(metric.mean_landmarks, faces.images.shape[-1])
    else:
        eraser.identity_model = None  # the default ArcFace is absent here anyway: say so explicitly
    rows = []
    if args.diagnose:
        rows.append({"diagnosis": diagnose(eraser, ws, ws_others), "offset": args.offset, "people": people})
        print(json.dumps(rows[-1]), flush=True)
    if args.singles:
        rows.append({**singles(*setup, {}), "offset": args.offset, "set": "report" if args.offset == 0 else "tuning",
                     "threads": 1})
        print(json.dumps(rows[-1]), flush=True)
        with OUT.open("a") as f:
            f.write(json.dumps(rows[-1]) + "\n")
    for name, over in args.variant:
        over = json.loads(over)
        r = run_variant(*setup, over, args.trace)
        rows.append({"variant": name, "over": over, "offset": args.offset,
                     "set": "report" if args.offset == 0 else "tuning", **r,
                     "identity_model": {"none": None, "faceapi": "faceapi+chip (dlib's own weights: the judge "
                                        "network, so the figure is OPTIMISTIC)"}[args.identity]})
        print(json.dumps(rows[-1]), flush=True)
        with OUT.open("a") as f:
            f.write(json.dumps(rows[-1]) + "\n")
    if args.diagnose:
        with OUT.open("a") as f:
            f.write(json.dumps(rows[0]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
