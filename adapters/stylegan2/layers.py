"""StyleGAN2 building blocks in pure PyTorch, with NVIDIA's parameter names.

Written from the maths (Karras et al. 2020). Every op here is the reference form of what the
official code runs as a CUDA kernel (bias_act, upfirdn2d, modulated conv), so results do not depend on a
compiler being present. Layers that carry a convolution weight accept ``weight_delta`` so a LoRA update can be
added to the weight *before* modulation/demodulation (docs/patch_format.md).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from guide_unlearn.frozen import derived

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale ``x`` [N, D] so that the mean of its squares along ``dim`` is 1."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(
    x: torch.Tensor,
    bias: Optional[torch.Tensor],
    act: str = "linear",
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply ``act`` ('linear' | 'lrelu'), scale by ``gain``, clamp to ±clamp.

    ``gain`` defaults to the activation's own gain (sqrt(2) for lrelu, 1 for linear).
    """
    if bias is not None:
        x = x + bias.reshape([1, -1] + [1] * (x.ndim - 2)).to(x.dtype)
    if act == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
        default_gain = LRELU_GAIN
    elif act == "linear":
        default_gain = 1.0
    else:
        raise ValueError(f"unknown activation {act!r}")
    gain = default_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def setup_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    """Separable FIR taps -> normalised 2-D filter [k, k] (outer product, sums to 1)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1.0
) -> torch.Tensor:
    """Upsample by zero insertion, pad (x0, x1, y0, y1), filter with the 2-D FIR ``f`` [k, k] × ``gain``.

    x: [N, C, H, W] -> [N, C, H*up + y0 + y1 - k + 1, W*up + x0 + x1 - k + 1]. Reference form of NVIDIA's
    upfirdn2d for symmetric filters (no flip needed) and non-negative padding.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    k = (f * gain).to(x.dtype)
    weight = k[None, None].expand(c, 1, *k.shape)
    x0, x1, y0, y1 = pad
    if x0 == x1 == y0 == y1:  # the conv pads itself: no padded copy forward, no slice copy backward
        return F.conv2d(x, weight, groups=c, padding=x0)
    return F.conv2d(F.pad(x, list(pad)), weight, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR up-sampling of an image [N, C, H, W] -> [N, C, H*up, W*up] (the 'skip' RGB path)."""
    k = f.shape[-1]
    p0 = (k + up - 1) // 2
    p1 = (k - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer (NVIDIA ``FullyConnectedLayer``).

    Stored weight [out, in] ~ N(0, 1) / lr_multiplier; at run time it is scaled by lr_multiplier / sqrt(in)
    and the bias by lr_multiplier, which gives every layer the same effective learning rate.
    """

    def __init__(
        self,
        in_features: int,  # input width
        out_features: int,  # output width
        bias: bool = True,  # learn a bias?
        activation: str = "linear",  # 'linear' | 'lrelu'
        lr_multiplier: float = 1.0,  # learning-rate multiplier (0.01 in the mapping network)
        bias_init: float = 0.0,  # initial bias value (1 for style affines)
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, in] -> [N, out]."""
        w = derived(self.weight, f"gain-{x.dtype}", lambda t: t.to(x.dtype) * self.weight_gain)
        b = self.bias
        if b is not None:
            b = derived(b, f"gain-{x.dtype}", lambda t: t.to(x.dtype) * self.bias_gain)
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, act={self.activation}"


def modulated_conv2d(
    x: torch.Tensor,  # [N, I, H, W]
    weight: torch.Tensor,  # [O, I, k, k], LoRA delta already added
    styles: torch.Tensor,  # [N, I]
    demodulate: bool = True,
    up: int = 1,
    resample_filter: Optional[torch.Tensor] = None,
    fused: Optional[bool] = None,
    low_rank: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
    defer_demod: bool = False,
):
    """StyleGAN2 modulated (and optionally demodulated) convolution -> [N, O, H*up, W*up].

    Fused: one grouped conv with a per-sample weight. Non-fused: modulate activations, shared-weight conv,
    demodulate activations. Both paths compute the same function (tested); None picks per call: non-fused under
    autograd with several samples (as NVIDIA's training), otherwise whichever touches fewer numbers (building
    the per-sample weight [N, O, I, k, k] costs more than modulating the activations at low resolutions).

    ``low_rank`` = (base [O, I, k, k], down [R, I, k, k], up [O, R]) is a LoRA delta kept factored: ``weight``
    is then the full effective weight base + up @ down (used for demodulation and by the fused path), and the
    non-fused path convolves with ``base`` plus the two thin convs, so no gradient of an [O, I, k, k] weight is
    formed per conv when only the factors train (see :func:`_conv`).

    ``defer_demod=True`` returns ``(x, dcoefs)`` instead: on the non-fused path ``x`` is NOT yet demodulated and
    ``dcoefs`` [N, O] is the factor still to apply (so the caller can fold it into its own elementwise epilogue,
    see :meth:`SynthesisLayer.forward`); on the fused path ``dcoefs`` is None (already applied).
    """
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    if fused is None:
        fused = not (low_rank is not None and torch.is_grad_enabled()) and \
            _prefer_fused(n, o, i, kh * kw, x.shape[2] * x.shape[3], up, x.device.type)
    dcoefs = None
    if demodulate:
        # sum_{i,k} (W[o,i,k] s[n,i])^2 = s^2 @ sum_k W^2: the same number as demodulating the per-sample
        # weight [N, O, I, k, k], without building it.
        w_sq = derived(weight, "square-sum", lambda t: t.square().sum(dim=[2, 3]).t())  # [I, O]
        dcoefs = (styles.square() @ w_sq + 1e-8).rsqrt()  # [N, O]
    if fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)
        if dcoefs is not None:
            w = w * dcoefs.reshape(n, o, 1, 1, 1)
        x = x.reshape(1, n * i, *x.shape[2:])
        x = _conv(x, w.reshape(n * o, i, kh, kw), up, resample_filter, groups=n)
        x = x.reshape(n, o, *x.shape[2:])
        return (x, None) if defer_demod else x
    x = x * styles.reshape(n, i, 1, 1)
    if low_rank is not None:
        base, down, up_w = low_rank
        x = _conv(x, base.to(x.dtype), up, resample_filter, groups=1, low_rank=(down.to(x.dtype), up_w.to(x.dtype)))
    else:
        x = _conv(x, weight, up, resample_filter, groups=1)
    if defer_demod:
        return x, dcoefs
    if dcoefs is not None:
        x = x * dcoefs.reshape(n, o, 1, 1)
    return x


def _prefer_fused(n: int, o: int, i: int, taps: int, pixels: int, up: int, device_type: str = "cpu") -> bool:
    """Automatic fused/non-fused choice for :func:`modulated_conv2d` (same result either way)."""
    if n > 1 and torch.is_grad_enabled():
        return False  # fused would need a weight gradient per sample
    if n > 1 and device_type == "cpu":
        # oneDNN runs a grouped conv with per-sample weights much slower than one shared-weight conv over the
        # batch: the demo-faces G_s render (batch 11, 64x64, <= 256 channels) takes 111 ms with the cost rule
        # below and 101 ms all non-fused; at FFHQ widths non-fused was already 3-10x cheaper (docs/speed.md).
        return False
    # Fused scales a weight of o*i*taps numbers per sample; non-fused scales the input (i*pixels) and the
    # output (o*pixels*up^2) activations instead.
    return o * i * taps < i * pixels + o * pixels * up * up


def _prefer_factored(o: int, i: int, taps: int, rank: int) -> bool:
    """Convolve with the LoRA factors (thin convs) rather than the dense delta? Same result either way.

    The dense form pays the weight gradient of the [O, I, k, k] kernel (O·I·taps per pixel); the factored form
    pays two thin convs forward and backward (about 3·R·(I·taps + O) per pixel) that run several times less
    efficiently than a wide conv. Measured (demo-faces shapes, batch 11, fwd+bwd, 1 thread): factored wins at
    256 and 128 channels, dense at 64 and 32 (43 -> 33 ms at 32x32 channels, 64x64 pixels)."""
    return o * i * taps >= 24 * rank * (i * taps + o)


def _conv(x: torch.Tensor, w: torch.Tensor, up: int, f: Optional[torch.Tensor], groups: int,
          low_rank: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """Plain 'same' conv (up=1) or transposed stride-2 conv followed by the FIR filter (up=2).

    ``low_rank`` = (down [R, I, k, k], up [O, R]) adds conv(x, up @ down) as a k×k conv to R channels followed by
    a 1×1 conv to O (convolution is linear in its weight, so this is the same number as convolving with
    w + up @ down, but the gradient reaches the factors without forming one for the [O, I, k, k] weight).
    """
    k = w.shape[-1]
    if up == 1:
        y = F.conv2d(x, w, padding=k // 2, groups=groups)
        if low_rank is not None:
            down, up_w = low_rank
            y = y + F.conv2d(F.conv2d(x, down, padding=k // 2), up_w[:, :, None, None])
        return y
    # Transposed conv needs [I, O/g, k, k] per group.
    og = w.shape[0] // groups
    i = w.shape[1]
    wt = derived(w, f"transposed-{groups}",
                 lambda t: t.reshape(groups, og, i, k, k).transpose(1, 2).reshape(groups * i, og, k, k))
    y = F.conv_transpose2d(x, wt, stride=up, groups=groups)
    if low_rank is not None:
        down, up_w = low_rank
        y = y + F.conv2d(F.conv_transpose2d(x, down.transpose(0, 1), stride=up), up_w[:, :, None, None])
    fk = f.shape[-1]
    p = k // 2
    p0 = p + (fk + up - 1) // 2 - (k - 1)
    p1 = p + (fk - up) // 2 - (k - up)
    return upfirdn2d(y, f, pad=(p0, p1, p0, p1), gain=up * up)


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv + noise + bias + lrelu (NVIDIA ``SynthesisLayer``)."""

    #: forward() also takes a factored LoRA delta (``factors()`` / ``dense()``, see guide_unlearn.lora)
    accepts_low_rank_delta = True

    def __init__(
        self,
        in_channels: int,  # input feature channels
        out_channels: int,  # output feature channels
        w_dim: int,  # style vector width
        resolution: int,  # output resolution (sets the const-noise size)
        kernel_size: int = 3,  # conv kernel size
        up: int = 1,  # 2 = up-sample by 2 before the conv (transposed conv + FIR)
        use_noise: bool = True,  # add per-pixel noise?
        conv_clamp: Optional[float] = None,  # clamp activations to ±conv_clamp (None = off)
        resample_filter=(1, 3, 3, 1),  # FIR taps for up-sampling
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,  # [N, I, H, W]
        w: torch.Tensor,  # [N, w_dim]
        noise_mode: str = "random",
        generator: Optional[torch.Generator] = None,
        fused: Optional[bool] = None,
        weight_delta=None,  # [O, I, k, k] added before modulation (LoRA), or a factored lora.LowRankDelta
    ) -> torch.Tensor:
        """-> [N, O, H*up, W*up]."""
        styles = self.affine(w)
        low_rank = None
        if weight_delta is not None and hasattr(weight_delta, "factors"):  # a factored LoRA delta (lora.LowRankDelta)
            down, up_w = weight_delta.factors()
            o, i, kh, kw = self.weight.shape
            if _prefer_factored(o, i, kh * kw, down.shape[0]):
                low_rank = (self.weight, down.view(-1, *self.weight.shape[1:]), up_w)
            weight_delta = weight_delta.dense()
        weight = self.weight if weight_delta is None else self.weight + weight_delta
        x, dcoefs = modulated_conv2d(x, weight, styles, demodulate=True, up=self.up,
                                     resample_filter=self.resample_filter, fused=fused, low_rank=low_rank,
                                     defer_demod=True)
        noise = None
        if self.use_noise and noise_mode != "none":
            if noise_mode == "random":
                n, _, h, wd = x.shape
                noise = torch.randn([n, 1, h, wd], generator=generator, device=x.device, dtype=x.dtype)
            elif noise_mode == "const":
                noise = self.noise_const.to(x.dtype)
            else:
                raise ValueError(f"noise_mode must be 'random', 'const' or 'none', not {noise_mode!r}")
        # The same function as: x * dcoefs + noise * strength, then bias_act(x, bias, 'lrelu', clamp) (add bias,
        # leaky ReLU, x sqrt(2), clamp), in 3 passes over the activations instead of 5: lrelu(z) * g =
        # lrelu(z * g) for g > 0, so the gain goes into the small factors (dcoefs, noise strength, bias).
        gain = LRELU_GAIN
        scale = None if dcoefs is None else (dcoefs * gain).reshape(*dcoefs.shape, 1, 1)
        bias = (self.bias.to(x.dtype) * gain).reshape(1, -1, 1, 1)
        if noise is not None:
            noise = noise * (self.noise_strength.to(x.dtype) * gain)
            x = torch.addcmul(noise, x, scale) if scale is not None else torch.add(noise, x, alpha=gain)
            x = x + bias
        else:
            x = torch.addcmul(bias, x, scale) if scale is not None else torch.add(bias, x, alpha=gain)
        x = F.leaky_relu(x, LRELU_SLOPE)
        if self.conv_clamp is not None and self.conv_clamp >= 0:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, res={self.resolution}, up={self.up}"


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv to image channels, no demodulation (NVIDIA ``ToRGBLayer``)."""

    def __init__(
        self,
        in_channels: int,  # input feature channels
        out_channels: int,  # image channels (3, or 96 for EG3D's tri-plane backbone)
        w_dim: int,  # style vector width
        kernel_size: int = 1,  # conv kernel size
        conv_clamp: Optional[float] = None,  # clamp output to ±conv_clamp
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(
        self,
        x: torch.Tensor,  # [N, I, H, W]
        w: torch.Tensor,  # [N, w_dim]
        fused: Optional[bool] = None,
        weight_delta: Optional[torch.Tensor] = None,  # [O, I, 1, 1] added before modulation (LoRA)
    ) -> torch.Tensor:
        """-> [N, O, H, W]."""
        styles = self.affine(w) * self.weight_gain
        weight = self.weight if weight_delta is None else self.weight + weight_delta
        x = modulated_conv2d(x, weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature channels at a resolution: min(channel_base // res, channel_max)."""
    return min(channel_base // res, channel_max)


def resolution_list(img_resolution: int) -> list[int]:
    """[4, 8, ..., img_resolution]; img_resolution must be a power of two >= 4."""
    log2 = int(np.log2(img_resolution))
    if img_resolution < 4 or 2**log2 != img_resolution:
        raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    return [2**i for i in range(2, log2 + 1)]
