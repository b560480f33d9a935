"""face-api.js's face recogniser in PyTorch: dlib's 29-layer ResNet (the weights of
``dlib_face_recognition_resnet_model_v1.dat``, as converted to TF.js by face-api), 150x150 input, 128-d output.

Differentiable, so usable as an ID loss. It carries dlib's trained weights: it is NOT an independent check of
the dlib metric (see ``guide_unlearn.adapters.identity`` docs).

Network: conv 7x7/2 (valid) -> max-pool 3/2 -> 3 residual units at 32 ch -> down + 3 at 64 -> down + 2 at 128
-> down + 2 at 256 -> down (256) -> global mean -> linear 256->128 (no bias). Each conv is followed by an
affine "scale" layer (dlib's frozen batch norm). A down unit convolves with stride 2 (valid) and adds the
2x2-average-pooled input, zero-padded in channels and (bottom/right) in space to the branch's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from guide_unlearn.errors import CheckpointError
from guide_unlearn.faces.weights import PathLike, find_weight

from .common import Images, to_batch, unit
from .tfjs import read_tfjs_weights

# dlib's input normalisation (input_rgb_image): per-channel mean, then / 256.
MEAN_RGB = (122.782, 117.001, 104.298)
STAGES = (("conv32", 32, ("1", "2", "3")), ("conv64", 64, ("1", "2", "3")), ("conv128", 128, ("1", "2")),
          ("conv256", 256, ("1", "2")))


class ScaledConv(nn.Module):
    """conv (bias) -> per-channel affine scale. stride 2 convs use no padding, stride 1 'same' padding."""

    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=0 if stride == 2 else k // 2)
        self.scale = nn.Parameter(torch.ones(cout))
        self.shift = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale[:, None, None] + self.shift[:, None, None]


class ResidualUnit(nn.Module):
    """relu(x + scaled_conv(relu(scaled_conv(x)))); ``down`` halves the size and may widen the channels."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = ScaledConv(cin, cout, 3, 2 if down else 1)
        self.conv2 = ScaledConv(cout, cout, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        skip = x
        if self.down:
            skip = F.avg_pool2d(x, 2, 2)
            dh, dw = skip.shape[-2] - out.shape[-2], skip.shape[-1] - out.shape[-1]
            out = F.pad(out, (0, max(dw, 0), 0, max(dh, 0)))
            skip = F.pad(skip, (0, 0, 0, 0, 0, out.shape[1] - skip.shape[1]))
        return F.relu(out + skip)


class DlibResNet(nn.Module):
    """[N, 3, 150, 150] RGB in [0, 255] -> raw 128-d descriptors [N, 128] (dlib's scale: norms ~1.3-1.6)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ScaledConv(3, 32, 7, 2)
        units: list[tuple[str, nn.Module]] = []
        cin = 32
        for prefix, width, names in STAGES:
            if width != 32:
                units.append((f"{prefix}_down", ResidualUnit(cin, width, True)))
            units += [(f"{prefix}_{n}", ResidualUnit(width, width, False)) for n in names]
            cin = width
        units.append(("conv256_down_out", ResidualUnit(256, 256, True)))
        self.names = [n for n, _ in units]
        self.units = nn.ModuleList(m for _, m in units)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, 150, 150), f"expected [N, 3, 150, 150], got {tuple(x.shape)}"
        x = (x - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        for module in self.units:
            x = module(x)
        return self.fc(x.mean(dim=(2, 3)))

    def load_tfjs(self, weights: dict) -> None:
        """Copy face-api's TF.js tensors (filters [kh, kw, in, out], scale weights/biases, fc [256, 128])."""

        def put(layer: ScaledConv, key: str) -> None:
            try:
                filters = torch.from_numpy(weights[f"{key}/conv/filters"]).permute(3, 2, 0, 1)
                pairs = ((layer.conv.weight, filters), (layer.conv.bias, weights[f"{key}/conv/bias"]),
                         (layer.scale, weights[f"{key}/scale/weights"]), (layer.shift, weights[f"{key}/scale/biases"]))
            except KeyError as exc:
                raise CheckpointError(f"face-api weights lack tensor {exc}; pass face_recognition_model "
                                      "weights (manifest + .bin)") from exc
            for param, value in pairs:
                value = torch.as_tensor(value)
                if tuple(value.shape) != tuple(param.shape):
                    raise CheckpointError(f"face-api tensor {key}: shape {tuple(value.shape)}, expected "
                                          f"{tuple(param.shape)}")
                param.data.copy_(value)

        put(self.stem, "conv32_down")
        for name, module in zip(self.names, self.units):
            put(module.conv1, f"{name}/conv1")
            put(module.conv2, f"{name}/conv2")
        self.fc.weight.data.copy_(torch.from_numpy(weights["fc"]).T)


def load_faceapi_resnet(path: Optional[PathLike] = None, device: torch.device | str = "cpu") -> DlibResNet:
    """The network with face-api's weights: path = the manifest json (or its folder); default
    $GUIDE_SHARED/weights/faceapi_tfjs, then the cache folder."""
    manifest = find_weight("faceapi_tfjs", "face_recognition_model-weights_manifest.json", path,
                           what="face-api face recognition",
                           install_hint="The files are model/face_recognition_model* of the npm package "
                                        "@vladmandic/face-api (MIT).")
    net = DlibResNet()
    net.load_tfjs(read_tfjs_weights(Path(manifest)))
    return net.to(device).eval()


class FaceApiIdentity(nn.Module):
    """IdentityModel: face-api's copy of dlib's ResNet. Input: "dlib150" crops (or [N, 3, H, W] in [-1, 1],
    resized to 150). ``embed`` -> unit vectors [N, 128] (cosine convention); ``descriptors`` -> dlib's raw
    scale (Euclidean convention, same-person threshold 0.6)."""

    name = "faceapi"
    align_style = "dlib150"
    differentiable = True

    def __init__(self, net: DlibResNet) -> None:
        super().__init__()
        self.net = net.requires_grad_(False)

    def descriptors(self, images: Images) -> torch.Tensor:
        """Raw (un-normalised) descriptors [N, 128], differentiable w.r.t. tensor input."""
        x = to_batch(images, 150, next(self.net.parameters()).device)
        return self.net((x + 1.0) * 127.5)

    def embed(self, images: Images) -> torch.Tensor:
        """Unit identity vectors [N, 128]."""
        return unit(self.descriptors(images))
