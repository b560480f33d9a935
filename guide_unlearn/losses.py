"""LTU — Latent Target Unlearning losses (GUIDE §3.3), computed on batches.

One iteration renders, in ONE batch each, the patched generator G_u at
``[w_u (K), w_u + delta (n_adj), w_r (n_glob)]`` and the source G_s at ``[w_t, w_t + delta, w_r]``; this module
splits the batch and combines the terms with the paper's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .config import EraseConfig
from .protocols import IdentityModel, PerceptualDistance, SynthesisOutput


def feature_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error: a, b [N, ...] -> [N]."""
    return (a.float() - b.float()).square().flatten(1).mean(dim=1)


def identity_distance(model: IdentityModel, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(ID(a), ID(b)) with b detached: a, b [N, 3, H, W] in [-1, 1] -> [N]."""
    ea = model.embed(a)
    with torch.no_grad():
        eb = model.embed(b.detach())
    return 1 - F.cosine_similarity(ea.float(), eb.float(), dim=1)


def unlearning_terms(u: SynthesisOutput, s: SynthesisOutput, cfg: EraseConfig, perceptual: PerceptualDistance,
                     identity: Optional[IdentityModel]) -> dict[str, torch.Tensor]:
    """The three-term loss of L_local / L_adj per sample: 1e-2·MSE(features) + 1·LPIPS + 0.1·ID by default.

    u, s: outputs of G_u and G_s for the same N rows (features [N, ...] needed when feature_mse_weight > 0).
    -> {'mse', 'lpips', 'id', 'total'}, each [N].
    """
    n = u.images.shape[0]
    zero = u.images.new_zeros(n)
    mse = feature_mse(u.features, s.features) if cfg.feature_mse_weight > 0 and u.features is not None else zero
    lp = perceptual(u.images, s.images).reshape(n) if cfg.lpips_weight > 0 else zero
    idl = identity_distance(identity, u.images, s.images) if identity is not None and cfg.id_weight > 0 else zero
    total = cfg.feature_mse_weight * mse + cfg.lpips_weight * lp + cfg.id_weight * idl
    return {"mse": mse, "lpips": lp, "id": idl, "total": total}


@dataclass
class LTULoss:
    """The iteration's total loss and its logged parts (floats are detached copies)."""

    total: torch.Tensor
    parts: dict[str, float]
    local_rows: Optional[dict[str, torch.Tensor]] = None
    """The L_local terms per local code (detached [K] tensors: 'local', 'local_mse', 'local_lpips', 'local_id')."""


def ltu_loss(u: SynthesisOutput, s: SynthesisOutput, k: int, n_adj: int, n_glob: int, cfg: EraseConfig,
             perceptual: PerceptualDistance, identity: Optional[IdentityModel],
             local_weights: Optional[torch.Tensor] = None) -> LTULoss:
    """Combine L_local (mean over the K codes of the person; K = 1 in GUIDE), L_adj (summed over its samples,
    as GUIDE's loop does) and L_global (perceptual distance, summed over its samples; plus, with
    ``cfg.global_id_weight`` > 0, the identity distance 1 - cos(ID(G_u), ID(G_s)) summed over the same samples).

    u, s: batched outputs with rows [K local | n_adj adjacency | n_glob global]. ``local_weights`` [K] replaces
    the mean over the local rows by a weighted sum (joint runs: 1 / codes of that person, so L_local is the sum
    over the visited people of each person's mean and every person weighs as much as in a single erase).
    """
    def rows(out: SynthesisOutput, a: int, b: int) -> SynthesisOutput:
        feats = out.features[a:b] if out.features is not None else None
        return SynthesisOutput(out.images[a:b], feats)

    local = unlearning_terms(rows(u, 0, k), rows(s, 0, k), cfg, perceptual, identity)
    local_total = local["total"].mean() if local_weights is None else (local["total"] * local_weights).sum()
    total = cfg.local_weight * local_total
    parts = {"local": local_total, "local_mse": local["mse"].mean(),
             "local_lpips": local["lpips"].mean(), "local_id": local["id"].mean()}
    if n_adj > 0:
        adj = unlearning_terms(rows(u, k, k + n_adj), rows(s, k, k + n_adj), cfg, perceptual, identity)
        total = total + cfg.adjacency_weight * adj["total"].sum()
        parts["adjacency"] = adj["total"].sum()
    if n_glob > 0:
        a, b = k + n_adj, k + n_adj + n_glob
        glob = perceptual(u.images[a:b], s.images[a:b]).sum()
        total = total + cfg.global_weight * glob
        parts["global"] = glob
        if cfg.global_id_weight > 0 and identity is not None:  # identity-aware preservation (off by default)
            glob_id = identity_distance(identity, u.images[a:b], s.images[a:b]).sum()
            total = total + cfg.global_id_weight * glob_id
            parts["global_id"] = glob_id
    parts["loss"] = total
    rows_ = {"local": local["total"], "local_mse": local["mse"], "local_lpips": local["lpips"], "local_id": local["id"]}
    return LTULoss(total, _floats(parts), {k_: v.detach() for k_, v in rows_.items()})


def _floats(parts: dict[str, torch.Tensor]) -> dict[str, float]:
    """Detached float copies of 0-d tensors with ONE device-to-host copy (not one sync per term)."""
    values = torch.stack([v.detach().float().reshape(()) for v in parts.values()]).tolist()
    return dict(zip(parts.keys(), values))
