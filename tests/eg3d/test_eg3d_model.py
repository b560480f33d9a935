"""EG3DGenerator: the adapter protocol on a tiny model, and the full-size architecture on the meta device."""

import math
import time
from pathlib import Path

import pytest
import torch

from guide_unlearn.adapters.eg3d import EG3D_FFHQ512, EG3DGenerator, build_eg3d_ffhq
from guide_unlearn.adapters.eg3d import cameras as C
from guide_unlearn.adapters.eg3d.convert import config_from_nvidia, from_nvidia
from guide_unlearn.adapters.eg3d.testing import tiny_generator
from guide_unlearn.adapters.stylegan2.layers import SynthesisLayer
from guide_unlearn.errors import CheckpointError, InputError, LatentError
from guide_unlearn.protocols import GeneratorAdapter

DATA = Path(__file__).parent / "data"


def _expected(name):
    out = {}
    for line in (DATA / name).read_text().splitlines():
        key, shape = line.split(" ")
        out[key] = tuple(int(s) for s in shape.split(",")) if shape else ()
    return out


#: The official G_ema constructor arguments and attributes of ffhqrebalanced512-128.pkl (docs/eg3d.md).
OFFICIAL_INIT_KWARGS = dict(
    z_dim=512, c_dim=25, w_dim=512, img_resolution=512, img_channels=3, sr_num_fp16_res=4,
    mapping_kwargs=dict(num_layers=2),
    rendering_kwargs=dict(
        image_resolution=512, disparity_space_sampling=False, clamp_mode="softplus",
        superresolution_module="training.superresolution.SuperresolutionHybrid8XDC", c_gen_conditioning_zero=False,
        gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode="none", density_reg=0.25,
        density_reg_p_dist=0.004, reg_type="l1", decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=48,
        depth_resolution_importance=48, ray_start=2.25, ray_end=3.3, box_warp=1, avg_camera_radius=2.7,
        avg_camera_pivot=[0, 0, 0.2]),
    sr_kwargs=dict(channel_base=32768, channel_max=512, fused_modconv_default="inference_only"),
    channel_base=32768, channel_max=512, fused_modconv_default="inference_only", num_fp16_res=0, conv_clamp=None,
)


@pytest.fixture(scope="module")
def full():
    return build_eg3d_ffhq("meta")


@pytest.fixture(scope="module")
def tiny():
    return tiny_generator(seed=0)


# -- full size, meta device ------------------------------------------------------------------------------------

def test_full_size_names_and_shapes_equal_the_official_g_ema(full):
    ours = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    assert ours == _expected("eg3d_ffhq512_g_ema_names.txt")


def test_full_size_parameter_counts_match_spec(full):
    def count(prefix=""):
        return sum(p.numel() for n, p in full.named_parameters() if n.startswith(prefix))

    assert count() == 30_662_136  # ≈ 30.66 M
    assert count("backbone.synthesis.") == pytest.approx(28.21e6, rel=1e-3)
    assert count("backbone.mapping.") == pytest.approx(0.80e6, rel=1e-2)
    assert count("superresolution.") == pytest.approx(1.65e6, rel=1e-2)
    assert count("decoder.") == pytest.approx(4.3e3, rel=2e-2)
    assert full.num_ws == 14 and full.c_dim == 25


def test_full_size_lora_targets_are_the_13_backbone_convs_with_229k_rank4_params(full):
    targets = full.lora_target_modules()
    modules = dict(full.named_modules())
    assert len(targets) == 13 and all(isinstance(modules[t], SynthesisLayer) for t in targets)
    assert all(t.startswith("backbone.synthesis.") for t in targets)
    rank = 4
    n = sum(rank * modules[t].weight[0].numel() + rank * modules[t].weight.shape[0] for t in targets)
    assert n == pytest.approx(229e3, rel=5e-3)
    names = full.full_finetune_parameters()
    assert names and all(n.startswith("backbone.synthesis.") for n in names)
    assert sum(dict(full.named_parameters())[n].numel() for n in names) == 28_207_533


