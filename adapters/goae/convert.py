"""Key conversion between GOAE's official ``encoder_FFHQ.pt`` and :class:`~.encoder.GOAEncoder`.

Only two things differ, both because timm's Swin V2 places patch merging at the start of a stage:

1. ``swin_model.layers.{i}.downsample.*`` (official, end of stage i) is ``swin_model.layers.{i+1}.downsample.*``
   here.
2. The official file also stores buffers that timm recomputes and keeps out of its state dict
   (``attn.relative_coords_table``, ``attn.relative_position_index`` and the shifted-window ``attn_mask``).
   They are not loaded, but compared with timm's values: a mismatch means the architecture settings (window
   size, pretrained window sizes, input size) are wrong, which would otherwise go unnoticed.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, Union

import torch

from guide_unlearn.checkpoints import load_state_file
from guide_unlearn.errors import CheckpointError

from .encoder import GOAEncoder

_DOWNSAMPLE = re.compile(r"^swin_model\.layers\.(\d+)\.downsample\.")
_DERIVED = ("attn.relative_coords_table", "attn.relative_position_index", "attn_mask")


def is_derived_buffer(key: str) -> bool:
    """True for the buffers the official file stores but timm recomputes (not loaded, only compared)."""
    return key.startswith("swin_model.") and key.endswith(_DERIVED)


def official_to_timm(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Official GOAE keys -> (loadable state dict with our names, derived buffers with our names)."""
    params: dict[str, torch.Tensor] = {}
    derived: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = _DOWNSAMPLE.sub(lambda m: f"swin_model.layers.{int(m.group(1)) + 1}.downsample.", key)
        (derived if is_derived_buffer(key) else params)[new] = value
    return params, derived


def timm_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> official GOAE names (parameters only; the derived buffers are not added)."""
    out = {}
    for key, value in state_dict.items():
        out[_DOWNSAMPLE.sub(lambda m: f"swin_model.layers.{int(m.group(1)) - 1}.downsample.", key)] = value
    return out


def load_official_state_dict(encoder: GOAEncoder, state_dict: Mapping[str, torch.Tensor]) -> GOAEncoder:
    """Load an official GOAE state dict into ``encoder`` (strict); raises :class:`CheckpointError` on mismatch."""
    params, derived = official_to_timm(state_dict)
    buffers = dict(encoder.named_buffers())
    for key, value in derived.items():
        ours = buffers.get(key)
        if ours is None or tuple(ours.shape) != tuple(value.shape) or (
                ours.device.type != "meta" and value.device.type != "meta"
                and not torch.allclose(ours.to(value.dtype).cpu(), value.cpu(), atol=1e-4)):
            raise CheckpointError(f"GOAE buffer {key} differs from the one this encoder computes; the checkpoint "
                                  f"was made with other Swin settings (window/pretrained window sizes, input size)")
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(params))
    unexpected = sorted(set(params) - set(expected))
    wrong = sorted(k for k in set(expected) & set(params) if tuple(params[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"not a GOAE encoder_FFHQ.pt for this configuration: {len(missing)} missing ({missing[:3]}), "
            f"{len(unexpected)} unexpected ({unexpected[:3]}), {len(wrong)} of another shape ({wrong[:3]})")
    assign = any(t.device.type == "meta" for t in expected.values())
    encoder.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in params.items()},
                            strict=True, assign=assign)
    return encoder


def load_goae_checkpoint(path: Union[str, os.PathLike], encoder: GOAEncoder) -> GOAEncoder:
    """Read ``encoder_FFHQ.pt`` (a raw state dict, loaded with ``weights_only=True``) into ``encoder``."""
    if not os.path.isfile(path):
        raise CheckpointError(f"GOAE checkpoint not found: {path}; download encoder_FFHQ.pt from the GOAE project")
    state = load_state_file(path)  # allow-list scan + weights_only; unwraps {"state_dict": ...}
    return load_official_state_dict(encoder, state)
