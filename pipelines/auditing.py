"""``guide_unlearn.audit``: prove (or disprove) an erasure with identity figures, attacks and a report.

    report = guide_unlearn.audit(eraser, "patches/person-5", ["aligned_5.jpg"], held_out="photos/person-5/",
                                 others="photos/others/")
    report.metrics["held_out_recognised_after"]      # 0.0: none of the person's other photos comes back
    report.save("audit/person-5")                    # report.json, report.html, the figure PNGs

G_s is the eraser as given (its applied patches included); G_u is G_s with the audited patch on top. Every
figure names the network that made it (``report.networks``); a protocol (``PROTOCOLS``) fixes those networks and
is recorded in the report, never silently substituted. The metrics are explained in docs/audit.md.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import time
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from guide_unlearn import metrics as M
from guide_unlearn import patching
from guide_unlearn.errors import ConfigError, NoFaceError
from guide_unlearn.patch import ForgetPatch

from .audit_attacks import (_cams, _fresh_default_inverter, _invert, _inverter_record, _landmarks,  # noqa: F401
                            _patched, _reinvert, _render, leakage_probe)
from .audit_judges import _Judge, _judge, _prepare
from .audit_photos import PhotoSpec, _items, _Photo, _PhotoSet, sample_people  # noqa: F401  (re-exported)
from .audit_protocols import PROTOCOLS, Protocol, get_protocol  # noqa: F401  (re-exported)
from .audit_report import AuditReport, _jsonable, record_audit  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

METRIC_KEYS = (
    "id", "id_others", "held_out_recognised_before", "held_out_recognised_after", "held_out_similarity_before",
    "held_out_similarity_after", "reinversion_default_recognised_before", "reinversion_default_recognised_after",
    "reinversion_scratch_recognised_before", "reinversion_scratch_recognised_after", "others_kept",
    "leakage_recognised", "leakage_similarity", "fd_pre", "fd_real_delta", "fid_pre", "fid_real_delta",
)
ATTACKS = ("reinvert", "leakage")
DEFAULT_MAX_OTHERS = 48  # others people audited by default (a seeded sample; see audit(max_others=))


# ----------------------------------------------------------------------------------------------------------------
# The audit


def audit(eraser, patch: Union[ForgetPatch, str, os.PathLike], photos: PhotoSpec, held_out: PhotoSpec = None,
          others: PhotoSpec = None, real: PhotoSpec = None, protocol: str = "offline-v1",
          attacks: Sequence[str] = ATTACKS, seed: int = 0, *, samples: Optional[int] = None,
          projector_steps: int = 400, leakage_starts: int = 16, leakage_steps: int = 100,
          codes: Optional[Mapping[str, torch.Tensor]] = None, max_others: Optional[int] = DEFAULT_MAX_OTHERS,
          progress: bool = True, clip_path: Union[None, str, os.PathLike] = None) -> AuditReport:
    """Measure how well ``patch`` erased the person of ``photos`` from ``eraser``'s generator.

    eraser:   the IdentityEraser of the patch's base (its applied patches are G_s, and are as they were on return).
    patch:    a ForgetPatch or its folder (PatchMismatchError when made for another base).
    photos:   the deletion request (what ``erase`` was given); held_out: other photos of the SAME person;
              others: photos of other people (each photo its own person, unless grouped in sub-folders or passed
              as {person: [photos]}); real: real images for the fd_real_delta figure. Each a folder, a path, a
              PIL image or a list of them. Unreadable files and photos without a face are skipped and counted.
    protocol: "offline-v1" (dlib + FD-dlib), "paper-v1" (CurricularFace IR-101 + Inception FID; refused unless
              its weight files are present), "toy-v1" (tests), or a ``Protocol``.
    attacks:  any of "reinvert" (re-inversion with the fresh default inverter and the from-scratch projector) and
              "leakage" (the patch-leakage probe).
    seed:     seeds every inversion, sample and probe start.
    samples:  G_s / G_u samples of the Fréchet distance (default: the protocol's; the expensive part with
              ``projector_steps`` and the number of ``others``).
    projector_steps: steps of the from-scratch projector attack (default 400).
    leakage_starts, leakage_steps: random starts and gradient-ascent steps of the leakage probe.
    codes:    optional {photo path: ws [num_ws, w_dim]} of G_s inversions already made with the eraser's inverter
              (skips inverting those photos again).
    max_others: audit at most this many of the ``others`` people (a seeded sample of whole people, recorded in
              ``details["others_sample"]``; None or 0 = all). Each one costs two inversions (through G_s and, for
              ``others_kept``, through G_u), so this bounds the audit's time; the default keeps a full default
              audit of a 64×64 model within minutes on 2 CPU cores.
    progress: progress bars of the inversions on stderr.
    clip_path: optional LOCAL folder of a CLIP model (transformers, safetensors) for the extra CMMD figure
              (``details["cmmd"]["cmmd_pre"]``: CLIP-MMD between the same G_s / G_u samples; sigma 10, scale 1000).
    -> AuditReport (metrics: exactly ``METRIC_KEYS``).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    proto = get_protocol(protocol)
    attacks = tuple(attacks)
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise ConfigError(f"unknown attacks {unknown}; choose from {list(ATTACKS)}")
    n_samples = proto.samples if samples is None else int(samples)
    if n_samples < 2 or projector_steps < 1 or leakage_starts < 1 or leakage_steps < 0:
        raise ConfigError("samples must be >= 2, projector_steps and leakage_starts >= 1, leakage_steps >= 0")
    if max_others is not None and max_others < 0:
        raise ConfigError(f"max_others must be >= 0 (0 = every person), got {max_others}")
    if not isinstance(patch, ForgetPatch):
        patch = ForgetPatch.from_pretrained(patch)
    patching.check(eraser.generator, patch, eraser.name)  # PatchMismatchError for another base, PatchStateError if already applied
    applied_before = [p.patch_id for p in eraser.applied_patches]

    judge = _judge(proto, eraser)
    clip = None
    if clip_path is not None:  # loaded before the expensive parts, so a bad folder fails fast
        from guide_unlearn.adapters.perceptual.cmmd import load_clip_embedder

        clip = load_clip_embedder(clip_path, eraser.device)
    skipped: list[dict[str, str]] = []
    t = time.perf_counter()
    request = _prepare(photos, "request", judge, eraser, skipped)
    if not len(request):
        raise NoFaceError(f"none of the request photos has a usable face ({len(skipped)} skipped: "
                          f"{'; '.join(s['photo'] + ': ' + s['reason'] for s in skipped[:3])}); pass the photo "
                          "the patch was made from")
    held = _prepare(held_out, "held_out", judge, eraser, skipped)
    other_items = _items(others, "others")
    other_items, details_sample = sample_people(other_items, max_others, seed)
    oth = _prepare(None, "others", judge, eraser, skipped, items=other_items)
    real_set = _prepare(real, "real", judge, eraser, skipped)
    timings["photos"] = time.perf_counter() - t
    person = request.photos + held.photos
    person_desc = np.stack([p.descriptor for p in person])
    not_run: dict[str, str] = {}
    m: dict[str, float] = {k: float("nan") for k in METRIC_KEYS}
    details: dict[str, Any] = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                               "seed": seed, "attacks": list(attacks), "skipped": skipped,
                               "others_sample": details_sample}
    gallery: dict[str, Any] = {"loss_history": patch.metadata.get("loss_history")}

    # G_s inversions of every photo with the eraser's own inverter (what erase does).
    t = time.perf_counter()
    own_progress = getattr(eraser.inverter, "progress", None)
    if own_progress is not None:
        eraser.inverter.progress = progress
    try:
        ws_request = _codes_for(eraser, request.photos, codes, seed)
        ws_held = _codes_for(eraser, held.photos, codes, seed) if len(held) else None
        ws_others = _codes_for(eraser, oth.photos, codes, seed) if len(oth) else None
    finally:
        if own_progress is not None:
            eraser.inverter.progress = own_progress
    timings["inversion"] = time.perf_counter() - t

    t = time.perf_counter()
    try:
        views = eraser.generator.evaluation_cameras(proto.views) if eraser.generator.c_dim else None
        # -- ID and ID_others, held-out: everything G_s renders first, then G_u
        id_rows = _id_renders(eraser, patch, ws_request, views, request.photos)
        gallery.update(request_photo=request.crops[:1], person_source=id_rows["source_images"][0],
                       person_patched=id_rows["patched_images"][0])
        m["id"], per = _id_metric(judge, id_rows, _landmarks(request.photos), views)
        details["id"] = {"per_photo": [{"photo": p.label, "id": v} for p, v in zip(request.photos, per)],
                         "views": 1 if views is None else int(views.shape[0])}
        if ws_others is not None:
            rows = _id_renders(eraser, patch, ws_others, views, oth.photos)
            m["id_others"], per = _id_metric(judge, rows, _landmarks(oth.photos), views)
            details["id_others"] = [{"photo": p.label, "id": v} for p, v in zip(oth.photos, per)]
        else:
            not_run["id_others"] = "no others photos given"
        timings["id"] = time.perf_counter() - t

        t = time.perf_counter()
        groups_person = [list(range(len(person)))] * len(person)
        if ws_held is not None:
            rows = _recognition(eraser, patch, judge, ws_held, held.photos, person_desc,
                                [list(range(len(person)))] * len(held))
            for when in ("before", "after"):
                m[f"held_out_recognised_{when}"] = M.fraction(rows[when]["recognised"])
                m[f"held_out_similarity_{when}"] = _nanmean(rows[when]["cosine"])
            details["held_out"] = _rows(held.photos, rows)
            gallery.update(held_photos=held.crops, held_before=rows["before"]["images"],
                           held_after=rows["after"]["images"], held_scores=(rows["before"]["score"],
                                                                            rows["after"]["score"]))
        else:
            for k in ("held_out_recognised_before", "held_out_recognised_after", "held_out_similarity_before",
                      "held_out_similarity_after"):
                not_run[k] = "no held-out photos given (or none had a face)"
        # Identity histograms: the person's and the others' G_s inversions, before vs after.
        ws_person = torch.cat([ws_request] + ([ws_held] if ws_held is not None else []))
        hist = _recognition(eraser, patch, judge, ws_person, person, person_desc, groups_person, images=False)
        gallery["hist_person"] = (hist["before"]["score"], hist["after"]["score"])
        others_before = None
        if ws_others is not None:
            own = _own_groups(oth.photos)
            rows = _recognition(eraser, patch, judge, ws_others, oth.photos, oth.descriptors, own, images=False)
            gallery["hist_others"] = (rows["before"]["score"], rows["after"]["score"])
            others_before = rows["before"]["recognised"]
            details["others"] = {"n": len(oth), "recognised_before_through_source": int(others_before.sum()),
                                 "recognised_after_same_codes": int(rows["after"]["recognised"].sum())}
        timings["held_out"] = time.perf_counter() - t

        # -- attacks
        if "reinvert" in attacks:
            t = time.perf_counter()
            default_inv = _fresh_default_inverter(eraser)
            default_inv.progress = progress
            from guide_unlearn.adapters.projector import OptimizationInverter

            scratch_inv = OptimizationInverter(eraser.generator, eraser.perceptual, steps=projector_steps,
                                               input_alignment=getattr(eraser.inverter, "input_alignment", "ffhq"),
                                               progress=progress)
            networks_attack = {"default": _inverter_record(default_inv), "scratch": _inverter_record(scratch_inv)}
            details["reinversion"] = {"inverters": networks_attack}
            for tag, inv in (("default", default_inv), ("scratch", scratch_inv)):
                res = _reinvert(eraser, patch, judge, inv, person, person_desc, seed)
                for when in ("before", "after"):
                    m[f"reinversion_{tag}_recognised_{when}"] = M.fraction(res[when]["recognised"])
                details["reinversion"][tag] = _rows(person, res)
                gallery[f"attack_{tag}"] = (res["before"]["images"], res["after"]["images"])
            timings["reinversion"] = time.perf_counter() - t
            t = time.perf_counter()
            if len(oth):
                with _patched(eraser, patch):
                    ws_u = _invert(default_inv, eraser, oth.photos, seed)
                    imgs = _render(eraser, ws_u, _cams(oth.photos))
                desc = judge.describe(imgs, _landmarks(oth.photos))
                desc[~judge.faces(imgs)] = np.nan
                score, _ = judge.best(desc, oth.descriptors, _own_groups(oth.photos))
                kept = judge.recognised(score)
                base = others_before if others_before is not None else np.ones(len(oth), bool)
                m["others_kept"] = M.fraction(kept[base])
                details["others_kept"] = {"recognised_before": int(base.sum()), "kept": int(kept[base].sum()),
                                          "rows": [{"photo": p.label, "before": bool(b), "after_reinverted": bool(k),
                                                    "score_after": s} for p, b, k, s in
                                                   zip(oth.photos, base, kept, score)]}
            else:
                not_run["others_kept"] = "no others photos given"
            timings["others_kept"] = time.perf_counter() - t
        else:
            for k in METRIC_KEYS:
                if k.startswith("reinversion_") or k == "others_kept":
                    not_run[k] = "the reinvert attack was not requested"

        if "leakage" in attacks:
            t = time.perf_counter()
            probe = leakage_probe(eraser, patch, starts=leakage_starts, steps=leakage_steps, seed=seed)
            mean_lms = _mean_landmarks(person + oth.photos)
            lms = None if mean_lms is None or eraser.generator.c_dim else np.broadcast_to(
                mean_lms, (probe["source_images"].shape[0], 5, 2))
            desc = judge.describe(probe["source_images"], lms)
            desc[~judge.faces(probe["source_images"])] = np.nan
            score, cos = judge.best(desc, person_desc)
            rec = judge.recognised(score)
            m["leakage_recognised"] = M.fraction(rec)
            m["leakage_similarity"] = float(np.nanmax(cos)) if np.isfinite(cos).any() else float("nan")
            details["leakage"] = {"starts": leakage_starts, "steps": leakage_steps, "psi": probe["psi"],
                                  "difference": probe["difference"].tolist(), "score": score.tolist(),
                                  "cosine": cos.tolist(), "recognised": rec.tolist(),
                                  "verdict": ("publishing this patch REVEALS whom it erases: the probe, using only "
                                              "the base model and the patch, rendered the person") if rec.any()
                                  else ("the probe (base model + patch, no photo) found no rendering recognised as "
                                        "the person")}
            gallery["leakage"] = (probe["source_images"], probe["patched_images"])
            timings["leakage"] = time.perf_counter() - t
        else:
            not_run["leakage_recognised"] = not_run["leakage_similarity"] = "the leakage probe was not requested"

        # -- Fréchet distances
        t = time.perf_counter()
        fd = _frechet(eraser, patch, judge, n_samples, seed, real_set, _mean_landmarks(person + oth.photos), clip)
        ran, other = ("fid", "fd") if judge.frechet_metric == "fid" else ("fd", "fid")
        m[f"{ran}_pre"] = fd["pre"]
        m[f"{ran}_real_delta"] = fd["real_delta"]
        if not math.isfinite(fd["real_delta"]):
            not_run[f"{ran}_real_delta"] = fd["why_real"]
        details["fd"] = {"feature_space": proto.feature_space, "samples": n_samples, "seed": seed,
                         "truncation_psi": 1.0, "real_images": len(real_set),
                         "source_vs_real": fd.get("source_real"), "patched_vs_real": fd.get("patched_real")}
        for k in (f"{other}_pre", f"{other}_real_delta"):
            not_run[k] = (f"protocol {proto.name} runs no Inception-v3 network; FID is reported by paper-v1 only "
                          f"(the offline figure is {proto.feature_space})") if other == "fid" else (
                f"protocol {proto.name} reports the Fréchet distance with the Inception-v3 FID network as fid_pre / "
                "fid_real_delta; the offline FD figures are offline-v1's")
        details["cmmd"] = {"not_run": "no CLIP model given (clip_path= / --clip PATH)"} if clip is None else {
            "cmmd_pre": fd["cmmd_pre"], "cmmd_real_delta": fd.get("cmmd_real_delta", float("nan")),
            "source_vs_real": fd.get("cmmd_source_real"), "patched_vs_real": fd.get("cmmd_patched_real"),
            "samples": n_samples, "sigma": 10.0, "scale": 1000.0, "network": clip.name}
        timings["fd"] = time.perf_counter() - t
    finally:
        if [p.patch_id for p in eraser.applied_patches] != applied_before:  # pragma: no cover - defensive
            logger.error("the eraser's applied patches changed during the audit")
    for k, v in m.items():
        if not math.isfinite(v) and k not in not_run:
            not_run[k] = "no value could be computed (no face found in the renderings it needs)"
    details["not_run"] = not_run
    details["counts"] = {"request": len(request), "held_out": len(held), "others": len(oth), "real": len(real_set),
                         "skipped": len(skipped),
                         "held_out_skipped": sum(1 for s in skipped if s["role"] == "held_out")}
    details["patch"] = {"patch_id": patch.patch_id, "kind": patch.kind,
                        "has_loss_history": bool(patch.metadata.get("loss_history"))}
    networks = judge.networks()
    networks["generator"] = {"name": eraser.name, "family": eraser.generator.family,
                             "base_fingerprint": patch.base_fingerprint}
    networks["inverter"] = _inverter_record(eraser.inverter)
    if clip is not None:
        networks["cmmd"] = {"name": clip.name, "folder": str(clip.folder), "digest": clip.digest}
    networks["patch"] = {"patch_id": patch.patch_id, "erase_identity_model": patch.metadata.get("identity_model")}
    timings["total"] = time.perf_counter() - t_start
    proto_rec = {"name": proto.name, "version": int(proto.name.rsplit("-v", 1)[1]), "identity": judge.name,
                 "feature_space": proto.feature_space, "description": proto.description}
    return AuditReport(proto_rec, m, details, networks, judge.thresholds(), timings, gallery)


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _mean_landmarks(photos: Sequence[_Photo]) -> Optional[np.ndarray]:
    lms = [p.landmarks for p in photos if p.landmarks is not None]
    return np.mean(lms, axis=0) if lms else None


