"""The EG3D tri-plane generator as a diffusers-style model and a GUIDE generator adapter.

Parameter names follow the official ``G_ema`` of ``ffhqrebalanced512-128.pkl`` (``backbone.mapping.*``,
``backbone.synthesis.*``, ``decoder.net.0/2``, ``superresolution.block0/1.*``), so the official weights load
with ``load_state_dict(strict=True)`` after the safe pickle reader flattened them (see :mod:`.convert`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from guide_unlearn.errors import ConfigError, LatentError
from guide_unlearn.lineage import LineageSaveMixin
from guide_unlearn.protocols import SynthesisOutput

from ..stylegan2.layers import SynthesisLayer, ToRGBLayer
from ..stylegan2.networks import MappingNetwork, SynthesisNetwork
from . import cameras as cam
from .renderer import OSGDecoder, RenderingOptions, render_planes, sample_rays
from .superresolution import SuperresolutionHybrid8XDC


@dataclass
class EG3DRender:
    """Everything one EG3D synthesis pass produces.

    image:         [N, 3, R_img, R_img] super-resolved image in about [-1, 1].
    image_raw:     [N, 3, R_nr, R_nr] the neural rendering's first 3 channels (raw RGB).
    image_depth:   [N, 1, R_nr, R_nr] expected depth along each ray.
    opacity:       [N, 1, R_nr, R_nr] accumulated opacity (sum of the ray weights).
    feature_image: [N, C_dec, R_nr, R_nr] the full neural rendering fed to the super-resolution.
    planes:        [N, 3, C_plane, P, P] the tri-planes (the GUIDE L2 feature).
    """

    image: torch.Tensor
    image_raw: torch.Tensor
    image_depth: torch.Tensor
    opacity: torch.Tensor
    feature_image: torch.Tensor
    planes: torch.Tensor


class TriPlaneBackbone(nn.Module):
    """StyleGAN2 mapping + synthesis whose 'image' is the 3 × C_plane tri-plane channels (``backbone.*``)."""

    def __init__(self, mapping: MappingNetwork, synthesis: SynthesisNetwork):
        super().__init__()
        self.mapping = mapping  # z + camera -> ws
        self.synthesis = synthesis  # ws -> [N, 3·C_plane, P, P]


class EG3DGenerator(LineageSaveMixin, ModelMixin, ConfigMixin):
    """EG3D (Chan et al. 2022) in pure PyTorch; any size from a tiny CPU test model to FFHQ-512.

    Implements :class:`guide_unlearn.protocols.GeneratorAdapter`: ``mapping`` takes a conditioning camera
    (default: the frontal one), ``synthesis`` a rendering camera; the feature tensor of the L2 term is the
    tri-plane stack [N, 3, C_plane, P, P]. ``save_pretrained`` / ``from_pretrained`` round-trip a folder.
    """

    family = "eg3d"
    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        z_dim: int = 512,  # latent z width
        w_dim: int = 512,  # intermediate latent width
        c_dim: int = 25,  # camera label width (cam2world 16 + intrinsics 9)
        img_resolution: int = 512,  # final (super-resolved) image size
        mapping_layers: int = 2,  # FC layers after the z/camera concat
        mapping_lr_multiplier: float = 0.01,  # mapping learning-rate multiplier
        c_scale: float = 1.0,  # multiplier on the conditioning camera (EG3D rendering_kwargs['c_scale'])
        conditioning_zero: bool = False,  # replace the conditioning camera by zeros (EG3D without pose cond.)
        plane_resolution: int = 256,  # tri-plane size P (the backbone's output resolution)
        plane_channels: int = 32,  # channels per plane (backbone outputs 3× this)
        channel_base: int = 32768,  # backbone channels = min(channel_base / res, channel_max)
        channel_max: int = 512,  # backbone channel cap
        conv_clamp: Optional[float] = None,  # backbone activation clamp (None for ffhq512-128)
        decoder_hidden_dim: int = 64,  # OSG decoder hidden width
        decoder_output_dim: int = 32,  # OSG decoder feature channels (first 3 = raw RGB)
        decoder_lr_multiplier: float = 1.0,  # OSG decoder learning-rate multiplier
        neural_rendering_resolution: int = 128,  # rays per image side
        depth_resolution: int = 48,  # stratified samples per ray
        depth_resolution_importance: int = 48,  # importance samples per ray
        ray_start: float = 2.25,  # near bound
        ray_end: float = 3.3,  # far bound
        box_warp: float = 1.0,  # side of the cube spanned by the planes
        white_back: bool = False,  # composite over white
        sr_input_resolution: int = 128,  # resolution the super-resolution blocks expect
        sr_channels: Sequence[int] = (256, 128),  # super-resolution block widths
        sr_conv_clamp: Optional[float] = 256,  # super-resolution activation clamp
        sr_antialias: bool = True,  # antialiased resize into the super-resolution
        sr_noise_mode: str = "none",  # noise in the super-resolution layers (EG3D: 'none')
        fov_degrees: float = cam.EG3D_FOV_DEGREES,  # camera field of view
        camera_radius: float = cam.EG3D_RADIUS,  # camera distance from the origin
        camera_pivot: Sequence[float] = cam.EG3D_PIVOT,  # look-at point; GUIDE's code used [0, 0, 0]
        yaw_range: float = 0.2617993877991494,  # training/evaluation yaw = pi/2 ± this (pi/12)
        pitch_offset: float = -0.2,  # training/evaluation pitch = pi/2 + this
    ):
        super().__init__()
        if c_dim != 25:
            raise ConfigError(f"EG3D cameras have 25 numbers; c_dim must be 25, got {c_dim}")
        if sr_noise_mode not in ("none", "const", "random"):
            raise ConfigError(f"sr_noise_mode must be 'none', 'const' or 'random', got {sr_noise_mode!r}")
        if len(tuple(camera_pivot)) != 3:
            raise ConfigError(f"camera_pivot must have 3 numbers, got {camera_pivot!r}")
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, c_dim
        self.img_resolution = img_resolution
        self.plane_channels = plane_channels
        synthesis = SynthesisNetwork(w_dim, plane_resolution, 3 * plane_channels, channel_base=channel_base,
                                     channel_max=channel_max, conv_clamp=conv_clamp)
        self.num_ws = synthesis.num_ws
        mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers,
                                 lr_multiplier=mapping_lr_multiplier)
        self.backbone = TriPlaneBackbone(mapping, synthesis)
        self.superresolution = SuperresolutionHybrid8XDC(
            decoder_output_dim, img_resolution, sr_input_resolution, tuple(sr_channels), w_dim,
            conv_clamp=sr_conv_clamp, antialias=sr_antialias)
        self.decoder = OSGDecoder(plane_channels, decoder_hidden_dim, decoder_output_dim, decoder_lr_multiplier)
        self.rendering = RenderingOptions(ray_start, ray_end, depth_resolution, depth_resolution_importance,
                                          box_warp, "softplus", white_back)
        self.neural_rendering_resolution = neural_rendering_resolution
        self.c_scale = c_scale
        self.conditioning_zero = conditioning_zero
        self.sr_noise_mode = sr_noise_mode
        self._set_cameras(fov_degrees, camera_radius, camera_pivot, yaw_range, pitch_offset)

    def _set_cameras(self, fov, radius, pivot, yaw_range, pitch_offset) -> None:
        self.cameras = cam.CameraConfig(float(fov), float(radius), tuple(float(p) for p in pivot),
                                        float(yaw_range), float(pitch_offset))

    @classmethod
    def paper_compat(cls, **config) -> "EG3DGenerator":
        """A generator configured like the official GUIDE code: camera pivot [0, 0, 0] (see :meth:`use_camera_pivot`)."""
        config = dict(config)
        config["camera_pivot"] = cam.GUIDE_CODE_PIVOT
        return cls(**config)

    def use_camera_pivot(self, pivot: Sequence[float]) -> "EG3DGenerator":
        """Change the look-at pivot of generated cameras (and the saved config); returns self.

        EG3D's FFHQ pivot is [0, 0, 0.2]; the official GUIDE code reads the pivot under a misspelt key and so
        always uses [0, 0, 0] — pass :data:`~.cameras.GUIDE_CODE_PIVOT` to reproduce its numbers exactly.
        """
        pivot = tuple(float(p) for p in pivot)
        if len(pivot) != 3:
            raise ConfigError(f"camera_pivot must have 3 numbers, got {pivot!r}")
        self.register_to_config(camera_pivot=list(pivot))
        c = self.cameras
        self._set_cameras(c.fov_degrees, c.radius, pivot, c.yaw_range, c.pitch_offset)
        return self

    # -- GeneratorAdapter -------------------------------------------------------------------------------------
    @property
    def w_avg(self) -> torch.Tensor:
        """Mean intermediate latent [w_dim] (the mapping network's running average)."""
        return self.backbone.mapping.w_avg

    def conditioning_camera(self, n: int = 1) -> torch.Tensor:
        """The frontal conditioning camera GUIDE uses for the mapping (yaw = pitch = pi/2), [n, 25]."""
        return cam.conditioning_cameras(n, self.cameras, device=self.w_avg.device)

    def mapping(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None) -> torch.Tensor:
        """z [N, z_dim] (+ conditioning camera [N or 1, 25]; None = frontal) -> ws [N, num_ws, w_dim]."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise LatentError(f"z must be [N, {self.z_dim}], got {list(z.shape)}")
        n = z.shape[0]
        if c is None:
            c = self.conditioning_camera(n)
        cam.check_cameras(c, n)
        c = c.to(z.device).expand(n, -1)
        c = torch.zeros_like(c) if self.conditioning_zero else c * self.c_scale
        return self.backbone.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    def _check_ws(self, ws: torch.Tensor) -> None:
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            shape = list(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
            raise LatentError(f"ws must be [N, {self.num_ws}, {self.w_dim}] for this EG3D, got {shape}")

    def features(self, ws: torch.Tensor, noise_mode: str = "random", generator: Optional[torch.Generator] = None,
                 fused: Optional[bool] = None) -> torch.Tensor:
        """Tri-planes [N, 3, C_plane, P, P] for ws [N, num_ws, w_dim] (GUIDE's ``get_planes``)."""
        self._check_ws(ws)
        planes = self.backbone.synthesis(ws, noise_mode=noise_mode, generator=generator, fused=fused)
        return planes.reshape(planes.shape[0], 3, self.plane_channels, planes.shape[-2], planes.shape[-1])

    def render(self, ws: torch.Tensor, c: Optional[torch.Tensor] = None, noise_mode: str = "random",
               generator: Optional[torch.Generator] = None, neural_rendering_resolution: Optional[int] = None,
               fused: Optional[bool] = None) -> EG3DRender:
        """ws [N, num_ws, w_dim] + rendering camera [N or 1, 25] (None = frontal, yaw = pitch = pi/2)
        -> :class:`EG3DRender` (image, raw image, depth, opacity, planes). ``generator`` drives the backbone
        noise, the stratified jitter and the importance samples."""
        self._check_ws(ws)
        n = ws.shape[0]
        if c is None:
            c = self.conditioning_camera(n)
        cam.check_cameras(c, n)
        c = c.to(device=ws.device, dtype=torch.float32).expand(n, -1)
        res = int(neural_rendering_resolution or self.neural_rendering_resolution)
        cam2world, intrinsics = cam.decode_cameras(c)
        origins, directions = sample_rays(cam2world, intrinsics, res)
        planes = self.features(ws, noise_mode=noise_mode, generator=generator, fused=fused)
        feats, depth, opacity = render_planes(planes, self.decoder, origins, directions, self.rendering, generator)
        feature_image = feats.permute(0, 2, 1).reshape(n, feats.shape[-1], res, res)
        image_raw = feature_image[:, :3]
        image = self.superresolution(image_raw, feature_image, ws, noise_mode=self.sr_noise_mode,
                                     generator=generator, fused=fused)
        return EG3DRender(image=image, image_raw=image_raw, image_depth=depth.permute(0, 2, 1).reshape(n, 1, res, res),
                          opacity=opacity.permute(0, 2, 1).reshape(n, 1, res, res), feature_image=feature_image,
                          planes=planes)

    def synthesis(self, ws: torch.Tensor, c: Optional[torch.Tensor] = None, noise_mode: str = "random",
                  generator: Optional[torch.Generator] = None, return_features: bool = False,
                  fused: Optional[bool] = None) -> SynthesisOutput:
        """ws [N, num_ws, w_dim] + rendering camera [N or 1, 25] (None = frontal) -> SynthesisOutput(images
        [N, 3, R_img, R_img] super-resolved, in about [-1, 1]; features = tri-planes [N, 3, C_plane, P, P])."""
        out = self.render(ws, c, noise_mode=noise_mode, generator=generator, fused=fused)
        return SynthesisOutput(out.image, out.planes if return_features else None)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                noise_mode: str = "random", generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """z [N, z_dim] -> images [N, 3, R_img, R_img], conditioned and rendered from camera ``c`` (None = frontal)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi)
        return self.synthesis(ws, c, noise_mode=noise_mode, generator=generator).images

    def camera_from_angles(self, yaw: float, pitch: float) -> torch.Tensor:
        """A rendering camera [1, 25] at absolute EG3D angles (radians; (pi/2, pi/2) = frontal)."""
        return cam.make_cameras(yaw, pitch, self.cameras, device=self.w_avg.device)

    def frontal_camera(self, n: int = 1) -> torch.Tensor:
        """The centre view of the training/evaluation orbit (yaw pi/2, pitch pi/2 - 0.2), [n, 25]."""
        return cam.frontal_rendering_cameras(n, self.cameras, device=self.w_avg.device)

    def sample_cameras(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """GUIDE's training cameras [n, 25]: yaw = pi/2 + U(-pi/12, pi/12), pitch = pi/2 - 0.2, drawn with
        ``generator``."""
        return cam.sample_training_cameras(n, generator, self.cameras, device=self.w_avg.device)

    def evaluation_cameras(self, n_views: int = 11) -> torch.Tensor:
        """The evaluation orbit [n_views, 25]: yaws pi/2 + linspace(-pi/12, pi/12), pitch pi/2 - 0.2."""
        return cam.orbit_cameras(n_views, self.cameras, device=self.w_avg.device)

    def working_memory(self, batch: int = 1) -> int:
        """Bytes one rendering of ``batch`` codes allocates (float32, a lower estimate from the declared sizes): the
        backbone's activations, the decoder's per-sample features over ``neural_rendering_resolution``² rays in the
        larger of the coarse and fine passes, the merged samples, and the super-resolution's feature maps."""
        rays = self.neural_rendering_resolution ** 2
        opts = self.rendering
        c, hidden = self.plane_channels, self.decoder.net[0].weight.shape[0]
        out = self.decoder.net[-1].weight.shape[0]
        samples = max(opts.depth_resolution, opts.depth_resolution_importance)
        render = rays * samples * (3 * c + hidden + out) + rays * (opts.depth_resolution
                                                                   + opts.depth_resolution_importance) * (out + 2)
        sr = sum(b.resolution ** 2 * 3 * b.out_channels for b in (self.superresolution.block0,
                                                                    self.superresolution.block1))
        return self.backbone.synthesis.working_memory(batch) + 4 * int(batch) * (render + sr)

    def lora_layer_types(self) -> tuple[type, ...]:
        """Modulated convs (3×3 synthesis layers and 1×1 ToRGB) accept a pre-modulation ``weight_delta``."""
        return (SynthesisLayer, ToRGBLayer)

    def lora_target_modules(self) -> list[str]:
        """Default LoRA targets: the backbone's 3×3 synthesis convs (13 in EG3D-512), not the super-resolution."""
        return [name for name, m in self.named_modules()
                if name.startswith("backbone.synthesis.") and isinstance(m, SynthesisLayer)]

    def full_finetune_parameters(self) -> list[str]:
        """The ``paper`` preset trains every parameter under ``backbone.synthesis`` (as GUIDE does)."""
        return [name for name, _ in self.named_parameters() if name.startswith("backbone.synthesis.")]

    def default_target_distance(self) -> tuple[float, bool]:
        """GUIDE's absolute d = 30 in EG3D's W space."""
        return (30.0, False)
