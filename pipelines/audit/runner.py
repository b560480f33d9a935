"""``audit()``: prepare the photos and their G_s codes once, run every metric family on them, assemble the report."""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import time
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from guide_unlearn import patching
from guide_unlearn.errors import ConfigError, NoFaceError
from guide_unlearn.patch import ForgetPatch

from .attacks import inverter_record
from .families import METRIC_FAMILIES, METRIC_KEYS, AuditContext, AuditSettings, MetricFamily, registered_attacks
from .judges import make_judge
from .photos import PhotoItem, PhotoSet, PhotoSpec, photo_items, prepare_photos, sample_people
from .protocols import Protocol, get_protocol
from .rendering import source_codes
from .report import AuditReport
from .stages import StageProgress, plural

logger = logging.getLogger(__name__)

ATTACKS = ("reinvert", "leakage")  # the attacks an audit runs by default
DEFAULT_MAX_OTHERS = 48  # others people audited by default (a seeded sample; see audit(max_others=))
PREPARATION = ("photos", "inverting the photos through G_s")  # the stages before the metric families
ROLE_TITLES = {"request": "request", "held_out": "held-out", "others": "others", "real": "real"}


def audit(eraser, patch: Union[ForgetPatch, str, os.PathLike], photos: PhotoSpec, held_out: PhotoSpec = None,
          others: PhotoSpec = None, real: PhotoSpec = None, protocol: Union[str, Protocol] = "offline-v1",
          attacks: Sequence[str] = ATTACKS, seed: int = 0, *, samples: Optional[int] = None,
          projector_steps: int = 400, leakage_starts: int = 16, leakage_steps: int = 100,
          codes: Optional[Mapping[str, torch.Tensor]] = None, max_others: Optional[int] = DEFAULT_MAX_OTHERS,
          progress: bool = True, clip_path: Union[None, str, os.PathLike] = None, **options: Any) -> AuditReport:
    """Measure how well ``patch`` erased the person of ``photos`` from ``eraser``'s generator.

    eraser:   the IdentityEraser of the patch's base (its applied patches are G_s, and are as they were on return).
    patch:    a ForgetPatch or its folder (PatchMismatchError when made for another base).
    photos:   the deletion request (what ``erase`` was given); held_out: other photos of the SAME person;
              others: photos of other people (each photo its own person, unless grouped in sub-folders or passed
              as {person: [photos]}); real: real images for the fd_real_delta figure. Each a folder, a path, a
              PIL image or a list of them. Unreadable files and photos without a face are skipped and counted.
    protocol: "offline-v1" (dlib + FD-dlib), "paper-v1" (CurricularFace IR-101 + Inception FID; refused unless
              its weight files are present), "toy-v1" (tests), any registered protocol, or a ``Protocol``.
    attacks:  any of "reinvert" (re-inversion with the fresh default inverter and the from-scratch projector),
              "leakage" (the patch-leakage probe) and the registered attacks (``register_attack``).
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
    progress: progress on stderr: each stage named with its count ("audit 3/9: held-out photos (4 photos)") above
              an overall bar, and the inversions' bars (:class:`~.stages.StageProgress`); False: nothing.
    clip_path: optional LOCAL folder of a CLIP model (transformers, safetensors) for the extra CMMD figure
              (``details["cmmd"]["cmmd_pre"]``: CLIP-MMD between the same G_s / G_u samples; sigma 10, scale 1000).
    options:  keywords that registered metric families declare (``MetricFamily.options``); any other keyword is a
              ConfigError.
    -> AuditReport (metrics: ``METRIC_KEYS``, then the keys of the other registered families that ran).
    """
    t_start = time.perf_counter()
    proto = get_protocol(protocol)
    attacks = _checked_attacks(attacks)
    options = dict(options)
    families = _families(attacks, options)
    settings = _settings(proto, samples, projector_steps, leakage_starts, leakage_steps, max_others)
    # Every photo folder is listed through the reading gate before any work (a link out of a folder, a pipe, an
    # oversized file or a folder of too many files fails here, before the patch or a model is loaded).
    items = _photo_items((photos, held_out, others, real), settings.max_others, seed)
    for family in families:  # the families' own photo folders (strangers), before anything is loaded too
        for name in family.photo_options:
            if options.get(name) is not None and family.runs(attacks, options):
                photo_items(options[name], name)
    if not isinstance(patch, ForgetPatch):
        patch = ForgetPatch.from_pretrained(patch)
    patching.check(eraser.generator, patch, eraser.name)  # PatchMismatchError (another base), PatchStateError (applied)
    applied_before = [p.patch_id for p in eraser.applied_patches]
    running = [family for family in families if family.runs(attacks, options)]
    for family in running:  # a bad option (a reference of another family) fails before any work
        family.prepare(eraser, options)
    with StageProgress(len(PREPARATION) + len(running), enabled=progress) as stages:
        ctx = _context(eraser, patch, proto, settings, attacks, seed, progress, clip_path, options, items, codes,
                       stages)
        ctx.metrics = {k: float("nan") for k in _report_keys(families, attacks, options)}
        try:
            for family in families:
                if family in running:
                    with stages.stage(family.title or family.name, family.work(ctx)):
                        family.run(ctx)
                elif family.attack:
                    ctx.mark_not_run(family.keys, family.not_requested)
        finally:
            if [p.patch_id for p in eraser.applied_patches] != applied_before:  # pragma: no cover - defensive
                logger.error("the eraser's applied patches changed during the audit")
    return _report(ctx, t_start)