def _own_groups(photos: Sequence[_Photo]) -> list[list[int]]:
    """For each photo, the indices of the photos of the same person (itself included)."""
    return [[j for j, q in enumerate(photos) if q.person == p.person] for p in photos]


def _codes_for(eraser, photos: Sequence[_Photo], codes: Optional[Mapping[str, torch.Tensor]], seed: int
               ) -> torch.Tensor:
    """G_s codes [N, num_ws, w_dim]: from ``codes`` where given (by absolute path), else the eraser's inverter."""
    cache = {os.path.abspath(str(k)): v for k, v in (codes or {}).items()}
    out: list[Optional[torch.Tensor]] = [cache.get(p.key) if p.key else None for p in photos]
    todo = [i for i, w in enumerate(out) if w is None]
    if todo:
        fresh = _invert(eraser.inverter, eraser, [photos[i] for i in todo], seed)
        for i, w in zip(todo, fresh):
            out[i] = w
    ws = torch.stack([torch.as_tensor(w).float().cpu() for w in out])
    from guide_unlearn.engine import check_latents

    return check_latents(ws, eraser.generator).cpu()


def _id_renders(eraser, patch, ws: torch.Tensor, views: Optional[torch.Tensor], photos) -> dict[str, Any]:
    """G_s and G_u renderings of each code: [N, V, 3, H, W] over the views (camera models) or [N, 1, ...]."""
    def render_all():
        if views is None:
            return _render(eraser, ws, _cams(photos)).unsqueeze(1)
        v = views.shape[0]
        flat = ws.repeat_interleave(v, 0)
        cams = views.cpu().repeat(ws.shape[0], 1)
        imgs = _render(eraser, flat, cams)
        return imgs.view(ws.shape[0], v, *imgs.shape[1:])

    source = render_all()
    with _patched(eraser, patch):
        patched = render_all()
    return {"source_images": source, "patched_images": patched}


