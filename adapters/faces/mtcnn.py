"""The MTCNN cascade: image pyramid -> P-Net proposals -> R-Net refinement -> O-Net boxes + 5 landmarks.

Thresholds, pyramid factor and NMS settings are those of the original method (and of facenet-pytorch):
thresholds (0.6, 0.7, 0.7), factor 0.709, minimum face 20 px, NMS 0.5 per scale, 0.7 across scales and after
R-Net, 0.7 "min" after O-Net.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch.nn import functional as F

from guide_unlearn.faces.types import Face
from guide_unlearn.faces.weights import PathLike

from .mtcnn_nets import ONet, PNet, RNet, load_mtcnn_nets


@dataclass(frozen=True)
class MTCNNConfig:
    """Settings of the cascade."""

    min_face_size: int = 20  # smallest face side searched for, in pixels of the (possibly reduced) image
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # P/R/O-Net face probability cut-offs
    factor: float = 0.709  # image pyramid scale step
    max_side: int = 1600  # larger photos are reduced to this long side for detection (coordinates mapped back)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression. boxes [K, 4] (x1, y1, x2, y2), scores [K] -> kept indices, best first.

    mode "union": overlap = IoU; "min": intersection over the smaller box.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denom <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply box-size-relative regression offsets [K, 4] to boxes [K, 4]."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes[:, :4] + offsets * np.stack([w, h, w, h], axis=1)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow boxes [K, 4] to squares around their centres."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1 = boxes[:, 0] + 0.5 * (w - side)
    y1 = boxes[:, 1] + 0.5 * (h - side)
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def _crops(image: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Cut boxes [K, 4] out of image [3, H, W] (zero outside), each resized to size x size -> [K, 3, s, s]."""
    _, height, width = image.shape
    out = []
    for x1, y1, x2, y2 in np.floor(boxes).astype(np.int64):
        crop = torch.zeros(3, y2 - y1 + 1, x2 - x1 + 1, dtype=image.dtype, device=image.device)
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, width - 1), min(y2, height - 1)
        if sx2 >= sx1 and sy2 >= sy1:
            crop[:, sy1 - y1:sy2 - y1 + 1, sx1 - x1:sx2 - x1 + 1] = image[:, sy1:sy2 + 1, sx1:sx2 + 1]
        out.append(F.interpolate(crop[None], size=(size, size), mode="area"))
    return torch.cat(out)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 127.5) * 0.0078125


class MTCNN:
    """Face detector with 5 landmarks. ``detect(image)`` takes an RGB uint8 array [H, W, 3] -> list of Face.

    weights: folder with pnet.pt / rnet.pt / onet.pt (default: found as described in ``faces.weights``).
    """

    name = "mtcnn"

    def __init__(self, weights: Optional[PathLike] = None, device: torch.device | str = "cpu",
                 config: MTCNNConfig = MTCNNConfig(), nets: Optional[tuple[PNet, RNet, ONet]] = None) -> None:
        self.device = torch.device(device)
        self.config = config
        self.pnet, self.rnet, self.onet = nets if nets is not None else load_mtcnn_nets(weights, self.device)

    @torch.no_grad()
    def detect(self, image: np.ndarray) -> list[Face]:
        """image: [H, W, 3] uint8 RGB -> faces sorted by score (box, landmarks in image pixels)."""
        height, width = image.shape[:2]
        shrink = min(1.0, self.config.max_side / max(height, width))
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(self.device).permute(2, 0, 1).float()
        if shrink < 1.0:
            tensor = F.interpolate(tensor[None], size=(round(height * shrink), round(width * shrink)),
                                   mode="area")[0]
        faces = self._cascade(tensor)
        return [f.scaled(1.0 / shrink) for f in faces] if shrink < 1.0 else faces

    def _proposals(self, image: torch.Tensor) -> np.ndarray:
        """P-Net over the pyramid -> candidate boxes [K, 5] (x1, y1, x2, y2, score), regressed and squared."""
        _, height, width = image.shape
        m = 12.0 / self.config.min_face_size
        scales, side = [], min(height, width) * m
        while side >= 12:
            scales.append(m * self.config.factor ** len(scales))
            side *= self.config.factor
        found = []
        for scale in scales:
            size = (int(height * scale + 1), int(width * scale + 1))
            offsets, prob = self.pnet(_normalise(F.interpolate(image[None], size=size, mode="area")))
            ys, xs = torch.nonzero(prob[0] >= self.config.thresholds[0], as_tuple=True)
            if len(ys) == 0:
                continue
            cells = torch.stack([xs, ys], 1).double().cpu().numpy()
            # each output cell sees a 12x12 window at stride 2 of the scaled image
            q1 = np.floor((2 * cells + 1) / scale)
            q2 = np.floor((2 * cells + 12) / scale)
            score = prob[0, ys, xs].double().cpu().numpy()
            reg = offsets[0][:, ys, xs].T.double().cpu().numpy()
            boxes = np.concatenate([q1, q2, score[:, None], reg], axis=1)
            found.append(boxes[nms(boxes[:, :4], score, 0.5)])
        if not found:
            return np.zeros((0, 5))
        boxes = np.concatenate(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        # P-Net's regression is relative to the un-padded window size (x2 - x1), unlike the later stages
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        regressed = boxes[:, :4] + boxes[:, 5:9] * np.concatenate([w, h, w, h], axis=1)
        return np.concatenate([_square(regressed), boxes[:, 4:5]], axis=1)

    def _cascade(self, image: torch.Tensor) -> list[Face]:
        boxes = self._proposals(image)
        if len(boxes) == 0:
            return []
        # R-Net
        offsets, prob = self.rnet(_normalise(_crops(image, boxes[:, :4], 24)))
        prob, offsets = prob.double().cpu().numpy(), offsets.double().cpu().numpy()
        keep = prob > self.config.thresholds[1]
        boxes, prob, offsets = boxes[keep], prob[keep], offsets[keep]
        if len(boxes) == 0:
            return []
        order = nms(boxes[:, :4], prob, 0.7)
        boxes = _square(_regress(boxes[order], offsets[order]))
        # O-Net
        offsets, points, prob = self.onet(_normalise(_crops(image, boxes, 48)))
        prob, offsets, points = (t.double().cpu().numpy() for t in (prob, offsets, points))
        keep = prob > self.config.thresholds[2]
        boxes, prob, offsets, points = boxes[keep], prob[keep], offsets[keep], points[keep]
        if len(boxes) == 0:
            return []
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        lx = boxes[:, 0:1] + w * points[:, 0:5] - 1
        ly = boxes[:, 1:2] + h * points[:, 5:10] - 1
        boxes = _regress(boxes, offsets)
        order = nms(boxes, prob, 0.7, mode="min")
        return [Face(boxes[i], np.stack([lx[i], ly[i]], axis=1), prob[i], detector="mtcnn") for i in order]
