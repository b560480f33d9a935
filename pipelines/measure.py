"""Measurements taken after a run: renders before/after, pixel MSEs the loop does not optimise, how close the model
came to the photos, and how alike several people's targets are. They turn an
:class:`~guide_unlearn.outputs.EraseRun` into an :class:`~guide_unlearn.outputs.ErasureResult` (one person) or into
the per-person figures and verdicts of a :class:`~guide_unlearn.outputs.ManyErasureResult`."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from guide_unlearn import patching
from guide_unlearn.config import EraseConfig
from guide_unlearn.outputs import EraseRun, ErasureResult, Verdict, judge_erasure
from guide_unlearn.pipelines.photos import synthesize
from guide_unlearn.protocols import GeneratorAdapter, IdentityModel
from guide_unlearn.sampling import random_codes
from guide_unlearn.targets import resolve_distances, target_similarity, ufo_target

MEASURE_SEED = 12345  # the random codes every measurement uses
MEASURE_SAMPLES = 16


@torch.no_grad()
def erasure_result(generator: GeneratorAdapter, run: EraseRun, w_u: torch.Tensor, measure: bool = True,
                   photos: Optional[torch.Tensor] = None, photo_cams: Optional[torch.Tensor] = None,
                   config: Optional[EraseConfig] = None, identity: Optional[dict] = None) -> ErasureResult:
    """Render and measure a finished run -> :class:`ErasureResult` (the patch is applied only while rendering).

    w_u [K, num_ws, w_dim] the erased codes; photos [K, 3, H', W'] in [-1, 1] (or None) the photos they came
    from and photo_cams [K, c_dim] their cameras; ``measure`` adds the pixel metrics on MEASURE_SAMPLES random
    codes; ``config`` (the run's) fills the verdict's advice; ``identity`` is the identity check of the request
    codes (``pipelines.identity_check.check_request``; None: no judge ran, and the verdict says so).
    """
    # Everything the source generator renders first, then the patch is applied once for the patched renders.
    w_t = run.w_target
    before = synthesize(generator, w_u, camera=photo_cams)
    target = synthesize(generator, w_t, camera=photo_cams)
    cams = generator.evaluation_cameras(11)
    orbit = lambda: synthesize(generator, w_u[:1].expand(cams.shape[0], -1, -1), camera=cams.to(w_u.device))
    views_before = orbit() if cams is not None else None
    w_r = random_codes(generator, MEASURE_SAMPLES, seed=MEASURE_SEED) if measure else None
    src_r = synthesize(generator, w_r) if measure else None
    with patching.applied_temporarily(generator, run.patch):
        after = synthesize(generator, w_u, camera=photo_cams)
        views_after = orbit() if cams is not None else None
        after_r = synthesize(generator, w_r) if measure else None
    metrics = pixel_metrics(before, after, target, src_r, after_r) if measure else {}
    if photos is not None:
        metrics.update(photo_fit(photos, before, after))
    return ErasureResult(patch=run.patch, w_source=w_u, w_target=w_t, history=run.history, images_before=before,
                         images_after=after, target_images=target, views_before=views_before,
                         views_after=views_after, metrics=metrics, seconds=run.seconds,
                         photos=None if photos is None else photos.detach().cpu(),
                         verdict=_judge(metrics, config, identity))


@torch.no_grad()
def people_figures(generator: GeneratorAdapter, run: EraseRun, codes: Sequence[torch.Tensor],
                   photos: Sequence[Optional[torch.Tensor]], cams: Sequence[Optional[torch.Tensor]],
                   config: Optional[EraseConfig] = None, measure: bool = True,
                   identities: Optional[Sequence[dict]] = None) -> tuple[list[dict[str, float]], list[Verdict]]:
    """Each person's figures after a joint run, as :func:`erasure_result` measures one person: their codes
    ``codes[i]`` [K_i, num_ws, w_dim] before and after the patch against their targets (``run.w_target``, the
    people's codes in order), the preservation figures on random codes (shared by everyone) and, with photos
    ``photos[i]`` [K_i, 3, H', W'] (+ cameras ``cams[i]``), the photo fit. -> (metrics per person, verdict per
    person); without ``measure`` only the photo fit, and verdicts that say nothing was measured. ``identities``:
    each person's identity check (as :func:`erasure_result`'s ``identity``)."""
    targets = torch.split(run.w_target, [c.shape[0] for c in codes])
    before = [synthesize(generator, w, camera=c) for w, c in zip(codes, cams)]
    target = [synthesize(generator, t, camera=c) for t, c in zip(targets, cams)]
    w_r = random_codes(generator, MEASURE_SAMPLES, seed=MEASURE_SEED) if measure else None
    src_r = synthesize(generator, w_r) if measure else None
    with patching.applied_temporarily(generator, run.patch):
        after = [synthesize(generator, w, camera=c) for w, c in zip(codes, cams)]
        after_r = synthesize(generator, w_r) if measure else None
    kept = preservation_metrics(src_r, after_r) if measure else {}
    metrics = []
    for i in range(len(codes)):
        m = {**erasure_metrics(before[i], after[i], target[i]), **kept} if measure else {}
        if photos[i] is not None:
            m.update(photo_fit(photos[i], before[i], after[i]))
        metrics.append(m)
    identities = list(identities) if identities is not None else [None] * len(metrics)
    return metrics, [_judge(m, config, i) for m, i in zip(metrics, identities)]


def _judge(metrics: dict[str, float], config: Optional[EraseConfig], identity: Optional[dict] = None) -> Verdict:
    return judge_erasure(metrics, getattr(config, "iterations", None), getattr(config, "lr", None), identity)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).square().mean())


def erasure_metrics(src_u: torch.Tensor, after_u: torch.Tensor, src_t: torch.Tensor) -> dict[str, float]:
    """erased_mse: MSE(G_u(w_u), G_s(w_t)); before_mse: MSE(G_s(w_u), G_s(w_t)) — erasure when erased < before.
    Images [N, 3, H, W] in [-1, 1]."""
    return {"erased_mse": _mse(after_u, src_t), "before_mse": _mse(src_u, src_t)}


def preservation_metrics(src_r: torch.Tensor, after_r: torch.Tensor) -> dict[str, float]:
    """preserved_mse: mean MSE(G_u(w_r), G_s(w_r)) on random mapped codes; random_pair_mse: mean MSE between
    different random samples of G_s — preservation when preserved << random_pair. Images [N, 3, H, W]."""
    n = src_r.shape[0]
    pairs = [_mse(src_r[i], src_r[j]) for i in range(n) for j in range(i + 1, n)]
    return {"preserved_mse": _mse(after_r, src_r), "random_pair_mse": sum(pairs) / max(1, len(pairs))}


def pixel_metrics(src_u, after_u, src_t, src_r, after_r) -> dict[str, float]:
    """Pixel-MSE measurements the loop does not optimise directly (images [N, 3, H, W] in [-1, 1]):
    :func:`erasure_metrics` and :func:`preservation_metrics`."""
    return {**erasure_metrics(src_u, after_u, src_t), **preservation_metrics(src_r, after_r)}


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
def people_target_similarity(generator: GeneratorAdapter, identity: Optional[IdentityModel], w_u: torch.Tensor,
                             w_t: torch.Tensor, person: torch.Tensor, config: EraseConfig) -> dict[str, float]:
    """Pairwise likeness of P people's targets w_t [K, num_ws, w_dim] (person [K] long, 0..P-1): latent cosines
    and, with an identity model, identity-embedding cosines of G_s(first target of each person); the same for
    plain per-person UFO targets under ``ufo_*`` keys, for comparison."""
    d, _ = resolve_distances(config, generator)
    plain = ufo_target(w_u, generator.w_avg, config.target, d)
    out: dict[str, float] = {}
    for prefix, targets in (("", w_t), ("ufo_", plain)):
        out.update({prefix + k: v for k, v in target_similarity(targets, person, generator.w_avg).items()})
        if identity is not None and int(person.max()) > 0:
            first = torch.stack([targets[(person == p).nonzero()[0, 0]] for p in range(int(person.max()) + 1)])
            emb = torch.nn.functional.normalize(identity.embed(synthesize(generator, first)).float(), dim=1)
            cos = emb @ emb.T
            pairs = cos[torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)]
            out[prefix + "identity_cosine_max"] = float(pairs.max())
            out[prefix + "identity_cosine_mean"] = float(pairs.mean())
    return out
