"""Encoder4Editing (Tov et al. 2021): an IR-SE50 body with a feature pyramid and progressive GradualStyle heads.

Written from the architecture; module names follow the official checkpoint (``encoder.input_layer.0.weight``,
``encoder.body.{i}.res_layer.5.fc1.weight``, ``encoder.styles.{j}.convs.{k}.weight``, ``encoder.latlayer1``, ...)
so ``e4e_ffhq_encode.pt`` loads with a strict key match.

Forward: images [N, 3, 256, 256] in [-1, 1] -> body; c1/c2/c3 = outputs of the last unit of stages 2/3/4
(128 ch @ 64², 256 ch @ 32², 512 ch @ 16²). w0 = styles[0](c3) is copied to all ``num_ws`` rows; head i adds a
delta from c3 (i < 3), p2 = up(c3) + latlayer1(c2) (i < 7) or p1 = up(p2) + latlayer2(c1) (rest). The inverter adds
``latent_avg`` to get W+ codes of the StyleGAN2 decoder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["E4EConfig", "E4EInverter", "Encoder4Editing", "GradualStyleBlock", "BottleneckIRSE"]


@dataclass(frozen=True)
class E4EConfig:
    """Architecture of an Encoder4Editing encoder (defaults: the official FFHQ encoder, ≈ 267 M params).

    num_ws:         W+ codes produced (2·log2(stylegan_size) − 2: 18 for a 1024² decoder).
    w_dim:          style width (512); also the width of the pyramid features.
    input_size:     resolution the encoder runs at (256); inputs of another size are resized.
    stage_channels: output channels of the four IR-SE stages (64, 128, 256, 512); the last must equal w_dim.
    stage_units:    bottleneck units per stage (IR-SE50: 3, 4, 14, 3); the first unit of each stage has stride 2.
    se_reduction:   squeeze-excitation reduction (16).
    coarse_ind:     heads [0, coarse_ind) read c3 (3).
    middle_ind:     heads [coarse_ind, middle_ind) read p2, the rest p1 (7).
    """

    num_ws: int = 18
    w_dim: int = 512
    input_size: int = 256
    stage_channels: tuple = (64, 128, 256, 512)
    stage_units: tuple = (3, 4, 14, 3)
    se_reduction: int = 16
    coarse_ind: int = 3
    middle_ind: int = 7

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        d = asdict(self)
        d["stage_channels"], d["stage_units"] = list(self.stage_channels), list(self.stage_units)
        return d


class SEModule(nn.Module):
    """Squeeze-excitation: x * sigmoid(fc2(relu(fc1(avgpool(x))))) with bias-free 1×1 convs."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C, H, W]."""
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """IR-SE unit: BN -> 3×3 conv -> PReLU -> 3×3 conv (stride) -> BN -> SE, plus a (projected) shortcut."""

    def __init__(self, in_channels: int, depth: int, stride: int, se_reduction: int = 16):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # identity, subsampled
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, I, H, W] -> [N, depth, H/stride, W/stride]."""
        return self.res_layer(x) + self.shortcut_layer(x)


class EqualLinear(nn.Module):
    """Equalised-lr linear layer of the style heads: y = x (W / sqrt(in))ᵀ + b (lr_mul 1)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in] -> [N, out]."""
        return F.linear(x, self.weight * self.scale, self.bias)


class GradualStyleBlock(nn.Module):
    """log2(spatial) stride-2 3×3 convs with LeakyReLU(0.01) down to 1×1, then an EqualLinear: one style code."""

    def __init__(self, in_channels: int, out_channels: int, spatial: int):
        super().__init__()
        self.out_channels = out_channels
        num_pools = int(math.log2(spatial))
        layers: list[nn.Module] = []
        for i in range(num_pools):
            layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, s, s] -> [N, out_channels]."""
        return self.linear(self.convs(x).reshape(-1, self.out_channels))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """FPN merge: bilinear resize of x to y's size (align_corners=True, as the official code) + y."""
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class Encoder4Editing(nn.Module):
    """The e4e encoder: images [N, 3, S, S] in [-1, 1] (S = ``input_size``) -> offsets [N, num_ws, w_dim].

    The offsets are relative to ``latent_avg``; :class:`E4EInverter` adds it.
    """

    def __init__(self, config: E4EConfig = E4EConfig()):
        super().__init__()
        if config.stage_channels[-1] != config.w_dim:
            raise ValueError("the last stage's channels must equal w_dim (the pyramid is w_dim wide)")
        self.config = config
        c0 = config.stage_channels[0]
        self.input_layer = nn.Sequential(nn.Conv2d(3, c0, 3, 1, 1, bias=False), nn.BatchNorm2d(c0), nn.PReLU(c0))
        units: list[nn.Module] = []
        in_ch = c0
        self._stage_ends: list[int] = []
        for depth, n in zip(config.stage_channels, config.stage_units):
            for j in range(n):
                units.append(BottleneckIRSE(in_ch, depth, 2 if j == 0 else 1, config.se_reduction))
                in_ch = depth
            self._stage_ends.append(len(units) - 1)
        self.body = nn.Sequential(*units)
        s3 = config.input_size // 16  # c3 resolution (4 stride-2 stages)
        self.styles = nn.ModuleList()
        for i in range(config.num_ws):
            spatial = s3 if i < config.coarse_ind else (2 * s3 if i < config.middle_ind else 4 * s3)
            self.styles.append(GradualStyleBlock(config.w_dim, config.w_dim, spatial))
        self.latlayer1 = nn.Conv2d(config.stage_channels[2], config.w_dim, 1)
        self.latlayer2 = nn.Conv2d(config.stage_channels[1], config.w_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3, S, S] -> [N, num_ws, w_dim] offsets from latent_avg."""
        x = self.input_layer(x)
        feats = {}
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self._stage_ends[1:]:
                feats[i] = x
        c1, c2, c3 = (feats[i] for i in self._stage_ends[1:])
        cfg = self.config
        w0 = self.styles[0](c3)
        rows = [w0]
        features = c3
        p2 = None
        for i in range(1, cfg.num_ws):
            if i == cfg.coarse_ind:
                p2 = _upsample_add(c3, self.latlayer1(c2))
                features = p2
            elif i == cfg.middle_ind:
                features = _upsample_add(p2, self.latlayer2(c1))
            rows.append(w0 + self.styles[i](features))
        return torch.stack(rows, dim=1)


class E4EInverter(nn.Module):
    """A StyleGAN2 inverter (core ``Inverter`` protocol): FFHQ-aligned faces -> W+ codes of the e4e decoder.

    ``invert(images [N, 3, H, W] in [-1, 1]) -> ws [N, num_ws, w_dim]`` = encoder(resize to 256) + latent_avg.
    """

    input_alignment = "ffhq"

    def __init__(self, config: E4EConfig = E4EConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder4Editing(config)
        self.register_buffer("latent_avg", torch.zeros(config.num_ws, config.w_dim))
        self.num_ws, self.w_dim = config.num_ws, config.w_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, S, S] in [-1, 1] at the encoder's size -> ws [N, num_ws, w_dim]."""
        return self.encoder(images) + self.latent_avg.to(images.dtype)

    @torch.no_grad()
    def invert(self, images: torch.Tensor, cameras: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """images [N, 3, H, W] in [-1, 1] (FFHQ-aligned) -> ws [N, num_ws, w_dim]. Deterministic (eval mode);
        ``cameras`` and ``generator`` are accepted for the protocol and unused."""
        from guide_unlearn.errors import InputError

        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"images must be [N, 3, H, W] in [-1, 1], got {list(images.shape)}")
        from guide_unlearn.images import GROSS_RANGE_TOLERANCE, check_image_range

        check_image_range(images, tolerance=GROSS_RANGE_TOLERANCE)
        was_training = self.training
        self.eval()
        try:
            size = self.config.input_size
            x = images.to(self.latent_avg.device, torch.float32)
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            return self(x)
        finally:
            self.train(was_training)

