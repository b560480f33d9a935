"""An erase on a tiny EG3D + tiny GOAE: the identity is erased across the 11 evaluation views, others are kept."""

import pytest
import torch

from guide_unlearn.adapters.eg3d.testing import tiny_generator, tiny_inverter
from guide_unlearn.adapters.perceptual.distances import MultiScaleGradL1
from guide_unlearn.config import EraseConfig
from guide_unlearn.pipelines.eraser import IdentityEraser


def _mse(a, b):
    return float((a - b).square().mean())


@pytest.fixture(scope="module")
def erased():
    g = tiny_generator(seed=0)
    eraser = IdentityEraser(generator=g, inverter=tiny_inverter(g, seed=0), identity_model=None,
                            perceptual=MultiScaleGradL1(), name="tiny-eg3d")
    photo = eraser.synthesize(g.mapping(torch.randn(1, g.z_dim, generator=torch.Generator().manual_seed(7))))
    cfg = EraseConfig(iterations=60, target_distance=1.0, target_distance_relative=True,
                      adjacency_alpha=(0.0, 15.0), adjacency_alpha_relative=True, seed=0)
    return eraser, eraser.erase(photo, cfg, camera=g.evaluation_cameras(1), measure=False, progress=False)


@pytest.mark.slow
def test_erasure_holds_across_the_11_evaluation_views(erased):
    eraser, result = erased
    cams = eraser.generator.evaluation_cameras(11)
    w_u, w_t = result.w_source[:1], result.w_target[:1]
    n = cams.shape[0]
    source_u = eraser.synthesize(w_u.expand(n, -1, -1), camera=cams)
    source_t = eraser.synthesize(w_t.expand(n, -1, -1), camera=cams)
    eraser.apply_patch(result.patch)
    try:
        erased_u = eraser.synthesize(w_u.expand(n, -1, -1), camera=cams)
    finally:
        eraser.remove_patch(result.patch)
    assert _mse(erased_u, source_t) <= 0.5 * _mse(source_u, source_t)
    assert result.views_before.shape == result.views_after.shape == (11, 3, 64, 64)
    assert torch.allclose(result.views_before, source_u, atol=1e-5)


@pytest.mark.slow
def test_random_identities_are_preserved(erased):
    eraser, result = erased
    g = eraser.generator
    w_r = g.mapping(torch.randn(8, g.z_dim, generator=torch.Generator().manual_seed(99)))
    cam = g.evaluation_cameras(11)[3:4]
    source = eraser.synthesize(w_r, camera=cam)
    eraser.apply_patch(result.patch)
    try:
        after = eraser.synthesize(w_r, camera=cam)
    finally:
        eraser.remove_patch(result.patch)
    pairs = [_mse(source[i], source[j]) for i in range(8) for j in range(i + 1, 8)]
    assert _mse(after, source) <= 0.1 * sum(pairs) / len(pairs)
