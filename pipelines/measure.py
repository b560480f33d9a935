"""Measurements an eraser takes after a run: renders before/after, pixel MSEs the loop does not optimise, how close
the model came to the photos, and how alike several people's targets are. They build the :class:`ErasureResult`
(a core dataclass, :mod:`guide_unlearn.engine`) from an :class:`~guide_unlearn.engine.EraseRun`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from guide_unlearn import patching
from guide_unlearn.config import EraseConfig
from guide_unlearn.engine import EraseRun, ErasureResult, judge_erasure, resolve_distances
from guide_unlearn.sampling import random_codes

if TYPE_CHECKING:
    from guide_unlearn.pipelines.eraser import IdentityEraser

MEASURE_SEED = 12345  # the random codes every measurement uses
MEASURE_SAMPLES = 16


@torch.no_grad()
def erasure_result(eraser: "IdentityEraser", run: EraseRun, w_u: torch.Tensor, measure: bool = True,
                   photos: Optional[torch.Tensor] = None, photo_cams: Optional[torch.Tensor] = None,
                   config: Optional[EraseConfig] = None) -> ErasureResult:
    """Render and measure a finished run -> :class:`ErasureResult` (the patch is applied only while rendering).

    w_u [K, num_ws, w_dim] the erased codes; photos [K, 3, H', W'] in [-1, 1] (or None) the photos they came
    from and photo_cams [K, c_dim] their cameras; ``measure`` adds the pixel metrics on MEASURE_SAMPLES random
    codes; ``config`` (the run's) fills the verdict's advice.
    """
    # Everything the source generator renders first, then the patch is applied once for the patched renders.
    w_t = run.w_target
    before = eraser.synthesize(w_u, camera=photo_cams)
    target = eraser.synthesize(w_t, camera=photo_cams)
    cams = eraser.generator.evaluation_cameras(11)
    orbit = lambda: eraser.synthesize(w_u[:1].expand(cams.shape[0], -1, -1), camera=cams.to(eraser.device))
    views_before = orbit() if cams is not None else None
    w_r = random_codes(eraser.generator, MEASURE_SAMPLES, seed=MEASURE_SEED) if measure else None
    src_r = eraser.synthesize(w_r) if measure else None
    with patching.applied_temporarily(eraser.generator, run.patch):
        after = eraser.synthesize(w_u, camera=photo_cams)
        views_after = orbit() if cams is not None else None
        after_r = eraser.synthesize(w_r) if measure else None
    metrics = pixel_metrics(before, after, target, src_r, after_r) if measure else {}
    if photos is not None:
        metrics.update(photo_fit(photos, before, after))
    result = ErasureResult(patch=run.patch, w_source=w_u, w_target=w_t, history=run.history, images_before=before,
                           images_after=after, target_images=target, views_before=views_before,
                           views_after=views_after, metrics=metrics, seconds=run.seconds,
                           photos=None if photos is None else photos.detach().cpu())
    result.verdict = judge_erasure(metrics, getattr(config, "iterations", None), getattr(config, "lr", None))
    return result


def pixel_metrics(src_u, after_u, src_t, src_r, after_r) -> dict[str, float]:
    """Pixel-MSE measurements the loop does not optimise directly (images [N, 3, H, W] in [-1, 1]).

    erased_mse:    MSE(G_u(w_u), G_s(w_t)); before_mse: MSE(G_s(w_u), G_s(w_t)) — erasure when erased < before.
    preserved_mse: mean MSE(G_u(w_r), G_s(w_r)) on random mapped codes; random_pair_mse: mean MSE between
                   different random samples of G_s — preservation when preserved << random_pair.
    """
    mse = lambda a, b: float((a - b).square().mean())
    n = src_r.shape[0]
    pairs = [mse(src_r[i], src_r[j]) for i in range(n) for j in range(i + 1, n)]
    return {"erased_mse": mse(after_u, src_t), "before_mse": mse(src_u, src_t),
            "preserved_mse": mse(after_r, src_r), "random_pair_mse": sum(pairs) / max(1, len(pairs))}


def photo_fit(photos: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    """How close the model's rendering of the photo was, before and after the patch (mean |pixel| difference on
    [-1, 1], at the rendering's size; photos [K, 3, H', W'], renders [K, 3, H, W]). A person the model never
    knew starts far (large ``photo_l1_before``); an erased one moves away (``photo_l1_after`` > before)."""
    p = photos.to(before)
    if p.shape[-2:] != before.shape[-2:]:
        p = torch.nn.functional.interpolate(p, size=before.shape[-2:], mode="bilinear", align_corners=False,
                                            antialias=True)
    return {"photo_l1_before": float((before - p).abs().mean()), "photo_l1_after": float((after - p).abs().mean())}


@torch.no_grad()
def people_target_similarity(eraser: "IdentityEraser", w_u: torch.Tensor, w_t: torch.Tensor,
                             person: torch.Tensor, config: EraseConfig) -> dict[str, float]:
    """Pairwise likeness of P people's targets w_t [K, num_ws, w_dim] (person [K] long, 0..P-1): latent cosines
    and, with an identity model, identity-embedding cosines of G_s(first target of each person); the same for
    plain per-person UFO targets under ``ufo_*`` keys, for comparison."""
    from guide_unlearn.targets import target_similarity, ufo_target

    generator = eraser.generator
    d, _ = resolve_distances(config, generator)
    plain = ufo_target(w_u, generator.w_avg, config.target, d)
    out: dict[str, float] = {}
    for prefix, targets in (("", w_t), ("ufo_", plain)):
        out.update({prefix + k: v for k, v in target_similarity(targets, person, generator.w_avg).items()})
        if eraser.identity_model is not None and int(person.max()) > 0:
            first = torch.stack([targets[(person == p).nonzero()[0, 0]] for p in range(int(person.max()) + 1)])
            emb = torch.nn.functional.normalize(eraser.identity_model.embed(eraser.synthesize(first)).float(), dim=1)
            cos = emb @ emb.T
            pairs = cos[torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)]
            out[prefix + "identity_cosine_max"] = float(pairs.max())
            out[prefix + "identity_cosine_mean"] = float(pairs.mean())
    return out
