"""How the demo model's recommended erase settings were chosen: erase GUIDE's person from aligned_5 with several
settings and measure erasure (all five photos of the person) and preservation (every other recognised person).
Settings are given as EraseConfig overrides of the LoRA preset (the registry's erase_defaults are NOT applied
here, so each row says everything it changes). ``person_faces_after`` says whether MTCNN still finds a face in
each of the person's patched renderings: a far UFO target (d >= 2 on this model) passes dlib's > 0.6 by
rendering a non-face.

    python benchmarks/sweep_demo_erase.py            # about 5 min on 2 CPU cores
    python benchmarks/sweep_demo_erase.py '[{"iterations": 200}, {"target_distance": 2.0}]'

Uses the cached codes of tests/data/demo_faces_codes.safetensors (see bench_demo_faces.py --write-codes).
Prints one line per setting and a final JSON line.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODES = HERE.parent / "tests" / "data" / "demo_faces_codes.safetensors"

SETTINGS = [
    {},  # the library's LoRA preset as is
    {"truncation_psi": 1.6, "global_samples": 8, "global_weight": 2.0},
    {"truncation_psi": 1.6, "global_samples": 4, "global_weight": 1.5},
    {"truncation_psi": 1.6, "global_samples": 8, "global_weight": 2.0, "target_distance": 1.5},  # the registry's
    {"global_samples": 16, "global_weight": 3.0, "target_distance": 4.0},
    {"global_samples": 16, "global_weight": 3.0, "target_distance": 10.0},  # all 5 > 0.6, but no faces left
]


def main(argv: list[str] | None = None) -> int:
    import sys

    import torch

    argv = sys.argv[1:] if argv is None else argv
    settings = json.loads(argv[0]) if argv else SETTINGS

    torch.set_num_threads(2)
    from guide_unlearn import EraseConfig, IdentityEraser
    from guide_unlearn.recipes.demo_faces import evaluate as E
    from guide_unlearn.recipes.demo_faces.data import build_face_set, faces_root, list_photos

    root = faces_root()
    eraser = IdentityEraser.from_pretrained("demo-faces")
    faces = build_face_set(root, list_photos(root))
    person = build_face_set(root, list(E.PERSON_PHOTOS))
    metric = E.metric_for(faces)
    codes = E.load_codes(CODES, eraser)
    ws = lambda names: torch.stack([codes[n] for n in names])
    _, others = E.split_people(faces)
    rows = []
    for overrides in settings:
        cfg = EraseConfig.preset("lora", **overrides)
        report, _ = E.erasure_report(eraser, person.images[4:5], person, ws(person.names), faces.subset(others),
                                     ws([faces.names[i] for i in others]), metric, config=cfg)
        fig = report.figures()
        rows.append({"settings": overrides, **{k: fig[k] for k in ("erased", "person_before", "person_after", "person_faces_after",
                                                                  "others_recognised_before", "preserved_fraction",
                                                                  "others_mean_distance_change", "pixel",
                                                                  "erase_seconds")}})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"benchmark": "sweep_demo_erase", "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
