"""One contract every registered generator family meets (StyleGAN2, EG3D, and any family added later), run on
each family's tiny model, like diffusers' shared model tester."""

from __future__ import annotations

import pytest
import torch

import guide_unlearn.adapters  # noqa: F401  (registers the families)
from guide_unlearn import lora
from guide_unlearn.errors import InputError, LatentError
from guide_unlearn.families import GeneratorFamily, list_families
from guide_unlearn.protocols import GeneratorAdapter, SynthesisOutput

FAMILIES = [f.name for f in list_families()]


@pytest.fixture(params=FAMILIES)
def family(request) -> GeneratorFamily:
    return next(f for f in list_families() if f.name == request.param)


@pytest.fixture
def gen(family):
    return family.tiny(seed=0)


def _inputs(gen, n: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, gen.z_dim, generator=g)
    cams = gen.sample_cameras(n, generator=g)
    return z, cams


def _render(gen, z, cams, seed: int = 1) -> SynthesisOutput:
    with torch.no_grad():
        ws = gen.mapping(z)
        return gen.synthesis(ws, cams, noise_mode="random", generator=torch.Generator().manual_seed(seed),
                             return_features=True)


def test_both_stylegan2_and_eg3d_are_registered():
    assert {"stylegan2", "eg3d"} <= set(FAMILIES)


def test_tiny_model_is_the_declared_class_and_a_generator_adapter(family, gen):
    assert isinstance(gen, family.cls())
    assert isinstance(gen, GeneratorAdapter)
    assert gen.family == family.name
    assert not gen.training


def test_mapping_makes_ws_of_the_declared_shape(gen):
    z, _ = _inputs(gen, n=3)
    with torch.no_grad():
        ws = gen.mapping(z)
    assert ws.shape == (3, gen.num_ws, gen.w_dim)
    assert gen.w_avg.shape == (gen.w_dim,)


def test_synthesis_returns_images_and_features_of_the_declared_shape(gen):
    z, cams = _inputs(gen, n=2)
    out = _render(gen, z, cams)
    assert isinstance(out, SynthesisOutput)
    r = gen.config["img_resolution"]
    assert out.images.shape == (2, 3, r, r)
    assert out.images.dtype == torch.float32 and torch.isfinite(out.images).all()
    assert out.features is not None and out.features.shape[0] == 2


def test_a_z_of_the_wrong_width_raises_latent_error(gen):
    with pytest.raises(LatentError, match="z must be"):
        gen.mapping(torch.zeros(2, gen.z_dim + 1))


def test_ws_of_the_wrong_shape_raise_latent_error(gen):
    _, cams = _inputs(gen, n=2)
    with pytest.raises(LatentError, match="ws must be"):
        gen.synthesis(torch.zeros(2, gen.num_ws + 1, gen.w_dim), cams)
    with pytest.raises(LatentError, match="ws must be"):
        gen.synthesis(torch.zeros(2, gen.w_dim), cams)


def test_malformed_cameras_raise_input_error_or_the_family_has_none(gen):
    _, cams = _inputs(gen, n=2)
    if cams is None:  # a 2D family: no cameras at all
        assert gen.c_dim == 0 and gen.evaluation_cameras(3) is None
        return
    assert cams.shape == (2, gen.c_dim)
    ws = gen.mapping(torch.zeros(2, gen.z_dim))
    with pytest.raises(InputError):
        gen.synthesis(ws, torch.zeros(2, gen.c_dim + 1))
    with pytest.raises(InputError):
        gen.synthesis(ws, torch.full((2, gen.c_dim), float("nan")))


def test_the_same_seed_builds_the_same_model_and_renders_the_same_images(family, gen):
    twin = family.tiny(seed=0)
    for (name, a), (_, b) in zip(gen.state_dict().items(), twin.state_dict().items()):
        assert torch.equal(a, b), name
    z, cams = _inputs(gen)
    assert torch.equal(_render(gen, z, cams, seed=5).images, _render(twin, z, cams, seed=5).images)
    other = family.tiny(seed=1)
    assert not torch.equal(next(iter(gen.parameters())), next(iter(other.parameters())))


def test_building_a_tiny_model_leaves_the_global_rng_alone(family):
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    family.tiny(seed=0)
    assert torch.equal(torch.rand(4), expected)


def test_every_lora_target_is_a_lora_layer_type(gen):
    targets = gen.lora_target_modules()
    assert targets
    for name in targets:
        assert isinstance(gen.get_submodule(name), gen.lora_layer_types()), name


def test_a_zero_weight_delta_changes_nothing(gen):
    z, cams = _inputs(gen)
    before = _render(gen, z, cams).images
    cfg = lora.make_lora_config(2, 2.0, gen.lora_target_modules(), gen.lora_layer_types())
    lora.add_adapter(gen, "zero", cfg)  # B = 0: the weight delta is exactly zero
    assert len(list(lora.lora_layers(gen))) == len(gen.lora_target_modules())
    after = _render(gen, z, cams).images
    assert torch.equal(before, after)


def test_save_pretrained_round_trips_through_load_generator(gen, tmp_path):
    from guide_unlearn.pipelines.loading import load_generator

    gen.save_pretrained(tmp_path / "model")
    back = load_generator(tmp_path / "model")
    assert type(back) is type(gen)
    assert back.state_dict().keys() == gen.state_dict().keys()
    for k, v in gen.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    z, cams = _inputs(gen)
    assert torch.equal(_render(gen, z, cams).images, _render(back, z, cams).images)


def test_the_architecture_builds_on_the_meta_device(family, gen):
    model = family.build(dict(gen.config), device="meta")
    tensors = list(model.parameters()) + list(model.buffers())
    assert tensors and all(t.device.type == "meta" for t in tensors)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in gen.parameters())
    for name in family.configs:  # every named full-size configuration too
        big = family.build(name, device="meta")
        assert all(p.device.type == "meta" for p in big.parameters())
