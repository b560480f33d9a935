"""A tiny, randomly initialised identity network: exercises the ID-loss path without real face weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ToyIdentityNet(nn.Module):
    """images [N, 3, H, W] in [-1, 1] -> [N, dim] unit vectors. Random weights: NOT a face recogniser."""

    name = "toy-identity (random weights, tests only)"
    align_style = "ffhq"
    differentiable = True

    def __init__(self, dim: int = 32, width: int = 16, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(width * 2 * 16, dim),
        )
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 / max(1, p[0].numel()) ** 0.5))
        self.requires_grad_(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] -> [N, dim], L2-normalised."""
        x = F.interpolate(images.float(), size=(32, 32), mode="bilinear", align_corners=False, antialias=False)
        return F.normalize(self.net(x), dim=1)

    forward = embed
