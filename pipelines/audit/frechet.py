"""Family ``frechet``: is the rest of the model kept? The Fréchet distance between the judge's features of G_s and
G_u samples (the same seeded codes and cameras, psi 1; ``fd_pre`` / ``fid_pre`` by the protocol's feature space),
and against real photos when given (``*_real_delta``); with a CLIP model, CMMD on the same images (details)."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from guide_unlearn import metrics as M
from guide_unlearn import patching
from guide_unlearn.sampling import RandomDraw, random_draw

from .families import AuditContext, MetricFamily, register_metric_family
from .photos import landmarks_of, mean_landmarks
from .rendering import render
from .stages import plural

CHUNK = 256  # samples rendered and described at a time: n images need not fit in memory


@register_metric_family
class Frechet(MetricFamily):
    """``fd_*`` / ``fid_*``: Fréchet distances of G_s and G_u samples (and CMMD in the details)."""

    name = "frechet"
    title = "Fréchet distance"
    keys = ("fd_pre", "fd_real_delta", "fid_pre", "fid_real_delta")
    meanings = {"fd_pre": "Fréchet distance G_s vs G_u samples in the protocol's feature space (not FID)",
                "fd_real_delta": "FD(real, G_u) - FD(real, G_s) in that feature space",
                "fid_pre": "Inception FID G_s vs G_u (paper-v1 only)",
                "fid_real_delta": "FID(real, G_u) - FID(real, G_s) (paper-v1 only)"}

    def work(self, ctx: AuditContext) -> str:
        """What the stage works on, for the audit's progress."""
        return f"{plural(ctx.settings.samples, 'sample')} per model, {plural(len(ctx.real), 'real image')}"

    def run(self, ctx: AuditContext) -> None:
        with ctx.timed("fd"):
            n, proto = ctx.settings.samples, ctx.protocol
            fd = self._distances(ctx)
            ran, other = ("fid", "fd") if ctx.judge.frechet_metric == "fid" else ("fd", "fid")
            ctx.metrics[f"{ran}_pre"] = fd["pre"]
            ctx.metrics[f"{ran}_real_delta"] = fd["real_delta"]
            if not math.isfinite(fd["real_delta"]):
                ctx.not_run[f"{ran}_real_delta"] = fd["why_real"]
            ctx.details["fd"] = {"feature_space": proto.feature_space, "samples": n, "seed": ctx.seed,
                                 "truncation_psi": 1.0, "real_images": len(ctx.real),
                                 "source_vs_real": fd.get("source_real"), "patched_vs_real": fd.get("patched_real")}
            ctx.mark_not_run([f"{other}_pre", f"{other}_real_delta"], (
                f"protocol {proto.name} runs no Inception-v3 network; FID is reported by paper-v1 only "
                f"(the offline figure is {proto.feature_space})") if other == "fid" else (
                f"protocol {proto.name} reports the Fréchet distance with the Inception-v3 FID network as fid_pre / "
                "fid_real_delta; the offline FD figures are offline-v1's"))
            clip = ctx.clip
            ctx.details["cmmd"] = {"not_run": "no CLIP model given (clip_path= / --clip PATH)"} if clip is None else {
                "cmmd_pre": fd["cmmd_pre"], "cmmd_real_delta": fd.get("cmmd_real_delta", float("nan")),
                "source_vs_real": fd.get("cmmd_source_real"), "patched_vs_real": fd.get("cmmd_patched_real"),
                "samples": n, "sigma": 10.0, "scale": 1000.0, "network": clip.name}

    def _distances(self, ctx: AuditContext) -> dict[str, Any]:
        """FD between the judge's features of n G_s and G_u samples, and against the real photos' crops when
        given; with a CLIP embedder, CMMD on the same images."""
        n, gen = ctx.settings.samples, ctx.eraser.generator
        draw = random_draw(gen, n, ctx.seed, truncation_psi=1.0)
        lms = mean_landmarks(ctx.person + ctx.others.photos)
        lms = None if lms is None or gen.c_dim else np.broadcast_to(lms, (n, 5, 2))
        fs, cs = _features(ctx, draw, lms)
        ctx.shared["frechet_source_features"] = fs  # G_s's side of a later comparison (a reference model's FD)
        with patching.applied_temporarily(gen, ctx.patch):
            fu, cu = _features(ctx, draw, lms)
        keep = np.isfinite(fs).all(1) & np.isfinite(fu).all(1)
        out: dict[str, Any] = {"pre": M.frechet_distance_of(fs[keep], fu[keep]) if keep.sum() >= 2 else float("nan"),
                               "real_delta": float("nan"), "why_real": "no real-image folder given (real=)"}
        real = ctx.real
        if len(real) >= 2:
            fr = ctx.judge.frechet_features(real.crops, landmarks_of(real.photos))
            fr = fr[np.isfinite(fr).all(1)]
            if len(fr) >= 2:
                out["source_real"] = M.frechet_distance_of(fr, fs[keep])
                out["patched_real"] = M.frechet_distance_of(fr, fu[keep])
                out["real_delta"] = out["patched_real"] - out["source_real"]
        elif real.photos or real.skipped:
            out["why_real"] = "fewer than 2 usable real images"
        if ctx.clip is not None:
            out["cmmd_pre"] = M.mmd_rbf(cs, cu)
            if len(real) >= 2:
                cr = ctx.clip.from_generator(real.crops)
                out["cmmd_source_real"], out["cmmd_patched_real"] = M.mmd_rbf(cr, cs), M.mmd_rbf(cr, cu)
                out["cmmd_real_delta"] = out["cmmd_patched_real"] - out["cmmd_source_real"]
        return out


def _features(ctx: AuditContext, draw: RandomDraw, landmarks: Optional[np.ndarray]
              ) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The judge's Fréchet features [n, F] (and CLIP embeddings [n, E], or None) of the drawn samples rendered by
    the generator as it is now, ``CHUNK`` at a time (landmarks [n, 5, 2] or None)."""
    rows, embs = [], []
    for i in range(0, draw.ws.shape[0], CHUNK):
        cams = None if draw.cameras is None else draw.cameras[i:i + CHUNK]
        imgs = render(ctx.eraser, draw.ws[i:i + CHUNK], cams)
        rows.append(ctx.judge.frechet_features(imgs, None if landmarks is None else landmarks[i:i + CHUNK]))
        if ctx.clip is not None:
            embs.append(ctx.clip.from_generator(imgs))
    return np.concatenate(rows), (np.concatenate(embs) if embs else None)
