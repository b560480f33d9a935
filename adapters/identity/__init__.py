"""Face-recognition networks behind the core's ``IdentityModel`` protocol.

    model = load_identity_model("faceapi")            # or "arcface", "curricularface", "insightface", "dlib"
    vectors = model.embed(crops)                        # [N, D] unit vectors; crops aligned per model.align_style

| name           | network                        | align_style | differentiable | weights file                      |
|----------------|--------------------------------|-------------|----------------|-----------------------------------|
| arcface        | ArcFace IR-SE50 (GUIDE ID loss)| ffhq        | yes            | model_ir_se50.pth                 |
| curricularface | CurricularFace IR-101 (metric) | arcface     | yes            | CurricularFace_Backbone.pth       |
| insightface    | any insightface recogniser ONNX| arcface     | no             | w600k_r50.onnx (or a given path)  |
| dlib           | dlib ResNet (metric)           | dlib150     | no             | dlib_face_recognition_resnet_model_v1.dat |
| faceapi        | face-api's copy of dlib's ResNet| dlib150    | yes            | face_recognition_model-weights_manifest.json + .bin |

``embed`` always returns L2-normalised vectors (compare with cosine similarity). dlib's own threshold is a
Euclidean distance of 0.6 between RAW descriptors: use ``dlib_descriptors`` / ``dlib_distance`` for that
convention (``DLIB_COSINE_THRESHOLD`` ~ 0.92 is the equivalent cut on unit vectors).

faceapi carries dlib's trained weights: an ID loss with faceapi and an ID metric with dlib are the same
network, not an independent check (``same_network`` tells).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from guide_unlearn.errors import ConfigError

from .dlib_metric import DLIB_COSINE_THRESHOLD, DLIB_THRESHOLD, DlibIdentity, dlib_descriptors, dlib_distance

IDENTITY_MODELS = ("arcface", "curricularface", "insightface", "dlib", "faceapi")
# Networks that share trained weights (so one cannot check the other).
_FAMILY = {"dlib": "dlib-resnet", "faceapi": "dlib-resnet"}


def load_identity_model(name: str, path: Optional[str] = None, device: torch.device | str = "cpu") -> Any:
    """An IdentityModel by name: "arcface", "curricularface", "insightface", "dlib" or "faceapi".

    path: the weight file (or its folder); default: $GUIDE_SHARED/weights/<family>, then the cache folder
    ($GUIDE_UNLEARN_CACHE or ~/.cache/guide_unlearn/<family>); see docs/faces.md. device: where torch
    models run (dlib and insightface run on the CPU).
    """
    if name == "arcface":
        from .arcface import load_arcface  # noqa: PLC0415

        return load_arcface(path, device)
    if name == "curricularface":
        from .arcface import load_curricularface  # noqa: PLC0415

        return load_curricularface(path, device)
    if name == "insightface":
        from .insightface_onnx import InsightFaceIdentity  # noqa: PLC0415

        return InsightFaceIdentity(path)
    if name == "dlib":
        return DlibIdentity(path)
    if name == "faceapi":
        from .faceapi import FaceApiIdentity, load_faceapi_resnet  # noqa: PLC0415

        return FaceApiIdentity(load_faceapi_resnet(path, device))
    raise ConfigError(f"unknown identity model {name!r}; choose one of {', '.join(IDENTITY_MODELS)}")


def same_network(loss_name: str, metric_name: str) -> bool:
    """Whether two identity models are the same trained network (e.g. "faceapi" and "dlib"), so a result
    measured with one after training against the other is not independent."""
    return loss_name == metric_name or (_FAMILY.get(loss_name, loss_name) == _FAMILY.get(metric_name, metric_name))


__all__ = ["DLIB_COSINE_THRESHOLD", "DLIB_THRESHOLD", "DlibIdentity", "IDENTITY_MODELS", "dlib_descriptors",
           "dlib_distance", "load_identity_model", "same_network"]
