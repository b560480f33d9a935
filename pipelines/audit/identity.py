"""Family ``id``: the paper's ID metric — the identity of G_s(w) against G_u(w) for the person's codes (``id``,
lower = erased) and for the other people's codes (``id_others``, higher = kept), over the evaluation views of a
camera model."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from guide_unlearn import metrics as M
from guide_unlearn import patching

from .families import AuditContext, MetricFamily, register_metric_family
from .judges import Judge
from .photos import Photo, landmarks_of
from .rendering import render_views
from .stages import plural


def source_and_patched(ctx: AuditContext, ws: torch.Tensor, photos: Sequence[Photo]) -> tuple[torch.Tensor,
                                                                                              torch.Tensor]:
    """G_s then G_u renderings [N, V, 3, H, W] of the codes ws [N, num_ws, w_dim] over the context's views."""
    source = render_views(ctx.eraser, ws, ctx.views, photos)
    with patching.applied_temporarily(ctx.eraser.generator, ctx.patch):
        patched = render_views(ctx.eraser, ws, ctx.views, photos)
    return source, patched


def id_metric(judge: Judge, source: torch.Tensor, patched: torch.Tensor, landmarks: Optional[np.ndarray],
              views: Optional[torch.Tensor]) -> tuple[float, np.ndarray]:
    """The mean identity cosine of source vs patched renderings [N, V, 3, H, W] -> (overall, per code [N])."""
    n, v = source.shape[:2]
    lms = None if (landmarks is None or views is not None) else np.repeat(landmarks, v, axis=0)
    ds = judge.describe(source.flatten(0, 1), lms).reshape(n, v, -1)
    dp = judge.describe(patched.flatten(0, 1), lms).reshape(n, v, -1)
    return M.id_cosine(ds, dp)


@register_metric_family
class IdentityFamily(MetricFamily):
    """``id`` and ``id_others``: identity of G_s(w) vs G_u(w) for the person's and the other people's codes."""

    name = "id"
    title = "the person's identity in renderings"
    keys = ("id", "id_others")
    meanings = {"id": "mean cosine, identity of G_s(w_u) vs G_u(w_u) over the views (lower = erased)",
                "id_others": "the same for the other people's codes (higher = kept)"}
    figure_captions = {"person.png": "The person"}

    def work(self, ctx: AuditContext) -> str:
        """What the stage works on, for the audit's progress."""
        views = "" if ctx.views is None else f", {plural(int(ctx.views.shape[0]), 'view')} each"
        others = plural(len(ctx.others), "photo of others", "photos of others")
        return f"{plural(len(ctx.request), 'request photo')}, {others}{views}"

    def run(self, ctx: AuditContext) -> None:
        with ctx.timed("id"):
            request = ctx.request.photos
            source, patched = source_and_patched(ctx, ctx.codes["request"], request)
            ctx.gallery.update(request_photo=ctx.request.crops[:1], person_source=source[0],
                               person_patched=patched[0])
            ctx.metrics["id"], per = id_metric(ctx.judge, source, patched, landmarks_of(request), ctx.views)
            ctx.details["id"] = {"per_photo": [{"photo": p.label, "id": v} for p, v in zip(request, per)],
                                 "views": 1 if ctx.views is None else int(ctx.views.shape[0])}
            if ctx.codes["others"] is None:
                ctx.mark_not_run(["id_others"], "no others photos given")
                return
            others = ctx.others.photos
            source, patched = source_and_patched(ctx, ctx.codes["others"], others)
            ctx.metrics["id_others"], per = id_metric(ctx.judge, source, patched, landmarks_of(others), ctx.views)
            ctx.details["id_others"] = [{"photo": p.label, "id": v} for p, v in zip(others, per)]

    def figures(self, report) -> dict[str, bytes]:
        from .figures import fmt, grid

        g = report.gallery
        if "person_source" not in g:
            return {}
        rows = [("request photo", g["request_photo"]), ("G_s", g["person_source"]), ("G_u", g["person_patched"])]
        return {"person.png": grid(rows, suptitle=f"the person: request photo, source and patched renderings "
                                                  f"(id = {fmt(report.metrics['id'])}, {report.protocol['identity']})")}
