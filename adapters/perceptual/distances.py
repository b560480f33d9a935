"""Perceptual distances behind the core's ``PerceptualDistance`` protocol.

LPIPS-VGG needs torchvision's ImageNet VGG16 weights (``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth``), which
a normal machine downloads on first use. Where they are absent (offline machines) the library falls back to
:class:`MultiScaleGradL1`, an honest stand-in with no learned weights, and says so: its name never contains
"lpips" and the choice is logged and recorded in every patch's metadata.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from guide_unlearn.errors import BackendUnavailableError
from guide_unlearn.faces.weights import torch_home as _torch_home

logger = logging.getLogger(__name__)
VGG16_FILE = "vgg16-397923af.pth"


class MultiScaleGradL1(nn.Module):
    """Offline stand-in for LPIPS (NOT a learned metric): mean |a - b| plus mean |∇a - ∇b| over 3 scales.

    a, b [N, 3, H, W] in [-1, 1] -> [N]. Roughly on LPIPS's scale for small differences; use LPIPS for any
    number you report.
    """

    name = "ms-l1-grad (offline stand-in, not LPIPS)"
    is_learned = False

    def __init__(self, scales: int = 3):
        super().__init__()
        self.scales = scales

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = a.new_zeros(a.shape[0], dtype=torch.float32)
        for i in range(self.scales):
            if i:
                a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
            diff = (a - b).float()
            total = total + diff.abs().flatten(1).mean(1)
            total = total + (diff[..., 1:, :] - diff[..., :-1, :]).abs().flatten(1).mean(1)
            total = total + (diff[..., :, 1:] - diff[..., :, :-1]).abs().flatten(1).mean(1)
            if min(a.shape[-2:]) < 4:
                break
        return total / self.scales


def lpips_weights_available() -> bool:
    """True when torchvision's VGG16 ImageNet weights are in the local torch cache."""
    return (_torch_home() / "hub" / "checkpoints" / VGG16_FILE).is_file()


class LPIPSDistance(nn.Module):
    """LPIPS (Zhang et al. 2018) from the ``lpips`` package: a, b [N, 3, H, W] in [-1, 1] -> [N].

    ``random_backbone=True`` builds it on random VGG weights for mechanics tests only; it is then named
    accordingly and ``is_learned`` is False.
    """

    def __init__(self, net: str = "vgg", random_backbone: bool = False):
        super().__init__()
        try:
            import lpips
        except ImportError as e:
            raise BackendUnavailableError("LPIPS needs the 'lpips' package: pip install 'guide-unlearn[lpips]'") from e
        if not random_backbone and not lpips_weights_available():
            raise BackendUnavailableError(
                f"LPIPS-{net} needs torchvision's ImageNet weights {VGG16_FILE} in {_torch_home() / 'hub/checkpoints'}; "
                "on a machine with internet run `python -c \"import torchvision; torchvision.models.vgg16(weights='DEFAULT')\"` "
                "and copy the file there (or set TORCH_HOME)")
        if not random_backbone:  # torchvision reads this file itself: the gate's checks and allow-list scan first
            from guide_unlearn.checkpoints.torch_zip import scan_torch_file

            scan_torch_file(_torch_home() / "hub" / "checkpoints" / VGG16_FILE, kind="face-weights")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False)
        self.model.eval().requires_grad_(False)
        self.is_learned = not random_backbone
        self.name = f"lpips-{net}" if not random_backbone else f"lpips-{net} on RANDOM backbone (mechanics only)"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.model(a.float(), b.float(), normalize=False).flatten()


_WARNED: set = set()  # the missing-weights warning is given once per process


def default_perceptual(device: Optional[torch.device | str] = None, prefer: str = "lpips") -> nn.Module:
    """LPIPS-VGG when its weights are present, else the labelled stand-in (logged). -> a PerceptualDistance."""
    if prefer == "lpips" and lpips_weights_available():
        try:
            return LPIPSDistance("vgg").to(device or "cpu")
        except BackendUnavailableError:
            pass
    if prefer == "lpips":
        if "lpips" not in _WARNED:  # once per process, one short line
            _WARNED.add("lpips")
            logger.warning("LPIPS-VGG weights (%s) not found: using the offline stand-in %s, which is not LPIPS",
                           VGG16_FILE, MultiScaleGradL1.name.split(" ")[0])
        else:
            logger.info("LPIPS-VGG weights not found: using the stand-in %s", MultiScaleGradL1.name)
    return MultiScaleGradL1().to(device or "cpu")
