"""Named StyleGAN2 configurations (constructor kwargs of :class:`StyleGAN2Generator`) and the tiny CPU model."""

from __future__ import annotations

from typing import Any

import torch

from .model import StyleGAN2Generator

#: StyleGAN2 config-f, FFHQ 1024² (NVIDIA's ``stylegan2-ffhq-1024x1024.pkl``, rosinality's ``config-f.pt``).
SG2_FFHQ_1024: dict[str, Any] = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=1024, img_channels=3,
                                     mapping_layers=8, mapping_lr_multiplier=0.01, channel_base=32768,
                                     channel_max=512, conv_clamp=None, use_noise=True)
#: StyleGAN2 FFHQ 256² trained with the stylegan3 code base.
SG2_FFHQ_256: dict[str, Any] = {**SG2_FFHQ_1024, "img_resolution": 256, "channel_base": 16384, "conv_clamp": 256.0}
#: StyleGAN2 FFHQ 512² trained with the stylegan3 code base.
SG2_FFHQ_512: dict[str, Any] = {**SG2_FFHQ_1024, "img_resolution": 512, "conv_clamp": 256.0}
#: StyleGAN2-ADA FFHQ 1024² (stylegan2-ada-pytorch 'paper1024').
SG2_ADA_FFHQ_1024: dict[str, Any] = {**SG2_FFHQ_1024, "conv_clamp": 256.0}

#: A ~60 k-parameter StyleGAN2: 32² images, w_dim 32, 8 ws.
TINY_STYLEGAN2: dict[str, Any] = dict(z_dim=32, w_dim=32, img_resolution=32, channel_base=512, channel_max=32,
                                      mapping_layers=2, mapping_lr_multiplier=0.01)


def build_stylegan2_tiny(seed: int = 0, device: Any = "cpu", **overrides: Any) -> StyleGAN2Generator:
    """A random-initialised tiny StyleGAN2 (``TINY_STYLEGAN2`` + ``overrides``), deterministic per seed, eval mode.

    Its ``w_avg`` is the mean of 1024 mapped samples, as a trained model's running average would be. The caller's
    global RNG is left untouched (initialisation runs under ``torch.random.fork_rng``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # parameter init draws from torch's default RNG
        with torch.device(device):
            gen = StyleGAN2Generator(**{**TINY_STYLEGAN2, **overrides})
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        z = torch.randn(1024, gen.z_dim, generator=g).to(device)
        gen.mapping.w_avg.copy_(gen.mapping(z)[:, 0].mean(0))
    return gen.eval()
