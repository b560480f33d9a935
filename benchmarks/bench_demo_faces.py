"""Figures of the embedded demo face model (dlib metric), as in its model card.

    python benchmarks/bench_demo_faces.py                 # every figure (about 10 min on 2 CPU cores)
    python benchmarks/bench_demo_faces.py --write-codes   # also (re)write tests/data/demo_faces_codes.safetensors
    python benchmarks/bench_demo_faces.py --codes-only    # only (re)write the codes (about 5 min)

- reconstruction: share of the 127 training photos whose inversion renders under dlib 0.6 from the photo;
- the held-out photo (guide_celebahq512/aligned_5.jpg): does its inversion render as that person;
- random samples: share in which MTCNN finds a face;
- erasure from ONE unseen photo (aligned_5), with the ID term off (the default) and on (faceapi through a
  differentiable dlib-chip crop; faceapi shares dlib's weights, so that run optimises the metric itself):
  all five photos of the person before / after, preservation of the other recognised people, pixel L1;
- inversion speed (seconds per photo): photos found in the model's code book, and photos that match nobody.

Prints a table and one final JSON line. Needs shared/ (GUIDE_SHARED or ../shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODES = HERE.parent / "tests" / "data" / "demo_faces_codes.safetensors"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write-codes", action="store_true", help=f"write every photo's inversion to {CODES}")
    p.add_argument("--codes-only", action="store_true", help="write the codes and stop (implies --write-codes)")
    p.add_argument("--samples", type=int, default=200, help="random samples for the face-detection rate")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn import IdentityEraser
    from guide_unlearn.recipes.demo_faces import evaluate as E
    from guide_unlearn.recipes.demo_faces.data import build_face_set, faces_root, list_photos

    root = faces_root()
    eraser = IdentityEraser.from_pretrained("demo-faces")
    t = time.perf_counter()
    faces = build_face_set(root, list_photos(root))
    person = build_face_set(root, list(E.PERSON_PHOTOS))
    prep_s = time.perf_counter() - t
    metric = E.metric_for(faces)

    t = time.perf_counter()
    ws_train = E.invert_faces(eraser, faces)
    invert_s = (time.perf_counter() - t) / len(faces)  # every training photo matches the code book
    book, eraser.inverter.code_book = eraser.inverter.code_book, None  # a photo nobody in the book matches
    t = time.perf_counter()
    E.invert_faces(eraser, faces.subset(range(16)))
    unmatched_s = (time.perf_counter() - t) / 16
    eraser.inverter.code_book = book
    ws_person = E.invert_faces(eraser, person)
    if args.write_codes or args.codes_only:
        CODES.parent.mkdir(parents=True, exist_ok=True)
        E.save_codes(CODES, faces.names + person.names[-1:], torch.cat([ws_train, ws_person[-1:]]), eraser)
        print(f"wrote {CODES}", file=sys.stderr)
        if args.codes_only:
            return 0

    rec = E.reconstruction(eraser, faces, ws_train, metric)
    held = E.reconstruction(eraser, person.subset([4]), ws_person[4:], metric)
    samples = E.sample_face_rate(eraser, n=args.samples)
    mine, others = E.split_people(faces)
    request = person.images[4:5]
    runs = {}
    faceapi = E.faceapi_chip(metric.mean_landmarks, faces.images.shape[-1])
    for label, identity in (("id_off", None), ("id_on_faceapi", faceapi)):
        report, _ = E.erasure_report(eraser, request, person, ws_person, faces.subset(others), ws_train[others],
                                     metric, identity_model=identity)
        runs[label] = report.figures()

    figures = {
        "benchmark": "demo_faces",
        "training_photos": len(faces),
        "dlib_impostor_rate": round(E.impostor_rate(faces), 4),
        "reconstruction_fraction": round(rec["fraction_recognised"], 4),
        "reconstruction_mean_distance": round(rec["mean_distance"], 4),
        "reconstruction_pixel_l1": round(rec["mean_pixel_l1"], 4),
        "held_out_distance": round(float(held["distances"][0]), 4),
        "held_out_recognised": bool(held["distances"][0] < E.THRESHOLD),
        "sample_face_fraction": samples["fraction_with_face"],
        "samples": samples["n"],
        "invert_seconds_per_photo": round(invert_s, 2),
        "invert_seconds_per_unmatched_photo": round(unmatched_s, 2),
        "prepare_seconds": round(prep_s, 1),
        "erasure": runs,
    }
    print(f"training photos {len(faces)}; reconstruction under dlib 0.6: {rec['fraction_recognised']:.1%} "
          f"(mean distance {rec['mean_distance']:.3f})")
    print(f"held-out aligned_5 renders at distance {held['distances'][0]:.3f} from its photo")
    print(f"random samples with a detected face: {samples['fraction_with_face']:.1%} of {samples['n']}")
    print(f"inversion: {invert_s:.2f} s per photo found in the code book, {unmatched_s:.2f} s per photo without a "
          "match")
    for label, r in runs.items():
        print(f"{label}: person before {r['person_before']} after {r['person_after']} erased={r['erased']}; "
              f"others recognised {r['others_recognised_before']}, preserved {r['preserved_fraction']:.1%}, "
              f"mean change {r['others_mean_distance_change']:+.3f}; pixel {r['pixel']}")
    print(json.dumps(figures, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
