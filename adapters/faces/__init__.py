"""Face detector backends behind :mod:`guide_unlearn.faces`: MTCNN (pure PyTorch, facenet-pytorch's weights),
dlib's HOG detector + 5-point model, and insightface's ONNX detectors (det_10g / SCRFD / RetinaFace).

Each registers with :func:`guide_unlearn.faces.detect.register_detector` here; the core keeps the geometry,
templates, alignment, camera estimation and the weight lookup (:mod:`guide_unlearn.faces.weights`).
"""

from typing import Any, Optional

from guide_unlearn.faces.detect import register_detector


def _mtcnn(weights: Optional[str], device: Any):
    from .mtcnn import MTCNN  # noqa: PLC0415

    return MTCNN(weights, device=device)


def _dlib(weights: Optional[str], device: Any):
    from .backends import DlibDetector  # noqa: PLC0415

    return DlibDetector(weights)  # dlib runs on the CPU


def _insightface(weights: Optional[str], device: Any):
    from .backends import InsightFaceDetector  # noqa: PLC0415

    return InsightFaceDetector(weights)  # onnxruntime's CPU provider


register_detector("mtcnn", _mtcnn)
register_detector("dlib", _dlib)
register_detector("insightface", _insightface)

__all__: list[str] = []
