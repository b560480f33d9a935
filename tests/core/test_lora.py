"""Weight-space LoRA on modulated convs through peft."""

import pytest
import torch

from guide_unlearn import lora as L
from guide_unlearn.testing import tiny_generator


def _gen_with_adapter(rank=4, name="a", targets=None, std=0.05, seed=0):
    gen = tiny_generator()
    cfg = L.make_lora_config(rank, float(rank), targets or gen.lora_target_modules(), gen.lora_layer_types())
    L.add_adapter(gen, name, cfg)
    g = torch.Generator().manual_seed(seed)
    return gen, g, std


def _randomise(gen, name, g, std):
    with torch.no_grad():
        for _, layer in L.lora_layers(gen):
            if name in layer.lora_B:
                layer.lora_B[name].weight.copy_(torch.randn(layer.lora_B[name].weight.shape, generator=g) * std)


def _render(gen, ws):
    return gen.synthesis(ws, noise_mode="const").images


def test_lora_is_an_exact_no_op_at_init():
    gen = tiny_generator()
    ws = gen.mapping(torch.randn(3, gen.z_dim))
    before = _render(gen, ws)
    L.add_adapter(gen, "a", L.make_lora_config(4, 4.0, gen.lora_target_modules(), gen.lora_layer_types()))
    assert torch.equal(_render(gen, ws), before)


def test_delta_is_added_before_modulation():
    gen, g, std = _gen_with_adapter()
    _randomise(gen, "a", g, std)
    _, layer = next(L.lora_layers(gen))
    base = layer.get_base_layer()
    x = torch.randn(2, base.in_channels, 4, 4)
    w = torch.randn(2, gen.w_dim)
    via_lora = layer(x, w, noise_mode="none")
    manual = base(x, w, noise_mode="none", weight_delta=layer.get_delta_weight("a"))
    # the LoRA path convolves with the factors (same function, other rounding order): float32 rounding apart
    assert torch.allclose(via_lora, manual, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(via_lora, base(x, w, noise_mode="none"))


@pytest.mark.parametrize("thin_convs", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_factored_lora_gives_the_dense_delta_gradients(up, thin_convs, monkeypatch):
    # The erase loop convolves with the LoRA factors instead of the dense delta where that is cheaper (a cost
    # rule per layer shape): same loss, same gradients, whichever form the rule picks.
    from guide_unlearn.adapters.stylegan2 import layers as SL

    monkeypatch.setattr(SL, "_prefer_factored", lambda *a: thin_convs)
    gen, g, std = _gen_with_adapter()
    _randomise(gen, "a", g, std)
    _, layer = next((n, m) for n, m in L.lora_layers(gen) if m.get_base_layer().up == up)
    base = layer.get_base_layer()
    a, b = layer.lora_A["a"].weight, layer.lora_B["a"].weight
    a.requires_grad_(True)
    b.requires_grad_(True)
    x = torch.randn(3, base.in_channels, 4, 4, generator=g)
    w = torch.randn(3, gen.w_dim, generator=g)
    target = torch.randn(3, base.out_channels, 4 * up, 4 * up, generator=g)
    grads = []
    for factored in (True, False):
        kwargs = {} if factored else {"weight_delta": layer.get_delta_weight("a")}
        out = layer(x, w, noise_mode="none") if factored else base(x, w, noise_mode="none", **kwargs)
        loss = (out - target).square().mean()
        ga, gb = torch.autograd.grad(loss, [a, b])
        grads.append((loss.detach(), ga, gb))
    (l1, a1, b1), (l2, a2, b2) = grads
    assert torch.allclose(l1, l2, rtol=1e-5)
    assert torch.allclose(a1, a2, rtol=1e-4, atol=1e-7) and torch.allclose(b1, b2, rtol=1e-4, atol=1e-7)
    assert a1.abs().max() > 0 and b1.abs().max() > 0


def test_stacked_adapters_are_one_factored_delta():
    gen, g, std = _gen_with_adapter()
    L.add_adapter(gen, "b", L.make_lora_config(2, 2.0, gen.lora_target_modules(), gen.lora_layer_types()))
    _randomise(gen, "a", g, std)
    _randomise(gen, "b", g, std)
    _, layer = next(L.lora_layers(gen))
    low = layer.active_low_rank_delta()
    assert low.factors()[0].shape[0] == 4 + 2
    assert torch.allclose(low.dense(), layer.active_delta(), atol=1e-7)


def test_merged_and_unmerged_outputs_agree():
    gen, g, std = _gen_with_adapter()
    _randomise(gen, "a", g, std)
    ws = gen.mapping(torch.randn(3, gen.z_dim))
    unmerged = _render(gen, ws)
    for _, layer in L.lora_layers(gen):
        layer.merge()
    merged = _render(gen, ws)
    assert (merged - unmerged).abs().max() < 1e-5
    for _, layer in L.lora_layers(gen):
        layer.unmerge()
    assert (_render(gen, ws) - unmerged).abs().max() < 1e-5


def test_only_lora_parameters_receive_gradients():
    gen, g, std = _gen_with_adapter()
    L.set_active_adapters(gen, ["a"], trainable=["a"])
    ws = gen.mapping(torch.randn(2, gen.z_dim)).detach()
    _render(gen, ws).square().mean().backward()
    with_grad = {n for n, p in gen.named_parameters() if p.grad is not None}
    assert with_grad and all(".lora_" in n for n in with_grad)
    assert any("lora_B" in n for n in with_grad)


def test_two_adapters_stack_additively_and_suppression_removes_one():
    gen, g, std = _gen_with_adapter(name="a")
    _randomise(gen, "a", g, std)
    L.add_adapter(gen, "b", L.make_lora_config(2, 2.0, gen.lora_target_modules()[:3], gen.lora_layer_types()))
    _randomise(gen, "b", g, std)
    ws = gen.mapping(torch.randn(2, gen.z_dim))
    both = _render(gen, ws)
    with L.suppressed(gen, ["b"]):
        only_a = _render(gen, ws)
    L.set_active_adapters(gen, ["a"])
    assert torch.allclose(_render(gen, ws), only_a)
    L.set_active_adapters(gen, ["a", "b"])
    assert torch.allclose(_render(gen, ws), both)
    assert not torch.allclose(both, only_a)


def test_delete_adapter_restores_the_base_output():
    gen = tiny_generator()
    ws = gen.mapping(torch.randn(2, gen.z_dim))
    base = _render(gen, ws)
    L.add_adapter(gen, "a", L.make_lora_config(4, 4.0, gen.lora_target_modules(), gen.lora_layer_types()))
    _randomise(gen, "a", torch.Generator().manual_seed(1), 0.1)
    L.delete_adapter(gen, "a")
    assert torch.equal(_render(gen, ws), base)
    assert L.adapter_names(gen) == []


def test_rank_zero_is_refused():
    from guide_unlearn.errors import ConfigError

    gen = tiny_generator()
    with pytest.raises(ConfigError):
        L.make_lora_config(0, 1.0, gen.lora_target_modules(), gen.lora_layer_types())


def test_rank4_over_eg3d_sized_convs_is_229k_parameters():
    # rank 4 over EG3D's 13 backbone convs = 228,864 parameters.
    from guide_unlearn.adapters.stylegan2.networks import SynthesisNetwork

    with torch.device("meta"):
        net = SynthesisNetwork(512, 256, img_channels=96, channel_base=32768, channel_max=512)
    convs = [m for n, m in net.named_modules() if n.endswith(("conv0", "conv1"))]
    assert len(convs) == 13
    assert sum(4 * (m.weight[0].numel() + m.weight.shape[0]) for m in convs) == 228_864
