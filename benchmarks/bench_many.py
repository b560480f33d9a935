"""Figures of the many-people features: a joint erase, continual erases, and the request queue.

    python benchmarks/bench_many.py                      # every section (tens of minutes on 2 CPU cores)
    python benchmarks/bench_many.py --sections joint     # one section: joint, continual or queue

- joint (demo-faces, dlib metric): 8 people of shared/faces, one photo each (the request is that photo's cached
  code), erased in ONE ``erase_many`` run and in 8 single ``erase`` runs (wall time after a warm-up erase);
  per person: is the rendering of the request code still recognised by dlib (distance < 0.6 to the photo),
  single vs joint; the share of the other recognised people of shared/faces still recognised after the joint
  patch; how alike the people's targets are (dlib distance between target renderings, plain UFO vs separated).
- continual (demo-faces): 4 of those people erased one after another, each patch applied before the next erase;
  after the fourth, is each earlier person still erased.
- queue (tiny-stylegan2): ``guide-unlearn erase-batch`` over requests made of shared/faces photos, one process
  against two (``accelerate launch --multi_gpu --num_processes 2`` on CPU: torchrun + gloo), patch ids compared.

Its seconds are meaningful only with nothing else on the machine (bench_joint_time.py is the paired timing).
Prints a table and one final JSON line. Needs shared/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CODES = REPO / "tests" / "data" / "demo_faces_codes.safetensors"


def _people(faces, codes, metric, eraser, n: int, offset: int = 0):
    """One recognised photo per person (first in name order). -> (chosen [n] indices, others indices).

    The n people are spread over the alphabet (every len(recognised) // n-th recognised person, starting at
    ``offset``): offset 0 is the REPORT set the figures in docs/queue.md use; a different offset (e.g. 7, not a
    multiple of the step 15) gives a disjoint TUNING set, so settings are not tuned on the people reported."""
    import numpy as np
    import torch

    from guide_unlearn.recipes.demo_faces import evaluate as E

    first = {}
    for i, p in enumerate(faces.people):
        first.setdefault(p, i)
    idx = sorted(first.values(), key=lambda i: faces.names[i])
    ws = torch.stack([codes[faces.names[i]] for i in idx])
    d = E.distances_to(metric.describe(E.render(eraser, ws), faces.landmarks[idx]), faces.descriptors[idx])
    recognised = [i for i, ok in zip(idx, d < E.THRESHOLD) if ok]
    step = max(1, len(recognised) // n)
    chosen = recognised[offset::step][:n]  # spread over the alphabet rather than the first n
    others = [i for i in recognised if i not in chosen]
    return chosen, others, np.asarray(d)


def _distances(eraser, faces, ws, idx, metric):
    from guide_unlearn.recipes.demo_faces import evaluate as E

    return E.distances_to(metric.describe(E.render(eraser, ws), faces.landmarks[idx]), faces.descriptors[idx])


def joint_section(eraser, faces, codes, metric, n: int, offset: int = 0, joint_over: dict | None = None) -> dict:
    import numpy as np
    import torch

    from guide_unlearn.recipes.demo_faces import evaluate as E

    chosen, others, _ = _people(faces, codes, metric, eraser, n, offset)
    ids = [faces.people[i] for i in chosen]
    ws = {faces.people[i]: codes[faces.names[i]].unsqueeze(0) for i in chosen}
    ws_others = torch.stack([codes[faces.names[i]] for i in others])
    cfg = eraser.default_config()
    eraser.erase(ws[ids[0]], cfg, measure=False, progress=False)  # warm-up
    singles, single_s = {}, []
    for rid in ids:
        t = time.perf_counter()
        singles[rid] = eraser.erase(ws[rid], cfg, measure=False, progress=False).patch
        single_s.append(time.perf_counter() - t)
    joint_cfg = cfg.replace(method="joint", **(joint_over or {}))  # the joint run's own settings (--joint-config)
    t = time.perf_counter()
    joint = eraser.erase_many(ws, joint_cfg, measure=False, progress=False)
    joint_s = time.perf_counter() - t
    from guide_unlearn.pipelines.measure import people_target_similarity

    similarity = people_target_similarity(eraser.generator, eraser.identity_model, torch.cat(list(ws.values())),
                                          torch.cat(list(joint.w_target.values())), torch.arange(len(ids)), cfg)

    req = torch.cat([ws[r] for r in ids])
    before = _distances(eraser, faces, req, chosen, metric)
    single_after = []
    for k, rid in enumerate(ids):
        eraser.apply_patch(singles[rid])
        single_after.append(float(_distances(eraser, faces, ws[rid], [chosen[k]], metric)[0]))
        eraser.remove_patch(singles[rid])
    eraser.apply_patch(joint.patch)
    try:
        joint_after = _distances(eraser, faces, req, chosen, metric)
        others_after = _distances(eraser, faces, ws_others, others, metric)
        faces_after = E.faces_found(E.render(eraser, req))
    finally:
        eraser.remove_patch(joint.patch)
    # how alike the targets look to dlib: pairwise distance between G_s(w_t) renderings (mean landmarks)
    tgt_joint = metric.describe(E.render(eraser, torch.cat(list(joint.w_target.values()))))
    from guide_unlearn.targets import resolve_distances
    from guide_unlearn.targets import ufo_target

    d, _ = resolve_distances(cfg, eraser.generator)
    tgt_plain = metric.describe(E.render(eraser, ufo_target(req, eraser.generator.w_avg, cfg.target, d)))
    pair = lambda desc: np.sqrt(((desc[:, None] - desc[None]) ** 2).sum(-1))[np.triu_indices(len(ids), 1)]
    pj, pp = pair(tgt_joint), pair(tgt_plain)
    return {
        "people": ids, "iterations": joint_cfg.iterations, "joint_config": joint_over or {},
        "persons_per_step": min(joint_cfg.method_config.persons_per_step, len(ids)),
        "single_seconds": [round(s, 2) for s in single_s], "single_seconds_mean": round(float(np.mean(single_s)), 2),
        "joint_seconds": round(joint_s, 2), "joint_over_one_single": round(joint_s / float(np.mean(single_s)), 2),
        "dlib_before": [round(float(x), 3) for x in before],
        "dlib_after_single": [round(x, 3) for x in single_after],
        "dlib_after_joint": [round(float(x), 3) for x in joint_after],
        "erased_single": int(sum(x > E.THRESHOLD for x in single_after)),
        "erased_joint": int((joint_after > E.THRESHOLD).sum()),
        "joint_faces_found": int(faces_after.sum()),
        "others": len(others), "others_still_recognised": round(float((others_after < E.THRESHOLD).mean()), 4),
        "target_dlib_pair_distance_plain_ufo": {"min": round(float(pp.min()), 3), "mean": round(float(pp.mean()), 3),
                                                "under_0.6": int((pp < E.THRESHOLD).sum())},
        "target_dlib_pair_distance_separated": {"min": round(float(pj.min()), 3), "mean": round(float(pj.mean()), 3),
                                                "under_0.6": int((pj < E.THRESHOLD).sum())},
        "target_latent_cosine": {k: round(v, 4) for k, v in similarity.items() if "latent" in k},
    }


def continual_section(eraser, faces, codes, metric, n: int, offset: int = 0) -> dict:
    """Erase n people one after another (each patch applied before the next), plain stacking and with
    ``keep_erased`` (the earlier people's codes passed to the later erases)."""
    import torch

    from guide_unlearn.recipes.demo_faces import evaluate as E

    chosen, _, _ = _people(faces, codes, metric, eraser, 8, offset)
    chosen = chosen[:n]
    cfg = eraser.default_config("joint")  # keep_erased: the joint method keeps earlier people erased
    ws = [codes[faces.names[i]].unsqueeze(0) for i in chosen]
    out = {"people": [faces.people[i] for i in chosen]}
    for mode in ("stacked", "stacked_keep_erased"):
        after_each, patches = [], []
        try:
            for k in range(n):
                keep = torch.cat(ws[:k]) if k and mode == "stacked_keep_erased" else None
                patches.append(eraser.apply_patch(eraser.erase(ws[k], cfg, measure=False, keep_erased=keep,
                                                                   progress=False).patch))
                after_each.append([round(float(x), 3) for x in _distances(eraser, faces, torch.cat(ws[:k + 1]),
                                                                           chosen[:k + 1], metric)])
        finally:
            for p in reversed(patches):
                eraser.remove_patch(p)
        final = after_each[-1]
        out[mode] = {"dlib_after_each_step": after_each,
                     "earlier_still_erased": int(sum(x > E.THRESHOLD for x in final[:-1])), "earlier": n - 1,
                     "all_erased_at_end": bool(all(x > E.THRESHOLD for x in final))}
    return out


def queue_section(requests: int, iterations: int) -> dict:
    photos = sorted((Path(os.environ.get("GUIDE_SHARED", REPO.parent / "shared")) / "faces" / "deepface_train")
                    .glob("*.jpg"))[:requests]
    tmp = Path(tempfile.mkdtemp(prefix="bench_many_queue_"))
    try:
        for k, p in enumerate(photos):
            (tmp / "req" / f"person-{k:02d}").mkdir(parents=True)
            shutil.copy(p, tmp / "req" / f"person-{k:02d}" / p.name)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        args = ["erase-batch", str(tmp / "req"), "--model", "tiny-stylegan2", "--iterations", str(iterations),
                "--quiet", "--threads", "1"]
        runs = {}
        for label, launcher in (("one_process", [sys.executable, "-m", "guide_unlearn.cli"]),
                                ("two_processes", [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                                                   "--num_processes", "2", "--num_machines", "1",
                                                   "--mixed_precision", "no", "--dynamo_backend", "no",
                                                   "-m", "guide_unlearn.cli"])):
            t = time.perf_counter()
            proc = subprocess.run(launcher + args + ["--out", str(tmp / label)], env=env, capture_output=True,
                                  text=True)
            seconds = time.perf_counter() - t
            if proc.returncode != 0:
                raise RuntimeError(f"{label} failed: {proc.stderr[-2000:]}")
            rows = [json.loads(x) for x in (tmp / label / "manifest.jsonl").read_text().splitlines()[1:]]
            runs[label] = {"seconds": round(seconds, 1), "rows": rows,
                           "summary": json.loads(proc.stdout.strip().splitlines()[-1])}
        ids = lambda label: {r["request_id"]: r["patch_id"] for r in runs[label]["rows"]}
        return {"requests": len(photos), "iterations": iterations,
                "one_process_seconds": runs["one_process"]["seconds"],
                "two_processes_seconds": runs["two_processes"]["seconds"],
                "processes_reported": runs["two_processes"]["summary"]["processes"],
                "same_patches": ids("one_process") == ids("two_processes"),
                "manifest_complete": all(len(runs[k]["rows"]) == len(photos) for k in runs),
                "done": {k: sum(r["status"] == "done" for r in runs[k]["rows"]) for k in runs}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="joint,continual,queue")
    p.add_argument("--people", type=int, default=8)
    p.add_argument("--offset", type=int, default=0,
                   help="which people: 0 = the report set (docs/queue.md), 7 = the disjoint tuning set")
    p.add_argument("--joint-config", default="{}",
                   help="JSON of EraseConfig fields for the joint run only (the single erases keep the defaults)")
    p.add_argument("--continual", type=int, default=4)
    p.add_argument("--queue-requests", type=int, default=6)
    p.add_argument("--queue-iterations", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    sections = args.sections.split(",")

    import torch

    torch.set_num_threads(args.threads)
    figures: dict = {"benchmark": "many_people", "threads": args.threads, "offset": args.offset}
    if "joint" in sections or "continual" in sections:
        from guide_unlearn import IdentityEraser
        from guide_unlearn.recipes.demo_faces import evaluate as E
        from guide_unlearn.recipes.demo_faces.data import build_face_set, faces_root, list_photos

        eraser = IdentityEraser.from_pretrained("demo-faces")
        root = faces_root()
        faces = build_face_set(root, list_photos(root))
        metric = E.metric_for(faces)
        codes = E.load_codes(CODES, eraser)
        if "joint" in sections:
            j = figures["joint"] = joint_section(eraser, faces, codes, metric, args.people, args.offset,
                                                    json.loads(args.joint_config))
            print(f"joint: {len(j['people'])} people; one single erase {j['single_seconds_mean']} s, joint "
                  f"{j['joint_seconds']} s ({j['joint_over_one_single']}x); erased single {j['erased_single']}, "
                  f"joint {j['erased_joint']}; others still recognised {j['others_still_recognised']:.1%} of "
                  f"{j['others']}")
            print(f"  dlib before {j['dlib_before']}\n  single {j['dlib_after_single']}\n  joint  "
                  f"{j['dlib_after_joint']}")
            print(f"  targets, dlib pair distance: plain UFO {j['target_dlib_pair_distance_plain_ufo']}, separated "
                  f"{j['target_dlib_pair_distance_separated']}; latent cosine {j['target_latent_cosine']}")
        if "continual" in sections:
            c = figures["continual"] = continual_section(eraser, faces, codes, metric, args.continual, args.offset)
            for mode in ("stacked", "stacked_keep_erased"):
                m = c[mode]
                print(f"continual, {mode}: dlib after each step {m['dlib_after_each_step']}; earlier still erased "
                      f"{m['earlier_still_erased']}/{m['earlier']}")
    if "queue" in sections:
        q = figures["queue"] = queue_section(args.queue_requests, args.queue_iterations)
        print(f"queue (tiny-stylegan2, {q['requests']} requests): 1 process {q['one_process_seconds']} s, 2 processes "
              f"{q['two_processes_seconds']} s; same patches {q['same_patches']}; manifest complete "
              f"{q['manifest_complete']}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
