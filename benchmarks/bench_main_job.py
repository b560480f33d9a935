"""The README main job's erase (demo-faces, one unseen photo of the GUIDE person) with its dlib figures.

    python benchmarks/bench_main_job.py               # erase seconds + the id-off erasure figures (a few minutes)
    python benchmarks/bench_main_job.py --time-only   # only the erase, as `guide-unlearn erase` runs it
    python benchmarks/bench_main_job.py --loop 10 --threads 1   # only the loop: ms/iter of 10 iterations

The erase is exactly the main job's (``eraser.erase(photo)`` with the model's default config, ID term off); the
figures are ``bench_demo_faces.py``'s id-off erasure report (all five photos of the person before / after under
dlib 0.6, preservation of the other recognised people, pixel L1), computed from the cached codes in
``tests/data/demo_faces_codes.safetensors`` so the 127 inversions are not repeated. Only public API and the
demo recipe's evaluation helpers are used, so the same script measures another checkout too (put it first on
PYTHONPATH; paired_main_job.py does). Prints one JSON line. Needs shared/ (GUIDE_SHARED or ../shared).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODES = HERE.parent / "tests" / "data" / "demo_faces_codes.safetensors"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--time-only", action="store_true", help="only time the erase (no dlib figures)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--loop", type=int, default=0, metavar="N",
                   help="time N iterations of the main job's erase loop (model defaults, a fixed mapped code, "
                        "after 1 warm-up iteration) and print wall / process-CPU ms per iteration and the final loss")
    args = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn import IdentityEraser
    from guide_unlearn.recipes.demo_faces import evaluate as E
    from guide_unlearn.recipes.demo_faces.data import build_face_set, faces_root, list_photos

    eraser = IdentityEraser.from_pretrained("demo-faces")
    if args.loop:
        from guide_unlearn.config import RunOptions
        from guide_unlearn.engine import run_erase

        gen = eraser.generator
        code = gen.mapping(torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(0)), None).detach()
        # lr pinned to the LoRA preset's: the loop compares per-iteration cost, and the final loss must match
        # across commits whatever the model's recommended lr is at each
        cfg = eraser.default_config(iterations=1, lr=0.005)
        run_erase(gen, code, cfg, eraser.perceptual, None, run=RunOptions(progress=False))  # warm-up
        cfg = cfg.replace(iterations=args.loop)
        t, cpu = time.perf_counter(), time.process_time()
        out = run_erase(gen, code, cfg, eraser.perceptual, None, run=RunOptions(progress=False))
        history = out.history
        print(json.dumps({"benchmark": "main_job_loop", "iterations": args.loop, "threads": args.threads,
                          "wall_ms_per_iter": round(1000 * (time.perf_counter() - t) / args.loop, 1),
                          "cpu_ms_per_iter": round(1000 * (time.process_time() - cpu) / args.loop, 1),
                          "final_loss": history[-1]["loss"], "load_average_1min": round(os.getloadavg()[0], 2)}))
        return 0
    root = faces_root()
    if args.time_only:
        from PIL import Image

        photo = Image.open(root / E.REQUEST)
        t, cpu = time.perf_counter(), time.process_time()
        result = eraser.erase(photo, config=eraser.default_config(), measure=False, progress=False)
        out = {"benchmark": "main_job", "erase_seconds": round(result.seconds, 2),
               "call_seconds": round(time.perf_counter() - t, 2),
               "call_cpu_seconds": round(time.process_time() - cpu, 2),  # robust to other processes' load
               "final_losses": result.history[-1], "load_average_1min": round(os.getloadavg()[0], 2)}
        print(json.dumps(out))
        return 0
    faces = build_face_set(root, list_photos(root))
    person = build_face_set(root, list(E.PERSON_PHOTOS))
    metric = E.metric_for(faces)
    codes = E.load_codes(CODES, eraser)
    ws_train = torch.stack([codes[n] for n in faces.names])
    ws_person = torch.stack([codes[n] for n in person.names])
    _, others = E.split_people(faces)
    report, result = E.erasure_report(eraser, person.images[4:5], person, ws_person, faces.subset(others),
                                      ws_train[others], metric, identity_model=None)
    out = {"benchmark": "main_job", "erase_seconds": round(result.seconds, 2), "final_losses": result.history[-1],
           "id_off": report.figures()}
    print(json.dumps(out, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
