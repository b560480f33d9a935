"""EG3D tri-plane generator backend (pure PyTorch, official G_ema parameter names): cameras, renderer,
super-resolution, the generator adapter, named configs and the converter from the official pickle contents.

Registers the ``eg3d`` generator family: model folders of ``EG3DGenerator`` and NVIDIA ``TriPlaneGenerator``
pickles.
"""

from guide_unlearn.families import GeneratorFamily, register_family

from .cameras import CameraConfig, make_cameras, orbit_cameras, sample_training_cameras
from .configs import EG3D_FFHQ512, EG3D_TINY, PAPER_COMPAT_OVERRIDES, build_eg3d_ffhq, build_eg3d_tiny
from .model import EG3DGenerator, EG3DRender

FAMILY = register_family(GeneratorFamily(
    name="eg3d",
    model_class=EG3DGenerator,
    folder_classes=("EG3DGenerator",),
    pickle_classes=("TriPlaneGenerator",),
    from_pickle="guide_unlearn.adapters.eg3d.convert:from_nvidia",
    configs={"ffhq512": EG3D_FFHQ512, "ffhq512-paper-compat": {**EG3D_FFHQ512, **PAPER_COMPAT_OVERRIDES}},
    tiny_config=EG3D_TINY,
    build_tiny=build_eg3d_tiny,
    input_alignment="eg3d",
    description="EG3D tri-plane generator (StyleGAN2 backbone, neural renderer, super-resolution)",
))

__all__ = [
    "CameraConfig", "EG3DGenerator", "EG3DRender", "EG3D_FFHQ512", "EG3D_TINY", "FAMILY", "PAPER_COMPAT_OVERRIDES",
    "build_eg3d_ffhq", "build_eg3d_tiny", "make_cameras", "orbit_cameras", "sample_training_cameras",
]
