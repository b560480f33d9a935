"""ArcFace IR-SE50 (GUIDE's ID loss) and CurricularFace IR-101 (the paper's ID metric) as IdentityModels."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from guide_unlearn.checkpoints import load_state_file
from guide_unlearn.checkpoints.matching import match_state_dict
from guide_unlearn.errors import CheckpointError, ConfigError
from guide_unlearn.faces.weights import PathLike, find_weight

from .common import Images, to_batch
from .irse import STAGE_UNITS, IRBackbone

CURRICULARFACE_FILE = "CurricularFace_Backbone.pth"
#: Same-person cut on the cosine of CurricularFace IR-101 embeddings. CurricularFace (Huang et al., CVPR 2020)
#: publishes no fixed threshold (its verification accuracies use the best threshold per 10-fold split), so this
#: is a DOCUMENTED CHOICE, not a published value: 0.3 is the usual operating point of ArcFace-family 512-d
#: embeddings (genuine pairs mostly above, impostor pairs mostly below). Calibrate it on your own photos when a
#: decision depends on it (docs/audit.md).
CURRICULARFACE_COSINE_THRESHOLD = 0.3


def _read_state(file: Path, what: str) -> dict:
    try:
        state = load_state_file(file)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot load {what}: {exc}; expected a raw PyTorch state_dict") from exc
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_backbone_state(net: nn.Module, file: Path, what: str) -> None:
    """Load an official raw state_dict (``torch.load(weights_only=True)``) into ``net``; tolerates a
    ``module.`` prefix (DataParallel saves) and a {"state_dict": ...} wrapper; anything else missing, extra or of
    another shape is a CheckpointError naming the keys (nothing is loaded then)."""
    match_state_dict(net, _read_state(file, what), what, file)


def ir_stage_units(state: Mapping[str, torch.Tensor]) -> tuple[int, ...]:
    """Units per stage of an IR / IR-SE backbone read from its state-dict keys: the body units
    (``body.{i}.res_layer.1.weight`` [out, in, 3, 3]) grouped by output width, in order. (3, 4, 14, 3) is
    IR-50, (3, 13, 30, 3) IR-100/101, (3, 8, 36, 3) IR-152; CheckpointError when there is no IR body."""
    widths = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) == 5 and parts[0] == "body" and parts[1].isdigit() and parts[2:] == ["res_layer", "1",
                                                                                          "weight"]:
            widths[int(parts[1])] = int(value.shape[0]) if value.ndim == 4 else -1
    if not widths or sorted(widths) != list(range(len(widths))):
        raise CheckpointError("not an IR backbone state dict: no contiguous body.{i}.res_layer.1.weight keys")
    units: list[int] = []
    last = None
    for i in range(len(widths)):
        if widths[i] != last:
            units.append(0)
            last = widths[i]
        units[-1] += 1
    return tuple(units)


def ir_depth_name(units: Sequence[int]) -> str:
    """'IR-50', 'IR-101', 'IR-152' for the official unit counts, else 'IR (units a, b, c, d per stage)'."""
    names = {(3, 4, 14, 3): "IR-50", (3, 13, 30, 3): "IR-101", (3, 8, 36, 3): "IR-152"}
    return names.get(tuple(units), f"IR (units {', '.join(map(str, units))} per stage)")


class ArcFaceIdentity(nn.Module):
    """ArcFace IR-SE50 with GUIDE's input convention (its IDLoss): resize to 256 (tensors: plain bilinear, no
    antialiasing, as GUIDE's ``F.interpolate(x, (256, 256), mode='bilinear')``), crop rows 35:223 and columns
    32:220, adaptive-average-pool to 112. Input: whole-face crops (style "ffhq"; GUIDE feeds EG3D renders as
    they are) as PIL images or [N, 3, H, W] in [-1, 1]. ``embed`` -> unit vectors [N, 512]; differentiable."""

    name = "arcface"
    align_style = "ffhq"
    differentiable = True

    def __init__(self, backbone: IRBackbone) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)

    def embed(self, images: Images) -> torch.Tensor:
        x = to_batch(images, 256, next(self.backbone.parameters()).device, antialias=False)
        x = F.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], (112, 112))
        return self.backbone(x)


class CurricularFaceIdentity(nn.Module):
    """CurricularFace IR-101 ('ir' mode, BatchNorm1d without affine) on "arcface" 112x112 crops, inputs
    normalised with mean 0.5 / std 0.5 (= [-1, 1]). ``embed`` -> unit vectors [N, 512]; differentiable."""

    name = "curricularface"
    align_style = "arcface"
    differentiable = True

    def __init__(self, backbone: IRBackbone) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)

    def embed(self, images: Images) -> torch.Tensor:
        return self.backbone(to_batch(images, 112, next(self.backbone.parameters()).device))


def load_arcface(path: Optional[PathLike] = None, device: torch.device | str = "cpu") -> ArcFaceIdentity:
    """ArcFace IR-SE50 from ``model_ir_se50.pth`` (explicit path, $GUIDE_SHARED/weights/arcface, cache)."""
    file = find_weight("arcface", "model_ir_se50.pth", path, what="ArcFace IR-SE50",
                       install_hint="It is the ID-loss network of pSp / e4e / GUIDE (43.8 M parameters).")
    net = IRBackbone(50, se=True, affine_bn1d=True)
    load_backbone_state(net, Path(file), "ArcFace IR-SE50")
    return ArcFaceIdentity(net).to(device)


def load_curricularface(path: Optional[PathLike] = None, device: torch.device | str = "cpu",
                        depth: Optional[int] = 101) -> CurricularFaceIdentity:
    """CurricularFace IR-101 from ``CurricularFace_Backbone.pth`` (explicit path,
    $GUIDE_SHARED/weights/curricularface, cache), read without executing code.

    depth: the IR depth the file must have (101: the paper's network; 50 / 152), or None to take whatever unit
    counts the file's keys hold (short test backbones). The loaded depth is ``model.depth`` ('IR-101', ...), the
    file ``model.file``. A file of another depth or layout is a CheckpointError naming what differs.
    """
    file = Path(find_weight("curricularface", CURRICULARFACE_FILE, path, what="CurricularFace IR-101",
                            install_hint="It is the ID-metric network of GUIDE's evaluation."))
    state = _read_state(file, "CurricularFace IR-101")
    units = ir_stage_units(state)
    if depth is not None:
        if depth not in STAGE_UNITS:
            raise ConfigError(f"depth must be one of {sorted(STAGE_UNITS)} or None, got {depth!r}")
        if units != STAGE_UNITS[depth]:
            raise CheckpointError(
                f"{file} holds an {ir_depth_name(units)} backbone (units {units} per stage), not IR-{depth} "
                f"(units {STAGE_UNITS[depth]}): it is not the CurricularFace IR-{depth} checkpoint")
    if len(units) != 4:
        raise CheckpointError(f"{file}: an IR backbone has 4 stages, the file's body has {len(units)} ({units})")
    net = IRBackbone(101, se=False, affine_bn1d=False, stage_units=units)
    match_state_dict(net, state, f"CurricularFace {ir_depth_name(units)} ('ir' units, BatchNorm1d without affine)",
                     file)
    model = CurricularFaceIdentity(net).to(device)
    model.depth, model.stage_units, model.file = ir_depth_name(units), units, file
    return model
