"""ArcFace IR-SE50 (GUIDE's ID loss) and CurricularFace IR-101 (the paper's ID metric) as IdentityModels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from guide_unlearn.checkpoints import load_state_file
from guide_unlearn.errors import CheckpointError
from guide_unlearn.faces.weights import PathLike, find_weight

from .common import Images, to_batch
from .irse import IRBackbone


def load_backbone_state(net: nn.Module, file: Path, what: str) -> None:
    """Load an official raw state_dict (``torch.load(weights_only=True)``) into ``net``; tolerates a
    ``module.`` prefix (DataParallel saves) and a {"state_dict": ...} wrapper; anything else missing or extra
    is a CheckpointError naming the keys."""
    try:
        state = load_state_file(file)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot load {what}: {exc}; expected a raw PyTorch state_dict") from exc
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{file} does not match {what}: missing {sorted(missing)[:5]}, unexpected "
                              f"{sorted(unexpected)[:5]}")


class ArcFaceIdentity(nn.Module):
    """ArcFace IR-SE50 with pSp / GUIDE's input convention: resize to 256, crop rows 35:223 and columns
    32:220, adaptive-average-pool to 112. Input: whole-face crops (style "ffhq"; GUIDE feeds EG3D renders as
    they are) as PIL images or [N, 3, H, W] in [-1, 1]. ``embed`` -> unit vectors [N, 512]; differentiable."""

    name = "arcface"
    align_style = "ffhq"
    differentiable = True

    def __init__(self, backbone: IRBackbone) -> None:
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)

    def embed(self, images: Images) -> torch.Tensor:
        x = to_batch(images, 256, next(self.backbone.parameters()).device)
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


def load_curricularface(path: Optional[PathLike] = None, device: torch.device | str = "cpu"
                        ) -> CurricularFaceIdentity:
    """CurricularFace IR-101 from ``CurricularFace_Backbone.pth`` (explicit path,
    $GUIDE_SHARED/weights/curricularface, cache)."""
    file = find_weight("curricularface", "CurricularFace_Backbone.pth", path, what="CurricularFace IR-101",
                       install_hint="It is the ID-metric network of GUIDE's evaluation.")
    net = IRBackbone(101, se=False, affine_bn1d=False)
    load_backbone_state(net, Path(file), "CurricularFace IR-101")
    return CurricularFaceIdentity(net).to(device)
