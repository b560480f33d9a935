"""StyleGAN2 (2D) generator backend in pure PyTorch, NVIDIA parameter names.

Registers the ``stylegan2`` generator family: model folders of ``StyleGAN2Generator``, NVIDIA ``Generator``
pickles, NVIDIA / rosinality state dicts and rosinality's ``{'g_ema', 'latent_avg'}`` ``.pt``.
"""

from typing import Any, Mapping, Optional

from guide_unlearn.families import CheckpointFormat, GeneratorFamily, register_family

from .model import StyleGAN2Generator

_CONVERT = "guide_unlearn.adapters.stylegan2.convert"
_CONFIGS = "guide_unlearn.adapters.stylegan2.configs"


def _is_rosinality_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and "g_ema" in obj


def _read_rosinality_checkpoint(obj: Mapping, config: Optional[dict] = None, what: str = ""):
    from .convert import from_rosinality  # noqa: PLC0415

    return from_rosinality(obj["g_ema"], obj.get("latent_avg"))


def _read_nvidia_state_dict(sd: Mapping, config: Optional[dict] = None, what: str = ""):
    from .convert import from_nvidia_state_dict  # noqa: PLC0415

    return from_nvidia_state_dict(sd, config, what=what)


def _read_rosinality_state_dict(sd: Mapping, config: Optional[dict] = None, what: str = ""):
    from .convert import from_rosinality  # noqa: PLC0415

    sd = dict(sd)
    latent_avg = sd.pop("latent_avg", None)
    return from_rosinality(sd, latent_avg)


FAMILY = register_family(GeneratorFamily(
    name="stylegan2",
    model_class=StyleGAN2Generator,
    folder_classes=("StyleGAN2Generator",),
    pickle_classes=("Generator",),
    from_pickle=f"{_CONVERT}:from_nvidia",
    formats=(
        CheckpointFormat("rosinality-pt", "stylegan2", "checkpoint", _is_rosinality_checkpoint,
                         _read_rosinality_checkpoint, description="rosinality .pt {'g_ema', 'latent_avg', ...}"),
        CheckpointFormat("stylegan2-nvidia", "stylegan2", "state-dict", f"{_CONVERT}:is_nvidia_state_dict",
                         _read_nvidia_state_dict, description="StyleGAN2 tensors in NVIDIA's names"),
        CheckpointFormat("stylegan2-rosinality", "stylegan2", "state-dict", f"{_CONVERT}:is_rosinality_state_dict",
                         _read_rosinality_state_dict, description="StyleGAN2 tensors in rosinality's names"),
    ),
    configs={"ffhq-1024": f"{_CONFIGS}:SG2_FFHQ_1024", "ffhq-512": f"{_CONFIGS}:SG2_FFHQ_512",
             "ffhq-256": f"{_CONFIGS}:SG2_FFHQ_256", "ada-ffhq-1024": f"{_CONFIGS}:SG2_ADA_FFHQ_1024"},
    tiny_config=f"{_CONFIGS}:TINY_STYLEGAN2",
    build_tiny=f"{_CONFIGS}:build_stylegan2_tiny",
    input_alignment="ffhq",
    description="StyleGAN2 config-f ('skip' generator), any size; NVIDIA parameter names",
    exporter=f"{_CONVERT}:export_safetensors",
    export_layouts=("nvidia", "rosinality"),
))

__all__ = ["FAMILY", "StyleGAN2Generator"]
