"""Builders for tests, examples and benchmarks: tiny random models and full-size architectures without weights.

Nothing here is a trained model. ``tiny_eraser()`` is small enough that a 50-step erase runs on a CPU in seconds.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

TINY_STYLEGAN2 = dict(z_dim=32, w_dim=32, img_resolution=32, channel_base=512, channel_max=32, mapping_layers=2,
                      mapping_lr_multiplier=0.01)


def tiny_generator(backend: str = "stylegan2", seed: int = 0, **overrides: Any) -> nn.Module:
    """A random-initialised tiny generator. stylegan2: 32×32, w_dim 32, 8 ws, ~60 k parameters.

    Its ``w_avg`` is set to the mean of 1024 mapped samples, as a trained model's running average would be.
    """
    torch.manual_seed(seed)  # parameter init uses torch's default RNG; seeding it makes the model reproducible
    if backend == "stylegan2":
        from guide_unlearn.adapters.stylegan2 import StyleGAN2Generator

        gen = StyleGAN2Generator(**{**TINY_STYLEGAN2, **overrides})
    elif backend == "eg3d":
        from guide_unlearn.adapters.eg3d.testing import tiny_generator as tiny_eg3d

        return tiny_eg3d(seed=seed, **overrides)
    else:
        raise ValueError(f"unknown tiny backend {backend!r}; use 'stylegan2' or 'eg3d'")
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        z = torch.randn(1024, gen.z_dim, generator=g)
        gen.mapping.w_avg.copy_(gen.mapping(z)[:, 0].mean(0))
    return gen.eval()


def tiny_eraser(backend: str = "stylegan2", seed: int = 0, inverter_steps: int = 60):
    """A documented tiny IdentityEraser: tiny random generator, optimisation inverter (``inverter_steps`` steps),
    a tiny random identity network and the offline perceptual stand-in. For tests, examples and benchmarks; it
    erases nothing real."""
    from guide_unlearn.adapters.perceptual import MultiScaleGradL1
    from guide_unlearn.adapters.projector import OptimizationInverter
    from guide_unlearn.adapters.toy import ToyIdentityNet
    from guide_unlearn.pipelines.eraser import IdentityEraser

    gen = tiny_generator(backend, seed)
    perceptual = MultiScaleGradL1()
    alignment = "eg3d" if backend == "eg3d" else "ffhq"
    inverter = OptimizationInverter(gen, perceptual, steps=inverter_steps, lr=0.05, input_alignment=alignment)
    return IdentityEraser(gen, inverter=inverter, identity_model=ToyIdentityNet(seed=seed), perceptual=perceptual,
                          name=f"tiny-{backend}")


def build_generator(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The full-size architecture of a registry name, without weights (``device='meta'`` allocates nothing)."""
    from guide_unlearn.pipelines.registry import build_architecture

    return build_architecture(name, device=device)


def build_inverter(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The full-size inverter architecture of a registry name ("goae-ffhq", "e4e-ffhq"), without weights."""
    from guide_unlearn.pipelines.registry import build_architecture

    return build_architecture(name, device=device)
