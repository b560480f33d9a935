"""StyleGAN2 backend: the maths and the NVIDIA layout."""

import math

import pytest
import torch

from guide_unlearn.adapters.stylegan2 import StyleGAN2Generator
from guide_unlearn.adapters.stylegan2.layers import (SynthesisLayer, bias_act, modulated_conv2d, setup_filter,
                                                     upfirdn2d, upsample2d)
from guide_unlearn.testing import tiny_generator


def test_fused_and_non_fused_modulated_conv_agree():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 8, 8, 8, generator=g)
    w = torch.randn(6, 8, 3, 3, generator=g)
    s = torch.randn(3, 8, generator=g)
    for up in (1, 2):
        a = modulated_conv2d(x, w, s, up=up, resample_filter=setup_filter(), fused=True)
        b = modulated_conv2d(x, w, s, up=up, resample_filter=setup_filter(), fused=False)
        assert a.shape == (3, 6, 8 * up, 8 * up)
        assert torch.allclose(a, b, atol=1e-5)


def test_synthesis_layer_folded_epilogue_equals_demodulate_noise_bias_act():
    # SynthesisLayer folds demodulation, noise, bias and the lrelu gain into 3 passes; it must stay the
    # textbook sequence: modulated conv -> + noise * strength -> bias_act(lrelu, gain sqrt 2, clamp).
    torch.manual_seed(0)
    for up, fused, mode, clamp in [(1, False, "const", None), (2, False, "const", 0.5), (1, True, "const", None),
                                   (2, True, "none", None), (1, False, "none", 0.3)]:
        layer = SynthesisLayer(6, 5, w_dim=4, resolution=8 * up, up=up, conv_clamp=clamp)
        with torch.no_grad():
            layer.noise_strength.fill_(0.7)
            layer.bias.normal_()
        x, w = torch.randn(3, 6, 8, 8), torch.randn(3, 4)
        got = layer(x, w, noise_mode=mode, fused=fused)
        want = modulated_conv2d(x, layer.weight, layer.affine(w), up=up, resample_filter=layer.resample_filter,
                                fused=fused)
        if mode == "const":
            want = want + layer.noise_const * layer.noise_strength
        want = bias_act(want, layer.bias, act="lrelu", clamp=clamp)
        assert torch.allclose(got, want, atol=1e-5), (up, fused, mode, clamp)


def test_demodulation_gives_unit_output_weight_norm():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 5, 3, 3, generator=g)
    s = torch.randn(2, 5, generator=g)
    # A one-hot input at the centre reads out the per-sample effective weight of every output channel.
    x = torch.zeros(2, 5, 7, 7)
    effective = []
    for i in range(5):
        xi = x.clone()
        xi[:, i, 3, 3] = 1
        effective.append(modulated_conv2d(xi, w, s)[:, :, 2:5, 2:5])
    eff = torch.stack(effective, dim=2)  # [N, O, I, 3, 3] (flipped kernel, same norm)
    norms = eff.square().sum(dim=[2, 3, 4])
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)


def test_fir_upsampling_preserves_a_constant_image():
    x = torch.full((1, 2, 6, 6), 0.7)
    y = upsample2d(x, setup_filter())
    assert y.shape == (1, 2, 12, 12)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.full_like(y[..., 2:-2, 2:-2], 0.7), atol=1e-6)


def test_upfirdn_with_delta_filter_is_zero_insertion():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    f = torch.zeros(1, 1)
    f[0, 0] = 1
    y = upfirdn2d(x, f, up=2)
    assert y[0, 0].tolist() == [[0, 0, 1, 0], [0, 0, 0, 0], [2, 0, 3, 0], [0, 0, 0, 0]]


def test_full_size_ffhq_1024_matches_the_published_parameter_count():
    with torch.device("meta"):
        g = StyleGAN2Generator()
    assert sum(p.numel() for p in g.parameters()) == 30_370_060
    assert g.num_ws == 18
    names = dict(g.named_parameters())
    assert tuple(names["synthesis.b64.conv0.affine.weight"].shape) == (512, 512)
    assert tuple(names["synthesis.b1024.torgb.weight"].shape) == (3, 32, 1, 1)
    assert "mapping.w_avg" in g.state_dict() and "synthesis.b8.conv0.noise_const" in g.state_dict()


def test_noise_modes_behave():
    gen = tiny_generator()
    ws = gen.mapping(torch.randn(2, gen.z_dim))
    const1 = gen.synthesis(ws, noise_mode="const").images
    const2 = gen.synthesis(ws, noise_mode="const").images
    assert torch.equal(const1, const2)
    with torch.no_grad():
        for name, p in gen.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    r1 = gen.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(3)).images
    r2 = gen.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(3)).images
    r3 = gen.synthesis(ws, noise_mode="random", generator=torch.Generator().manual_seed(4)).images
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)
    with pytest.raises(ValueError):
        gen.synthesis(ws, noise_mode="loud")


def test_truncation_pulls_codes_to_w_avg():
    gen = tiny_generator()
    z = torch.randn(3, gen.z_dim)
    full = gen.mapping(z)
    half = gen.mapping(z, truncation_psi=0.5, truncation_cutoff=2)
    expected = gen.w_avg + 0.5 * (full[:, :2] - gen.w_avg)
    assert torch.allclose(half[:, :2], expected, atol=1e-6)
    assert torch.equal(half[:, 2:], full[:, 2:])


def test_save_and_load_folder_round_trips(tmp_path):
    gen = tiny_generator()
    gen.save_pretrained(tmp_path / "g")
    again = StyleGAN2Generator.from_pretrained(tmp_path / "g")
    ws = gen.mapping(torch.randn(2, gen.z_dim))
    assert torch.equal(gen.synthesis(ws, noise_mode="const").images, again.synthesis(ws, noise_mode="const").images)
    assert (tmp_path / "g" / "config.json").is_file()
    assert list((tmp_path / "g").glob("*.safetensors"))


def test_channel_rule_and_num_ws_at_256():
    with torch.device("meta"):
        g = StyleGAN2Generator(img_resolution=256, channel_base=16384)
    assert g.num_ws == 14
    assert g.synthesis.b256.conv1.weight.shape[0] == min(16384 // 256, 512)
    synth = sum(p.numel() for n, p in g.named_parameters() if n.startswith("synthesis."))
    assert math.isclose(synth / 1e6, 22.67, abs_tol=0.05)
