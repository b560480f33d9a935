"""Family ``held_out``: the person's OTHER photos (never shown to the erase), inverted through G_s and rendered
by G_s and G_u — is the whole identity erased, or only the request's code? Also the identity-score histograms of
the person's and the other people's codes, and which other people G_s recognises (``shared
["others_recognised_before"]``, the base of ``others_kept``)."""

from __future__ import annotations

import torch

from guide_unlearn import metrics as M

from .families import AuditContext, MetricFamily, register_metric_family
from .photos import own_groups
from .recognition import before_and_after, nanmean
from .stages import plural


@register_metric_family
class HeldOutFamily(MetricFamily):
    """``held_out_*``: the person's held-out photos recognised through G_s and G_u; the score histograms."""

    name = "held_out"
    title = "held-out photos"
    keys = ("held_out_recognised_before", "held_out_recognised_after", "held_out_similarity_before",
            "held_out_similarity_after")
    meanings = {
        "held_out_recognised_before": "held-out photos whose G_s rendering is recognised as the person",
        "held_out_recognised_after": "the same rendered by G_u (lower = the whole identity is erased)",
        "held_out_similarity_before": "mean best cosine of those renderings to the person's photos, G_s",
        "held_out_similarity_after": "the same, G_u"}
    figure_captions = {"held_out.png": "Held-out photos", "histograms.png": "Identity scores"}

    def work(self, ctx: AuditContext) -> str:
        """What the stage works on, for the audit's progress."""
        return plural(len(ctx.held_out), "photo")

    def run(self, ctx: AuditContext) -> None:
        with ctx.timed("held_out"):
            self._held_out(ctx)
            self._histograms(ctx)

    def _held_out(self, ctx: AuditContext) -> None:
        if ctx.codes["held_out"] is None:
            ctx.mark_not_run(self.keys, "no held-out photos given (or none had a face)")
            return
        held, person = ctx.held_out.photos, ctx.person
        res = before_and_after(ctx, ctx.codes["held_out"], held, ctx.person_descriptors,
                               [list(range(len(person)))] * len(held))
        for when, m in (("before", res.before), ("after", res.after)):
            ctx.metrics[f"held_out_recognised_{when}"] = M.fraction(m.recognised)
            ctx.metrics[f"held_out_similarity_{when}"] = nanmean(m.cosine)
        ctx.details["held_out"] = res.rows(held)
        ctx.gallery.update(held_photos=ctx.held_out.crops, held_before=res.images_before,
                           held_after=res.images_after, held_scores=(res.before.score, res.after.score))

    def _histograms(self, ctx: AuditContext) -> None:
        person = ctx.person
        ws_person = torch.cat([ctx.codes["request"]] + ([ctx.codes["held_out"]] if ctx.codes["held_out"] is not None
                                                        else []))
        hist = before_and_after(ctx, ws_person, person, ctx.person_descriptors,
                                [list(range(len(person)))] * len(person), images=False)
        ctx.gallery["hist_person"] = (hist.before.score, hist.after.score)
        if ctx.codes["others"] is None:
            return
        others = ctx.others.photos
        res = before_and_after(ctx, ctx.codes["others"], others, ctx.others.descriptors, own_groups(others),
                               images=False)
        ctx.gallery["hist_others"] = (res.before.score, res.after.score)
        ctx.shared["others_recognised_before"] = res.before.recognised
        ctx.details["others"] = {"n": len(others),
                                 "recognised_before_through_source": int(res.before.recognised.sum()),
                                 "recognised_after_same_codes": int(res.after.recognised.sum())}

    def figures(self, report) -> dict[str, bytes]:
        from .figures import fmt, grid, score_histograms, score_name

        g, figs = report.gallery, {}
        if "held_photos" in g:
            b, a = g["held_scores"]
            name = score_name(report)
            titles = [[""] * len(b), [f"{name} {fmt(x)}" for x in b], [f"{name} {fmt(x)}" for x in a]]
            figs["held_out.png"] = grid([("held-out photo", g["held_photos"]), ("G_s", g["held_before"]),
                                         ("G_u", g["held_after"])], titles,
                                        suptitle="held-out photos (never shown to the erase) and their renderings; "
                                                 "score = best match to the person's photos")
        if "hist_person" in g:
            figs["histograms.png"] = score_histograms(report)
        return figs
