"""The one check every latent code passes before a generator renders or erases it (a leaf module: the engine, the
methods and the pipelines share it)."""

from __future__ import annotations

from typing import Any

import torch

from .errors import LatentError
from .protocols import GeneratorAdapter


def check_latents(ws: Any, generator: GeneratorAdapter) -> torch.Tensor:
    """Validate person codes: a float tensor [K, num_ws, w_dim] (or [num_ws, w_dim]) of finite values on the
    generator's device. -> the codes [K, num_ws, w_dim], detached, float32."""
    if not torch.is_tensor(ws):
        raise LatentError(f"latent codes must be a torch.Tensor, got {type(ws).__name__}")
    if ws.ndim == 2:
        ws = ws.unsqueeze(0)
    want = (generator.num_ws, generator.w_dim)
    if ws.ndim != 3 or tuple(ws.shape[1:]) != want or ws.shape[0] < 1:
        raise LatentError(f"latent codes must be [K, {want[0]}, {want[1]}] for this generator, got "
                          f"{list(ws.shape)}; invert the photo with eraser.invert() to get them")
    if not ws.is_floating_point():
        raise LatentError(f"latent codes must be floating point, got {ws.dtype}")
    device = generator.w_avg.device
    if ws.device != device:
        raise LatentError(f"latent codes are on {ws.device} but the generator is on {device}; "
                          f"call .to({str(device)!r})")
    if not torch.isfinite(ws).all():
        raise LatentError("latent codes contain NaN or Inf; re-run the inversion")
    return ws.detach().to(torch.float32)
