"""GOAE encoder backend (Swin V2 from timm + GOAE's mappers and cross-attention heads): inverts aligned faces
into EG3D ws. Needs ``timm``.

Registers the ``goae-pt`` checkpoint format (GOAE's ``encoder_FFHQ.pt``, an inverter for the ``eg3d`` family).
"""

from typing import Any, Mapping

from guide_unlearn.families import CheckpointFormat, register_format

from .encoder import CrossAttention, GOAEConfig, GOAEncoder
from .inverter import GOAEInverter, build_goae_ffhq, load_goae_ffhq


def _is_goae_checkpoint(obj: Any) -> bool:
    return isinstance(obj, Mapping) and any(str(k).startswith("swin_model.") for k in obj)


def _read_inverter(obj: Any, path: Any = None, generator: Any = None, device: Any = "cpu"):
    """GOAE from the file at ``path`` (``obj``, its loaded contents, is not needed): codes are offsets from
    ``generator``'s w_avg."""
    from guide_unlearn.checkpoints.torch_zip import scan_torch_file  # noqa: PLC0415
    from guide_unlearn.errors import CheckpointError  # noqa: PLC0415

    if generator is None:
        raise CheckpointError(f"{path}: GOAE codes are offsets from the EG3D generator's w_avg; pass generator= "
                              "(e.g. load_generator('eg3d-ffhq'))")
    scan_torch_file(path)  # refuse unsafe globals before reading the file with weights_only=True
    return load_goae_ffhq(path, generator.w_avg.detach(), device=device).eval()


FORMAT = register_format(CheckpointFormat(
    "goae-pt", "eg3d", "checkpoint", _is_goae_checkpoint, kind="inverter", read_inverter=_read_inverter,
    description="GOAE encoder_FFHQ.pt (Swin-V2 backbone + cross-attention heads)"))

__all__ = ["CrossAttention", "GOAEConfig", "GOAEInverter", "GOAEncoder", "build_goae_ffhq", "load_goae_ffhq"]
