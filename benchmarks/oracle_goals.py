"""Are the erased people as hard to bring back as through a model that never learnt them? The goals of the
oracle comparison (``demo-faces`` against ``demo-faces-oracle-8``), per person and pooled, for one erase method.

    python benchmarks/oracle_goals.py --method lora   --others-once --out benchmarks/results/oracle_goals/lora.jsonl
    python benchmarks/oracle_goals.py --method robust --others-once --out benchmarks/results/oracle_goals/robust.jsonl
    python benchmarks/oracle_goals.py --method sugar  --out benchmarks/results/oracle_goals/sugar.jsonl
    python benchmarks/oracle_goals.py --method sugar  --identity faceapi --out sugar_faceapi.jsonl
    python benchmarks/oracle_goals.py --method joint  --out benchmarks/results/oracle_goals/joint.jsonl
    python benchmarks/oracle_goals.py --method lora --erase-only      # the patches only (no oracle needed yet)
    python benchmarks/oracle_goals.py --method lora --reference demo-faces --people 1 --quick --out /tmp/q.jsonl

The people are the 8 left out of the oracle (``recipes/demo_faces/oracle_8.txt``, in its order; ``--people N``
takes the first N). Each is erased from ONE photo on the shipped model ``demo-faces``, as
``benchmarks/bench_verdict.py`` chooses it: the GUIDE person from its held-out ``aligned_5`` (its other four photos
are the audit's held-out photos), every other person from their only photo (they have NO held-out photo: the
held-out figure and the re-learning attack, which needs one, are reported as not measured, with the reason).
``--method lora|robust``: one patch per person (``IdentityEraser.erase(photo, method=...)``, the method's default
config on this model, seed 0). ``--method sugar|joint`` (several people per patch): ONE ``erase_many`` patch of all
the people (request ids ``p1``..``pN``, no names), audited once per person. ``--identity faceapi`` gives the
eraser an identity model (demo-faces ships none): faceapi cut to dlib's chip, which carries dlib's own weights, so
the JUDGE's network is in the loss (the ID terms, and sugar's learned surrogates, which need one) and the figures
are an optimistic view; the lines say so (``identity_model``). Patches are saved under ``--work``
(default ``runs/oracle_goals``, which git ignores) in a folder named by the method (and ``--erase-iterations``,
``--identity``) and reused when present, so ``--erase-only`` can make them before the oracle exists.

Each person's patch is audited by ``guide_unlearn.audit`` (protocol ``offline-v1``: dlib's ResNet judges, MTCNN
finds the face; docs/audit.md) with ``reference=--reference`` (default ``demo-faces-oracle-8``; ``demo-faces``
itself is a stand-in that exercises the comparison, and the report then flags it), the attacks ``reinvert``
(the fresh default inverter and the from-scratch projector at the audit's 400 steps), ``relearn`` (pivotal
tuning at the audit's default k) and ``code_book``, seed 0; ``--attacks reinvert relearn code_book leakage``
adds the patch-leakage probe (it reads the patch: no reference counterpart, so no goal). The other people are
every person of shared/faces that the oracle kept (the 8 are never among them); the audit takes its seeded
sample of at most ``--max-others`` (48) of them.
``--others-once`` measures the others (and the Fréchet distance) only in the first audited person's audit (the
later audits get no others and the Fréchet distance's minimum of 2 samples, whose value is dropped); with
``sugar``/``joint`` every person shares one patch, so the others are always measured once.

The membership score (docs/audit.md, "Strangers and the membership score") needs photos of people the base never
saw, and shared/faces holds none (demo-faces trained on all of it). Without ``--strangers``, its baseline is a
seeded sample of ``--baseline-people`` (8) people that EVERY model trained on (kept by the oracle, never erased),
one photo each, passed to the audit as its ``strangers=``: the score is then "the person's reconstruction fidelity
minus that of retained training people" — near 0 through the base, below 0 through the oracle (the person is a
stranger to it); the goal asks the patched model's score to be where the oracle's is. ``--strangers PHOTOS`` uses
real strangers instead. The first line names the baseline used (``membership_baseline``, ``baseline_photos``).

Output (``--out FILE.jsonl``; an existing file is refused unless ``--append``), one JSON object a line:

1. ``{"benchmark": "oracle_goals", "commit", "date", "method", "reference", "people": [...], "membership_baseline",
   "baseline_photos", "settings": {...}}`` (every audit and erase setting; ``quick``: true marks a smoke run whose
   figures mean nothing);
2. one line per person: ``person``, ``request`` (photo, relative to shared/faces), ``held_out`` (their photos),
   ``patch`` (folder), ``erase_seconds`` (the erase's wall time when it was made, null when reused without a
   record), ``stand_in`` (the reference renders as the base: not an oracle), and
   - ``attacks``: per attack (``held_out``: the person's other photos at their G_s codes; ``default_inverter``:
     re-inverted by the fresh default inverter with the code book as shipped; ``default_inverter_without_entry``:
     the same without the person's code-book entries; ``scratch_projector``: the from-scratch W+ projector;
     ``relearn``: held-out photos after k pivotal-tuning steps on the request photo) the share of the person's
     photos recognised through ``base`` (G_s), ``patched`` (G_u), ``reference``; ``patched_minus_reference``;
     ``goal_met`` (patched <= reference + 0.10; null when not measured) and ``not_measured`` (the audit's reason);
   - ``membership``: per attacker (``default``, ``scratch``) the score through ``base``, ``patched``,
     ``reference``, ``patched_minus_reference``, ``reference_bootstrap_std`` (the audit's seeded bootstrap of the
     reference's score over the person's and the baseline's photos, 200 resamples: an ESTIMATE of the spread, not
     a seed-to-seed spread) and ``goal_met`` (patched <= reference + 2 x reference_bootstrap_std, the audit's
     rule: the person is no more a member through the patched model than through the oracle, within its spread;
     a score below the oracle's is no trace of the person either);
   - ``others`` (null when not measured in this audit): ``others_kept`` (of the others recognised through G_s, the
     share still recognised through G_u / through the reference at its own codes) and ``fd_pre`` (Fréchet
     distance of the model's samples from G_s's, dlib feature space), each with ``goal_met``: the patched model is
     no further from the base than the oracle is (others_kept >= reference's; fd_pre <= reference's) — a point
     comparison, not a spread;
   - ``seconds``: ``report.seconds`` (the audit's wall time per part: photos, inversion, id, held_out, reinversion,
     others_kept, fd, reference, reference_fd, code_book, relearn, membership, total) and ``counts`` (photos the
     audit used per role);
3. the pooled line (``"pooled": true``): per attack and membership attacker, the mean of each model's figure over
   the people measured, ``goal_met`` as "k of n measured", ``missed_by`` ({person: patched - reference} where the
   goal is missed) and ``not_measured`` (people); the others' figures of every audit that measured them;
   ``not_audited`` (people whose erase was refused, with the reason) and ``all_measured_goals_met`` (every
   measured goal, the others' included; null when nothing was measured).

Needs shared/ (GUIDE_SHARED or ../shared). Its seconds say what each part costs; they are timings only when
nothing else runs on the machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
PEOPLE_FILE = HERE.parent / "recipes" / "demo_faces" / "oracle_8.txt"
WORK = HERE.parent / "runs" / "oracle_goals"  # ignored by git: patches are not results
MARGIN = 0.10  # the goal: patched <= reference + MARGIN (the audit's verdicts.TOLERANCE; a test keeps them equal)
SPREAD_SDS = 2.0  # membership: within this many bootstrap standard deviations of the reference (docs/audit.md)
# attack name in the output -> the figure of the audit's details["comparison"]
ATTACK_FIGURES = {
    "held_out": "held_out_recognised",
    "default_inverter": "reinversion_default_recognised",
    "default_inverter_without_entry": "reinversion_default_without_entry_recognised",
    "scratch_projector": "reinversion_scratch_recognised",
    "relearn": "relearn_recognised",
}
MEMBERSHIP_ATTACKERS = ("default", "scratch")
# others' figure -> True when a higher value is better preservation
OTHERS_FIGURES = {"others_kept": True, "fd_pre": False}
MULTI = ("sugar", "joint")
QUICK = {"projector_steps": 2, "relearn_steps": 1, "max_others": 2, "baseline_people": 2, "samples": 4,
         "erase_iterations": 2}


# -- pure logic (tested in tests/core/test_oracle_goals_bench.py) ----------------------------------------------

def _num(x: Any) -> Optional[float]:
    """A finite float rounded to 4 places, else None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return round(x, 4) if math.isfinite(x) else None


