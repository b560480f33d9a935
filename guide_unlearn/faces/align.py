"""Face crops from 5 landmarks: "arcface" (112, ID metrics), "dlib150" (dlib's chip), "ffhq" (StyleGAN2 / e4e)
and "eg3d" (EG3D / GOAE, with the camera of ``camera.estimate_camera``)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from ..errors import ConfigError
from .geometry import similarity_transform, warp_affine
from .photo import ImageLike, load_image
from .templates import (ARCFACE_112, DLIB_CHIP_PADDING, DLIB_CHIP_TEMPLATE, DLIB_CHIP_SIZE, EG3D_CROP, EG3D_RESCALE, EG3D_SIZE,
                        FFHQ_SIZE, MTCNN_IN_DLIB_CHIP)
from .types import Face

STYLES = ("arcface", "dlib150", "ffhq", "eg3d")
DEFAULT_SIZES = {"arcface": 112, "dlib150": DLIB_CHIP_SIZE, "ffhq": FFHQ_SIZE, "eg3d": EG3D_SIZE}


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FFHQ's oriented crop square from 5 landmarks [5, 2] -> (centre [2], half x-axis [2], half y-axis [2]).

    The recipe of the FFHQ dataset: x = eye-to-eye minus the rotated eye-to-mouth vector, scaled to
    max(2 |eye-to-eye|, 1.8 |eye-to-mouth|); centre = eye midpoint + 0.1 eye-to-mouth.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_avg = (lm[0] + lm[1]) / 2
    eye_to_eye = lm[1] - lm[0]
    mouth_avg = (lm[3] + lm[4]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    return eye_avg + eye_to_mouth * 0.1, x, y


def pos_fit(landmarks: np.ndarray, height: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Affine camera fit of the BFM mean face to 5 landmarks (Deep3DFaceRecon's "POS" step).

    landmarks [5, 2] image pixels; height: image height (the fit works with y pointing up).
    Returns (t [2] = projected BFM origin in y-up coordinates, s = mean scale in px per BFM unit,
    P [2, 3] = the scaled rotation rows).
    """
    from .templates import BFM_LM3D

    lm = np.asarray(landmarks, dtype=np.float64).copy()
    lm[:, 1] = height - 1 - lm[:, 1]
    a = np.zeros((10, 8))
    a[0::2, 0:3] = BFM_LM3D
    a[0::2, 3] = 1
    a[1::2, 4:7] = BFM_LM3D
    a[1::2, 7] = 1
    k = np.linalg.lstsq(a, lm.reshape(10), rcond=None)[0]
    p = np.stack([k[0:3], k[4:7]])
    s = float((np.linalg.norm(p[0]) + np.linalg.norm(p[1])) / 2)
    return np.array([k[3], k[7]]), s, p


def alignment_matrix(face: Face, style: str, size: Optional[int] = None, image_height: Optional[int] = None
                     ) -> np.ndarray:
    """[2, 3] affine matrix mapping image pixels to the ``style`` crop of side ``size`` (default per style).

    image_height is needed by "eg3d" (its fit works in y-up coordinates); landmarks alone suffice otherwise.
    """
    if style not in STYLES:
        raise ConfigError(f"unknown alignment style {style!r}; choose one of {', '.join(STYLES)}")
    size = int(size or DEFAULT_SIZES[style])
    lm = face.landmarks
    if style == "arcface":
        return similarity_transform(lm, ARCFACE_112 * (size / 112.0))
    if style == "dlib150":
        # dlib's own 5 points (a dlib detection) give exactly dlib's chip; other detectors' points use the
        # measured position of the standard 5 points in that chip.
        src, template = lm, MTCNN_IN_DLIB_CHIP
        if "dlib_points" in face.extra:
            src, template = np.asarray(face.extra["dlib_points"]), DLIB_CHIP_TEMPLATE
        dst = (DLIB_CHIP_PADDING + template) / (1 + 2 * DLIB_CHIP_PADDING) * size
        matrix = similarity_transform(src, dst)
        matrix[:, 2] -= 0.5  # dlib samples pixel corners, not centres (matches dlib.get_face_chip to ~1 level)
        return matrix
    if style == "ffhq":
        centre, x, y = ffhq_quad(lm)
        quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
        target = np.array([[0, 0], [0, size], [size, size], [size, 0]], dtype=np.float64) - 0.5
        return similarity_transform(quad, target)
    # eg3d
    if image_height is None:
        raise ConfigError("the 'eg3d' alignment needs image_height (pass the image to align_face)")
    t, s, _ = pos_fit(lm, image_height)
    centre = np.array([t[0] - 0.5, image_height - t[1] - 0.5])
    side = EG3D_CROP * s / EG3D_RESCALE  # original pixels covered by the output
    scale = size / side
    return np.array([[scale, 0.0, size / 2 - 0.5 - scale * centre[0]],
                     [0.0, scale, size / 2 - 0.5 - scale * centre[1]]])