def _checked_attacks(attacks: Sequence[str]) -> tuple[str, ...]:
    attacks = tuple(attacks)
    known = registered_attacks()
    unknown = [a for a in attacks if a not in known]
    if unknown:
        raise ConfigError(f"unknown attacks {unknown}; choose from {list(known)}")
    return attacks


def _families(attacks: tuple[str, ...], options: Mapping[str, Any]) -> list[MetricFamily]:
    """Every registered family, in registration order; ConfigError for a keyword no family declared."""
    families = list(METRIC_FAMILIES.values())
    declared = {k for f in families for k in f.options}
    unknown = sorted(set(options) - declared)
    if unknown:
        raise ConfigError(f"audit() got unknown keywords {unknown}; registered metric families accept "
                          f"{sorted(declared) or 'none'}")
    return families


def _report_keys(families: Sequence[MetricFamily], attacks: tuple[str, ...], options: Mapping[str, Any]
                 ) -> list[str]:
    """METRIC_KEYS (always), then the keys of the other families that run."""
    runs = [f for f in families if f.runs(attacks, options)]
    return list(METRIC_KEYS) + [k for f in runs for k in f.keys if k not in METRIC_KEYS]


def _settings(proto: Protocol, samples: Optional[int], projector_steps: int, leakage_starts: int,
              leakage_steps: int, max_others: Optional[int]) -> AuditSettings:
    n_samples = proto.samples if samples is None else int(samples)
    if n_samples < 2 or projector_steps < 1 or leakage_starts < 1 or leakage_steps < 0:
        raise ConfigError("samples must be >= 2, projector_steps and leakage_starts >= 1, leakage_steps >= 0")
    if max_others is not None and max_others < 0:
        raise ConfigError(f"max_others must be >= 0 (0 = every person), got {max_others}")
    return AuditSettings(n_samples, projector_steps, leakage_starts, leakage_steps, max_others)


def _photo_items(specs: tuple[PhotoSpec, ...], max_others: Optional[int], seed: int
                 ) -> tuple[dict[str, list[PhotoItem]], dict[str, Any]]:
    """The (label, item, person) triples of every role (folders listed through the reading gate), the others
    sampled (:func:`sample_people`). -> ({role: items}, the others sample's record)."""
    photos, held_out, others, real = specs
    items = {"request": photo_items(photos, "request"), "held_out": photo_items(held_out, "held_out")}
    items["others"], sample_record = sample_people(photo_items(others, "others"), max_others, seed)
    items["real"] = photo_items(real, "real")
    return items, sample_record


def _prepared(items: Mapping[str, list[PhotoItem]], judge, eraser, stages: StageProgress
              ) -> tuple[dict[str, PhotoSet], list[dict[str, str]], float]:
    """Every role's photos loaded and described by the judge (a stage of the progress). -> ({role: PhotoSet},
    the skipped photos, seconds)."""
    t = time.perf_counter()
    skipped: list[dict[str, str]] = []
    counts = ", ".join(f"{len(v)} {ROLE_TITLES[role]}" for role, v in items.items() if v)
    sets: dict[str, PhotoSet] = {}
    with stages.stage(PREPARATION[0], f"{plural(sum(map(len, items.values())), 'file')}: {counts}"):
        for role, role_items in items.items():
            sets[role] = prepare_photos(role_items, role, judge, eraser, skipped)
            if role == "request" and not len(sets[role]):
                raise NoFaceError(f"none of the request photos has a usable face ({len(skipped)} skipped: "
                                  f"{'; '.join(s['photo'] + ': ' + s['reason'] for s in skipped[:3])}); pass the "
                                  "photo the patch was made from")
    return sets, skipped, time.perf_counter() - t