def attack_entry(row: Optional[dict], reason: Optional[str]) -> dict[str, Any]:
    """One attack's figures from an audit comparison row ({"before", "after", "reference", ...}; None when the
    figure was not measured) -> {"base", "patched", "reference", "patched_minus_reference", "goal_met",
    "not_measured"}; goal_met: patched <= reference + MARGIN (None without both)."""
    row = row or {}
    base, patched, ref = _num(row.get("before")), _num(row.get("after")), _num(row.get("reference"))
    measured = patched is not None and ref is not None
    out = {"base": base, "patched": patched, "reference": ref,
           "patched_minus_reference": _num(patched - ref) if measured else None,
           "goal_met": bool(patched <= ref + MARGIN + 1e-9) if measured else None}
    if not measured:
        out["not_measured"] = reason or "not in the audit's comparison rows"
    return out


def membership_entry(results: Optional[dict], reason: Optional[str]) -> dict[str, Any]:
    """One attacker's membership scores {role: {"score", "std", ...}} (roles before/after/reference) ->
    {"base", "patched", "reference", "patched_minus_reference", "reference_bootstrap_std", "goal_met",
    "not_measured"}; goal_met: patched <= reference + SPREAD_SDS x the reference's bootstrap std (one-sided, as
    the audit's verdict rule)."""
    results = results or {}
    score = lambda role: _num((results.get(role) or {}).get("score"))  # noqa: E731
    base, patched, ref = score("before"), score("after"), score("reference")
    std = _num((results.get("reference") or {}).get("std"))
    measured = patched is not None and ref is not None and std is not None
    out = {"base": base, "patched": patched, "reference": ref,
           "patched_minus_reference": _num(patched - ref) if patched is not None and ref is not None else None,
           "reference_bootstrap_std": std,
           "goal_met": bool(patched - ref <= SPREAD_SDS * std + 1e-9) if measured else None}
    if not measured:
        out["not_measured"] = reason or "no membership score through both models"
    return out


