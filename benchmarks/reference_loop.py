"""A faithful re-implementation of the official GUIDE training step, for speed comparisons only.

Structure as in the official ``unlearn.py`` (read for facts, not copied): the whole synthesis is trained, the
source generator is a ``copy.deepcopy`` frozen beside it, the feature tensor of the L2 term comes from its own
forward (``get_planes``), and the adjacency and global samples run in Python loops of batch 1. It shares the
project's networks, dtype and thread count, so the timing difference is the loop structure alone.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F

from guide_unlearn.config import EraseConfig
from guide_unlearn.losses import identity_distance


class ReferenceLoop:
    """The official recipe's step on our generator adapter (paper preset semantics)."""

    def __init__(self, generator, perceptual, identity, cfg: EraseConfig):
        self.g_u = generator
        self.g_s = copy.deepcopy(generator).requires_grad_(False)
        self.g_u.requires_grad_(False)
        names = set(generator.full_finetune_parameters())
        self.params = [p for n, p in generator.named_parameters() if n in names]
        for p in self.params:
            p.requires_grad_(True)
        self.perceptual, self.identity, self.cfg = perceptual, identity, cfg
        self.optimizer = torch.optim.Adam(generator.parameters(), lr=cfg.lr)

    def _features(self, g, ws, c, rng):
        if hasattr(g, "features"):  # EG3D: the backbone alone, as the official get_planes
            return g.features(ws, noise_mode=self.cfg.noise_mode, generator=rng)
        return g.synthesis(ws, c, noise_mode=self.cfg.noise_mode, generator=rng, return_features=True).features

    def _image(self, g, ws, c, rng):
        return g.synthesis(ws, c, noise_mode=self.cfg.noise_mode, generator=rng).images

    def _three_terms(self, w_in, w_target, c, rng):
        cfg = self.cfg
        loss = torch.zeros(())
        if cfg.feature_mse_weight > 0:
            feat_u = self._features(self.g_u, w_in, c, rng)
            feat_t = self._features(self.g_s, w_target, c, rng)
            loss = loss + cfg.feature_mse_weight * F.mse_loss(feat_u, feat_t)
        img_u = self._image(self.g_u, w_in, c, rng)
        img_t = self._image(self.g_s, w_target, c, rng)
        loss = loss + cfg.lpips_weight * self.perceptual(img_u, img_t).mean()
        if self.identity is not None and cfg.id_weight > 0:
            loss = loss + cfg.id_weight * identity_distance(self.identity, img_u, img_t).mean()
        return loss

    def loss(self, w_u, w_t, w_r_adj, alpha, w_r_glob, cam: Optional[torch.Tensor], rng=None) -> torch.Tensor:
        """Official step loss for one code w_u [1, num_ws, w_dim] with explicit samples (w_r_adj [n, ...],
        alpha [n], w_r_glob [m, ...], cam [1, c_dim] or None)."""
        cfg = self.cfg
        total = cfg.local_weight * self._three_terms(w_u, w_t, cam, rng)
        adj = torch.zeros(())
        for i in range(w_r_adj.shape[0]):
            delta = alpha[i] * (w_r_adj[i:i + 1] - w_u) / (w_r_adj[i:i + 1] - w_u).norm(p=2)
            adj = adj + self._three_terms(w_u + delta, w_t + delta, cam, rng)
        total = total + cfg.adjacency_weight * adj
        glob = torch.zeros(())
        for i in range(w_r_glob.shape[0]):
            img_u = self._image(self.g_u, w_r_glob[i:i + 1], cam, rng)
            img_t = self._image(self.g_s, w_r_glob[i:i + 1], cam, rng)
            glob = glob + self.perceptual(img_u, img_t).mean()
        return total + cfg.global_weight * glob

    def step(self, w_u, w_t, rng: torch.Generator) -> float:
        """Draw the samples one at a time as the official loop does, then one optimiser step. -> loss."""
        g = self.g_u
        cam = g.sample_cameras(1, rng)
        n_adj, n_glob = self.cfg.adjacency_samples, self.cfg.global_samples
        dev = w_u.device
        w_adj, alphas, w_glob = [], [], []
        for _ in range(n_adj):
            z = torch.randn(1, g.z_dim, generator=rng, device=dev)
            with torch.no_grad():
                w_adj.append(g.mapping(z, None))
            alphas.append(torch.rand(1, generator=rng, device=dev) * 15.0)
        for _ in range(n_glob):
            z = torch.randn(1, g.z_dim, generator=rng, device=dev)
            with torch.no_grad():
                w_glob.append(g.mapping(z, None))
        loss = self.loss(w_u, w_t, torch.cat(w_adj), torch.cat(alphas), torch.cat(w_glob), cam, rng)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())