def _id_metric(judge: _Judge, rows, landmarks: Optional[np.ndarray], views) -> tuple[float, np.ndarray]:
    s, p = rows["source_images"], rows["patched_images"]
    n, v = s.shape[:2]
    lms = None if (landmarks is None or views is not None) else np.repeat(landmarks, v, axis=0)
    ds = judge.describe(s.flatten(0, 1), lms).reshape(n, v, -1)
    dp = judge.describe(p.flatten(0, 1), lms).reshape(n, v, -1)
    return M.id_cosine(ds, dp)


def _recognition(eraser, patch, judge: _Judge, ws, photos, refs, groups, images: bool = True) -> dict[str, Any]:
    """Render ``ws`` by G_s and G_u with each photo's camera; best score / cosine against ``refs`` (per
    ``groups``), recognised flags (no face -> not recognised)."""
    out = {}
    cams = _cams(photos)
    lms = _landmarks(photos)
    for when in ("before", "after"):
        ctx = _patched(eraser, patch) if when == "after" else contextlib.nullcontext()
        with ctx:
            imgs = _render(eraser, ws, cams)
        desc = judge.describe(imgs, lms)
        face = judge.faces(imgs) if images else np.ones(len(photos), bool)
        desc[~face] = np.nan
        score, cos = judge.best(desc, refs, groups)
        out[when] = {"score": score, "cosine": cos, "recognised": judge.recognised(score), "face": face,
                     "images": imgs if images else None}
    return out


