"""Attack ``reinvert``: an attacker who has the person's photos and the patched model inverts the photos THROUGH
G_u and renders them there. Two attackers (:mod:`.attacks`): the base model's default inverter loaded fresh, and
the from-scratch projector. Also ``others_kept``: the other people re-inverted through G_u with the default
inverter are still recognised as themselves (the patch keeps them)."""

from __future__ import annotations

import numpy as np

from guide_unlearn import metrics as M
from guide_unlearn import patching

from .attacks import DefaultInverterAttack, InversionAttack, ScratchProjectorAttack
from .families import AuditAttack, AuditContext, register_attack
from .photos import cameras_of, landmarks_of, own_groups
from .recognition import before_and_after
from .rendering import render
from .stages import plural


@register_attack
class Reinversion(AuditAttack):
    """``reinversion_*`` and ``others_kept``: the person's photos re-inverted through G_s and G_u."""

    name = "reinvert"
    title = "re-inversion attacks"
    keys = ("reinversion_default_recognised_before", "reinversion_default_recognised_after",
            "reinversion_scratch_recognised_before", "reinversion_scratch_recognised_after", "others_kept")
    meanings = {
        "reinversion_default_recognised_before": "attack: photos inverted through G_s by the fresh default inverter",
        "reinversion_default_recognised_after": "attack: the same through G_u (lower = the attack fails)",
        "reinversion_scratch_recognised_before": "attack: from-scratch optimisation projector through G_s",
        "reinversion_scratch_recognised_after": "attack: the same through G_u",
        "others_kept": "other people re-inverted through G_u and still recognised as themselves"}
    figure_captions = {"attacks.png": "Attacks"}

    def work(self, ctx: AuditContext) -> str:
        """What the stage works on, for the audit's progress."""
        others = plural(len(ctx.others), "photo of others", "photos of others")
        return (f"{plural(len(ctx.person), 'photo')} through the default inverter and a "
                f"{ctx.settings.projector_steps}-step projector, {others}")

    def run(self, ctx: AuditContext) -> None:
        with ctx.timed("reinversion"):
            default = DefaultInverterAttack(ctx.eraser)
            default.progress = ctx.progress
            scratch = ScratchProjectorAttack(ctx.eraser, steps=ctx.settings.projector_steps, progress=ctx.progress)
            ctx.details["reinversion"] = {"inverters": {"default": default.record(), "scratch": scratch.record()}}
            for attacker in (default, scratch):
                self._attack(ctx, attacker)
        with ctx.timed("others_kept"):
            self._others_kept(ctx, default)

    def _attack(self, ctx: AuditContext, attacker: InversionAttack) -> None:
        person, tag = ctx.person, attacker.name
        res = before_and_after(ctx, lambda: attacker.invert_photos(person, ctx.seed), person,
                               ctx.person_descriptors, [list(range(len(person)))] * len(person))
        ctx.metrics[f"reinversion_{tag}_recognised_before"] = M.fraction(res.before.recognised)
        ctx.metrics[f"reinversion_{tag}_recognised_after"] = M.fraction(res.after.recognised)
        ctx.details["reinversion"][tag] = res.rows(person)
        ctx.gallery[f"attack_{tag}"] = (res.images_before, res.images_after)

    def _others_kept(self, ctx: AuditContext, default: InversionAttack) -> None:
        others = ctx.others.photos
        if not others:
            ctx.mark_not_run(["others_kept"], "no others photos given")
            return
        with patching.applied_temporarily(ctx.eraser.generator, ctx.patch):
            imgs = render(ctx.eraser, default.invert_photos(others, ctx.seed), cameras_of(others))
        m = ctx.judge.match(imgs, landmarks_of(others), ctx.others.descriptors, own_groups(others))
        base = ctx.shared.get("others_recognised_before")
        base = np.ones(len(others), bool) if base is None else base
        ctx.metrics["others_kept"] = M.fraction(m.recognised[base])
        ctx.details["others_kept"] = {
            "recognised_before": int(base.sum()), "kept": int(m.recognised[base].sum()),
            "rows": [{"photo": p.label, "before": bool(b), "after_reinverted": bool(k), "score_after": s}
                     for p, b, k, s in zip(others, base, m.recognised, m.score)]}

    def figures(self, report) -> dict[str, bytes]:
        from .figures import grid

        rows = []
        for tag, what in (("default", "default inverter"), ("scratch", "scratch projector")):
            if f"attack_{tag}" in report.gallery:
                before, after = report.gallery[f"attack_{tag}"]
                rows += [(f"{what}\nthrough G_s", before), (f"{what}\nthrough G_u", after)]
        return {"attacks.png": grid(rows, suptitle="re-inversion attacks on the person's photos")} if rows else {}