def test_full_size_shapes_at_every_stage_on_meta(full):
    ws = full.mapping(torch.empty(2, 512, device="meta"))
    out = full.render(ws, full.evaluation_cameras(2))
    assert ws.shape == (2, 14, 512)
    assert out.planes.shape == (2, 3, 32, 256, 256)
    assert out.image_raw.shape == (2, 3, 128, 128) and out.image_depth.shape == (2, 1, 128, 128)
    assert out.feature_image.shape == (2, 32, 128, 128)
    assert out.image.shape == (2, 3, 512, 512)


def test_from_nvidia_loads_the_official_layout_strictly():
    state = {k: torch.empty(s, device="meta") for k, s in _expected("eg3d_ffhq512_g_ema_names.txt").items()}
    g = from_nvidia(state, OFFICIAL_INIT_KWARGS, {"neural_rendering_resolution": 128})
    assert g.neural_rendering_resolution == 128 and g.num_ws == 14
    assert g.cameras.pivot == (0.0, 0.0, 0.2) and g.rendering.depth_resolution_importance == 48
    assert g.superresolution.block0.conv0.conv_clamp == 256 and g.backbone.synthesis.b4.conv1.conv_clamp is None
    compat = from_nvidia(state, OFFICIAL_INIT_KWARGS, {"neural_rendering_resolution": 128}, camera_pivot=(0, 0, 0))
    assert compat.cameras.pivot == (0.0, 0.0, 0.0)


def test_from_nvidia_reports_missing_keys_and_unsupported_modules():
    state = {k: torch.empty(s, device="meta") for k, s in _expected("eg3d_ffhq512_g_ema_names.txt").items()}
    del state["decoder.net.2.bias"]
    with pytest.raises(CheckpointError, match="1 missing"):
        from_nvidia(state, OFFICIAL_INIT_KWARGS)
    other = dict(OFFICIAL_INIT_KWARGS, rendering_kwargs=dict(OFFICIAL_INIT_KWARGS["rendering_kwargs"],
                                                              superresolution_module="x.SuperresolutionHybrid4X"))
    with pytest.raises(CheckpointError, match="SuperresolutionHybrid8XDC"):
        config_from_nvidia(other)


def test_official_config_maps_onto_the_named_ffhq_config():
    config = config_from_nvidia(OFFICIAL_INIT_KWARGS, {"neural_rendering_resolution": 128})
    for key, value in EG3D_FFHQ512.items():
        if key == "fov_degrees":  # not part of the checkpoint: a property of the dataset's cameras
            continue
        assert config[key] == (tuple(value) if isinstance(value, (list, tuple)) else value), key


# -- tiny model ------------------------------------------------------------------------------------------------

def test_tiny_generator_implements_the_adapter_protocol(tiny):
    assert isinstance(tiny, GeneratorAdapter)
    assert tiny.family == "eg3d" and tiny.c_dim == 25 and tiny.w_avg.shape == (tiny.w_dim,)
    assert tiny.default_target_distance() == (30.0, False)
    assert tiny.sample_cameras(3, torch.Generator().manual_seed(0)).shape == (3, 25)
    assert tiny.evaluation_cameras(11).shape == (11, 25)
    assert set(tiny.lora_layer_types()) >= {SynthesisLayer}


def test_mapping_defaults_to_the_frontal_conditioning_camera(tiny):
    z = torch.randn(3, tiny.z_dim, generator=torch.Generator().manual_seed(0))
    ws = tiny.mapping(z)
    assert ws.shape == (3, tiny.num_ws, tiny.w_dim)
    assert torch.equal(ws, tiny.mapping(z, C.conditioning_cameras(3, tiny.cameras)))
    assert not torch.allclose(ws, tiny.mapping(z, C.make_cameras(math.pi / 2 + 0.3, math.pi / 2, tiny.cameras)))
    assert torch.allclose(tiny.mapping(z, truncation_psi=0.0), tiny.w_avg.expand_as(ws))


