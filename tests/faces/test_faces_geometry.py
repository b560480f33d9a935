"""Similarity transforms and warps of the alignment code."""

import numpy as np
from PIL import Image

from guide_unlearn.faces.geometry import apply_transform, similarity_transform, warp_affine


def test_similarity_transform_recovers_a_known_rotation_scale_shift():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    matrix = similarity_transform(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(apply_transform(matrix, src), dst, atol=1e-9)


def test_warp_moves_a_bright_pixel_where_the_matrix_sends_it():
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[20, 30] = 255  # x = 30, y = 20
    matrix = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -3.0]])  # shift by (+5, -3)
    out = np.asarray(warp_affine(Image.fromarray(arr), matrix, (64, 64), resample=Image.Resampling.NEAREST))
    ys, xs = np.nonzero(out[..., 0])
    assert (ys.tolist(), xs.tolist()) == ([17], [35])
