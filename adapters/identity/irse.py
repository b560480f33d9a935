"""The "IR" / "IR-SE" ResNet face backbones (ArcFace IR-SE50, CurricularFace IR-101) with the state_dict
names of their public checkpoints (``model_ir_se50.pth``, ``CurricularFace_Backbone.pth``).

input_layer (conv3x3 64, BN, PReLU) -> body (bottleneck units; the first of each stage has stride 2) ->
output_layer (BN2d, Dropout, Flatten, Linear 512*7*7 -> 512, BN1d) -> L2 normalisation. Input 112x112.
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F

STAGE_UNITS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 101: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
WIDTHS = (64, 128, 256, 512)


class SqueezeExcite(nn.Module):
    """Channel gating: x * sigmoid(fc2(relu(fc1(mean(x))))), 1x1 convs without bias."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x):
        return x * self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))).sigmoid()


class Bottleneck(nn.Module):
    """res_layer: BN, conv3x3, PReLU, conv3x3 (stride), BN [, SE]; shortcut: identity-by-stride (max-pool 1)
    or conv1x1 + BN when the width changes."""

    def __init__(self, cin: int, cout: int, stride: int, se: bool) -> None:
        super().__init__()
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        layers = [nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
                  nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)]
        if se:
            layers.append(SqueezeExcite(cout))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """[N, 3, 112, 112] in [-1, 1] -> unit identity vectors [N, embedding (512)].

    num_layers: 50, 100/101 or 152; se: squeeze-excitation units (IR-SE); affine_bn1d: whether the final
    BatchNorm1d has weight/bias (ArcFace IR-SE50: yes; CurricularFace: no); drop: dropout ratio (eval: off);
    widths / stage_units / embedding: the stage widths, units per stage and output size — only changed for
    tiny test models with the official key layout.
    """

    def __init__(self, num_layers: int = 50, se: bool = True, affine_bn1d: bool = True, drop: float = 0.4,
                 widths: tuple[int, ...] = WIDTHS, stage_units: tuple[int, ...] | None = None,
                 embedding: int = 512) -> None:
        super().__init__()
        if num_layers not in STAGE_UNITS:
            raise ValueError(f"num_layers must be one of {sorted(STAGE_UNITS)}")
        stage_units = stage_units or STAGE_UNITS[num_layers]
        self.embedding = embedding
        self.input_layer = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                         nn.PReLU(widths[0]))
        units, cin = [], widths[0]
        for width, count in zip(widths, stage_units):
            units.append(Bottleneck(cin, width, 2, se))
            units += [Bottleneck(width, width, 1, se) for _ in range(count - 1)]
            cin = width
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(cin), nn.Dropout(drop), nn.Flatten(),
                                          nn.Linear(cin * 7 * 7, embedding), nn.BatchNorm1d(embedding, affine=affine_bn1d))

    def forward(self, x):
        assert x.shape[1:] == (3, 112, 112), f"IR backbones take [N, 3, 112, 112], got {tuple(x.shape)}"
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)
