"""Tiny, randomly initialised EG3D (and GOAE) models for CPU tests, examples and benchmarks."""

from __future__ import annotations

import torch

from .configs import build_eg3d_tiny
from .model import EG3DGenerator


def tiny_generator(seed: int = 0, device="cpu", **overrides) -> EG3DGenerator:
    """A ~80 k-parameter EG3D (64² images, 16² rays, 8 + 8 samples, 32² planes, 8 ws of width 32), eval mode.

    The same seed gives the same weights. ``overrides`` change config fields (e.g. ``camera_pivot``).
    """
    return build_eg3d_tiny(device=device, seed=seed, **overrides)


def tiny_goae_config(generator: EG3DGenerator):
    """A GOAE configuration small enough for CPU tests that outputs ``generator``'s ws shape."""
    from guide_unlearn.adapters.goae import GOAEConfig

    n = generator.num_ws - 1
    coarse = max(1, n // 4)
    mid = max(1, n // 4)
    fine = n - coarse - mid
    if fine < 1:
        raise ValueError(f"a GOAE needs at least 4 ws, the generator has {generator.num_ws}")
    return GOAEConfig(img_size=64, patch_size=4, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4),
                      window_size=4, pretrained_window_sizes=(3, 3, 3, 2), mlp_ratio=2.0, drop_path_rate=0.2,
                      w_dim=generator.w_dim, mlp_layers=2, ws_split=(1, coarse, mid, fine), attention_heads=4,
                      attention_ff=64, attention_dropout=0.1)


def tiny_inverter(generator: EG3DGenerator, seed: int = 0):
    """A randomly initialised tiny GOAE inverter for ``generator`` (64² input), eval mode, deterministic per seed."""
    from guide_unlearn.adapters.goae import GOAEInverter, GOAEncoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = GOAEncoder(tiny_goae_config(generator))
    # Small offsets keep tiny inversions near w_avg, like a trained encoder's.
    with torch.no_grad():
        for head in (encoder.mapper_base_channel, encoder.mapper_query_channel_coarse,
                     encoder.mapper_query_channel_mid, encoder.mapper_query_channel_fine):
            head[-1].weight.mul_(0.1)
    device = generator.w_avg.device
    return GOAEInverter.for_generator(encoder, generator).to(device)
