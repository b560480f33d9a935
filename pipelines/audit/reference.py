"""Family ``reference`` (runs with ``reference=``): the audit's figures through a comparison model of the same
family — a model retrained without the person (an "oracle", e.g. ``demo-faces-oracle-8``) or any other — beside
the base's and the patched model's, with the difference patched - reference.

Through the reference, each figure is measured as it is for the base (:mod:`.compared`): the held-out photos and
the other people through the reference's own inverter and rendered there; the person's photos re-inverted by
the reference's freshly loaded default inverter and by the from-scratch projector; the Fréchet distance between
the base's samples and the reference's (the same seeded draw). ``id``, ``id_others`` and the leakage probe
compare G_s and G_u at the same code or read the patch: they have no reference counterpart.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from guide_unlearn import metrics as M
from guide_unlearn.sampling import random_draw

from .attacks import DefaultInverterAttack, ScratchProjectorAttack
from .compared import (AuditedModel, add_row, is_stand_in, judged, load_reference, own_codes, reference_of,
                       reference_record)
from .families import AuditContext, MetricFamily, register_metric_family
from .frechet import CHUNK
from .photos import mean_landmarks, own_groups
from .rendering import render
from .stages import plural

NOT_COMPARABLE = {
    "id": "compares G_s and G_u at the same code; a retrained model has other codes",
    "id_others": "compares G_s and G_u at the same code; a retrained model has other codes",
    "leakage_recognised": "reads the patch; a reference model has none",
}


@register_metric_family
class ReferenceFamily(MetricFamily):
    """``reference_*`` and ``*_minus_reference``: the figures through the reference model."""

    name = "reference"
    title = "the reference model"
    keys = ("reference_held_out_recognised", "held_out_recognised_minus_reference",
            "reference_reinversion_default_recognised", "reinversion_default_recognised_minus_reference",
            "reference_reinversion_scratch_recognised", "reinversion_scratch_recognised_minus_reference",
            "reference_others_kept", "others_kept_minus_reference",
            "reference_fd_pre", "fd_pre_minus_reference", "reference_fid_pre", "fid_pre_minus_reference")
    meanings = {
        "reference_held_out_recognised": "held-out photos inverted through the reference (its own inverter) and "
                                         "recognised there",
        "held_out_recognised_minus_reference": "held_out_recognised_after - reference (<= 0.10: as erased as a model "
                                               "that never learnt the person)",
        "reference_reinversion_default_recognised": "attack: the person's photos re-inverted through the reference by "
                                                    "its fresh default inverter",
        "reinversion_default_recognised_minus_reference": "reinversion_default_recognised_after - reference",
        "reference_reinversion_scratch_recognised": "attack: the from-scratch projector through the reference",
        "reinversion_scratch_recognised_minus_reference": "reinversion_scratch_recognised_after - reference",
        "reference_others_kept": "of the others recognised through G_s, those recognised through the reference "
                                 "(its own inverter)",
        "others_kept_minus_reference": "others_kept - reference_others_kept",
        "reference_fd_pre": "Fréchet distance G_s vs reference samples, the protocol's offline feature space",
        "fd_pre_minus_reference": "fd_pre - reference_fd_pre (< 0: the patch moves the samples less than "
                                  "retraining does)",
        "reference_fid_pre": "Inception FID G_s vs reference samples (paper-v1 only)",
        "fid_pre_minus_reference": "fid_pre - reference_fid_pre (paper-v1 only)"}
    options = {"reference": "a comparison model of the same family and resolution: a registry name, a model folder "
                            "or an IdentityEraser (a model retrained without the person: e.g. demo-faces-oracle-8)"}
    figure_captions = {"reference.png": "Through the reference"}

    def runs(self, attacks, options) -> bool:
        return options.get("reference") is not None

    def prepare(self, eraser, options: dict[str, Any]) -> None:
        options["reference"] = load_reference(options["reference"], eraser)

    def work(self, ctx: AuditContext) -> str:
        """What the stage works on, for the audit's progress."""
        return (f"{plural(len(ctx.held_out), 'held-out photo')}, {plural(len(ctx.person), 'photo')} re-inverted, "
                f"{plural(ctx.settings.samples, 'sample')}")

    def run(self, ctx: AuditContext) -> None:
        ref = AuditedModel("reference", reference_of(ctx))
        ctx.networks["reference"] = reference_record(ref.eraser)
        ctx.details["reference"] = {"name": ref.eraser.name, "stand_in": is_stand_in(ref.eraser, ctx.eraser),
                                    "not_comparable": NOT_COMPARABLE}
        with ctx.timed("reference"):
            self._held_out(ctx, ref)
            self._reinversion(ctx, ref)
            self._others(ctx, ref)
        with ctx.timed("reference_fd"):
            self._frechet(ctx, ref)

    def _held_out(self, ctx: AuditContext, ref: AuditedModel) -> None:
        keys = ["reference_held_out_recognised", "held_out_recognised_minus_reference"]
        if not len(ctx.held_out):
            ctx.mark_not_run(keys, "no held-out photos given (or none had a face)")
            return
        held, person = ctx.held_out.photos, ctx.person
        codes = ctx.shared["reference_held_out_codes"] = own_codes(ctx, ref, held)  # the relearn attack's too
        m, imgs = judged(ctx, ref, codes, held, ctx.person_descriptors, [list(range(len(person)))] * len(held))
        value = M.fraction(m.recognised)
        self._compare(ctx, "held_out_recognised", ctx.metrics["held_out_recognised_before"],
                      ctx.metrics["held_out_recognised_after"], value, "held-out photos recognised (own codes)",
                      "worse erasure")
        ctx.details["reference"]["held_out"] = [{"photo": p.label, "score": s, "recognised": bool(r)}
                                                for p, s, r in zip(held, m.score, m.recognised)]
        ctx.gallery["reference_held_out"] = (ctx.held_out.crops, imgs, m.score)

    def _reinversion(self, ctx: AuditContext, ref: AuditedModel) -> None:
        tags = ("default", "scratch")
        if "reinvert" not in ctx.attacks:
            for tag in tags:
                ctx.mark_not_run([f"reference_reinversion_{tag}_recognised",
                                  f"reinversion_{tag}_recognised_minus_reference"], "the reinvert attack was not "
                                                                                     "requested")
            return
        person = ctx.person
        attackers = (DefaultInverterAttack(ref.eraser),
                     ScratchProjectorAttack(ref.eraser, steps=ctx.settings.projector_steps, progress=ctx.progress))
        ctx.details["reference"]["inverters"] = {a.name: a.record() for a in attackers}
        images = ctx.shared.setdefault("reconstructions", {})
        for attacker in attackers:
            attacker.progress = ctx.progress
            tag = attacker.name
            m, imgs = judged(ctx, ref, attacker.invert_photos(person, ctx.seed), person, ctx.person_descriptors,
                             [list(range(len(person)))] * len(person))
            images[("reference", tag)] = imgs
            ctx.shared.setdefault("reference_attackers", {})[tag] = attacker
            self._compare(ctx, f"reinversion_{tag}_recognised", ctx.metrics[f"reinversion_{tag}_recognised_before"],
                          ctx.metrics[f"reinversion_{tag}_recognised_after"], M.fraction(m.recognised),
                          f"attack: the person's photos re-inverted ({tag})", "worse erasure")
            ctx.details["reference"][f"reinversion_{tag}"] = [
                {"photo": p.label, "score": s, "recognised": bool(r)} for p, s, r in zip(person, m.score, m.recognised)]
            ctx.gallery[f"reference_attack_{tag}"] = imgs

    def _others(self, ctx: AuditContext, ref: AuditedModel) -> None:
        keys = ["reference_others_kept", "others_kept_minus_reference"]
        base = ctx.shared.get("others_recognised_before")
        if not len(ctx.others) or base is None or not math.isfinite(ctx.metrics.get("others_kept", float("nan"))):
            ctx.mark_not_run(keys, "others_kept was not measured (no others photos, or the reinvert attack was not "
                                   "requested)")
            return
        others = ctx.others.photos
        m, _ = judged(ctx, ref, own_codes(ctx, ref, others), others, ctx.others.descriptors, own_groups(others))
        kept = M.fraction(m.recognised[base])
        self._compare(ctx, "others_kept", 1.0 if base.any() else float("nan"), ctx.metrics["others_kept"], kept,
                      "others recognised through G_s still recognised through the model", "better preservation")
        ctx.details["reference"]["others"] = {"recognised_before": int(base.sum()),
                                              "kept": int(m.recognised[base].sum())}

    def _frechet(self, ctx: AuditContext, ref: AuditedModel) -> None:
        ran, other = ("fid", "fd") if ctx.judge.frechet_metric == "fid" else ("fd", "fid")
        ctx.mark_not_run([f"reference_{other}_pre", f"{other}_pre_minus_reference"],
                         f"protocol {ctx.protocol.name} reports the Fréchet distance as {ran}_*")
        fs = ctx.shared.get("frechet_source_features")
        if fs is None:  # pragma: no cover - the frechet family always runs before this one
            ctx.mark_not_run([f"reference_{ran}_pre", f"{ran}_pre_minus_reference"], "no G_s features to compare")
            return
        fr = reference_features(ctx, ref.eraser, fs.shape[0])
        keep = np.isfinite(fs).all(1) & np.isfinite(fr).all(1)
        value = M.frechet_distance_of(fs[keep], fr[keep]) if keep.sum() >= 2 else float("nan")
        self._compare(ctx, f"{ran}_pre", 0.0, ctx.metrics[f"{ran}_pre"], value,
                      f"Fréchet distance of the model's samples from G_s's ({ctx.protocol.feature_space})",
                      "more change")

    @staticmethod
    def _compare(ctx: AuditContext, figure: str, before: float, after: float, reference: float, meaning: str,
                 higher_is: str) -> None:
        """Write ``reference_<figure>`` and ``<figure>_minus_reference`` and the comparison row."""
        row = add_row(ctx, figure, {"before": before, "after": after, "reference": reference}, meaning, higher_is)
        ctx.metrics[f"reference_{figure}"] = row["reference"]
        ctx.metrics[f"{figure}_minus_reference"] = row["after_minus_reference"]

    def figures(self, report) -> dict[str, bytes]:
        from .figures import fmt, grid, score_name

        g, rows, titles = report.gallery, [], []
        name = score_name(report)
        if "reference_held_out" in g:
            crops, imgs, scores = g["reference_held_out"]
            rows += [("held-out photo", crops), ("reference,\nown inverter", imgs)]
            titles += [[""] * len(scores), [f"{name} {fmt(s)}" for s in scores]]
        for tag, what in (("default", "default inverter"), ("scratch", "scratch projector")):
            if f"reference_attack_{tag}" in g:
                rows.append((f"{what}\nthrough reference", g[f"reference_attack_{tag}"]))
                titles.append([""] * int(g[f"reference_attack_{tag}"].shape[0]))
        if not rows:
            return {}
        return {"reference.png": grid(rows, titles, suptitle=f"the person through the reference model "
                                                             f"({report.networks.get('reference', {}).get('name')})")}


def reference_features(ctx: AuditContext, reference, n: int) -> np.ndarray:
    """The judge's Fréchet features [n, F] of ``n`` samples of the reference drawn with the audit's seed (psi 1),
    cut at the same landmarks as the Fréchet family's (the mean landmarks of the audited photos)."""
    gen = reference.generator
    draw = random_draw(gen, n, ctx.seed, truncation_psi=1.0)
    lms = mean_landmarks(ctx.person + ctx.others.photos)
    lms = None if lms is None or gen.c_dim else np.broadcast_to(lms, (n, 5, 2))
    rows = []
    for i in range(0, n, CHUNK):
        cams = None if draw.cameras is None else draw.cameras[i:i + CHUNK]
        with torch.no_grad():
            imgs = render(reference, draw.ws[i:i + CHUNK], cams)
        rows.append(ctx.judge.frechet_features(imgs, None if lms is None else lms[i:i + CHUNK]))
    return np.concatenate(rows)
