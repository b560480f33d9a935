"""Small 2-D geometry: least-squares similarity transforms and warping a PIL image by one."""

from __future__ import annotations

import numpy as np
from PIL import Image


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` points onto ``dst``.

    src, dst: [K, 2] point sets (K >= 2). Returns the [2, 3] matrix M with dst ~ M @ [x, y, 1].
    Closed form (Umeyama 1991) without reflection.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0 ** 2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1.0
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(sig) @ fix) / max(var_s, 1e-12))
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[2, 3] affine matrix applied to [K, 2] points -> [K, 2]."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a [2, 3] affine matrix."""
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def warp_affine(image: Image.Image, matrix: np.ndarray, size: tuple[int, int],
                resample: int = Image.Resampling.BICUBIC, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """Warp ``image`` by the [2, 3] affine ``matrix`` (image pixels -> output pixels) into ``size`` (w, h).

    Coordinates follow OpenCV's convention (the centre of pixel i is at i), as landmark detectors report
    them, so the result matches ``cv2.warpAffine`` with the same matrix. When the output is much smaller than the warped region the
    image is first reduced, so the result is not aliased.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:  # shrink first (box filter) so bicubic sampling does not alias
        factor = int(np.floor(1.0 / scale))
        if factor >= 2:
            reduced = image.reduce(factor)
            fx = image.width / reduced.width
            fy = image.height / reduced.height
            # a reduced pixel j covers original pixels [j f, (j + 1) f): its centre is j f + (f - 1) / 2
            pre = np.array([[fx, 0.0, (fx - 1) / 2], [0.0, fy, (fy - 1) / 2]])
            matrix = np.hstack([matrix[:, :2] @ pre[:, :2], (matrix[:, :2] @ pre[:, 2] + matrix[:, 2])[:, None]])
            image = reduced
    inverse = invert_affine(matrix)
    # PIL maps output -> input in coordinates where pixel i's centre is at i + 0.5: shift both sides.
    a, b, c = inverse[0]
    d, e, f = inverse[1]
    c = c - 0.5 * (a + b) + 0.5
    f = f - 0.5 * (d + e) + 0.5
    return image.transform(size, Image.Transform.AFFINE, (a, b, c, d, e, f), resample=resample, fillcolor=fill)
