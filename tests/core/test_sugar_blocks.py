"""The building blocks of the ``sugar`` method: the diagonal Fisher and its EWC penalty (guide_unlearn.fisher), the
learned surrogate targets (guide_unlearn.surrogates), on tiny models."""

import pytest
import torch
import torch.nn.functional as F

from guide_unlearn import lora as L
from guide_unlearn.errors import ConfigError
from guide_unlearn.fisher import diagonal_fisher, ewc_penalty, layer_weights, lora_deltas
from guide_unlearn.surrogates import (DeviationEmbedding, SurrogateNetwork, pair_cosines, train_surrogates)
from guide_unlearn.targets import ufo_target
from guide_unlearn.testing import tiny_generator


def _retain_codes(g, n=6, seed=3):
    z = torch.randn(n, g.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return g.mapping(z, None)


def _images(g):
    return lambda w: g.synthesis(w, None, noise_mode="const").images.flatten(1)


def _fisher(g, n=6, seed=0):
    names = g.lora_target_modules()
    return diagonal_fisher(_images(g), _retain_codes(g, n), layer_weights(g, names),
                           torch.Generator().manual_seed(seed))


# -- the diagonal Fisher ---------------------------------------------------------------------------------------

def test_fisher_of_a_linear_map_converges_to_the_gauss_newton_diagonal():
    layer = torch.nn.Linear(3, 4, bias=False)
    x = torch.tensor([[[1.0, -2.0, 0.5]], [[0.0, 1.0, 3.0]]])  # two samples [N=2, 1, 3]
    f = diagonal_fisher(lambda w: layer(w[:, 0]), x, {"w": layer.weight}, torch.Generator().manual_seed(0),
                        projections=4000)["w"]
    exact = (x[:, 0] ** 2).mean(0).expand(4, 3) / 4  # d f_o / d W_oi = x_i: diag(J^T J) / D, mean over samples
    assert torch.allclose(f, exact, rtol=0.1, atol=1e-3)


def test_fisher_is_a_seeded_function_of_its_inputs():
    g = tiny_generator("stylegan2")
    a, b = _fisher(g, seed=1), _fisher(g, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = _fisher(g, seed=2)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_fisher_leaves_the_weights_frozen_and_unchanged():
    g = tiny_generator("stylegan2")
    g.requires_grad_(False)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    fisher = _fisher(g)
    assert not any(p.requires_grad for p in g.parameters())
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())
    assert all(f.shape == w.shape for f, w in zip(fisher.values(), layer_weights(g, list(fisher)).values()))
    assert all(bool((f >= 0).all()) and float(f.sum()) > 0 for f in fisher.values())


def test_layer_weights_finds_the_base_weight_under_a_lora_wrapper():
    g = tiny_generator("stylegan2")
    names = g.lora_target_modules()
    plain = layer_weights(g, names)
    L.add_adapter(g, "a", L.make_lora_config(2, 2.0, names, g.lora_layer_types()))
    wrapped = layer_weights(g, names)
    assert all(plain[n] is wrapped[n] for n in names)
    with pytest.raises(ConfigError, match="not a module"):
        layer_weights(g, ["synthesis.nowhere"])


# -- the EWC penalty -------------------------------------------------------------------------------------------

def test_ewc_penalty_is_zero_at_the_start_of_a_lora_erase():
    g = tiny_generator("stylegan2")
    names = g.lora_target_modules()
    fisher = _fisher(g)
    L.add_adapter(g, "erasing", L.make_lora_config(4, 4.0, names, g.lora_layer_types()))  # B = 0
    assert float(ewc_penalty(fisher, lora_deltas(g, "erasing", names))) == 0.0


def test_ewc_penalty_grows_when_the_weights_that_matter_move():
    g = tiny_generator("stylegan2")
    fisher = _fisher(g)
    flat = torch.cat([f.flatten() for f in fisher.values()])
    order = flat.argsort()
    weights = layer_weights(g, list(fisher))
    sizes = [f.numel() for f in fisher.values()]

    def move(positions, scale):
        delta = torch.zeros_like(flat)
        delta[positions] = scale
        return dict(zip(fisher, [d.view_as(w) for d, w in zip(delta.split(sizes), weights.values())]))

    k = 50
    matter, idle = order[-k:], order[:k]  # the weights the retain renders depend on most / least
    small, large = ewc_penalty(fisher, move(matter, 0.01)), ewc_penalty(fisher, move(matter, 0.03))
    assert float(large) == pytest.approx(9 * float(small), rel=1e-4)  # quadratic in the move
    assert float(ewc_penalty(fisher, move(idle, 0.03))) < 0.01 * float(large)


def test_ewc_penalty_predicts_how_much_the_retain_renders_change():
    g = tiny_generator("stylegan2")
    names = g.lora_target_modules()
    fisher = _fisher(g, n=16)
    weights = layer_weights(g, names)
    ws = _retain_codes(g, 16)  # the same retain codes as the estimate
    render = _images(g)
    with torch.no_grad():
        before = render(ws)
        gen = torch.Generator().manual_seed(5)
        deltas = {n: 1e-3 * torch.randn(w.shape, generator=gen) for n, w in weights.items()}
        for n, w in weights.items():
            w.add_(deltas[n])
        change = (render(ws) - before).square().mean()
    predicted = ewc_penalty(fisher, deltas)
    assert 0.3 < float(predicted) / float(change) < 3  # the diagonal second-order estimate: right order of magnitude


def test_ewc_penalty_on_the_effective_delta_ignores_how_the_lora_factors_share_it():
    g = tiny_generator("stylegan2")
    names = g.lora_target_modules()
    fisher = _fisher(g)
    L.add_adapter(g, "erasing", L.make_lora_config(2, 2.0, names, g.lora_layer_types()))
    gen = torch.Generator().manual_seed(0)
    modules = dict(g.named_modules())
    with torch.no_grad():
        for n in names:
            modules[n].lora_B["erasing"].weight.copy_(torch.randn(modules[n].lora_B["erasing"].weight.shape,
                                                                   generator=gen))
    first = ewc_penalty(fisher, lora_deltas(g, "erasing", names))
    with torch.no_grad():  # the same delta, written with A x 4 and B / 4
        for n in names:
            modules[n].lora_A["erasing"].weight.mul_(4.0)
            modules[n].lora_B["erasing"].weight.div_(4.0)
    assert float(first) > 0
    assert float(ewc_penalty(fisher, lora_deltas(g, "erasing", names))) == pytest.approx(float(first), rel=1e-5)


def test_ewc_penalty_refuses_a_delta_of_another_shape():
    with pytest.raises(ConfigError, match="Fisher"):
        ewc_penalty({"a": torch.ones(2, 3)}, {"a": torch.ones(3, 2)})


# -- the surrogate network -------------------------------------------------------------------------------------

def _codes(g, n, seed):
    return _retain_codes(g, n, seed) * 1.5  # real people lie farther from w_avg than mapped samples


def test_untrained_surrogate_network_gives_the_ufo_target():
    g = tiny_generator("stylegan2")
    w_u = _codes(g, 3, 1)
    net = SurrogateNetwork(g.num_ws, g.w_dim, 16, torch.Generator().manual_seed(0))
    assert torch.allclose(net(w_u, g.w_avg, 2.0), ufo_target(w_u, g.w_avg, "extrapolate", 2.0), atol=1e-5)


def test_surrogate_targets_stay_on_the_sphere_of_the_given_distance():
    g = tiny_generator("stylegan2")
    net = SurrogateNetwork(g.num_ws, g.w_dim, 16, torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.out.weight.normal_(generator=torch.Generator().manual_seed(1))
    w_t = net(_codes(g, 4, 2), g.w_avg, 3.0)
    assert torch.allclose((w_t - g.w_avg).flatten(1).norm(dim=1), torch.full((4,), 3.0), atol=1e-4)


def test_pair_cosines_compare_the_mean_embedding_of_each_person():
    e = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]]), dim=1)
    cos = pair_cosines(e, torch.tensor([0, 0, 1]))
    mean0 = F.normalize(e[0] + e[1], dim=0)
    assert cos.shape == (1,) and float(cos[0]) == pytest.approx(float(mean0[1]), abs=1e-6)
    assert pair_cosines(e, torch.zeros(3, dtype=torch.long)).numel() == 0


