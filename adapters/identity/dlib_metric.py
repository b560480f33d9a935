"""dlib's face-recognition ResNet as a real, always-available identity METRIC (not differentiable).

Two conventions, stated on every function:
- Euclidean on raw descriptors (dlib's own): ``dlib_descriptors`` / ``dlib_distance``; same person when the
  distance is below ``DLIB_THRESHOLD`` = 0.6. Raw descriptors are not unit length (norms ~1.3-1.6).
- Cosine on unit vectors (the IdentityModel protocol): ``DlibIdentity.embed``; same person when the cosine
  similarity is above ``DLIB_COSINE_THRESHOLD`` ~ 0.92 (the equivalent cut, measured on real pairs).

Input style "dlib150": dlib's own 150-px chip (``guide_unlearn.faces.align_face(..., "dlib150")``); an
ArcFace-style 112 crop costs it several points of verification accuracy.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from guide_unlearn.errors import CheckpointError, InputError
from guide_unlearn.adapters.faces.backends import find_dlib_file, import_dlib
from guide_unlearn.faces.weights import PathLike

from .common import Images

DLIB_THRESHOLD = 0.6  # Euclidean distance between raw descriptors
DLIB_COSINE_THRESHOLD = 0.92  # cosine similarity between normalised descriptors (equivalent cut)


def _chips(images: Images) -> list[np.ndarray]:
    """150x150 uint8 RGB chips from PIL images / arrays, or from a tensor [N, 3, H, W] in [-1, 1]."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"expected [N, 3, H, W] in [-1, 1], got {tuple(images.shape)}")
        from .common import to_batch  # noqa: PLC0415

        x = to_batch(images.detach().float().cpu(), 150)
        arrays = ((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        return [np.ascontiguousarray(a) for a in arrays]
    out = []
    for image in images:
        if hasattr(image, "convert"):
            image = image.convert("RGB")
            if image.size != (150, 150):
                image = image.resize((150, 150), resample=3)
        arr = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        if arr.shape != (150, 150, 3):
            raise InputError(f"dlib takes 150x150 RGB chips (align style 'dlib150'), got shape {arr.shape}")
        out.append(arr)
    return out


class DlibIdentity:
    """IdentityModel around ``dlib.face_recognition_model_v1`` (metric only: ``differentiable = False``).

    weights: ``dlib_face_recognition_resnet_model_v1.dat`` (explicit path, $GUIDE_SHARED/weights/dlib, the
    cache folder, or the ``face_recognition_models`` package).
    """

    name = "dlib"
    align_style = "dlib150"
    differentiable = False

    def __init__(self, weights: Optional[PathLike] = None) -> None:
        dlib = import_dlib()
        file = find_dlib_file("dlib_face_recognition_resnet_model_v1.dat", weights)
        try:
            self.model = dlib.face_recognition_model_v1(file)
        except RuntimeError as exc:
            raise CheckpointError(f"cannot load dlib recogniser {file}: {exc}") from exc

    def descriptors(self, images: Images) -> np.ndarray:
        """Raw dlib descriptors [N, 128] (NOT normalised; Euclidean convention, threshold 0.6). Chips are
        described on ``torch.get_num_threads()`` threads (the values do not depend on it)."""
        chips = _chips(images)
        if not chips:
            raise InputError("no images given to describe")
        workers = min(len(chips), max(1, torch.get_num_threads()))
        if workers == 1:
            out = [self.model.compute_face_descriptor(c) for c in chips]
        else:  # dlib releases the GIL while it computes: one chip per thread, results in order (identical values)
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            with ThreadPoolExecutor(workers) as pool:
                out = list(pool.map(self.model.compute_face_descriptor, chips))
        return np.array([np.asarray(d) for d in out], dtype=np.float64)

    def embed(self, images: Images) -> torch.Tensor:
        """Unit vectors [N, 128] (cosine convention; same person above ~0.92). No gradient."""
        d = torch.from_numpy(self.descriptors(images)).float()
        return torch.nn.functional.normalize(d, dim=1)


def dlib_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between raw dlib descriptors: a [N, 128], b [M, 128] -> [N, M]
    (same person when < ``DLIB_THRESHOLD`` = 0.6)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    return np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0.0))


def dlib_descriptors(images: Sequence, weights: Optional[PathLike] = None) -> np.ndarray:
    """Raw dlib descriptors [N, 128] of "dlib150" chips (Euclidean convention, threshold 0.6)."""
    return DlibIdentity(weights).descriptors(images)


def crop_chips(images: torch.Tensor, landmarks: np.ndarray) -> list:
    """dlib150 chips cut out of aligned crops whose faces sit at known landmarks, without detecting again.

    images [N, 3, R, R] in [-1, 1]; landmarks [N, 5, 2] or [5, 2] (crop pixels: eyes, nose, mouth corners) ->
    N PIL chips of 150x150 for ``DlibIdentity.descriptors``. Used on renderings and crops too small for a
    detector (the 64-px ``demo-faces`` crops)."""
    from guide_unlearn.faces import Face, align_face
    from guide_unlearn.images import tensor_to_pil

    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images must be [N, 3, R, R] in [-1, 1], got {list(images.shape)}")
    size = images.shape[-1]
    lms = np.broadcast_to(np.asarray(landmarks, dtype=np.float64), (images.shape[0], 5, 2))
    box = np.array([0, 0, size, size], dtype=np.float64)
    return [align_face(tensor_to_pil(img), Face(box, lm, 1.0, detector="known"), "dlib150")
            for img, lm in zip(images, lms)]
