"""EG3D's ``SuperresolutionHybrid8XDC``: two StyleGAN2 synthesis blocks that turn the 128² neural rendering
(raw RGB + 32 feature channels) into the 512² image. Built from the project's StyleGAN2 blocks, so parameter
names (``block0.conv0.affine.weight``, ...) match the official module.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from guide_unlearn.errors import ConfigError

from ..stylegan2.networks import SynthesisBlock


class SuperresolutionHybrid8XDC(nn.Module):
    """Neural rendering [N, C, r, r] + raw RGB [N, 3, r, r] -> image [N, 3, 4·R_in, 4·R_in].

    Inputs whose size is not ``input_resolution`` are resized to it first (bilinear, optionally antialiased).
    Both blocks use the last style vector, ``ws[:, -1]``, for all their layers.
    """

    def __init__(
        self,
        channels: int = 32,  # feature channels of the neural rendering
        img_resolution: int = 512,  # output resolution (= 4 × input_resolution)
        input_resolution: int = 128,  # resolution the blocks expect (EG3D: 128)
        block_channels: tuple[int, int] = (256, 128),  # feature channels of block0 / block1
        w_dim: int = 512,  # style width
        conv_clamp: Optional[float] = 256,  # activation clamp (EG3D: 256, since its SR runs in fp16)
        antialias: bool = True,  # antialias when resizing the input
    ):
        super().__init__()
        if img_resolution != 4 * input_resolution:
            raise ConfigError(f"SuperresolutionHybrid8XDC up-samples by 4: img_resolution must be 4 × "
                              f"input_resolution, got {img_resolution} and {input_resolution}")
        self.input_resolution = input_resolution
        self.img_resolution = img_resolution
        self.antialias = antialias
        c0, c1 = block_channels
        self.block0 = SynthesisBlock(channels, c0, w_dim, 2 * input_resolution, img_channels=3, use_noise=True,
                                     conv_clamp=conv_clamp)
        self.block1 = SynthesisBlock(c0, c1, w_dim, 4 * input_resolution, img_channels=3, use_noise=True,
                                     conv_clamp=conv_clamp)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, noise_mode: str = "none",
                generator: Optional[torch.Generator] = None, fused: Optional[bool] = None) -> torch.Tensor:
        """rgb [N, 3, r, r], x [N, C, r, r], ws [N, num_ws, w_dim] -> image [N, 3, img_res, img_res]."""
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        if x.shape[-1] != self.input_resolution:
            size = (self.input_resolution, self.input_resolution)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
            rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=self.antialias)
        x, rgb = self.block0(x, rgb, ws, noise_mode=noise_mode, generator=generator, fused=fused)
        x, rgb = self.block1(x, rgb, ws, noise_mode=noise_mode, generator=generator, fused=fused)
        return rgb
