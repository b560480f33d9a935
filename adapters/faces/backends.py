"""Face detectors other than MTCNN: dlib's HOG detector + 5-point model, and insightface's ONNX detectors.

Each has ``name`` and ``detect(rgb_uint8_array [H, W, 3]) -> list[Face]`` with the 5 standard landmarks.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from guide_unlearn.errors import BackendUnavailableError, CheckpointError
from guide_unlearn.faces.geometry import apply_transform, invert_affine, similarity_transform
from guide_unlearn.faces.templates import DLIB_CHIP_TEMPLATE, MTCNN_IN_DLIB_CHIP
from guide_unlearn.faces.types import Face
from guide_unlearn.faces.weights import PathLike, find_weight


def import_dlib():
    """The dlib module, or BackendUnavailableError saying how to install it."""
    try:
        import dlib  # noqa: PLC0415
    except ImportError as exc:
        raise BackendUnavailableError("dlib is not installed; `pip install dlib-bin` (or the 'faces' extra: "
                                      "`pip install guide-unlearn[faces]`)") from exc
    return dlib


def find_dlib_file(name: str, path: Optional[PathLike] = None) -> str:
    """A dlib model file: explicit path, $GUIDE_SHARED/weights/dlib, the cache folder, then the
    ``face_recognition_models`` package if installed."""
    extra = []
    try:
        import face_recognition_models  # noqa: PLC0415
        from pathlib import Path

        extra.append(Path(face_recognition_models.__file__).parent / "models" / name)
    except ImportError:
        pass
    return str(find_weight("dlib", name, path, what=f"dlib {name}", extra=extra,
                           install_hint="`pip install face_recognition_models` also provides it."))


def dlib_points_to_standard(points: np.ndarray) -> np.ndarray:
    """dlib's 5 points [5, 2] (eye corners, nose base) -> the standard 5 (eye centres, nose tip, mouth
    corners) [5, 2], placed by the measured mean face ``templates.MTCNN_IN_DLIB_CHIP``. The mouth corners are
    a mean-face estimate, not a measurement."""
    to_chip = similarity_transform(points, DLIB_CHIP_TEMPLATE)
    return apply_transform(invert_affine(to_chip), MTCNN_IN_DLIB_CHIP)


class DlibDetector:
    """dlib's HOG frontal-face detector (no weight file) + its 5-point shape predictor
    (``shape_predictor_5_face_landmarks.dat``). Needs ``pip install dlib-bin``."""

    name = "dlib"

    def __init__(self, weights: Optional[PathLike] = None, upsample: int = 1) -> None:
        dlib = import_dlib()
        file = find_dlib_file("shape_predictor_5_face_landmarks.dat", weights)
        try:
            self.predictor = dlib.shape_predictor(file)
        except RuntimeError as exc:
            raise CheckpointError(f"cannot load dlib shape predictor {file}: {exc}") from exc
        self.detector = dlib.get_frontal_face_detector()
        self.upsample = upsample
        self._dlib = dlib

    def landmarks_in(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """dlib's own 5 points [5, 2] of the face in ``box`` (x1, y1, x2, y2)."""
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self.predictor(np.ascontiguousarray(image), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    def detect(self, image: np.ndarray) -> list[Face]:
        """image [H, W, 3] uint8 RGB -> faces, best first (score = sigmoid of dlib's SVM margin)."""
        image = np.ascontiguousarray(image)
        rects, scores, _ = self.detector.run(image, self.upsample, 0.0)
        faces = []
        for rect, score in zip(rects, scores):
            box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64)
            points = self.landmarks_in(image, box)
            faces.append(Face(box, dlib_points_to_standard(points), 1 / (1 + math.exp(-score)), "dlib",
                              {"dlib_points": points}))
        return sorted(faces, key=lambda f: -f.score)


class InsightFaceDetector:
    """An insightface detection ONNX model (det_10g / SCRFD / RetinaFace) loaded with
    ``insightface.model_zoo.get_model(path)``; needs the 'faces' extra (insightface, onnxruntime).

    weights: the .onnx file (or a folder with det_10g.onnx); default $GUIDE_SHARED/weights/insightface,
    then the cache folder.
    """

    name = "insightface"

    def __init__(self, weights: Optional[PathLike] = None, input_size: tuple[int, int] = (640, 640),
                 threshold: float = 0.5) -> None:
        try:
            from insightface.model_zoo import get_model  # noqa: PLC0415
        except ImportError as exc:
            raise BackendUnavailableError("insightface is not installed; `pip install insightface onnxruntime` "
                                          "(the 'faces' extra)") from exc
        file = find_weight("insightface", "det_10g.onnx", weights, what="insightface detector",
                           install_hint="det_10g.onnx comes in insightface's buffalo_l pack.")
        model = get_model(str(file), providers=["CPUExecutionProvider"])
        if model is None or getattr(model, "taskname", "") != "detection":
            raise CheckpointError(f"{file} is not an insightface detection model; pass det_10g.onnx or another "
                                  "SCRFD / RetinaFace ONNX file")
        model.prepare(ctx_id=-1, input_size=input_size, det_thresh=threshold)
        self.model = model
        self.input_size = input_size

    def detect(self, image: np.ndarray) -> list[Face]:
        """image [H, W, 3] uint8 RGB -> faces, best first."""
        bgr = np.ascontiguousarray(image[..., ::-1])
        boxes, points = self.model.detect(bgr, input_size=self.input_size)
        if points is None:
            raise CheckpointError("this insightface detector gives no landmarks; use one with 5 key points "
                                  "(det_10g, scrfd_*_kps)")
        faces = [Face(b[:4], p, b[4], "insightface") for b, p in zip(boxes, points)]
        return sorted(faces, key=lambda f: -f.score)
