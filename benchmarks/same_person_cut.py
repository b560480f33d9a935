"""Where should the audit's same-person cut be for 64-px renderings? dlib's cut, calibrated on shared/faces.

    python benchmarks/same_person_cut.py --model demo-faces --far 0.01 --out benchmarks/results/audit/same_person_cut.json

Every photo of shared/faces is aligned and described by the offline-v1 judge (MTCNN + dlib) twice: at full
resolution (what the audit keeps of a photo) and as the audit describes a rendering of the model's resolution (the
photo's aligned crop at 64 px, dlib150 chips cut at its landmarks). Each 64-px probe is scored against every OTHER
person's full-resolution photo (people as the demo-faces recipe counts them: guide_celebahq512 is one person,
every other photo its own); the cut is put where a fraction ``--far`` of those pairs is called the same person.
The same is done at full resolution, and both are printed beside dlib's published cut (Euclidean 0.6): the
false-accept rate of each cut, and how often a photo's own 64-px probe, and the same person's other photos, are
recognised. One JSON object, printed and written to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="demo-faces", help="the model whose resolution and alignment the audit uses")
    p.add_argument("--far", type=float, nargs="+", default=[0.01, 0.001], help="false-accept rates to cut at")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="JSON file to write")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn import IdentityEraser
    from guide_unlearn.pipelines import audit as A
    from guide_unlearn.pipelines.audit.calibration import calibrate_same_person_rule
    from guide_unlearn.recipes.demo_faces.data import list_photos, person_of

    faces = Path(os.environ.get("GUIDE_SHARED", HERE.parent.parent / "shared")) / "faces"
    eraser = IdentityEraser.from_pretrained(args.model)
    judge = A.make_judge(A.get_protocol("offline-v1"), eraser)
    people: dict[str, list[Path]] = {}
    for name in list_photos(faces, exclude=()):
        people.setdefault(person_of(name), []).append(faces / name)
    found = A.prepare_photos(A.photo_items(people, "calibration"), "calibration", judge, None, [])
    for photo in found.photos:  # labels relative to shared/faces, as the recipe names photos
        photo.label = Path(photo.label).relative_to(faces).as_posix()
    rec = {"command": "python benchmarks/same_person_cut.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": datetime.date.today().isoformat(), "model": args.model, "judge": judge.name,
           "resolution": judge.resolution, "photos_given": sum(map(len, people.values())),
           "photos_with_a_face": len(found), "skipped": found.skipped, "calibrations": []}
    for far in args.far:
        for full in (False, True):
            cal = calibrate_same_person_rule(judge, found, far=far, full_resolution=full)
            rec["calibrations"].append(cal.to_dict())
            print(json.dumps({"far": far, "probes": "full resolution" if full else f"{judge.resolution} px",
                              "cut": round(cal.rule.cut, 4), "cosine_cut": cal.rule.cosine_cut,
                              "rates": cal.rates}), flush=True)
    text = json.dumps(A.jsonable(rec), indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