def others_entry(row: Optional[dict], higher_is_better: bool) -> dict[str, Any]:
    """One of the others' figures from a comparison row -> {"base", "patched", "reference",
    "patched_minus_reference", "goal_met"}: the patched model is no further from the base than the reference is
    (higher_is_better: patched >= reference; else patched <= reference)."""
    row = row or {}
    base, patched, ref = _num(row.get("before")), _num(row.get("after")), _num(row.get("reference"))
    met = None
    if patched is not None and ref is not None:
        met = bool(patched >= ref - 1e-9) if higher_is_better else bool(patched <= ref + 1e-9)
    return {"base": base, "patched": patched, "reference": ref,
            "patched_minus_reference": _num(patched - ref) if met is not None else None, "goal_met": met}


def person_figures(comparison: list[dict], not_run: dict[str, str], membership: Optional[dict],
                   with_others: bool) -> dict[str, Any]:
    """A person's goal figures from an audit report's details: ``comparison`` (its rows), ``not_run`` (key ->
    reason) and ``membership`` (details["membership"], or None). -> {"attacks", "membership", "others"}."""
    rows = {r["figure"]: r for r in comparison}
    attacks = {name: attack_entry(rows.get(fig), not_run.get(f"{fig}_after") or not_run.get(f"reference_{fig}"))
               for name, fig in ATTACK_FIGURES.items()}
    reason = lambda tag: not_run.get(f"membership_{tag}_after") or not_run.get(f"reference_membership_{tag}")  # noqa
    member = {tag: membership_entry((membership or {}).get(tag), reason(tag)) for tag in MEMBERSHIP_ATTACKERS}
    others = {fig: others_entry(rows.get(fig), better) for fig, better in OTHERS_FIGURES.items()} if with_others \
        else None
    return {"attacks": attacks, "membership": member, "others": others}


def _pool(entries: list[tuple[str, dict]]) -> dict[str, Any]:
    """(person, entry) pairs of one figure -> means over the people measured, goals met "k of n"."""
    measured = [(p, e) for p, e in entries if e.get("goal_met") is not None]
    mean = lambda k: _num(sum(e[k] for _, e in measured) / len(measured)) if measured and all(  # noqa: E731
        e[k] is not None for _, e in measured) else None
    out = {k: mean(k) for k in ("base", "patched", "reference", "patched_minus_reference")}
    met = sum(bool(e["goal_met"]) for _, e in measured)
    out.update(goal_met=f"{met} of {len(measured)} measured", people_measured=len(measured),
               people_meeting_goal=met, missed_by={p: e["patched_minus_reference"] for p, e in measured
                                                   if not e["goal_met"]},
               not_measured=[p for p, e in entries if e.get("goal_met") is None])
    return out


