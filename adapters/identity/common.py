"""Shared input handling of the identity models: PIL crops or [-1, 1] tensors -> a float batch."""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch.nn import functional as F

from guide_unlearn.errors import InputError

Images = Union[torch.Tensor, Sequence[Any]]


def to_batch(images: Images, size: int, device: torch.device | str = "cpu",
             antialias: Optional[bool] = None) -> torch.Tensor:
    """A list of RGB PIL images / uint8 arrays [H, W, 3], or a tensor [N, 3, H, W] in [-1, 1]
    -> float tensor [N, 3, size, size] in [-1, 1] on ``device`` (resized bilinearly when needed; tensors keep
    their autograd graph). ``antialias`` applies to tensors: None = antialias when shrinking; False reproduces a
    plain ``F.interpolate(x, size, mode='bilinear')`` as official loss code calls it."""
    if isinstance(images, torch.Tensor):
        x = images
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"identity models take images [N, 3, H, W] in [-1, 1], got shape {tuple(x.shape)}")
        x = x.to(device=device, dtype=torch.float32)
    else:
        if len(images) == 0:
            raise InputError("no images given to embed")
        arrays = []
        for image in images:
            arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise InputError(f"expected RGB images [H, W, 3], got shape {arr.shape}")
            t = torch.from_numpy(np.array(arr, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
            if t.shape[-2:] != (size, size):
                t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False,
                                  antialias=True)[0]
            arrays.append(t)
        x = torch.stack(arrays).to(device)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size if antialias is None else antialias)
    return x


def unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows [N, D]."""
    return F.normalize(x, dim=1)
