"""insightface recognition models (ONNX, e.g. buffalo_l's w600k_r50) as IdentityModels, loaded from a local
file with ``insightface.model_zoo.get_model(path)`` (needs the 'faces' extra: insightface, onnxruntime).
Metric only (ONNX runtime: no gradient)."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from guide_unlearn.errors import BackendUnavailableError, CheckpointError
from guide_unlearn.faces.weights import PathLike, find_weight

from .common import Images, to_batch, unit


class InsightFaceIdentity:
    """IdentityModel around an insightface ``ArcFaceONNX`` model. Input: "arcface" 112 crops (PIL, RGB) or
    [N, 3, H, W] in [-1, 1]; ``embed`` -> unit vectors [N, D]."""

    name = "insightface"
    align_style = "arcface"
    differentiable = False

    def __init__(self, path: Optional[PathLike] = None) -> None:
        try:
            from insightface.model_zoo import get_model  # noqa: PLC0415
        except ImportError as exc:
            raise BackendUnavailableError("insightface is not installed; `pip install insightface onnxruntime` "
                                          "(the 'faces' extra)") from exc
        file = find_weight("insightface", "w600k_r50.onnx", path, what="insightface recognition",
                           install_hint="w600k_r50.onnx comes in insightface's buffalo_l pack.")
        try:
            model = get_model(str(file), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise CheckpointError(f"insightface cannot load {file}: {exc}") from exc
        if model is None or getattr(model, "taskname", "") != "recognition":
            raise CheckpointError(f"{file} is not an insightface recognition model (got "
                                  f"{getattr(model, 'taskname', None)!r}); pass e.g. w600k_r50.onnx")
        model.prepare(ctx_id=-1)
        self.model = model
        self.size = int(model.input_size[0])

    def embed(self, images: Images) -> torch.Tensor:
        x = to_batch(images.detach() if isinstance(images, torch.Tensor) else images, self.size).cpu()
        # the model's own normalisation ((x - mean) / std on 0..255 RGB) happens in forward
        feats = self.model.forward(((x + 1.0) * 127.5).numpy().astype(np.float32))
        return unit(torch.from_numpy(np.asarray(feats, dtype=np.float32)))
