"""Attack ``leakage``: does publishing the patch reveal whom it erases? The probe (:func:`.attacks.leakage_probe`)
uses only the base model and the patch — no photo — to find where G_u differs most from G_s; the judge then says
whether G_s renders the person there."""

from __future__ import annotations

import numpy as np

from guide_unlearn import metrics as M

from .attacks import leakage_probe
from .families import AuditAttack, AuditContext, register_attack
from .photos import mean_landmarks
from .stages import plural


@register_attack
class Leakage(AuditAttack):
    """``leakage_*``: whether the base model and the patch alone render the person."""

    name = "leakage"
    title = "patch-leakage probe"
    keys = ("leakage_recognised", "leakage_similarity")
    meanings = {"leakage_recognised": "probe renderings (base model + patch only) recognised as the person",
                "leakage_similarity": "highest cosine of a probe rendering to the person's photos"}
    not_requested = "the leakage probe was not requested"
    figure_captions = {"leakage.png": "Patch-leakage probe"}

    def work(self, ctx: AuditContext) -> str:
        """What the stage works on, for the audit's progress."""
        return f"{plural(ctx.settings.leakage_starts, 'start')} x {plural(ctx.settings.leakage_steps, 'step')}"

    def run(self, ctx: AuditContext) -> None:
        with ctx.timed("leakage"):
            s = ctx.settings
            probe = leakage_probe(ctx.eraser, ctx.patch, starts=s.leakage_starts, steps=s.leakage_steps,
                                  seed=ctx.seed)
            images = probe["source_images"]
            lms = mean_landmarks(ctx.person + ctx.others.photos)
            lms = None if lms is None or ctx.eraser.generator.c_dim else np.broadcast_to(lms, (images.shape[0], 5, 2))
            m = ctx.judge.match(images, lms, ctx.person_descriptors)
            ctx.metrics["leakage_recognised"] = M.fraction(m.recognised)
            ctx.metrics["leakage_similarity"] = float(np.nanmax(m.cosine)) if np.isfinite(m.cosine).any() else float(
                "nan")
            ctx.details["leakage"] = {
                "starts": s.leakage_starts, "steps": s.leakage_steps, "psi": probe["psi"],
                "difference": probe["difference"].tolist(), "score": m.score.tolist(), "cosine": m.cosine.tolist(),
                "recognised": m.recognised.tolist(),
                "verdict": ("publishing this patch REVEALS whom it erases: the probe, using only the base model and "
                            "the patch, rendered the person") if m.recognised.any()
                else "the probe (base model + patch, no photo) found no rendering recognised as the person"}
            ctx.gallery["leakage"] = (probe["source_images"], probe["patched_images"])

    def figures(self, report) -> dict[str, bytes]:
        from .figures import grid

        if "leakage" not in report.gallery:
            return {}
        src, pat = report.gallery["leakage"]
        return {"leakage.png": grid([("G_s at probe", src), ("G_u at probe", pat)],
                                    suptitle="patch-leakage probe: where G_u differs most from G_s (no photo used)")}
