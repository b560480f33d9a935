"""Seeded random codes: the one place where measurements and audits draw latent codes, so the same seed gives the
same codes (and cameras) in every measurement. A leaf module: it only talks to the generator protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .protocols import GeneratorAdapter


@dataclass(frozen=True)
class RandomDraw:
    """One seeded draw of ``n`` random samples of a generator.

    z:       [n, z_dim] on the generator's device.
    ws:      [n, num_ws, w_dim], ``z`` mapped (no camera conditioning) with the draw's truncation psi.
    cameras: [n, c_dim] rendering cameras drawn after ``z`` from the same torch.Generator (the model's training
             camera distribution), or None for a model without cameras.
    """

    z: torch.Tensor
    ws: torch.Tensor
    cameras: Optional[torch.Tensor]


def random_draw(generator: GeneratorAdapter, n: int, seed: int, truncation_psi: float = 1.0) -> RandomDraw:
    """``n`` samples from one torch.Generator seeded with ``seed`` on the generator's device: z first, then the
    cameras (camera models only), mapped without gradient. -> :class:`RandomDraw`."""
    device = generator.w_avg.device
    g = torch.Generator(device=device).manual_seed(seed)
    z = torch.randn(n, generator.z_dim, generator=g, device=device)
    cameras = generator.sample_cameras(n, g) if generator.c_dim else None
    with torch.no_grad():
        ws = generator.mapping(z, None, truncation_psi=truncation_psi)
    return RandomDraw(z, ws, cameras)


def random_codes(generator: GeneratorAdapter, n: int, seed: int, truncation_psi: float = 1.0) -> torch.Tensor:
    """``n`` mapped codes [n, num_ws, w_dim] from a fixed seed (the codes of :func:`random_draw`)."""
    return random_draw(generator, n, seed, truncation_psi).ws