def _rows(photos: Sequence[_Photo], res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for i, p in enumerate(photos):
        row = {"photo": p.label}
        for when in ("before", "after"):
            r = res[when]
            row.update({f"score_{when}": r["score"][i], f"cosine_{when}": r["cosine"][i],
                        f"recognised_{when}": bool(r["recognised"][i]), f"face_{when}": bool(r["face"][i])})
        rows.append(row)
    return rows


def _frechet(eraser, patch, judge: _Judge, n: int, seed: int, real: _PhotoSet, landmarks, clip=None
             ) -> dict[str, Any]:
    """FD between the judge's features of n G_s and G_u samples (the same z and cameras, psi 1), and against
    ``real`` photos' crops when given; with a CLIP embedder ``clip``, also CMMD on the same images."""
    gen = eraser.generator
    g = torch.Generator(device=eraser.device).manual_seed(seed)
    z = torch.randn(n, gen.z_dim, generator=g, device=eraser.device)
    cams = gen.sample_cameras(n, g) if gen.c_dim else None
    with torch.no_grad():
        ws = gen.mapping(z, None, truncation_psi=1.0)
    lms = None if landmarks is None or gen.c_dim else np.broadcast_to(landmarks, (n, 5, 2))

    def feats(chunk: int = 256):  # rendered and described a chunk at a time: n images need not fit in memory
        rows, embs = [], []
        for i in range(0, n, chunk):
            imgs = _render(eraser, ws[i:i + chunk], None if cams is None else cams[i:i + chunk])
            rows.append(judge.frechet_features(imgs, None if lms is None else lms[i:i + chunk]))
            if clip is not None:
                embs.append(clip.from_generator(imgs))
        return np.concatenate(rows), (np.concatenate(embs) if embs else None)

    fs, cs = feats()
    with _patched(eraser, patch):
        fu, cu = feats()
    keep = np.isfinite(fs).all(1) & np.isfinite(fu).all(1)
    out: dict[str, Any] = {"pre": M.frechet_distance_of(fs[keep], fu[keep]) if keep.sum() >= 2 else float("nan"),
                           "real_delta": float("nan"), "why_real": "no real-image folder given (real=)"}
    if len(real) >= 2:
        fr = judge.frechet_features(real.crops, _landmarks(real.photos))
        fr = fr[np.isfinite(fr).all(1)]
        if len(fr) >= 2:
            out["source_real"] = M.frechet_distance_of(fr, fs[keep])
            out["patched_real"] = M.frechet_distance_of(fr, fu[keep])
            out["real_delta"] = out["patched_real"] - out["source_real"]
    elif real.photos or real.skipped:
        out["why_real"] = "fewer than 2 usable real images"
    if clip is not None:
        out["cmmd_pre"] = M.mmd_rbf(cs, cu)
        if len(real) >= 2:
            cr = clip.from_generator(real.crops)
            out["cmmd_source_real"], out["cmmd_patched_real"] = M.mmd_rbf(cr, cs), M.mmd_rbf(cr, cu)
            out["cmmd_real_delta"] = out["cmmd_patched_real"] - out["cmmd_source_real"]
    return out