def _train(g, w_u, person_of, steps, seed=0):
    with torch.no_grad():
        identity = DeviationEmbedding(g.synthesis(g.w_avg.expand(1, g.num_ws, -1), None, noise_mode="const").images)
    net = SurrogateNetwork(g.num_ws, g.w_dim, 32, torch.Generator().manual_seed(seed))
    render = lambda w, view: g.synthesis(w, None, noise_mode="const").images
    return train_surrogates(net, w_u, person_of, g.w_avg, 2.0, render, identity.embed,
                            torch.Generator().manual_seed(seed), steps=steps, lr=1e-2, self_margin=0.0,
                            pair_margin=0.0), identity


def test_surrogate_network_maps_two_people_further_apart_than_ufo():
    g = tiny_generator("stylegan2")
    one = _codes(g, 1, 4)
    two = one + 0.05 * _codes(g, 1, 5)  # another person whose identity direction is almost the same
    w_u, person_of = torch.cat([one, two]), torch.tensor([0, 1])
    ufo = ufo_target(w_u, g.w_avg, "extrapolate", 2.0)
    trained, identity = _train(g, w_u, person_of, steps=40)
    render = lambda w: identity.embed(g.synthesis(w, None, noise_mode="const").images)
    with torch.no_grad():
        cos_ufo = float(pair_cosines(render(ufo), person_of)[0])
        cos_learned = float(pair_cosines(render(trained.targets), person_of)[0])
    gap = lambda t: float((t[0] - t[1]).norm())
    assert gap(trained.targets) > 2 * gap(ufo)
    assert cos_learned < cos_ufo - 0.05
    assert trained.history[-1]["pair_cos_max"] < trained.history[0]["pair_cos_max"]


