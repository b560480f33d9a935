"""The audit's maths against independent computations (scipy's sqrtm, explicit loops, closed forms)."""

from __future__ import annotations

import numpy as np
import pytest

from guide_unlearn import metrics as M
from guide_unlearn.errors import InputError


def _scipy_fd(mu1, s1, mu2, s2):
    from scipy import linalg

    covmean = linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form():
    """N(mu1, diag(a)) vs N(mu2, diag(b)): ||mu1 - mu2||² + sum (sqrt(a) - sqrt(b))²."""
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    known = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + (3 - 1) ** 2
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(known, abs=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances():
    rng = np.random.default_rng(0)
    for d in (2, 8, 32):
        x, y = rng.normal(size=(d, d)), rng.normal(size=(d, d))
        s1, s2 = x @ x.T + 0.1 * np.eye(d), y @ y.T + 0.1 * np.eye(d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), rel=1e-6)


def test_frechet_distance_of_samples_approaches_the_true_gaussians():
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, size=(20000, 4))
    b = rng.normal(0.5, 2.0, size=(20000, 4))
    known = 4 * 0.25 + 4 * (1 - 2) ** 2  # 5
    assert M.frechet_distance_of(a, b) == pytest.approx(known, rel=0.03)
    assert M.frechet_distance_of(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_statistics_refuse_too_few_samples():
    with pytest.raises(InputError):
        M.gaussian_stats(np.zeros((1, 3)))


def test_id_cosine_is_the_mean_over_codes_and_views():
    rng = np.random.default_rng(2)
    s, p = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    loops = np.array([[np.dot(s[i, v], p[i, v]) / np.linalg.norm(s[i, v]) / np.linalg.norm(p[i, v])
                       for v in range(4)] for i in range(3)])
    overall, per_code = M.id_cosine(s, p)
    assert overall == pytest.approx(loops.mean())
    np.testing.assert_allclose(per_code, loops.mean(1))


def test_id_cosine_leaves_out_renderings_without_a_face():
    s = np.array([[[1.0, 0.0]], [[1.0, 0.0]]])
    p = np.array([[[0.0, 1.0]], [[np.nan, np.nan]]])
    overall, per_code = M.id_cosine(s, p)
    assert overall == pytest.approx(0.0)
    assert per_code[0] == pytest.approx(0.0) and np.isnan(per_code[1])


def test_recognition_thresholds_follow_each_rule():
    assert M.recognised(np.array([0.59, 0.6, 0.61, np.nan]), 0.6, "euclidean").tolist() == [True, False, False,
                                                                                          False]
    assert M.recognised(np.array([0.91, 0.92, 0.95, np.nan]), 0.92, "cosine").tolist() == [False, True, True, False]


def test_best_match_takes_the_best_allowed_reference():
    r = np.array([[1.0, 0.0], [0.0, 1.0]])
    refs = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 0.0]])
    cos = M.best_match(r, refs, [[0, 1], [0]], "cosine")
    assert cos[0] == pytest.approx(1 / np.sqrt(1.01)) and cos[1] == pytest.approx(0.1 / np.sqrt(1.01))
    dist = M.best_match(r, refs, None, "euclidean")
    assert dist.tolist() == [0.0, 0.0]


def test_fraction_of_nothing_is_nan():
    assert np.isnan(M.fraction(np.array([], dtype=bool)))
    assert M.fraction(np.array([True, False, False, True])) == 0.5


def test_frechet_distance_of_fewer_samples_than_dimensions_matches_scipy_sqrtm_on_their_covariances():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(12, 40)), rng.normal(0.3, 1.4, size=(9, 40))  # rank-deficient covariances
    expected = _scipy_fd(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert M.frechet_distance_of(a, b) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(InputError):
        M.frechet_distance_of(a[:1], b)
