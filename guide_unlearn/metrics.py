"""The audit's maths, on plain arrays: Fréchet distance, the ID cosine, recognition at a threshold.

Nothing here knows a network: features and identity vectors come in as arrays, so each formula can be checked
against an independent computation (tests/core/test_metrics.py). The audit pipeline
(:mod:`guide_unlearn.pipelines.audit`) feeds them.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .errors import InputError


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """features [N, D] (N >= 2) -> (mean [D], covariance [D, D], unbiased as in FID)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(f"Fréchet statistics need features [N >= 2, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("features contain NaN or Inf")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1^½ sigma2 sigma1^½)^½).

    mu [D], sigma [D, D]. Tr((sigma1 sigma2)^½) is computed as the trace of the symmetric root of
    sigma1^½ sigma2 sigma1^½ (same eigenvalues, no complex round-off); the result is the squared distance, as
    FID reports it.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise InputError(f"mismatched Gaussian statistics: {mu1.shape}, {s1.shape} vs {mu2.shape}, {s2.shape}")
    root1 = _sqrt_psd(s1)
    cross = _sqrt_psd(root1 @ s2 @ root1)
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))
    return max(value, 0.0)


def frechet_distance_of(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to features a [N, D] and b [M, D].

    With fewer samples than dimensions (N, M < D: e.g. a few hundred 2048-d Inception features) the same value is
    computed exactly in sample space, without D x D square roots: with A = (a - mean) / sqrt(N - 1) (so
    sigma1 = AᵀA) and B likewise, Tr sigma1 = ||A||², and the nonzero eigenvalues of sigma1 sigma2 are the squared
    singular values of A Bᵀ [N, M], so Tr((sigma1 sigma2)^½) is the nuclear norm of A Bᵀ.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1] and max(a.shape[0], b.shape[0]) < a.shape[1]:
        for x in (a, b):  # the checks of gaussian_stats
            if x.shape[0] < 2:
                raise InputError(f"Fréchet statistics need features [N >= 2, D], got shape {x.shape}")
            if not np.isfinite(x).all():
                raise InputError("features contain NaN or Inf")
        mu1, mu2 = a.mean(0), b.mean(0)
        fa = (a - mu1) / np.sqrt(a.shape[0] - 1)
        fb = (b - mu2) / np.sqrt(b.shape[0] - 1)
        cross = np.linalg.svd(fa @ fb.T, compute_uv=False).sum()
        value = float(((mu1 - mu2) ** 2).sum() + (fa ** 2).sum() + (fb ** 2).sum() - 2 * cross)
        return max(value, 0.0)
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows [N, D] (NaN rows stay NaN)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of a [N, D] with every row of b [M, D] -> [N, M]."""
    return unit_rows(a) @ unit_rows(b).T


def id_cosine(source: np.ndarray, patched: np.ndarray) -> tuple[float, np.ndarray]:
    """The paper's ID: mean cosine between the identity vectors of G_s(w) and G_u(w), rendering by rendering.

    source, patched [N, V, D] (N codes, V views; a 2D model has V = 1) or [N, D]. -> (the mean over every code
    and view, the per-code mean over views [N]). Rows that are NaN (no face) are left out of both means."""
    s, p = np.asarray(source, np.float64), np.asarray(patched, np.float64)
    if s.shape != p.shape or s.ndim not in (2, 3):
        raise InputError(f"ID needs matching [N, V, D] or [N, D] arrays, got {s.shape} and {p.shape}")
    if s.ndim == 2:
        s, p = s[:, None], p[:, None]
    cos = (unit_rows(s.reshape(-1, s.shape[-1])) * unit_rows(p.reshape(-1, p.shape[-1]))).sum(1)
    cos = cos.reshape(s.shape[0], s.shape[1])
    per_code = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in cos])
    overall = float(np.nanmean(cos)) if np.isfinite(cos).any() else float("nan")
    return overall, per_code


def best_match(renderings: np.ndarray, references: np.ndarray, groups: Optional[list[list[int]]] = None,
               distance: str = "cosine") -> np.ndarray:
    """For each rendering (row of [N, D]), its best score against the references [M, D] it may match.

    groups: per rendering, the reference rows allowed (None: all). distance "cosine" -> highest cosine;
    "euclidean" -> lowest Euclidean distance. NaN rows (no face) give NaN. -> [N]."""
    r, ref = np.asarray(renderings, np.float64), np.asarray(references, np.float64)
    if distance == "cosine":
        scores, pick = cosine_matrix(r, ref), np.nanmax
    elif distance == "euclidean":
        scores, pick = np.sqrt(((r[:, None, :] - ref[None]) ** 2).sum(-1)), np.nanmin
    else:
        raise InputError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")
    out = np.full(r.shape[0], np.nan)
    for i in range(r.shape[0]):
        row = scores[i] if groups is None else scores[i, groups[i]]
        if row.size and np.isfinite(row).any():
            out[i] = pick(row)
    return out


def recognised(scores: np.ndarray, threshold: float, distance: str = "cosine") -> np.ndarray:
    """Whether each best score passes the same-person threshold (cosine >= t, or Euclidean < t); NaN (no face)
    is never recognised. -> bool [N]."""
    s = np.asarray(scores, np.float64)
    with np.errstate(invalid="ignore"):
        ok = s >= threshold if distance == "cosine" else s < threshold
    return ok & np.isfinite(s)


def fraction(flags: np.ndarray) -> float:
    """Mean of a bool array; NaN when it is empty."""
    flags = np.asarray(flags, dtype=bool)
    return float(flags.mean()) if flags.size else float("nan")


def mmd_rbf(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """Squared maximum mean discrepancy with the Gaussian RBF kernel k(a, b) = exp(-||a - b||² / (2 sigma²)),
    times ``scale``: the CMMD of Jayasumana et al. (CVPR 2024; sigma 10, scale 1000) on CLIP embeddings x [N, D]
    and y [M, D]. The minimum-variance (biased, V-statistic) estimator of Gretton et al. (2012, Eq. 5), as the
    paper's reference code: means over all pairs, diagonals included."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise InputError(f"MMD needs features [N >= 1, D] and [M >= 1, D], got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputError("features contain NaN or Inf")
    gamma = 1.0 / (2.0 * sigma ** 2)

    def k(a, b):
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        return np.exp(-gamma * np.clip(d2, 0, None)).mean()

    return float(scale * (k(x, x) + k(y, y) - 2 * k(x, y)))
