"""The StyleGAN2 generator as a diffusers-style model and a GUIDE generator adapter."""

from __future__ import annotations

from typing import Optional

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from guide_unlearn.lineage import LineageSaveMixin
from guide_unlearn.protocols import SynthesisOutput

from .layers import SynthesisLayer, ToRGBLayer
from .networks import MappingNetwork, SynthesisNetwork


class AdapterSynthesis(SynthesisNetwork):
    """The synthesis network as the adapter protocol calls it: returns a :class:`SynthesisOutput`.

    Same parameters and names as :class:`SynthesisNetwork` (the EG3D backbone uses the plain one).
    """

    def forward(self, ws: torch.Tensor, c: Optional[torch.Tensor] = None, noise_mode: str = "random",
                generator: Optional[torch.Generator] = None, return_features: bool = False,
                fused: Optional[bool] = None) -> SynthesisOutput:
        """ws [N, num_ws, w_dim] -> SynthesisOutput(images [N, C, R, R] in about [-1, 1], features = the last
        block's feature map [N, C_last, R, R] when ``return_features``). ``c`` is ignored (no camera)."""
        img, feat = super().forward(ws, noise_mode=noise_mode, generator=generator, fused=fused,
                                    return_features=True)
        return SynthesisOutput(img, feat if return_features else None)


class StyleGAN2Generator(LineageSaveMixin, ModelMixin, ConfigMixin):
    """StyleGAN2 (config-f, 'skip' generator) with NVIDIA parameter names; any size from tiny to FFHQ-1024.

    ``save_pretrained(dir)`` / ``from_pretrained(dir)`` round-trip a folder (config.json + safetensors).
    Implements :class:`guide_unlearn.protocols.GeneratorAdapter`.
    """

    family = "stylegan2"
    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        z_dim: int = 512,  # latent z width
        w_dim: int = 512,  # intermediate latent width
        c_dim: int = 0,  # conditioning width (0 = unconditional)
        img_resolution: int = 1024,  # output resolution (power of two)
        img_channels: int = 3,  # output channels
        mapping_layers: int = 8,  # FC layers in the mapping network
        mapping_lr_multiplier: float = 0.01,  # mapping learning-rate multiplier
        channel_base: int = 32768,  # channels = min(channel_base / res, channel_max)
        channel_max: int = 512,  # channel cap
        conv_clamp: Optional[float] = None,  # activation clamp (None = off)
        use_noise: bool = True,  # per-pixel noise inputs
    ):
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, c_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        synthesis = AdapterSynthesis(w_dim, img_resolution, img_channels, channel_base=channel_base,
                                     channel_max=channel_max, conv_clamp=conv_clamp, use_noise=use_noise)
        self.num_ws = synthesis.num_ws
        # `mapping` and `synthesis` are both the NVIDIA state-dict prefixes and the adapter protocol's callables.
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers,
                                      lr_multiplier=mapping_lr_multiplier)
        self.synthesis = synthesis

    # -- GeneratorAdapter -------------------------------------------------------------------------------------
    @property
    def w_avg(self) -> torch.Tensor:
        """Mean intermediate latent [w_dim] (the mapping network's running average)."""
        return self.mapping.w_avg

    def forward(self, z: torch.Tensor, c=None, truncation_psi: float = 1.0, noise_mode: str = "random",
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """z [N, z_dim] -> images [N, C, R, R]."""
        return self.synthesis(self.mapping(z, c, truncation_psi), noise_mode=noise_mode, generator=generator).images

    def sample_cameras(self, n: int, generator: Optional[torch.Generator] = None):
        """StyleGAN2 has no camera: None."""
        return None

    def evaluation_cameras(self, n_views: int = 11):
        """StyleGAN2 has no camera: None."""
        return None

    def working_memory(self, batch: int = 1) -> int:
        """Bytes one rendering of ``batch`` codes allocates (an estimate; see ``SynthesisNetwork.working_memory``)."""
        return self.synthesis.working_memory(batch)

    def lora_layer_types(self) -> tuple[type, ...]:
        """Modulated convs (3×3 synthesis layers and 1×1 ToRGB) accept a pre-modulation ``weight_delta``."""
        return (SynthesisLayer, ToRGBLayer)

    def lora_target_modules(self) -> list[str]:
        """Default LoRA targets: every 3×3 synthesis conv (``synthesis.b*.conv0/conv1``)."""
        return [name for name, m in self.named_modules() if isinstance(m, SynthesisLayer)]

    def full_finetune_parameters(self) -> list[str]:
        """The ``paper`` preset trains every parameter under ``synthesis`` (as GUIDE does)."""
        return [name for name, _ in self.named_parameters() if name.startswith("synthesis.")]

    def default_target_distance(self) -> tuple[float, bool]:
        """d = 1 × the typical ||w - w_avg|| of mapped samples: EG3D's absolute d = 30 has no meaning in another
        model's W space, so 2D StyleGAN2 backends default to a relative distance."""
        return (1.0, True)
