"""The README's audit of the main job's patch with a reference model: wall time per part and the figures.

    python benchmarks/audit_reference.py --reference demo-faces-oracle-8 --out benchmarks/results/audit/oracle.json
    python benchmarks/audit_reference.py --reference demo-faces --attacks reinvert leakage      # a stand-in
    python benchmarks/audit_reference.py --reference demo-faces-oracle-8 --relearn-steps 200   # the longer curve

Erases the README main job (``demo-faces``, ``aligned_5.jpg``, the model's default config, seed 0) into a
temporary folder — or audits ``--patch`` — then audits it exactly as the README's command does (protocol
offline-v1, ``aligned_1..4`` held out, the README's ten ``--others`` folders, at most 48 of their people, 400
projector steps, 16 x 100 leakage probe, 200 FD-dlib samples, seed 0) with ``--reference`` and ``--attacks``
added. Prints one JSON line (seconds per part, the side-by-side rows, the verdicts) and writes the whole report
JSON to ``--out``. Needs shared/ (GUIDE_SHARED or ../shared). Time it on an otherwise idle machine: the parts are
``report.seconds`` (photos, inversion, id, held_out, reinversion, others_kept, leakage, fd, reference,
reference_fd, code_book, relearn, membership, total).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODES = HERE.parent / "tests" / "data" / "demo_faces_codes.safetensors"
OTHERS = ("stargan_v2_celebahq", "codeformer_cropped", "gfpgan_cropped", "ilvr_ffhq", "dps_ffhq256",
          "goae_eg3d_real_person", "facenet_pytorch_test", "deepface_train", "skimage", "e4e_notebook")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", required=True, help="the comparison model (registry name or folder)")
    p.add_argument("--attacks", nargs="+", default=["reinvert", "leakage", "relearn", "code_book"])
    p.add_argument("--relearn-steps", type=int, default=None, help="k of the relearn attack (default: the audit's)")
    p.add_argument("--relearn-lr", type=float, default=None, help="its learning rate (default: the audit's)")
    p.add_argument("--strangers", nargs="+", help="photos of people the base never saw (none in shared/faces)")
    p.add_argument("--patch", help="audit this patch folder instead of erasing the main job anew")
    p.add_argument("--no-others", action="store_true", help="no --others (the person's figures only; quicker)")
    p.add_argument("--cached-codes", action="store_true",
                   help="erase from, and audit with, the cached G_s codes of tests/data/demo_faces_codes.safetensors "
                        "(as the demo tests do) instead of inverting the photos again; not for timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="write the report JSON here")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import guide_unlearn
    from guide_unlearn import IdentityEraser
    from guide_unlearn.pipelines.audit import verdicts

    faces = Path(os.environ.get("GUIDE_SHARED", HERE.parent.parent / "shared")) / "faces"
    person = faces / "guide_celebahq512"
    eraser = IdentityEraser.from_pretrained("demo-faces")
    codes = None
    if args.cached_codes:
        from guide_unlearn.recipes.demo_faces.evaluate import load_codes

        codes = {str(faces / k): v for k, v in load_codes(CODES, eraser).items()}
    with tempfile.TemporaryDirectory() as tmp:
        patch = args.patch
        if patch is None:
            photo = codes[str(person / "aligned_5.jpg")].unsqueeze(0) if codes else str(person / "aligned_5.jpg")
            result = eraser.erase(photo, config=eraser.default_config(), progress=False)
            patch = result.patch.save_pretrained(Path(tmp) / "person-5")
        options = {"reference": args.reference, "codes": codes}
        for key in ("relearn_steps", "relearn_lr"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
        if args.strangers:
            options["strangers"] = args.strangers
        report = guide_unlearn.audit(eraser, patch, [person / "aligned_5.jpg"],
                                     held_out=[person / f"aligned_{i}.jpg" for i in range(1, 5)],
                                     others=None if args.no_others else [faces / o for o in OTHERS],
                                     attacks=tuple(args.attacks), progress=False,
                                     **options)
    data = report.to_dict()
    if args.out:
        Path(args.out).write_text(json.dumps(data, indent=2))
    found = [{"figure": v.figure, "value": v.value, "threshold": v.threshold, "passed": v.passed}
             for v in verdicts(report)]
    print(json.dumps({"reference": args.reference, "attacks": args.attacks, "threads": args.threads,
                      "seconds": data["seconds"], "comparison": data["details"].get("comparison"),
                      "verdicts": found}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
