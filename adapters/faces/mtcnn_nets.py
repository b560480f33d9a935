"""The three MTCNN networks (Zhang et al. 2016) with facenet-pytorch's state_dict names.

Inputs are RGB float tensors [N, 3, H, W] normalised as (x - 127.5) / 128. The dense layers of R-Net and
O-Net read their feature maps transposed (W before H): the weights were converted from Caffe models trained
on transposed images, so the flattening order must be kept for the state_dicts to work.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from guide_unlearn.checkpoints import load_state_file
from guide_unlearn.errors import CheckpointError
from guide_unlearn.faces.weights import PathLike, find_weight


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C*W*H] in the (W, H, C) order the converted Caffe dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net, fully convolutional: [N, 3, H, W] -> (box offsets [N, 4, h, w], face prob [N, h, w])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box regression

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = nn.functional.max_pool2d(x, 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        prob = torch.softmax(self.conv4_1(x), dim=1)[:, 1]
        return self.conv4_2(x), prob


class RNet(nn.Module):
    """Refinement net: [N, 3, 24, 24] -> (box offsets [N, 4], face prob [N])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, 3)
        self.prelu1 = nn.PReLU(28)
        self.conv2 = nn.Conv2d(28, 48, 3)
        self.prelu2 = nn.PReLU(48)
        self.conv3 = nn.Conv2d(48, 64, 2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert x.shape[-2:] == (24, 24), f"RNet takes 24x24 crops, got {tuple(x.shape)}"
        pool = nn.functional.max_pool2d
        x = pool(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = pool(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_transposed(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)[:, 1]


class ONet(nn.Module):
    """Output net: [N, 3, 48, 48] -> (box offsets [N, 4], landmarks [N, 10] (5 x then 5 y, box-relative),
    face prob [N])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3)
        self.prelu1 = nn.PReLU(32)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.prelu2 = nn.PReLU(64)
        self.conv3 = nn.Conv2d(64, 64, 3)
        self.prelu3 = nn.PReLU(64)
        self.conv4 = nn.Conv2d(64, 128, 2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert x.shape[-2:] == (48, 48), f"ONet takes 48x48 crops, got {tuple(x.shape)}"
        pool = nn.functional.max_pool2d
        x = pool(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = pool(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = pool(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_transposed(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)[:, 1]


def load_mtcnn_nets(path: Optional[PathLike] = None, device: torch.device | str = "cpu") -> tuple[PNet, RNet, ONet]:
    """The three nets with facenet-pytorch's weights (pnet.pt / rnet.pt / onet.pt state_dicts), in eval mode.

    path: a folder holding the three files; default: $GUIDE_SHARED/weights/mtcnn, then the cache folder
    (see ``guide_unlearn.faces.weights``). Loaded with ``torch.load(weights_only=True)``.
    """
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, ("pnet.pt", "rnet.pt", "onet.pt")):
        file = find_weight("mtcnn", name, path, what="MTCNN",
                           install_hint="The files are facenet_pytorch/data/{pnet,rnet,onet}.pt of the "
                                        "facenet-pytorch wheel (MIT).")
        try:
            net.load_state_dict(load_state_file(file))
        except Exception as exc:  # corrupt file, wrong keys, pickle refused
            raise CheckpointError(f"cannot load MTCNN weights from {file}: {exc}; expected the facenet-pytorch "
                                  f"state_dict {name}") from exc
        net.to(device).eval().requires_grad_(False)
    return nets  # type: ignore[return-value]
