"""Public face detection: ``detect_faces(image)`` and ``detect_faces_batch(images)`` with a choice of
detector ("mtcnn" by default, "dlib", "insightface", or any object with ``detect``)."""

from __future__ import annotations

import functools
from typing import Any, Iterable, Optional, Union

import numpy as np

from ..errors import ConfigError
from .photo import ImageLike, load_image
from .types import Face

DETECTORS = ("mtcnn", "dlib", "insightface")


@functools.lru_cache(maxsize=8)
def get_detector(name: str = "mtcnn", weights: Optional[str] = None, device: str = "cpu") -> Any:
    """A detector by name, loaded once per (name, weights, device) and reused (weights only, no state).

    mtcnn: the facenet-pytorch P/R/O-Net state_dicts (weights = their folder); dlib: HOG detector + the
    5-point model (weights = shape_predictor_5_face_landmarks.dat); insightface: det_10g / SCRFD ONNX file.
    """
    if name == "mtcnn":
        from .mtcnn import MTCNN  # noqa: PLC0415

        return MTCNN(weights, device=device)
    if name == "dlib":
        from .backends import DlibDetector  # noqa: PLC0415

        return DlibDetector(weights)
    if name == "insightface":
        from .backends import InsightFaceDetector  # noqa: PLC0415

        return InsightFaceDetector(weights)
    raise ConfigError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")


def _resolve(detector: Union[str, Any], weights: Optional[str], device: str) -> Any:
    if isinstance(detector, str):
        return get_detector(detector, None if weights is None else str(weights), str(device))
    if not hasattr(detector, "detect"):
        raise ConfigError("detector must be a name or an object with detect(rgb_array) -> list[Face]")
    return detector


def detect_faces(image: ImageLike, detector: Union[str, Any] = "mtcnn", weights: Optional[str] = None,
                 device: str = "cpu", min_score: float = 0.0) -> list[Face]:
    """All faces in a photo, largest first.

    image: a path, PIL image or RGB array (EXIF orientation, grayscale, alpha, 16-bit are handled).
    Returns a list of ``Face`` (``.box`` [4] x1 y1 x2 y2, ``.landmarks`` [5, 2] image pixels, ``.score``);
    an empty list when there is none.
    """
    photo = load_image(image)
    faces = _resolve(detector, weights, device).detect(np.asarray(photo))
    faces = [f for f in faces if f.score >= min_score]
    return sorted(faces, key=lambda f: -f.area)


def detect_faces_batch(images: Iterable[ImageLike], detector: Union[str, Any] = "mtcnn",
                       weights: Optional[str] = None, device: str = "cpu", min_score: float = 0.0
                       ) -> list[list[Face]]:
    """``detect_faces`` over many photos with one loaded detector -> one list of faces (largest first) per photo."""
    model = _resolve(detector, weights, device)
    return [detect_faces(image, model, min_score=min_score) for image in images]


def pick_face(faces: list[Face], index: Optional[int] = None) -> Face:
    """The largest face (index None) or faces[index] of a largest-first list; IndexError-free: raises
    ConfigError for an index out of range."""
    if index is None:
        return max(faces, key=lambda f: f.area)
    if not -len(faces) <= index < len(faces):
        raise ConfigError(f"face_index={index} but the photo has {len(faces)} face(s) (largest first)")
    return faces[index]
