"""The benchmark's reference loop computes the same loss as the paper preset on the same inputs."""

import sys
from pathlib import Path

import pytest
import torch

from guide_unlearn import EraseConfig
from guide_unlearn.adapters.perceptual import MultiScaleGradL1
from guide_unlearn.adapters.toy import ToyIdentityNet
from guide_unlearn.engine import _Trainable, render_step, step_codes
from guide_unlearn.losses import ltu_loss
from guide_unlearn.targets import ufo_target
from guide_unlearn.testing import tiny_generator

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from reference_loop import ReferenceLoop  # noqa: E402


@pytest.mark.parametrize("backend", ["stylegan2", "eg3d"])
def test_reference_step_zero_loss_equals_the_paper_preset(backend, monkeypatch):
    if backend == "eg3d":  # ray jitter / importance draws differ between batched and batch-1 renders: fix them
        import guide_unlearn.adapters.eg3d.renderer as renderer

        monkeypatch.setattr(renderer, "uniform", lambda shape, generator=None, device=None, dtype=torch.float32:
                            torch.full(list(shape), 0.5, device=device, dtype=dtype))
    cfg = EraseConfig.paper(noise_mode="const")
    gen = tiny_generator(backend)
    perceptual, identity = MultiScaleGradL1(), ToyIdentityNet()
    g = torch.Generator().manual_seed(0)
    w_u = gen.mapping(torch.randn(1, gen.z_dim, generator=g)).detach()
    w_t = ufo_target(w_u, gen.w_avg, "extrapolate", 30.0)
    w_r = gen.mapping(torch.randn(4, gen.z_dim, generator=g)).detach()
    alpha = torch.rand(2, generator=g) * 15
    cam = gen.sample_cameras(1, g)

    trainable = _Trainable(gen, "full", cfg.method_config, torch.Generator().manual_seed(1))
    try:
        ws_u, ws_s = step_codes(w_u, w_t, w_r, torch.zeros(2, dtype=torch.long), alpha, 2)
        out_u, out_s = render_step(gen, trainable.source, ws_u, ws_s, cam, cfg, None)
        ours = ltu_loss(out_u, out_s, 1, 2, 2, cfg, perceptual, identity)
    finally:
        trainable.restore()
    ref = ReferenceLoop(gen, perceptual, identity, cfg)
    theirs = ref.loss(w_u, w_t, w_r[:2], alpha, w_r[2:], cam)
    assert torch.allclose(ours.total.detach(), theirs.detach(), rtol=1e-5, atol=1e-6)