def _context(eraser, patch: ForgetPatch, proto: Protocol, settings: AuditSettings, attacks: tuple[str, ...],
             seed: int, progress: bool, clip_path, options: Mapping[str, Any],
             items: tuple[dict[str, list[PhotoItem]], dict[str, Any]], codes: Optional[Mapping[str, torch.Tensor]],
             stages: StageProgress) -> AuditContext:
    """The judge (and CLIP), the prepared photos of every role, their G_s codes and the evaluation views (the
    first two stages of the progress)."""
    judge = make_judge(proto, eraser)
    clip = None
    if clip_path is not None:  # loaded before the expensive parts, so a bad folder fails fast
        from guide_unlearn.adapters.perceptual.cmmd import load_clip_embedder

        clip = load_clip_embedder(clip_path, eraser.device)
    role_items, sample_record = items
    sets, skipped, seconds = _prepared(role_items, judge, eraser, stages)
    ctx = AuditContext(eraser, patch, proto, judge, settings, seed, attacks, progress, sets["request"],
                       sets["held_out"], sets["others"], sets["real"], skipped, codes={}, clip=clip,
                       options=dict(options), seconds={"photos": seconds})
    ctx.details = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "seed": seed,
                   "attacks": list(attacks), "skipped": skipped, "others_sample": sample_record}
    ctx.gallery = {"loss_history": patch.metadata.get("loss_history")}
    with stages.stage(PREPARATION[1], plural(len(ctx.request) + len(ctx.held_out) + len(ctx.others), "photo")):
        with ctx.timed("inversion"):
            ctx.codes = _source_codes(ctx, codes)
    ctx.views = eraser.generator.evaluation_cameras(proto.views) if eraser.generator.c_dim else None
    return ctx


def _source_codes(ctx: AuditContext, codes: Optional[Mapping[str, torch.Tensor]]) -> dict[str, Optional[torch.Tensor]]:
    """G_s codes of the request, held-out and others photos with the eraser's own inverter (what erase does),
    its progress bar set as the audit's for the time being."""
    inverter = ctx.eraser.inverter
    own_progress = getattr(inverter, "progress", None)
    if own_progress is not None:
        inverter.progress = ctx.progress
    try:
        return {role: source_codes(ctx.eraser, s.photos, codes, ctx.seed) if len(s) else None
                for role, s in (("request", ctx.request), ("held_out", ctx.held_out), ("others", ctx.others))}
    finally:
        if own_progress is not None:
            inverter.progress = own_progress


def _report(ctx: AuditContext, t_start: float) -> AuditReport:
    """Counts, reasons for every missing value, the networks and times -> the AuditReport."""
    eraser, patch, judge, proto = ctx.eraser, ctx.patch, ctx.judge, ctx.protocol
    for k, v in ctx.metrics.items():
        if not math.isfinite(v) and k not in ctx.not_run:
            ctx.not_run[k] = "no value could be computed (no face found in the renderings it needs)"
    ctx.details["not_run"] = ctx.not_run
    ctx.details["counts"] = {
        "request": len(ctx.request), "held_out": len(ctx.held_out), "others": len(ctx.others),
        "real": len(ctx.real), "skipped": len(ctx.skipped),
        "held_out_skipped": sum(1 for s in ctx.skipped if s["role"] == "held_out")}
    ctx.details["patch"] = {"patch_id": patch.patch_id, "kind": patch.kind,
                            "has_loss_history": bool(patch.metadata.get("loss_history"))}
    networks = judge.networks()
    networks["generator"] = {"name": eraser.name, "family": eraser.generator.family,
                             "base_fingerprint": patch.base_fingerprint}
    networks["inverter"] = inverter_record(eraser.inverter)
    if ctx.clip is not None:
        networks["cmmd"] = {"name": ctx.clip.name, "folder": str(ctx.clip.folder), "digest": ctx.clip.digest}
    networks["patch"] = {"patch_id": patch.patch_id, "erase_identity_model": patch.metadata.get("identity_model")}
    networks.update(ctx.networks)
    ctx.seconds["total"] = time.perf_counter() - t_start
    proto_rec = {"name": proto.name, "version": proto.version, "identity": judge.name,
                 "feature_space": proto.feature_space, "description": proto.description}
    return AuditReport(proto_rec, ctx.metrics, ctx.details, networks, judge.thresholds(), ctx.seconds, ctx.gallery)
