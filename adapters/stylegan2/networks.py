"""StyleGAN2 mapping and synthesis networks (NVIDIA layout, 'skip' architecture).

State-dict keys match the official ``G_ema`` (``mapping.fc0.weight``, ``synthesis.b64.conv0.affine.weight``,
...), so converting an official checkpoint is a key mapping, not a rewrite. The EG3D backbone reuses these
classes with ``img_channels=96``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from guide_unlearn.errors import InputError, LatentError

from .layers import (
    FullyConnectedLayer,
    SynthesisLayer,
    ToRGBLayer,
    channels_at,
    normalize_2nd_moment,
    resolution_list,
    setup_filter,
    upsample2d,
)


class MappingNetwork(nn.Module):
    """z [N, z_dim] (+ conditioning c [N, c_dim]) -> ws [N, num_ws, w_dim]."""

    def __init__(
        self,
        z_dim: int,  # latent z width (0 = none)
        c_dim: int,  # conditioning width (0 = unconditional; 25 = EG3D camera)
        w_dim: int,  # intermediate latent width
        num_ws: int,  # how many copies of w the synthesis consumes
        num_layers: int = 8,  # FC layers
        lr_multiplier: float = 0.01,  # learning-rate multiplier of the FC layers
        c_scale: float = 1.0,  # multiplier on c before the embedding (EG3D)
        w_avg_beta: float = 0.995,  # decay of the running w average (training only)
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        self.c_scale = c_scale
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        features = [z_dim + embed_features] + [w_dim] * num_layers
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,  # [N, z_dim]
        c: Optional[torch.Tensor] = None,  # [N, c_dim]
        truncation_psi: float = 1.0,  # 1 = no truncation
        truncation_cutoff: Optional[int] = None,  # truncate only the first `cutoff` ws (None = all)
    ) -> torch.Tensor:
        """-> ws [N, num_ws, w_dim]."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise LatentError(f"z must be [N, {self.z_dim}], got {list(z.shape)}")
        x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None:
                raise InputError(f"this mapping is conditioned: pass c of shape [N, {self.c_dim}]")
            y = normalize_2nd_moment(self.embed(c.to(torch.float32) * self.c_scale))
            x = torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = ws.clone()
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const | up-conv0), conv1, ToRGB, skip-add of the image."""

    def __init__(
        self,
        in_channels: int,  # 0 for the first (4×4 const) block
        out_channels: int,  # feature channels at this resolution
        w_dim: int,  # style width
        resolution: int,  # this block's output resolution
        img_channels: int,  # image channels produced by ToRGB
        use_noise: bool = True,  # per-pixel noise in the convs
        conv_clamp: Optional[float] = None,  # activation clamp
        resample_filter=(1, 3, 3, 1),  # FIR taps
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, use_noise=use_noise,
                                        conv_clamp=conv_clamp, resample_filter=resample_filter)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, use_noise=use_noise,
                                    conv_clamp=conv_clamp, resample_filter=resample_filter)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward(
        self,
        x: Optional[torch.Tensor],  # [N, I, H/2, W/2] features, or None for the const block
        img: Optional[torch.Tensor],  # [N, C_img, H/2, W/2] running image, or None
        ws: torch.Tensor,  # [N, num_conv + num_torgb, w_dim]
        noise_mode: str = "random",
        generator: Optional[torch.Generator] = None,
        fused: Optional[bool] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (features [N, O, H, W], image [N, C_img, H, W])."""
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode, generator=generator, fused=fused)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode, generator=generator, fused=fused)
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused=fused)
        img = y if img is None else img + y.to(img.dtype)
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, R, R] (StyleGAN2 'skip' generator)."""

    def __init__(
        self,
        w_dim: int,  # style width
        img_resolution: int,  # output resolution (power of two)
        img_channels: int = 3,  # output channels
        channel_base: int = 32768,  # channels = min(channel_base / res, channel_max)
        channel_max: int = 512,  # channel cap
        conv_clamp: Optional[float] = None,  # activation clamp (256 in NVIDIA's fp16 configs)
        use_noise: bool = True,  # per-pixel noise
    ):
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = resolution_list(img_resolution)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels_at(res // 2, channel_base, channel_max) if res > 4 else 0
            out_ch = channels_at(res, channel_base, channel_max)
            block = SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels, use_noise=use_noise,
                                   conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last ToRGB

    def blocks(self) -> list[SynthesisBlock]:
        """Blocks from 4×4 up to the output resolution."""
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def working_memory(self, batch: int = 1) -> int:
        """Bytes (float32) of the activations one forward of ``batch`` codes allocates: per block its two feature
        maps, its upsampled input and the running image, plus the largest per-sample modulated weight — a lower
        estimate, used to refuse a declared architecture whose first rendering cannot fit in memory."""
        feats = sum(b.resolution ** 2 * (3 * b.out_channels + 2 * self.img_channels) for b in self.blocks())
        weight = max((b.conv1.weight.numel() for b in self.blocks()), default=0)
        return 4 * int(batch) * (feats + weight)

    def forward(
        self,
        ws: torch.Tensor,  # [N, num_ws, w_dim]
        noise_mode: str = "random",  # 'random' | 'const' | 'none'
        generator: Optional[torch.Generator] = None,  # drives 'random' noise
        fused: Optional[bool] = None,  # fused (grouped) modulated conv; None = automatic
        return_features: bool = False,  # also return the last block's feature map
    ):
        """-> image [N, img_channels, R, R] (and features [N, C_last, R, R] when return_features)."""
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise LatentError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        x = img = None
        w_idx = 0
        for block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            x, img = block(x, img, block_ws, noise_mode=noise_mode, generator=generator, fused=fused)
            w_idx += block.num_conv
        return (img, x) if return_features else img
