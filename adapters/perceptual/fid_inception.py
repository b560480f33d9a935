"""The Inception-v3 network of FID (pytorch-fid's port of the TensorFlow 2015-12-05 graph, file
``pt_inception-2015-12-05-6726825d.pth``): 2048-d pool3 features for the Fréchet Inception Distance.

The skeleton is torchvision's ``Inception3`` (1008 classes, no auxiliary head) so that the state-dict names and
shapes are those of the official file; four kinds of mixed block compute differently from torchvision's, as in
the TensorFlow graph (and pytorch-fid):

- Mixed_5b/5c/5d (A), Mixed_6b..6e (C) and Mixed_7b (E, first): the 3x3 average pool of the pool branch does not
  count the zero padding (``count_include_pad=False``);
- Mixed_7c (E, second): the pool branch takes a 3x3 MAX pool instead of an average pool.

Input convention (pytorch-fid): images in [0, 1], resized bilinearly to 299x299 (``align_corners=False``, no
antialias), scaled to [-1, 1] by ``2 x - 1``. Generator outputs in [-1, 1] are first quantised as GUIDE's evaluation saves
them: ``(x * 127.5 + 128).clamp(0, 255)`` to uint8, then divided by 255.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from guide_unlearn.checkpoints import load_state_file
from guide_unlearn.checkpoints.matching import match_state_dict
from guide_unlearn.errors import CheckpointError, InputError
from guide_unlearn.faces.weights import PathLike, find_weight

FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_INCEPTION_FAMILY = "inception"
FEATURES = 2048
SIZE = 299


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _mixed_classes():
    from torchvision.models import inception as tv  # noqa: PLC0415 - torchvision is imported only when used

    class MixedA(tv.InceptionA):
        """InceptionA whose pool branch averages over the valid pixels only."""

        def forward(self, x):
            b1 = self.branch1x1(x)
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            bp = self.branch_pool(_avg_pool_no_pad(x))
            return torch.cat([b1, b5, b3, bp], 1)

    class MixedC(tv.InceptionC):
        """InceptionC whose pool branch averages over the valid pixels only."""

        def forward(self, x):
            b1 = self.branch1x1(x)
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                          self.branch7x7dbl_5):
                bd = layer(bd)
            bp = self.branch_pool(_avg_pool_no_pad(x))
            return torch.cat([b1, b7, bd, bp], 1)

    class MixedE(tv.InceptionE):
        """InceptionE with the pool of the TensorFlow graph: average without padding (``max_pool=False``,
        Mixed_7b) or max (``max_pool=True``, Mixed_7c)."""

        def __init__(self, in_channels: int, max_pool: bool) -> None:
            super().__init__(in_channels)
            self.max_pool = max_pool

        def forward(self, x):
            b1 = self.branch1x1(x)
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool_no_pad(x)
            return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)

    return tv, MixedA, MixedC, MixedE


class FIDInception(nn.Module):
    """FID's Inception-v3 feature extractor: images [N, 3, H, W] in [0, 1] -> pool3 features [N, 2048] (float32).

    ``forward`` resizes to 299x299 (bilinear, ``align_corners=False``, no antialias) unless the input is already
    299x299, scales to [-1, 1] with ``2 x - 1`` and returns the global average of Mixed_7c. ``from_generator``
    takes generator outputs in [-1, 1] and quantises them to uint8 first (GUIDE's evaluation, docs/audit.md). The state-dict names are those
    of ``pt_inception-2015-12-05-6726825d.pth`` (torchvision's Inception3 names, ``fc`` 2048 -> 1008, no
    ``AuxLogits``); ``fc`` is loaded but unused.
    """

    name = "inception-v3-fid (pt_inception-2015-12-05)"

    def __init__(self) -> None:
        super().__init__()
        tv, MixedA, MixedC, MixedE = _mixed_classes()
        net = tv.Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = MixedA(192, 32), MixedA(256, 64), MixedA(288, 64)
        net.Mixed_6b, net.Mixed_6c = MixedC(768, 128), MixedC(768, 160)
        net.Mixed_6d, net.Mixed_6e = MixedC(768, 160), MixedC(768, 192)
        net.Mixed_7b, net.Mixed_7c = MixedE(1280, max_pool=False), MixedE(2048, max_pool=True)
        # Keep the official names at the top level (Conv2d_1a_3x3.conv.weight, Mixed_5b..., fc.weight).
        for key, module in net.named_children():
            self.add_module(key, module)
        self.requires_grad_(False).eval()

    _ORDER = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"FID Inception takes images [N, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        x = images.to(dtype=torch.float32, device=self.Conv2d_1a_3x3.conv.weight.device)
        if x.shape[-2:] != (SIZE, SIZE):
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        for key in self._ORDER:
            x = getattr(self, key)(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    @torch.no_grad()
    def from_generator(self, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
        """Generator outputs [N, 3, H, W] in [-1, 1] -> [N, 2048] features of their uint8 quantisation
        (``(x * 127.5 + 128).clamp(0, 255)``, GUIDE's evaluation), ``batch`` images at a time."""
        out = []
        for i in range(0, images.shape[0], batch):
            q = (images[i:i + batch].detach().float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
            out.append(self(q.float() / 255.0).cpu())
        if not out:
            return torch.zeros(0, FEATURES)
        return torch.cat(out)


def load_fid_inception(path: Optional[PathLike] = None, device: torch.device | str = "cpu") -> FIDInception:
    """FID's Inception-v3 from ``pt_inception-2015-12-05-6726825d.pth`` (explicit path, else
    $GUIDE_SHARED/weights/inception, else the cache folder ``<cache>/inception``, else where pytorch-fid downloads
    it, ``$TORCH_HOME/hub/checkpoints``). The file is read without executing code
    (``guide_unlearn.checkpoints.load_state_file``); a file in another layout is a CheckpointError naming the
    missing / unexpected keys and wrong shapes. -> FIDInception in eval mode on ``device``."""
    file = find_weight(FID_INCEPTION_FAMILY, FID_INCEPTION_FILE, path, what="Inception-v3 FID network",
                       install_hint="It is pytorch-fid's FID network (pytorch-fid downloads it once, on a machine "
                                    "with internet, to $TORCH_HOME/hub/checkpoints, where it is found too).")
    try:
        state = load_state_file(file)
    except CheckpointError as exc:
        raise CheckpointError(f"cannot load the Inception-v3 FID network: {exc}; expected the raw state_dict "
                              f"{FID_INCEPTION_FILE}") from exc
    net = FIDInception()
    match_state_dict(net, state, "the Inception-v3 FID network (pt_inception-2015-12-05)", file)
    net.file = Path(file)
    return net.to(device)
