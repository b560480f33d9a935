"""Is an erased person still recognised? The erase verdict judged by identity, on the demo face model.

    python benchmarks/bench_verdict.py --people 40 --threads 1 --out benchmarks/results/verdict/before.jsonl
    python benchmarks/bench_verdict.py --summarise benchmarks/results/verdict/before.jsonl   # summary only

For a seeded sample of people of shared/faces (grouped as the demo recipe groups them: the GUIDE folder is one
person, every other photo its own; ``recipes/demo_faces/data.py``), each person's deletion request is ONE photo
(the GUIDE person's held-out ``aligned_5``, everyone else's only photo). The sample is a seeded permutation of all
people, fixed before anything is measured and printed first; ``--people N --offset K`` takes places K..K+N-1 of
it, so runs in pieces cover the same people. Per person, a default erase (``IdentityEraser.erase`` with the
model's recommended settings) and, judged by the audit's offline-v1 judge (dlib descriptors of the rendering cut
at the photo's face landmarks, MTCNN deciding "is there a face", same person = the audit's rule; docs/audit.md):

- ``recognised_after``: G_u(w_u), the request code rendered by the patched model, is recognised as the person
  (against all of the person's photos; a rendering without a face is not recognised) — goal: False;
- ``target_recognised``: the UFO target G_s(w_t) is recognised as the person — goal: False;
- ``id``: the audit's ID (cosine of G_s(w_u) and G_u(w_u) descriptors); pixel ``erasure_ratio`` and the erase's
  own verdict;
- preservation on a seeded sample of ``--others`` other people: ``id_others`` and ``others_kept`` exactly as the
  audit defines them (``others_kept``: of those recognised through G_s, the share still recognised when
  re-inverted through G_u by the fresh default inverter).

One JSON line per person, then a summary line; the first line records the sample, the commit and the settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

HERE = Path(__file__).resolve().parent
CODES = HERE.parent / "tests" / "data" / "demo_faces_codes.safetensors"


def people_and_requests(root: Path) -> list[tuple[str, str, list[str]]]:
    """(person, request photo, every photo of the person) for each person of shared/faces, sorted by person."""
    from guide_unlearn.recipes.demo_faces.data import HELD_OUT, list_photos, person_of

    groups: dict[str, list[str]] = {}
    for name in list_photos(root, exclude=()):
        groups.setdefault(person_of(name), []).append(name)
    out = []
    for person in sorted(groups):
        names = groups[person]
        held = [n for n in names if n in HELD_OUT]
        out.append((person, held[0] if held else names[0], names))
    return out


def fixed_sample(people: list, seed: int) -> list:
    """The seeded order of every person (the sample is a prefix of it, so it never depends on --people)."""
    import torch

    order = torch.randperm(len(people), generator=torch.Generator().manual_seed(seed)).tolist()
    return [people[i] for i in order]


def commit() -> str:
    """The commit measured, with '+dirty' when the worktree differs from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _verdict_dict(verdict: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(verdict):
        return dataclasses.asdict(verdict)
    return dict(verdict or {})


def _finite(x: Any) -> Optional[float]:
    x = float(x)
    return round(x, 4) if math.isfinite(x) else None


def measure_person(ctx: dict[str, Any], person: str, request: str, names: list[str], rank: int) -> dict[str, Any]:
    """One person's row: erase from ``request`` and judge the result by identity (see the module docstring)."""

    from guide_unlearn import patching
    from guide_unlearn.pipelines import audit as A
    from guide_unlearn.pipelines.audit.identity import id_metric
    from guide_unlearn.pipelines.audit.photos import landmarks_of
    from guide_unlearn.pipelines.audit.rendering import render

    eraser, judge, root, args = ctx["eraser"], ctx["judge"], ctx["root"], ctx["args"]
    skipped: list[dict[str, str]] = []
    paths = [root / n for n in [request] + [n for n in names if n != request]]
    refs = A.prepare_photos(A.photo_items(paths, "request"), "request", judge, eraser, skipped)
    row: dict[str, Any] = {"rank": rank, "person": person, "request": request, "photos": len(names)}
    if not refs.photos or refs.photos[0].label != str(root / request):
        return {**row, "skipped": "no face found in the request photo"}
    photo = refs.photos[:1]
    person_desc = refs.descriptors

    lms = landmarks_of(photo)

    def describe(images):
        desc = judge.describe(images, lms)
        face = judge.faces(images)
        desc[~face] = np.nan
        return desc, face

    def judged(images, prefix: str) -> dict[str, Any]:
        """Scores of one rendering against the person's photos and against the source rendering G_s(w_u)."""
        desc, face = describe(images)
        score, cos = judge.best(desc, person_desc)
        src_score, src_cos = judge.best(desc, source_desc)
        return {f"{prefix}score": _finite(score[0]), f"{prefix}cosine": _finite(cos[0]), f"{prefix}face": bool(face[0]),
                f"{prefix}recognised": bool(judge.recognised(score)[0]),
                f"{prefix}source_score": _finite(src_score[0]), f"{prefix}source_cosine": _finite(src_cos[0])}

    if args.no_erase:  # the method's own target as erase would choose it, no training (before-figures of targets)
        from guide_unlearn.targets import resolve_distances
        from guide_unlearn.pipelines import photos as P
        from guide_unlearn.targets import ufo_target

        from guide_unlearn.errors import FaceChoiceError

        try:
            w_u = P.codes(eraser, root / request, None, None, progress=False)[0][:1].cpu()
        except FaceChoiceError as exc:
            return {**row, "skipped": f"{type(exc).__name__}: {exc}"}
        cfg = eraser.default_config()
        w_t = ufo_target(w_u, eraser.generator.w_avg.cpu(), cfg.target, resolve_distances(cfg, eraser.generator)[0])
        source_desc, _ = describe(render(eraser, w_u, None))
        row.update({f"{k}_before": v for k, v in judged(render(eraser, w_u, None), "").items()})
        row.update(judged(render(eraser, w_t, None), "target_"))
        return row

    from guide_unlearn.errors import FaceChoiceError, GuideUnlearnError

    t = time.perf_counter()
    try:
        result = eraser.erase(root / request, progress=False, **({} if args.judge == "default" else {"judge": None}))
    except FaceChoiceError as exc:  # the request must say whom to erase: not a person this benchmark can ask about
        return {**row, "skipped": f"{type(exc).__name__}: {exc}"}
    except GuideUnlearnError as exc:  # refused before training (e.g. TargetError): nobody was erased
        return {**row, "refused": f"{type(exc).__name__}: {exc}", "erase_seconds": round(time.perf_counter() - t, 2)}
    row["erase_seconds"] = round(time.perf_counter() - t, 2)
    row["optimise_seconds"] = round(result.seconds, 2)
    verdict = _verdict_dict(result.verdict)
    row["verdict"] = {k: v for k, v in verdict.items() if k not in ("limits",)}
    row["erasure_ratio"] = verdict.get("erasure_ratio")
    row["pixel_succeeded"] = (None if verdict.get("erasure_ratio") is None else
                              verdict["erasure_ratio"] <= 0.5 and verdict["preservation_ratio"] <= 0.5)
    row["verdict_succeeded"] = verdict.get("succeeded")
    patch = result.patch
    row["target_identity_meta"] = patch.metadata.get("target_identity")
    w_u, w_t = result.w_source[:1].cpu(), result.w_target[:1].cpu()
    source = render(eraser, w_u, None)
    source_desc, _ = describe(source)
    before = judged(source, "")
    target = judged(render(eraser, w_t, None), "target_")
    with patching.applied_temporarily(eraser.generator, patch):
        patched = render(eraser, w_u, None)
    after = judged(patched, "")
    row.update({f"{k}_before": v for k, v in before.items()})
    row.update({f"{k}_after": v for k, v in after.items()})
    row.update(target)
    row["id"] = _finite(id_metric(judge, source.unsqueeze(1), patched.unsqueeze(1), lms, None)[0])
    row.update(preservation(ctx, patch, person, rank))
    return row


def preservation(ctx: dict[str, Any], patch, person: str, rank: int) -> dict[str, Any]:
    """id_others and others_kept (the audit's definitions) on a seeded sample of other people."""
    from guide_unlearn import metrics as M
    from guide_unlearn import patching
    from guide_unlearn.pipelines import audit as A
    from guide_unlearn.pipelines.audit.identity import id_metric
    from guide_unlearn.pipelines.audit.photos import cameras_of, landmarks_of, own_groups
    from guide_unlearn.pipelines.audit.rendering import render, source_codes

    eraser, judge, args = ctx["eraser"], ctx["judge"], ctx["args"]
    if args.others <= 0:
        return {}
    items = [it for it in ctx["other_items"] if it[2] != person]
    items, record = A.sample_people(items, args.others, args.seed + 1 + rank)
    oth = prepared_photos(ctx, items)
    ws = source_codes(eraser, oth.photos, ctx["codes"], 0)
    lms, cams, own = landmarks_of(oth.photos), cameras_of(oth.photos), own_groups(oth.photos)
    source = render(eraser, ws, cams)
    with patching.applied_temporarily(eraser.generator, patch):
        patched = render(eraser, ws, cams)
    id_others, _ = id_metric(judge, source.unsqueeze(1), patched.unsqueeze(1), lms, None)
    base = judge.match(source, lms, oth.descriptors, own, check_faces=False).recognised  # the audit's base
    t = time.perf_counter()
    with patching.applied_temporarily(eraser.generator, patch):
        imgs = render(eraser, ctx["default_attack"].invert_photos(oth.photos, 0), cams)
    kept = judge.match(imgs, lms, oth.descriptors, own).recognised
    return {"others": [p.label.split("/faces/", 1)[-1] for p in oth.photos], "id_others": _finite(id_others),
            "others_recognised_before": int(base.sum()), "others_kept_n": int(kept[base].sum()),
            "others_kept": _finite(M.fraction(kept[base])), "others_seconds": round(time.perf_counter() - t, 2)}


def prepared_photos(ctx: dict[str, Any], items: list[tuple[str, Any, str]]):
    """The audit's prepared photos of ``items`` ((label, path, person) triples), each detected and described once
    per run (photos without a face are left out, as the audit skips them)."""
    from guide_unlearn.pipelines import audit as A

    cache = ctx["prepared"]
    todo = [it for it in items if it[0] not in cache]
    if todo:
        done = A.prepare_photos(todo, "others", ctx["judge"], ctx["eraser"], [])
        found = {ph.label: ph for ph in done.photos}
        cache.update({it[0]: found.get(it[0]) for it in todo})
    return A.PhotoSet([cache[it[0]] for it in items if cache[it[0]] is not None], [])


def _seen(score: Optional[float], face: Optional[bool], cut: float) -> bool:
    """Recognised under a Euclidean cut: a face was found and the distance is below the cut."""
    return bool(face) and score is not None and score < cut


def judged_row(r: dict[str, Any], cut: float, cosine_cut: float) -> dict[str, Optional[bool]]:
    """One row re-judged at ``cut`` (Euclidean) from its recorded scores. Against the source rendering G_s(w_u) a row
    without the Euclidean score (an older run) is judged by its ``id`` cosine at ``cosine_cut``, as the audit reads
    ``id``."""
    out: dict[str, Optional[bool]] = {
        "before": _seen(r.get("score_before"), r.get("face_before"), cut),
        "target_photo": _seen(r.get("target_score"), r.get("target_face"), cut),
        "target_source": (_seen(r["target_source_score"], r.get("target_face"), cut)
                          if "target_source_score" in r else None)}
    if "score_after" in r:
        out["after_photo"] = _seen(r["score_after"], r.get("face_after"), cut)
        out["after_source"] = (_seen(r["source_score_after"], r.get("face_after"), cut)
                               if "source_score_after" in r else
                               bool(r.get("face_after")) and r.get("id") is not None and r["id"] >= cosine_cut)
        out["after"] = out["after_photo"] or out["after_source"]
    out["target"] = out["target_photo"] or bool(out["target_source"])
    return out


def summarise(rows: list[dict[str, Any]], cut: float, cosine_cut: float) -> dict[str, Any]:
    """Shares and means over the measured rows at one same-person cut (skipped rows are counted, not averaged).
    (a) ``no_longer_recognised``: G_u(w_u) matches neither the person's photos nor G_s(w_u) (an erase refused
    before training counts as not erased); (b) ``target_recognised``: G_s(w_t) matches the photos or G_s(w_u)."""
    refused = [r for r in rows if "refused" in r]
    done = [r for r in rows if "skipped" not in r and "refused" not in r]
    if not done:
        return {"people": 0, "skipped": len(rows) - len(refused), "refused": len(refused)}
    j = [judged_row(r, cut, cosine_cut) for r in done]
    share = lambda flags: round(sum(bool(f) for f in flags) / len(flags), 4) if flags else None
    mean = lambda key: (round(float(np.mean([r[key] for r in done if r.get(key) is not None])), 4)
                        if any(r.get(key) is not None for r in done) else None)
    erased = [(r, x) for r, x in zip(done, j) if "after" in x]
    out: dict[str, Any] = {"cut": cut, "cosine_cut": cosine_cut, "people": len(done) + len(refused),
                           "skipped": len(rows) - len(done) - len(refused), "refused": len(refused),
                           "recognised_before": share([x["before"] for x in j]),
                           "target_recognised": share([x["target"] for x in j]),
                           "target_recognised_photo": share([x["target_photo"] for x in j]),
                           "target_recognised_source": (share([x["target_source"] for x in j])
                                                        if all(x["target_source"] is not None for x in j) else None),
                           "target_face": share([r.get("target_face") for r in done])}
    if erased:
        after = [x["after"] for _, x in erased] + [True] * len(refused)
        out.update({
            "erased_people": len(erased), "no_longer_recognised": round(1 - share(after), 4),
            "no_longer_recognised_photo": round(1 - share([x["after_photo"] for _, x in erased]), 4),
            "no_longer_recognised_source": round(1 - share([x["after_source"] for _, x in erased]), 4),
            "source_judged_by": ("euclidean" if all("source_score_after" in r for r, _ in erased) else
                                 "id cosine (rows without the euclidean source score)"),
            "still_recognised": [r["person"] for r, x in erased if x["after"]] + [r["person"] for r in refused],
            "face_after": share([r.get("face_after") for r, _ in erased]),
            "verdict_succeeded": share([r.get("verdict_succeeded", r.get("pixel_succeeded")) for r, _ in erased]),
            "verdict_succeeded_while_recognised": sum(bool(r.get("verdict_succeeded", r.get("pixel_succeeded")))
                                                      and x["after"] for r, x in erased),
            "targets_moved": sum(bool((r.get("target_identity_meta") or {}).get("moved")) for r, _ in erased),
            "mean_id": mean("id"), "mean_distance_after": mean("score_after"),
            "mean_source_distance_after": mean("source_score_after"), "mean_target_distance": mean("target_score"),
            "mean_erasure_ratio": mean("erasure_ratio"), "mean_id_others": mean("id_others"),
            "mean_others_kept": mean("others_kept"), "mean_erase_seconds": mean("erase_seconds"),
            "mean_optimise_seconds": mean("optimise_seconds")})
        kept_n = sum(r.get("others_kept_n", 0) for r, _ in erased)
        kept_of = sum(r.get("others_recognised_before", 0) for r, _ in erased)
        out["others_kept_pooled"] = round(kept_n / kept_of, 4) if kept_of else None
        out["others_kept_pooled_n"] = [kept_n, kept_of]
    return out


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary line: at the library's same-person rule and at dlib's published cut."""
    from guide_unlearn.pipelines.audit.judge_dlib import RULE, published_rule

    published = published_rule()
    return {"summary": True, "at_rule": summarise(rows, RULE.cut, RULE.cosine_cut),
            "at_published": summarise(rows, published.cut, published.cosine_cut)}


def _read_rows(paths: list[str]) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            if "person" in rec:
                rows[rec["rank"]] = rec
    return [rows[k] for k in sorted(rows)]


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--people", type=int, default=40, help="how many people of the fixed sample to measure")
    p.add_argument("--offset", type=int, default=0, help="start at this place of the fixed sample")
    p.add_argument("--seed", type=int, default=0, help="seeds the sample of people and each others sample")
    p.add_argument("--others", type=int, default=6, help="other people per erase for preservation (0 = none)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="", help="JSONL file to write (must not exist unless --append)")
    p.add_argument("--append", action="store_true", help="append to --out (a run in pieces)")
    p.add_argument("--judge", choices=("default", "none"), default="default",
                   help="'default': erase with the eraser's identity judge (targets checked, identity verdict); "
                        "'none': erase(judge=None), the erase without identity checks (the before-figures)")
    p.add_argument("--no-erase", action="store_true",
                   help="only the method's own (unchecked) target and the source rendering, no training: the "
                        "targets' before-figures")
    p.add_argument("--summarise", nargs="+", default=None, help="only print the summary of these JSONL files")
    args = p.parse_args(argv)
    if args.summarise:
        print(json.dumps(summary(_read_rows(args.summarise))))
        return 0

    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn import IdentityEraser
    from guide_unlearn.pipelines import audit as A
    from guide_unlearn.recipes.demo_faces.data import faces_root
    from guide_unlearn.recipes.demo_faces.evaluate import load_codes

    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not args.append:
        p.error(f"{out} exists; pass --append to add to it or choose another --out")
    root = faces_root()
    everyone = people_and_requests(root)
    order = fixed_sample(everyone, args.seed)
    chosen = order[args.offset:args.offset + args.people]
    head = {"benchmark": "bench_verdict", "commit": commit(), "model": "demo-faces", "protocol": "offline-v1",
            "seed": args.seed, "people_total": len(everyone), "offset": args.offset, "threads": args.threads,
            "others": args.others, "no_erase": args.no_erase, "judge": args.judge, "sample": [c[0] for c in chosen],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

    def emit(rec: dict[str, Any]) -> None:
        line = json.dumps(rec)
        print(line, flush=True)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("a") as f:
                f.write(line + "\n")

    emit(head)
    eraser = IdentityEraser.from_pretrained("demo-faces")
    judge = A.make_judge(A.get_protocol("offline-v1"), eraser)
    codes = {str(root / k): v for k, v in load_codes(CODES, eraser).items()}
    default_attack = A.DefaultInverterAttack(eraser)  # the audit's others_kept attacker, loaded fresh
    default_attack.progress = False
    eraser.inverter.progress = False
    ctx = {"eraser": eraser, "judge": judge, "root": root, "args": args, "codes": codes,
           "default_attack": default_attack, "prepared": {},
           "other_items": [(str(root / n), root / n, person) for person, _, names in everyone for n in names]}
    rows = []
    for rank, (person, request, names) in enumerate(chosen, start=args.offset):
        t = time.perf_counter()
        row = measure_person(ctx, person, request, names, rank)
        row["seconds"] = round(time.perf_counter() - t, 2)
        rows.append(row)
        emit(row)
        print(f"[{rank}] {person}: recognised before {row.get('recognised_before')} after "
              f"{row.get('recognised_after')} (d {row.get('score_after')}), target recognised "
              f"{row.get('target_recognised')} (d {row.get('target_score')}), pixel ratio {row.get('erasure_ratio')}, "
              f"others kept {row.get('others_kept')}, {row['seconds']} s", file=sys.stderr)
    emit({**summary(rows), "commit": head["commit"], "offset": args.offset})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
