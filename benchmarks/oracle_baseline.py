"""Does a model recognise people it was trained WITHOUT? The retrained-without-them baseline of unlearning.

For every person left out of ``demo-faces-oracle-8`` (``recipes/demo_faces/oracle_8.txt``), each of their photos
is re-inverted through each model with the model's default inverter (``code-projector`` with the model's own code
book, what the audit's re-inversion attack uses), rendered, and judged with dlib as the audit's ``offline-v1``
protocol judges: dlib's ResNet on the dlib150 chip cut from the rendering at the photo's landmarks, scored
against the best of the person's photos (Euclidean distance), recognised when under 0.6 AND MTCNN finds a face
in the rendering (upscaled to 256 px). ``demo-faces`` trained on these people; the oracle never saw them, so its
rate is what an inverter reaches on a stranger — the figure an erased person should be compared with.

Beside it, per model, the recipe's own evaluation (``recipes/demo_faces/evaluate.py``, as the model card quotes
it for ``demo-faces``): reconstruction of the training photos both models share (share under dlib 0.6 from the
photo, mean distance, pixel L1) and the share of random samples in which MTCNN finds a face.

    python benchmarks/oracle_baseline.py                       # both models, every figure
    python benchmarks/oracle_baseline.py --skip-shared --samples 0   # the left-out people only
    python benchmarks/oracle_baseline.py --faces RUN/faces.npz --out oracle_baseline.json

Prints a table per person and one final JSON line. Needs shared/ (GUIDE_SHARED or ../shared).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEOPLE_FILE = HERE.parent / "recipes" / "demo_faces" / "oracle_8.txt"
MODELS = ("demo-faces", "demo-faces-oracle-8")


def person_photos(root: Path, people: list[str]) -> dict[str, list[str]]:
    """{person: their photos (relative to shared/faces), the held-out photos included}."""
    from guide_unlearn.recipes.demo_faces.data import list_photos, person_of

    every = list_photos(root, exclude=())
    return {p: [n for n in every if person_of(n) == p] for p in people}


def judge_reinversion(eraser, faces, metric, seed: int = 0) -> dict:
    """Re-invert the FaceSet ``faces`` (ONE person's photos) with the eraser's inverter and judge the renderings as
    the audit does. -> {"score" [P] (best dlib distance to the person's photos; nan without a face), "face" [P],
    "recognised" [P], "book_distance" [P] (nearest code-book entry, nan without a book), "book_match" [P]}."""
    import numpy as np

    from guide_unlearn.recipes.demo_faces import evaluate as E

    ws = E.invert_faces(eraser, faces, seed=seed)
    images = E.render(eraser, ws)
    desc = metric.describe(images, faces.landmarks)  # [P, 128]
    dist = np.sqrt(((desc[:, None] - faces.descriptors[None]) ** 2).sum(-1))  # [P, P]: every photo of the person
    face = E.faces_found(images)
    score = np.where(face, dist.min(1), np.nan)
    book = getattr(eraser.inverter, "code_book", None)
    if book is not None:
        index, book_dist = book.match(faces.images)
        matched = index.numpy() >= 0
    else:
        book_dist, matched = np.full(len(faces), np.nan), np.zeros(len(faces), bool)
    return {"score": score, "face": face, "recognised": face & (np.nan_to_num(score, nan=np.inf) < E.THRESHOLD),
            "book_distance": np.asarray(book_dist, float), "book_match": matched}


def evaluate_model(name: str, left_out: dict, shared, samples: int, seed: int) -> dict:
    """Every figure of one model: per left-out person, and the recipe's evaluation on ``shared`` (a FaceSet of the
    photos every model trained on, or None)."""
    from guide_unlearn import IdentityEraser
    from guide_unlearn.recipes.demo_faces import evaluate as E

    eraser = IdentityEraser.from_pretrained(name)
    book = getattr(eraser.inverter, "code_book", None)
    out = {"model": name, "code_book_entries": None if book is None else len(book), "people": {}}
    t = time.perf_counter()
    for person, (faces, metric) in left_out.items():
        r = judge_reinversion(eraser, faces, metric, seed)
        out["people"][person] = [
            {"photo": n, "score": None if s != s else round(float(s), 4), "face": bool(f), "recognised": bool(k),
             "book_distance": None if d != d else round(float(d), 4), "book_match": bool(m)}
            for n, s, f, k, d, m in zip(faces.names, r["score"], r["face"], r["recognised"], r["book_distance"],
                                         r["book_match"])]
    out["left_out_seconds"] = round(time.perf_counter() - t, 1)
    if shared is not None:
        faces, metric = shared
        rec = E.reconstruction(eraser, faces, E.invert_faces(eraser, faces, seed=seed), metric)
        out["shared_reconstruction"] = {k: round(float(rec[k]), 4) for k in
                                        ("fraction_recognised", "mean_distance", "median_distance", "mean_pixel_l1")}
        out["shared_reconstruction"]["n"] = rec["n"]
    if samples:
        out["sample_face_fraction"] = E.sample_face_rate(eraser, n=samples, seed=seed)["fraction_with_face"]
    return out


def _shared_faces(path, root: Path, names: list[str]):
    """The photos every model trained on, as a FaceSet: read from ``path`` (the oracle run's ``faces.npz``, which
    holds exactly them) or built from ``root``."""
    from guide_unlearn.errors import InputError
    from guide_unlearn.recipes.demo_faces.data import FaceSet, build_face_set

    if path is None:
        return build_face_set(root, names)
    faces = FaceSet.load(path)
    if faces.names != names:
        raise InputError(f"{path} holds other photos than the ones every model trained on; leave --faces out")
    return faces


def summarise(results: list[dict]) -> dict:
    """Per model: recognised photos and people (a person counts when any of their photos is recognised)."""
    table = {}
    for res in results:
        rows = [r for photos in res["people"].values() for r in photos]
        people = [any(r["recognised"] for r in photos) for photos in res["people"].values()]
        table[res["model"]] = {"photos_recognised": f"{sum(r['recognised'] for r in rows)}/{len(rows)}",
                               "people_recognised": f"{sum(people)}/{len(people)}",
                               "photos_matched_in_code_book": f"{sum(r['book_match'] for r in rows)}/{len(rows)}"}
    return table


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), help="registry names to compare")
    p.add_argument("--people", type=Path, default=PEOPLE_FILE, help="the left-out people, one per line")
    p.add_argument("--samples", type=int, default=200, help="random samples for the face rate (0: skip)")
    p.add_argument("--skip-shared", action="store_true", help="skip the reconstruction of the shared photos")
    p.add_argument("--faces", type=Path, default=None,
                   help="the oracle run's faces.npz (the shared photos, already aligned: saves preparing them)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn.recipes.demo_faces import evaluate as E
    from guide_unlearn.recipes.demo_faces.data import (build_face_set, faces_root, leave_out, list_photos,
                                                        read_people_file)

    root = faces_root()
    people = read_people_file(args.people)
    t = time.perf_counter()
    left_out = {person: build_face_set(root, names) for person, names in person_photos(root, people).items()}
    kept = None
    if not args.skip_shared:
        kept = _shared_faces(args.faces, root, leave_out(list_photos(root), people)[0])
    # One dlib network for every set (the mean landmarks only cut chips of renderings without a photo).
    metric = E.Metric(np.concatenate([f.landmarks for f in left_out.values()]).mean(0))
    left_out = {person: (faces, metric) for person, faces in left_out.items()}
    shared = None if kept is None else (kept, metric)
    prep_s = time.perf_counter() - t

    results = [evaluate_model(name, left_out, shared, args.samples, args.seed) for name in args.models]
    for person in people:
        print(person)
        for i, name in enumerate(left_out[person][0].names):
            cells = []
            for res in results:
                r = res["people"][person][i]
                score = "no face" if r["score"] is None else f"{r['score']:.3f}"
                cells.append(f"{res['model']}: {score} {'RECOGNISED' if r['recognised'] else 'not recognised'}"
                             f" (book {r['book_distance']})")
            print(f"  {name}: " + "; ".join(cells))
    summary = summarise(results)
    for res in results:
        line = f"{res['model']}: {summary[res['model']]}"
        if "shared_reconstruction" in res:
            line += f"; shared photos reconstructed {res['shared_reconstruction']}"
        if "sample_face_fraction" in res:
            line += f"; samples with a face {res['sample_face_fraction']:.1%}"
        print(line)
    figures = {"benchmark": "oracle_baseline", "people": people, "summary": summary, "models": results,
               "prepare_seconds": round(prep_s, 1), "threads": args.threads, "seed": args.seed}
    text = json.dumps(figures, default=lambda o: o.item() if isinstance(o, np.generic) else str(o))
    if args.out is not None:
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