def pooled(rows: list[dict]) -> dict[str, Any]:
    """The summary of the person lines ``rows`` (those without ``attacks`` — refused erases — are listed apart)."""
    done = [r for r in rows if "attacks" in r]
    out: dict[str, Any] = {"pooled": True, "people": len(rows), "audited": len(done),
                           "not_audited": {r["person"]: r.get("refused", "not audited") for r in rows
                                           if "attacks" not in r}}
    out["attacks"] = {a: _pool([(r["person"], r["attacks"][a]) for r in done]) for a in ATTACK_FIGURES}
    out["membership"] = {t: _pool([(r["person"], r["membership"][t]) for r in done]) for t in MEMBERSHIP_ATTACKERS}
    with_others = [r for r in done if r.get("others")]
    out["others"] = {f: {"audits": [{"person": r["person"], **r["others"][f]} for r in with_others],
                         "goal_met": f"{sum(bool(r['others'][f]['goal_met']) for r in with_others)} of "
                                     f"{len(with_others)} audits"} for f in OTHERS_FIGURES}
    pools = list(out["attacks"].values()) + list(out["membership"].values())
    others_goals = [r["others"][f]["goal_met"] for r in with_others for f in OTHERS_FIGURES
                    if r["others"][f]["goal_met"] is not None]
    measured = sum(e["people_measured"] for e in pools) + len(others_goals)
    out["all_measured_goals_met"] = (None if not measured else  # nothing measured: no verdict, not a pass
                                     all(e["people_meeting_goal"] == e["people_measured"] for e in pools)
                                     and all(others_goals))
    return out


# -- people, patches, audits ------------------------------------------------------------------------------------

def people_and_requests(root: Path, people: list[str]) -> list[dict[str, Any]]:
    """For each person of ``people`` (oracle_8.txt entries): {"person", "request", "held_out"} (photo names
    relative to ``root``): the GUIDE person's request is its held-out photo and its other photos are held out;
    anyone else's request is their only photo and they have no held-out photo."""
    from guide_unlearn.recipes.demo_faces.data import HELD_OUT, list_photos, person_of

    every = list_photos(root, exclude=())
    out = []
    for person in people:
        names = [n for n in every if person_of(n) == person]
        held = [n for n in names if n in HELD_OUT]
        request = held[0] if held else names[0]
        out.append({"person": person, "request": request, "held_out": [n for n in names if n != request]})
    return out


def retained_people(root: Path, left_out: list[str]) -> dict[str, list[str]]:
    """{person: their photos} of every person of shared/faces that the oracle kept (trained on by every model)."""
    from guide_unlearn.recipes.demo_faces.data import leave_out, list_photos, person_of

    kept, _ = leave_out(list_photos(root, exclude=()), left_out, held_out=())
    groups: dict[str, list[str]] = {}
    for n in kept:
        groups.setdefault(person_of(n), []).append(n)
    return groups


def baseline_sample(groups: dict[str, list[str]], n: int, seed: int) -> list[str]:
    """The first photo of each of ``n`` people drawn from ``groups`` by a seeded permutation (sorted people)."""
    import torch

    people = sorted(groups)
    order = torch.randperm(len(people), generator=torch.Generator().manual_seed(seed)).tolist()
    return [groups[people[i]][0] for i in order[:n]]


