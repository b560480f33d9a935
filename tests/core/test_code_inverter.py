"""The code-space inverter (z, then optionally w) and its registry wiring."""

from __future__ import annotations

import pytest
import torch

from guide_unlearn.adapters.projector import CodeInverter
from guide_unlearn.errors import CheckpointError, InputError
from guide_unlearn.testing import tiny_generator


@pytest.fixture(scope="module")
def gen():
    return tiny_generator("stylegan2", seed=0)


def _target(gen, seed=5):
    z = torch.randn(2, gen.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return gen.synthesis(gen.mapping(z, None), noise_mode="const").images


def _fit(inv, gen, ws, images):
    with torch.no_grad():
        return inv._loss(gen.synthesis(ws, noise_mode="const").images, images)


def test_optimising_z_beats_the_best_random_start(gen):
    images = _target(gen)
    start_only = CodeInverter(gen, starts=16, steps=0, refine_steps=0)
    optimised = CodeInverter(gen, starts=16, steps=60, refine_steps=0)
    g = lambda: torch.Generator().manual_seed(0)
    before = _fit(start_only, gen, start_only.invert(images, generator=g()), images)
    after = _fit(optimised, gen, optimised.invert(images, generator=g()), images)
    assert (after < 0.7 * before).all()


def test_codes_are_in_the_mapping_range(gen):
    ws = CodeInverter(gen, starts=4, steps=5, refine_steps=0).invert(_target(gen), generator=torch.Generator().manual_seed(0))
    assert ws.shape == (2, gen.num_ws, gen.w_dim)
    assert torch.equal(ws, ws[:, :1].expand_as(ws))  # one w for every layer, as the mapping makes


def test_same_seed_same_codes_and_batching_only_rounds(gen):
    images = _target(gen)
    inv = CodeInverter(gen, starts=8, steps=10)
    both = inv.invert(images, generator=torch.Generator().manual_seed(3))
    one = inv.invert(images[1:], generator=torch.Generator().manual_seed(3))
    again = inv.invert(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(both, again)
    # per-image steps: the batch changes only float rounding in the batched convolutions
    assert (both[1:] - one).abs().max() < 2e-2


def test_w_refinement_improves_the_fit(gen):
    images = _target(gen, seed=9)
    g = lambda: torch.Generator().manual_seed(0)
    z_only = CodeInverter(gen, starts=8, steps=20, refine_steps=0)
    a = _fit(z_only, gen, z_only.invert(images, generator=g()), images)
    for space in ("w", "w+"):
        refined = CodeInverter(gen, starts=8, steps=20, refine_steps=30, refine_lr=0.02, refine_space=space)
        b = _fit(refined, gen, refined.invert(images, generator=g()), images)
        assert (b < a).all(), space


def test_w_plus_refinement_gives_per_layer_codes(gen):
    ws = CodeInverter(gen, starts=4, steps=5, refine_steps=10, refine_lr=0.05).invert(_target(gen))
    assert not torch.equal(ws, ws[:, :1].expand_as(ws))


def test_generator_parameters_keep_their_grad_flags(gen):
    flags = {n: p.requires_grad for n, p in gen.named_parameters()}
    CodeInverter(gen, starts=2, steps=2).invert(_target(gen))
    assert flags == {n: p.requires_grad for n, p in gen.named_parameters()}


def test_bad_settings_and_images_are_refused(gen):
    with pytest.raises(InputError):
        CodeInverter(gen, starts=0)
    with pytest.raises(InputError, match="refine_space"):
        CodeInverter(gen, refine_space="z")
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        CodeInverter(gen, steps=1).invert(torch.zeros(3, 32, 32))


def test_registry_code_projector_needs_a_generator(gen):
    from guide_unlearn.pipelines.loading import load_inverter
    from guide_unlearn.pipelines.registry import resolve_checkpoint

    assert isinstance(load_inverter("code-projector", generator=gen), CodeInverter)
    with pytest.raises(CheckpointError, match="generator="):
        load_inverter("code-projector")
    with pytest.raises(CheckpointError, match="no file"):
        resolve_checkpoint("code-projector")


def test_missing_bundled_model_says_reinstall(monkeypatch, tmp_path):
    import guide_unlearn.models as models
    from guide_unlearn.pipelines.loading import load_generator

    monkeypatch.setattr(models, "bundled_model_dir", lambda name: tmp_path / name)
    with pytest.raises(CheckpointError, match="reinstall"):
        load_generator("demo-faces")


def test_frozen_weights_restores_mixed_flags_after_an_error():
    """Both inverters freeze the generator while fitting codes; a patch's trainable LoRA flags survive, even
    when the fit fails."""
    from guide_unlearn.adapters.projector.projector import frozen_weights

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    net[0].requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_weights(net):
            assert not any(p.requires_grad for p in net.parameters())
            raise RuntimeError("boom")
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True]