def test_synthesis_shapes_and_range(tiny):
    gen = torch.Generator().manual_seed(0)
    ws = tiny.mapping(torch.randn(2, tiny.z_dim, generator=gen))
    out = tiny.synthesis(ws, tiny.sample_cameras(2, gen), generator=gen, return_features=True)
    assert out.images.shape == (2, 3, 64, 64) and out.features.shape == (2, 3, 8, 32, 32)
    assert torch.isfinite(out.images).all() and out.images.abs().max() < 10
    r = tiny.render(ws, generator=gen)
    assert r.image_raw.shape == (2, 3, 16, 16) and r.opacity.shape == (2, 1, 16, 16)
    assert tiny.synthesis(ws, generator=gen).features is None


def test_all_randomness_comes_from_the_passed_generator(tiny):
    ws = tiny.mapping(torch.randn(1, tiny.z_dim, generator=torch.Generator().manual_seed(1)))
    cam = tiny.evaluation_cameras(3)[:1]
    a = tiny.synthesis(ws, cam, generator=torch.Generator().manual_seed(7)).images
    torch.manual_seed(123)  # the global RNG must not matter
    b = tiny.synthesis(ws, cam, generator=torch.Generator().manual_seed(7)).images
    c = tiny.synthesis(ws, cam, generator=torch.Generator().manual_seed(8)).images
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_camera_changes_the_image_but_not_the_planes(tiny):
    ws = tiny.mapping(torch.randn(1, tiny.z_dim, generator=torch.Generator().manual_seed(2)))
    cams = tiny.evaluation_cameras(11)
    a = tiny.render(ws, cams[:1], noise_mode="const", generator=torch.Generator().manual_seed(0))
    b = tiny.render(ws, cams[-1:], noise_mode="const", generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.planes, b.planes) and not torch.allclose(a.image, b.image)


def test_images_backpropagate_into_the_backbone_synthesis():
    g = tiny_generator(seed=1)
    gen = torch.Generator().manual_seed(0)
    ws = g.mapping(torch.randn(1, g.z_dim, generator=gen))
    g.synthesis(ws, g.sample_cameras(1, gen), generator=gen).images.square().mean().backward()
    grads = [p.grad for n, p in g.named_parameters() if n in set(g.full_finetune_parameters())]
    assert all(gr is not None for gr in grads) and sum(gr.abs().sum() for gr in grads) > 0


def test_tiny_synthesis_is_fast_on_one_cpu_thread(tiny):
    gen = torch.Generator().manual_seed(0)
    ws = tiny.mapping(torch.randn(1, tiny.z_dim, generator=gen))
    tiny.synthesis(ws, generator=gen)
    start = time.perf_counter()
    tiny.synthesis(ws, tiny.sample_cameras(1, gen), generator=gen)
    assert time.perf_counter() - start < 0.5


def test_wrong_shapes_raise_typed_errors(tiny):
    with pytest.raises(LatentError):
        tiny.synthesis(torch.zeros(1, 14, 512))
    with pytest.raises(LatentError):
        tiny.mapping(torch.zeros(1, 3))
    with pytest.raises(InputError):
        tiny.synthesis(torch.zeros(1, tiny.num_ws, tiny.w_dim), torch.zeros(1, 16))


def test_save_and_load_round_trip_keeps_weights_and_camera_pivot(tmp_path):
    g = tiny_generator(seed=3).use_camera_pivot(C.GUIDE_CODE_PIVOT)
    g.save_pretrained(tmp_path / "g")
    h = EG3DGenerator.from_pretrained(tmp_path / "g")
    assert h.cameras.pivot == (0.0, 0.0, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), h.state_dict().values()))
    assert torch.equal(g.sample_cameras(2, torch.Generator().manual_seed(0)),
                       h.sample_cameras(2, torch.Generator().manual_seed(0)))


def test_paper_compat_preset_uses_the_official_guide_pivot():
    from guide_unlearn.adapters.eg3d import EG3D_TINY

    g = EG3DGenerator.paper_compat(**EG3D_TINY)
    assert g.config.camera_pivot in ([0.0, 0.0, 0.0], (0.0, 0.0, 0.0))
    assert g.cameras.pivot == (0.0, 0.0, 0.0)
    assert build_eg3d_ffhq("meta", paper_compat=True).cameras.pivot == (0.0, 0.0, 0.0)
    assert tiny_generator().cameras.pivot == (0.0, 0.0, 0.2)