def commit() -> str:
    """The commit measured, with '+dirty' when the tracked files differ from it."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=HERE.parent, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "HEAD") + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def patch_folders(work: Path, method: str, people: list[dict], iterations: Optional[int],
                  identity: str = "none") -> dict[str, Path]:
    """{person: the folder holding their patch}: one per person for single-person methods, one shared folder
    (named by a digest of the people) for sugar/joint. The erase settings that differ from the defaults are in the
    name, so a patch is reused only for the same settings."""
    tag = method + ("" if iterations is None else f"-it{iterations}") + ("" if identity == "none" else f"-{identity}")
    if method in MULTI:
        digest = hashlib.sha256("\n".join(p["person"] for p in people).encode()).hexdigest()[:10]
        shared = work / tag / f"{len(people)}-people-{digest}"
        return {p["person"]: shared for p in people}
    return {p["person"]: work / tag / _slug(p["person"]) for p in people}


def make_patches(eraser, root: Path, people: list[dict], folders: dict[str, Path], method: str,
                 iterations: Optional[int]) -> dict[str, dict]:
    """Erase (or reuse) every patch. -> {person: {"patch": folder or None, "erase_seconds", "refused"?}}."""
    from guide_unlearn.errors import GuideUnlearnError

    settings = {} if iterations is None else {"iterations": iterations}
    out: dict[str, dict] = {}
    todo = [p for p in people if not (folders[p["person"]] / "patch").is_dir()]
    if method in MULTI and todo:
        requests = {f"p{i + 1}": str(root / p["request"]) for i, p in enumerate(people)}
        try:
            _erase(folders[people[0]["person"]], lambda: eraser.erase_many(requests, method=method, progress=False,
                                                                             **settings))
        except GuideUnlearnError as exc:  # one run for everyone: refused for everyone
            return {p["person"]: {"patch": None, "refused": f"{type(exc).__name__}: {exc}"} for p in people}
    elif method not in MULTI:
        for p in todo:
            try:
                _erase(folders[p["person"]], lambda p=p: eraser.erase(root / p["request"], method=method,
                                                                      progress=False, **settings))
            except GuideUnlearnError as exc:  # refused (no face, a target the judge recognises): nobody erased
                out[p["person"]] = {"patch": None, "refused": f"{type(exc).__name__}: {exc}"}
    for p in people:
        folder = folders[p["person"]]
        if p["person"] in out:
            continue
        info = folder / "erase.json"
        seconds = json.loads(info.read_text()).get("erase_seconds") if info.is_file() else None
        out[p["person"]] = {"patch": folder / "patch", "erase_seconds": seconds}
    return out


def _erase(folder: Path, run) -> None:
    """Run one erase and save its patch in ``folder``/patch with its wall time in ``folder``/erase.json."""
    t = time.perf_counter()
    result = run()
    seconds = round(time.perf_counter() - t, 1)
    folder.mkdir(parents=True, exist_ok=True)
    result.patch.save_pretrained(folder / "patch")
    (folder / "erase.json").write_text(json.dumps({"erase_seconds": seconds}) + "\n")
    print(f"erased into {folder} in {seconds} s", file=sys.stderr)


def audit_person(ctx: dict[str, Any], person: dict, patch: Path, with_others: bool) -> dict[str, Any]:
    """Audit one person's patch against the reference -> the person's output line (without the erase fields)."""
    import guide_unlearn
    from guide_unlearn.pipelines.audit.compared import is_stand_in

    args, root = ctx["args"], ctx["root"]
    held = [root / n for n in person["held_out"]]
    report = guide_unlearn.audit(
        ctx["eraser"], str(patch), [root / person["request"]], held_out=held or None,
        others=ctx["others"] if with_others else None, attacks=tuple(args.attacks), seed=args.seed,
        projector_steps=args.projector_steps, samples=args.samples if with_others else 2,
        max_others=args.max_others, progress=False, reference=ctx["reference"], strangers=ctx["baseline"],
        relearn_steps=args.relearn_steps)
    data = report.to_dict()
    details = data["details"]
    figures = person_figures(details.get("comparison", []), details.get("not_run", {}),
                             details.get("membership") if isinstance(details.get("membership"), dict) else None,
                             with_others)
    return {"stand_in": is_stand_in(ctx["reference"], ctx["eraser"]), **figures,
            "seconds": {k: round(float(v), 1) for k, v in report.seconds.items()},
            "counts": details.get("counts")}


# -- command line ----------------------------------------------------------------------------------------------

def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    from guide_unlearn import list_methods
    from guide_unlearn.pipelines.audit import DEFAULT_MAX_OTHERS, DEFAULT_RELEARN_STEPS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", default="lora", choices=list_methods(), help="the erase method (default lora)")
    p.add_argument("--reference", default="demo-faces-oracle-8", help="the comparison model (registry name or folder)")
    p.add_argument("--people-file", type=Path, default=PEOPLE_FILE, help="the left-out people, one per line")
    p.add_argument("--people", type=int, default=None, help="only the first N people of the file (a quick check)")
    p.add_argument("--start", type=int, default=0,
                   help="skip the first K people of the file (a run in pieces; --pool summarises the pieces)")
    p.add_argument("--pool", nargs="+", type=Path, default=None,
                   help="only print the pooled line of the person lines in these JSONL files (pieces of one run)")
    p.add_argument("--work", type=Path, default=WORK, help="where the patches are saved and reused")
    p.add_argument("--erase-only", action="store_true", help="make (or find) the patches, audit nothing")
    p.add_argument("--others-once", action="store_true",
                   help="measure the other people only in the first person's audit (always so for sugar/joint)")
    p.add_argument("--no-others", action="store_true",
                   help="measure the other people in no audit (a later piece of a run whose first piece did)")
    p.add_argument("--attacks", nargs="+", default=["reinvert", "relearn", "code_book"])
    p.add_argument("--strangers", nargs="+", help="photos of people the base never saw (the membership baseline; "
                                                   "default: retained training people, see the docstring)")
    p.add_argument("--baseline-people", type=int, default=8, help="retained people in the membership baseline")
    p.add_argument("--max-others", type=int, default=DEFAULT_MAX_OTHERS)
    p.add_argument("--projector-steps", type=int, default=400, help="the from-scratch projector's steps")
    p.add_argument("--relearn-steps", type=int, default=DEFAULT_RELEARN_STEPS, help="k of the relearn attack")
    p.add_argument("--samples", type=int, default=None, help="Fréchet samples (default: the protocol's)")
    p.add_argument("--erase-iterations", type=int, default=None, help="override the method's iterations")
    p.add_argument("--identity", choices=("none", "faceapi"), default="none",
                   help="the eraser's identity model (default none, as demo-faces ships; faceapi = the judge's own "
                        "network in the loss: optimistic)")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke-test budgets ({QUICK}); the figures then mean nothing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="write the JSON lines here (and print them)")
    p.add_argument("--append", action="store_true", help="append to an existing --out")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    return args


def main(argv: Optional[list[str]] = None) -> int:
    """Erase (or reuse) the patches, audit each person against the reference, print the lines (module docstring)."""
    args = parse_args(argv)
    if args.pool:
        rows = [r for path in args.pool for r in map(json.loads, path.read_text().splitlines())
                if "person" in r and "pooled" not in r]
        emit(args, pooled(rows))
        return 0
    if args.out is not None and args.out.exists() and not args.append:
        print(f"{args.out} exists; pass --append to add to it, or choose another --out", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn import IdentityEraser
    from guide_unlearn.pipelines.audit import load_reference
    from guide_unlearn.recipes.demo_faces import evaluate as E
    from guide_unlearn.recipes.demo_faces.data import faces_root, read_people_file

    root = faces_root()
    names = read_people_file(args.people_file)[args.start:]
    names = names[:args.people] if args.people else names
    people = people_and_requests(root, names)
    eraser = IdentityEraser.from_pretrained("demo-faces")
    shipped = eraser.identity_model
    if args.identity == "faceapi":
        eraser.identity_model = E.faceapi_chip(eraser.inverter.code_book.landmarks, eraser.generator.img_resolution)
    folders = patch_folders(args.work, args.method, people, args.erase_iterations, args.identity)
    patches = make_patches(eraser, root, people, folders, args.method, args.erase_iterations)
    eraser.identity_model = shipped  # the audit measures the model as shipped
    if args.erase_only:
        print(json.dumps({p: str(v.get("patch")) for p, v in patches.items()}))
        return 0
    retained = retained_people(root, read_people_file(args.people_file))
    baseline = args.strangers or [str(root / n) for n in baseline_sample(retained, args.baseline_people, args.seed)]
    ctx = {"args": args, "root": root, "eraser": eraser, "reference": load_reference(args.reference, eraser),
           "others": [str(root / n) for photos in retained.values() for n in photos], "baseline": baseline}
    header = {"benchmark": "oracle_goals", "commit": commit(),
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "method": args.method,
              "reference": args.reference, "people": names,
              "identity_model": E.JUDGE_IN_LOSS if args.identity == "faceapi" else None,
              "membership_baseline": "strangers given with --strangers" if args.strangers else
              f"{len(baseline)} retained training people (shared/faces holds no stranger to demo-faces)",
              "baseline_photos": [str(Path(b).relative_to(root)) if str(b).startswith(str(root)) else str(b)
                                  for b in baseline],
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    emit(args, header)
    rows, others_done = [], False
    for person in people:
        made = patches[person["person"]]
        row = {"person": person["person"], "request": person["request"], "held_out": person["held_out"],
               "patch": None if made["patch"] is None else str(made["patch"]),
               "erase_seconds": made.get("erase_seconds")}
        if made["patch"] is None:
            row["refused"] = made["refused"]
        else:
            once = args.others_once or args.method in MULTI
            row.update(audit_person(ctx, person, made["patch"],
                                    with_others=not args.no_others and not (once and others_done)))
            others_done = True
        rows.append(row)
        emit(args, row)
    emit(args, pooled(rows))
    return 0


def emit(args: argparse.Namespace, line: dict) -> None:
    """Print one JSON line and append it to ``--out`` (created on the first line)."""
    text = json.dumps(line, default=str, allow_nan=False)
    print(text, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