def test_surrogate_training_is_seeded():
    g = tiny_generator("stylegan2")
    w_u, person_of = _codes(g, 2, 6), torch.tensor([0, 1])
    a, _ = _train(g, w_u, person_of, steps=5, seed=3)
    b, _ = _train(g, w_u, person_of, steps=5, seed=3)
    assert torch.equal(a.targets, b.targets)


def test_deviation_embedding_ignores_the_average_face():
    ref = torch.rand(1, 3, 8, 8) * 2 - 1
    emb = DeviationEmbedding(ref, size=4)
    a = ref + 0.1 * torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = emb.embed(torch.cat([a, ref]))
    assert out.shape == (2, 48)
    assert float(out[0].norm()) == pytest.approx(1.0, abs=1e-5) and float(out[1].norm()) == 0.0


def test_surrogate_training_visits_a_bounded_number_of_people_per_step():
    g = tiny_generator("stylegan2")
    w_u, person_of = _codes(g, 4, 7), torch.tensor([0, 1, 2, 3])
    seen = []

    def render(w, view):
        seen.append(w.shape[0])
        return g.synthesis(w, None, noise_mode="const").images

    with torch.no_grad():
        embed = DeviationEmbedding(g.synthesis(g.w_avg.expand(1, g.num_ws, -1), None, noise_mode="const").images).embed
    net = SurrogateNetwork(g.num_ws, g.w_dim, 8, torch.Generator().manual_seed(0))
    out = train_surrogates(net, w_u, person_of, g.w_avg, 2.0, render, embed, torch.Generator().manual_seed(0),
                           steps=4, lr=1e-2, people_per_step=2)
    assert seen == [2, 2] * 4 + [4, 4]  # person and target renders per step, then one pass over everyone
    assert out.targets.shape == w_u.shape and set(out.final) == {"self_cos_max", "pair_cos_max"}
