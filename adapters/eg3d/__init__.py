"""EG3D tri-plane generator backend (pure PyTorch, official G_ema parameter names): cameras, renderer,
super-resolution, the generator adapter, named configs and the converter from the official pickle contents."""

from .cameras import CameraConfig, make_cameras, orbit_cameras, sample_training_cameras
from .configs import EG3D_FFHQ512, EG3D_TINY, PAPER_COMPAT_OVERRIDES, build_eg3d_ffhq, build_eg3d_tiny
from .model import EG3DGenerator, EG3DRender

__all__ = [
    "CameraConfig", "EG3DGenerator", "EG3DRender", "EG3D_FFHQ512", "EG3D_TINY", "PAPER_COMPAT_OVERRIDES",
    "build_eg3d_ffhq", "build_eg3d_tiny", "make_cameras", "orbit_cameras", "sample_training_cameras",
]
