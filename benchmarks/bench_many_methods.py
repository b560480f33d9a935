"""Many people erased with one erase method on demo-faces, judged by dlib: one JSON line per setting.

    python benchmarks/bench_many_methods.py --method sugar --setting joint --people 8
    python benchmarks/bench_many_methods.py --method sugar --setting joint --people 32
    python benchmarks/bench_many_methods.py --method sugar --setting continual --people 16
    python benchmarks/bench_many_methods.py --method sugar --setting single          # the GUIDE person vs 'lora'
    python benchmarks/bench_many_methods.py --method joint --setting joint --people 8 # the same line for 'joint'

Settings (``--setting``, comma-separated for several lines):

- joint: the ``--people`` people erased in ONE ``erase_many`` run of ``--method``;
- continual: the same people erased one after another with ``--method``, each patch applied before the next erase,
  the earlier people passed as ``keep_erased``; measured after the last;
- single: the person of GUIDE's sample erased from the held-out photo aligned_5 by the default method (the eraser as
  shipped) and by ``--method``, each patch audited by ``guide_unlearn.pipelines.audit.audit`` with the same settings
  (offline protocol, default attacks, same seed; held out: the other four photos; others: shared/faces' other
  people, their cached codes), erase times paired in the same process.

Every line has: ``erased`` (request codes no longer recognised: dlib distance of their rendering to their photo
>= 0.6), ``others_kept`` (share of the other recognised people of shared/faces whose rendering is still recognised),
``target_pairs_same`` (dlib same-person calls among the renderings of the people's targets, of ``target_pairs``;
joint only), ``seconds`` (wall of the method's erase) and ``single_seconds`` (one default single erase of the first
person in the same process, so that ``over_single`` is a paired ratio).

Which people (chosen BEFORE measuring; the figures in docs/ use the report part): the recognised people of
shared/faces (one photo each, first in name order, whose cached code renders under dlib 0.6 from it) in name order;
``--people N`` takes every (len // N)-th of them starting at ``--offset``. The REPORT part is ``--offset 0``; tuning
uses a different offset, so that no setting is tuned on the people reported: ``--offset 7`` for 8 people (step 15),
``--offset 1`` for 32 (step 3), ``--offset 3`` for 16 (step 7). The others are every other recognised person.

``--identity faceapi`` gives the eraser faceapi cut to dlib's chip as its identity model (the ID terms, and the
sugar method's surrogate and identity terms): faceapi carries dlib's own weights, i.e. the JUDGE's network is in
the loss, and the lines say so (``identity_model``). ``--identity none`` leaves the eraser without one.
Its seconds are meaningful only with nothing else on the machine; the ratios are paired within one run.
Needs shared/. Appends the lines to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODES = HERE.parent / "tests" / "data" / "demo_faces_codes.safetensors"


def load(faces_cache: Path | None):
    """-> (eraser, faces, metric, codes, recognised photo indices in name order)."""
    import torch

    from guide_unlearn import IdentityEraser
    from guide_unlearn.recipes.demo_faces import evaluate as E
    from guide_unlearn.recipes.demo_faces.data import FaceSet, build_face_set, faces_root, list_photos

    eraser = IdentityEraser.from_pretrained("demo-faces")
    if faces_cache is not None and faces_cache.is_file():
        faces = FaceSet.load(faces_cache)  # an .npz without pickled objects
    else:
        root = faces_root()
        faces = build_face_set(root, list_photos(root))
        if faces_cache is not None:
            faces.save(faces_cache)
    metric = E.metric_for(faces)
    codes = E.load_codes(CODES, eraser)
    first: dict[str, int] = {}
    for i, person in enumerate(faces.people):
        first.setdefault(person, i)
    idx = sorted(first.values(), key=lambda i: faces.names[i])
    d = distances(eraser, faces, metric, torch.stack([codes[faces.names[i]] for i in idx]), idx)
    return eraser, faces, metric, codes, [i for i, x in zip(idx, d) if x < E.THRESHOLD]


def choose(recognised: list[int], n: int, offset: int) -> tuple[list[int], list[int]]:
    """Every (len // n)-th recognised person from ``offset`` -> (chosen [n], the other recognised people)."""
    step = max(1, len(recognised) // n)
    chosen = recognised[offset::step][:n]
    return chosen, [i for i in recognised if i not in chosen]


def distances(eraser, faces, metric, ws, idx):
    """dlib distance of the rendering of each code ws [N] to the photo faces[idx[k]] -> [N]."""
    from guide_unlearn.recipes.demo_faces import evaluate as E

    return E.distances_to(metric.describe(E.render(eraser, ws), faces.landmarks[idx]), faces.descriptors[idx])


def target_pairs(metric, eraser, targets):
    """(same-person calls, pairs) among the renderings of targets [P, num_ws, w_dim] (mean landmarks)."""
    import numpy as np

    from guide_unlearn.recipes.demo_faces import evaluate as E

    desc = metric.describe(E.render(eraser, targets))
    pair = np.sqrt(((desc[:, None] - desc[None]) ** 2).sum(-1))[np.triu_indices(len(targets), 1)]
    return int((pair < E.THRESHOLD).sum()), int(len(pair))


def _or_none(x: float, digits: int):
    """x rounded, or None for NaN (no paired baseline was run): JSON has no NaN."""
    return None if x != x else round(x, digits)


def _commit() -> str:
    """The repository's commit (with "+dirty" for uncommitted changes), recorded on every line."""
    import subprocess

    run = lambda *a: subprocess.run(["git", *a], cwd=HERE, capture_output=True, text=True).stdout.strip()  # noqa
    return run("rev-parse", "HEAD") + ("+dirty" if run("status", "--porcelain", "--untracked-files=no") else "")


def single_seconds(eraser, w) -> float:
    """Wall time of one erase of ``w`` with the model's default method (the paired reference)."""
    t = time.perf_counter()
    eraser.erase(w, measure=False, progress=False)
    return time.perf_counter() - t


def judged(eraser, faces, metric, codes, patches, chosen, others) -> dict:
    """Apply ``patches`` (in order), judge the chosen and the others, remove them."""
    import torch

    from guide_unlearn.recipes.demo_faces import evaluate as E

    ws = lambda idx: torch.stack([codes[faces.names[i]] for i in idx])
    applied = []
    try:
        for p in patches:
            applied.append(eraser.apply_patch(p))
        mine, rest = distances(eraser, faces, metric, ws(chosen), chosen), distances(eraser, faces, metric,
                                                                                      ws(others), others)
    finally:
        for p in reversed(applied):
            eraser.remove_patch(p)
    return {"erased": int((mine >= E.THRESHOLD).sum()), "of": len(chosen), "others": len(others),
            "others_kept": round(float((rest < E.THRESHOLD).mean()), 4),
            "dlib_erased": [round(float(x), 3) for x in mine]}


def joint(eraser, faces, metric, codes, chosen, others, method: str, over: dict, baseline: bool = True) -> dict:
    """The chosen people erased in ONE ``erase_many`` run of ``method``: erased / others kept (:func:`judged`),
    dlib same-person calls among the targets' renderings, seconds, and the paired default single erase."""
    requests = {faces.people[i]: codes[faces.names[i]].unsqueeze(0) for i in chosen}
    base = single_seconds(eraser, next(iter(requests.values()))) if baseline else float("nan")
    t = time.perf_counter()
    result = eraser.erase_many(requests, method=method, measure=False, progress=False, **over)
    seconds = time.perf_counter() - t
    import torch

    same, pairs = target_pairs(metric, eraser, torch.cat(list(result.w_target.values())))
    return {**judged(eraser, faces, metric, codes, [result.patch], chosen, others), "target_pairs_same": same,
            "target_pairs": pairs, "seconds": round(seconds, 1), "single_seconds": _or_none(base, 1),
            "over_single": _or_none(seconds / base, 2),
            "iterations": result.patch.metadata["erase_config"]["iterations"]}


def continual(eraser, faces, metric, codes, chosen, others, method: str, over: dict, baseline: bool = True) -> dict:
    """The chosen people erased one after another with ``method``, each patch applied before the next and the
    earlier people passed as ``keep_erased``; judged after the last (:func:`judged`), with the summed seconds."""
    import torch

    ws = [codes[faces.names[i]].unsqueeze(0) for i in chosen]
    base = single_seconds(eraser, ws[0]) if baseline else float("nan")
    patches, seconds = [], 0.0
    try:
        for k, w in enumerate(ws):
            t = time.perf_counter()
            keep = torch.cat(ws[:k]) if k else None
            patch = eraser.erase(w, method=method, measure=False, progress=False, keep_erased=keep, **over).patch
            seconds += time.perf_counter() - t
            patches.append(eraser.apply_patch(patch))
    finally:
        for p in reversed(patches):
            eraser.remove_patch(p)
    return {**judged(eraser, faces, metric, codes, patches, chosen, others), "seconds": round(seconds, 1),
            "single_seconds": _or_none(base, 1), "over_single": _or_none(seconds / base, 2)}


def single(eraser, faces, metric, codes, method: str, over: dict, identity_model, samples: int) -> dict:
    """The GUIDE person erased from the held-out photo by the default method (the eraser as shipped: no identity
    model unless the model has one) and by ``method`` (with ``identity_model``), each audited with the same audit
    (offline protocol, default attacks, same seed; others: the recognised people of shared/faces, cached codes)."""
    from guide_unlearn.pipelines.audit import audit
    from guide_unlearn.recipes.demo_faces import evaluate as E
    from guide_unlearn.recipes.demo_faces.data import GUIDE_PERSON, faces_root

    root = faces_root()
    request = root / E.REQUEST
    held_out = [root / p for p in E.PERSON_PHOTOS if p != E.REQUEST]
    others = [root / n for n, person in zip(faces.names, faces.people) if person != GUIDE_PERSON]
    known = {str(root / n): codes[n] for n in faces.names if n in codes}
    shipped = eraser.identity_model
    out = {}
    for label, name, settings, identity in (("default", None, {}, shipped), (method, method, over, identity_model)):
        eraser.identity_model = identity
        try:
            t = time.perf_counter()
            result = eraser.erase(request, method=name, measure=False, progress=False, **settings)
            seconds = time.perf_counter() - t
            report = audit(eraser, result.patch, [request], held_out=held_out, others=others, codes=known,
                           samples=samples, progress=False)
        finally:
            eraser.identity_model = shipped
        out[label] = {"method": result.patch.metadata["method"], "erase_seconds": round(seconds, 1),
                      "identity_model": getattr(identity, "name", None),
                      "metrics": {k: None if v != v else round(float(v), 4) for k, v in report.metrics.items()}}
    out["over_default_erase_seconds"] = round(out[method]["erase_seconds"] / out["default"]["erase_seconds"], 2)
    return out


def main() -> int:
    """Parse the options, run each ``--setting`` and print (and append to ``--out``) one JSON line per setting."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="sugar", help="the registered erase method (guide_unlearn.list_methods())")
    p.add_argument("--setting", default="joint", help="joint, continual, single (comma-separated for several)")
    p.add_argument("--people", type=int, default=8)
    p.add_argument("--offset", type=int, default=0, help="0 = the report part; tuning: 7 (8 people), 1 (32), 3 (16)")
    p.add_argument("--config", default="{}", help="JSON of settings of --method (recipe or method fields)")
    p.add_argument("--identity", choices=("none", "faceapi"), default="none")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--faces-cache", type=Path, default=None, help="an .npz of the prepared face set (made if absent)")
    p.add_argument("--out", type=Path, default=None, help="append the JSON lines to this file")
    p.add_argument("--samples", type=int, default=None, help="single: the audit's Fréchet samples (default: the "
                   "protocol's)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the paired default single erase (single_seconds, over_single are then NaN)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    eraser, faces, metric, codes, recognised = load(args.faces_cache)
    shipped = eraser.identity_model
    from guide_unlearn.recipes.demo_faces import evaluate as E

    if args.identity == "faceapi":
        chosen_identity = E.faceapi_chip(metric.mean_landmarks, faces.images.shape[-1])
    else:
        chosen_identity = None
    over = json.loads(args.config)
    chosen, others = choose(recognised, args.people, args.offset)
    common = {"benchmark": "many_methods", "commit": _commit(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "method": args.method, "config": over,
              "offset": args.offset,
              "part": "report" if args.offset == 0 else "tuning", "threads": args.threads,
              "identity_model": E.JUDGE_IN_LOSS if args.identity == "faceapi" else None,
              "perceptual": getattr(eraser.perceptual, "name", None)}
    for setting in args.setting.split(","):
        eraser.identity_model = shipped if setting == "single" else chosen_identity
        if setting == "joint":
            row = joint(eraser, faces, metric, codes, chosen, others, args.method, over, not args.no_baseline)
        elif setting == "continual":
            row = continual(eraser, faces, metric, codes, chosen, others, args.method, over, not args.no_baseline)
        elif setting == "single":
            row = single(eraser, faces, metric, codes, args.method, over, chosen_identity, args.samples)
        else:
            raise SystemExit(f"unknown setting {setting!r}; use joint, continual or single")
        line = json.dumps({**common, "setting": setting, "people": len(chosen) if setting != "single" else 1,
                           "names": [faces.people[i] for i in chosen] if setting != "single" else None, **row})
        print(line, flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