def _reflect_pad(image: Image.Image, matrix: np.ndarray, size: int) -> tuple[Image.Image, np.ndarray]:
    """Mirror-pad the photo when the crop reaches outside it (as FFHQ does), so borders are not black."""
    from .geometry import apply_transform, invert_affine

    corners = apply_transform(invert_affine(matrix), np.array([[0, 0], [0, size], [size, size], [size, 0]]))
    w, h = image.size
    pad_l = int(max(0, np.ceil(-corners[:, 0].min())))
    pad_t = int(max(0, np.ceil(-corners[:, 1].min())))
    pad_r = int(max(0, np.ceil(corners[:, 0].max() - w)))
    pad_b = int(max(0, np.ceil(corners[:, 1].max() - h)))
    if not (pad_l or pad_t or pad_r or pad_b):
        return image, matrix
    # reflection cannot exceed the image itself; beyond that the edge pixels repeat
    arr = np.asarray(image)
    pads = [(pad_t, pad_b), (pad_l, pad_r), (0, 0)]
    refl = [(min(a, h - 1), min(b, h - 1)) for a, b in pads[:1]] + [(min(a, w - 1), min(b, w - 1))
                                                                   for a, b in pads[1:2]] + [(0, 0)]
    arr = np.pad(arr, refl, mode="reflect")
    rest = [(a - r[0], b - r[1]) for (a, b), r in zip(pads, refl)]
    arr = np.pad(arr, rest, mode="edge")
    shifted = matrix.copy()
    shifted[:, 2] = matrix[:, 2] + matrix[:, :2] @ np.array([-pad_l, -pad_t])
    return Image.fromarray(arr), shifted


def align_face(image: ImageLike, face: Face, style: str = "arcface", size: Optional[int] = None,
               pad: str = "auto") -> Image.Image:
    """Crop and align one face of a photo -> RGB PIL image of side ``size`` (default: 112 arcface, 150
    dlib150, 1024 ffhq, 512 eg3d).

    image: path / PIL image / array [H, W, 3]; face: a ``Face`` (its 5 landmarks in that image's pixels).
    pad: "reflect" mirrors the photo where the crop leaves it, "black" fills with zeros; "auto" reflects for
    ffhq / eg3d (as their datasets were made) and uses black for the ID crops.
    """
    photo = load_image(image)
    size = int(size or DEFAULT_SIZES.get(style, 0) or 0)
    matrix = alignment_matrix(face, style, size, image_height=photo.height)
    if pad == "reflect" or (pad == "auto" and style in ("ffhq", "eg3d")):
        photo, matrix = _reflect_pad(photo, matrix, size)
    resample = Image.Resampling.BILINEAR if style == "dlib150" else Image.Resampling.BICUBIC
    return warp_affine(photo, matrix, (size, size), resample=resample)
