"""Named EG3D configurations: the official FFHQ-512 model and a tiny one for CPU tests."""

from __future__ import annotations

from typing import Any

import torch

from .cameras import GUIDE_CODE_PIVOT
from .model import EG3DGenerator

#: ``ffhqrebalanced512-128.pkl`` (EG3D, FFHQ rebalanced, 512² output, 128² neural rendering), docs/eg3d.md.
EG3D_FFHQ512: dict[str, Any] = dict(
    z_dim=512, w_dim=512, c_dim=25, img_resolution=512, mapping_layers=2, c_scale=1.0,
    plane_resolution=256, plane_channels=32, channel_base=32768, channel_max=512, conv_clamp=None,
    decoder_hidden_dim=64, decoder_output_dim=32, neural_rendering_resolution=128,
    depth_resolution=48, depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1.0,
    sr_input_resolution=128, sr_channels=(256, 128), sr_conv_clamp=256, sr_antialias=True, sr_noise_mode="none",
    fov_degrees=18.837, camera_radius=2.7, camera_pivot=(0.0, 0.0, 0.2),
)

#: What the official GUIDE code effectively ran with: camera pivot [0, 0, 0] (docs/checkpoints.md, differences kept on purpose).
PAPER_COMPAT_OVERRIDES: dict[str, Any] = dict(camera_pivot=GUIDE_CODE_PIVOT)

#: An ~80 k-parameter EG3D with the same structure: 32² planes (8 ws), 16² rays, 8 + 8 samples, 64² output.
#: Renders a batch of 1 in a few tens of milliseconds on one CPU thread.
EG3D_TINY: dict[str, Any] = dict(
    z_dim=32, w_dim=32, c_dim=25, img_resolution=64, mapping_layers=2, c_scale=1.0,
    plane_resolution=32, plane_channels=8, channel_base=512, channel_max=32, conv_clamp=None,
    decoder_hidden_dim=16, decoder_output_dim=8, neural_rendering_resolution=16,
    depth_resolution=8, depth_resolution_importance=8, ray_start=2.25, ray_end=3.3, box_warp=1.0,
    sr_input_resolution=16, sr_channels=(16, 8), sr_conv_clamp=256, sr_antialias=True, sr_noise_mode="none",
    fov_degrees=18.837, camera_radius=2.7, camera_pivot=(0.0, 0.0, 0.2),
)


def build_eg3d_ffhq(device="meta", paper_compat: bool = False) -> EG3DGenerator:
    """The full-size EG3D FFHQ-512 architecture without weights (on ``device``; "meta" allocates nothing)."""
    config = dict(EG3D_FFHQ512, **(PAPER_COMPAT_OVERRIDES if paper_compat else {}))
    with torch.device(device):
        return EG3DGenerator(**config)


def build_eg3d_tiny(device="cpu", seed: int = 0, **overrides) -> EG3DGenerator:
    """A randomly initialised tiny EG3D (deterministic for a seed), in eval mode.

    Its ``w_avg`` is set to the mean of 1024 mapped codes (frontal conditioning camera), as a trained model's
    running average would be, so truncation and UFO targets behave sensibly.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            gen = EG3DGenerator(**dict(EG3D_TINY, **overrides))
        with torch.no_grad():
            z = torch.randn(1024, gen.z_dim, device=device)
            gen.w_avg.copy_(gen.mapping(z)[:, 0].mean(0))
    return gen.eval()
