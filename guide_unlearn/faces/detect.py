"""Public face detection: ``detect_faces(image)`` and ``detect_faces_batch(images)`` with a choice of
detector ("mtcnn" by default, "dlib", "insightface", or any object with ``detect``)."""

from __future__ import annotations

import functools
from typing import Any, Iterable, Optional, Union

import numpy as np

from ..errors import ConfigError
from ..families import discover_backends, resolve_ref
from .photo import ImageLike, load_image
from .types import Face

#: The detectors that ship with the library (registered by ``guide_unlearn.adapters.faces``).
DETECTORS = ("mtcnn", "dlib", "insightface")

_DETECTOR_FACTORIES: dict[str, Any] = {}


def register_detector(name: str, factory: Any) -> None:
    """Make ``get_detector(name)`` build ``factory(weights, device)`` (a callable or a ``"module:attribute"``
    reference, see :func:`guide_unlearn.families.resolve_ref`). Backends call this from their package's
    ``__init__.py``; registering a name again replaces it (and clears the detector cache)."""
    _DETECTOR_FACTORIES[name] = factory
    get_detector.cache_clear()


def registered_detectors() -> list[str]:
    """Names ``get_detector`` accepts (importing the backend package first so every detector is registered)."""
    discover_backends()
    return sorted(_DETECTOR_FACTORIES)


@functools.lru_cache(maxsize=8)
def get_detector(name: str = "mtcnn", weights: Optional[str] = None, device: str = "cpu") -> Any:
    """A detector by name, loaded once per (name, weights, device) and reused (weights only, no state).

    mtcnn: the facenet-pytorch P/R/O-Net state_dicts (weights = their folder); dlib: HOG detector + the
    5-point model (weights = shape_predictor_5_face_landmarks.dat); insightface: det_10g / SCRFD ONNX file.
    The detectors are backends (``guide_unlearn.adapters.faces``) looked up by name.
    """
    if name not in _DETECTOR_FACTORIES:
        discover_backends()
    if name not in _DETECTOR_FACTORIES:
        raise ConfigError(f"unknown face detector {name!r}; choose one of {', '.join(sorted(_DETECTOR_FACTORIES))}")
    return resolve_ref(_DETECTOR_FACTORIES[name], f"the {name} face detector")(weights, device)


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
