"""UFO targets and LTU loss terms on known inputs."""

import torch

from guide_unlearn.config import EraseConfig
from guide_unlearn.losses import feature_mse, identity_distance, ltu_loss, unlearning_terms
from guide_unlearn.protocols import SynthesisOutput
from guide_unlearn.targets import ufo_target


def test_extrapolated_target_follows_the_ufo_formula():
    w_avg = torch.zeros(4)
    w_u = torch.tensor([[[3.0, 0, 0, 0], [0, 4.0, 0, 0]]])  # ||w_u - w_avg||_F = 5
    w_t = ufo_target(w_u, w_avg, "extrapolate", distance=30.0)
    assert torch.allclose(w_t, -30.0 * w_u / 5.0)
    assert torch.isclose(w_t.flatten().norm(), torch.tensor(30.0))


def test_extrapolation_uses_each_codes_own_norm_and_a_per_ws_average():
    w_avg = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    w_u = torch.stack([w_avg + 1.0, w_avg + torch.tensor([[0.0, 2.0], [0.0, 0.0]])])
    w_t = ufo_target(w_u, w_avg, "extrapolate", distance=2.0)
    assert torch.allclose(w_t[0], w_avg - 2.0 * torch.ones(2, 2) / 2.0)
    assert torch.allclose(w_t[1], w_avg - torch.tensor([[0.0, 2.0], [0.0, 0.0]]))


def test_average_target_is_w_avg_for_every_code():
    w_avg = torch.arange(3.0)
    w_t = ufo_target(torch.randn(2, 5, 3), w_avg, "average")
    assert torch.equal(w_t, w_avg.expand(2, 5, 3))


def test_feature_mse_is_per_sample():
    a = torch.zeros(2, 3, 2, 2)
    b = torch.stack([torch.zeros(3, 2, 2), torch.full((3, 2, 2), 2.0)])
    assert feature_mse(a, b).tolist() == [0.0, 4.0]


class _FixedEmbed:
    name = "fixed"

    def embed(self, x):
        return torch.nn.functional.normalize(x.flatten(1)[:, :2], dim=1)


def test_identity_distance_is_one_minus_cosine():
    a = torch.zeros(1, 3, 2, 2)
    b = torch.zeros(1, 3, 2, 2)
    a.view(-1)[0] = 1.0  # embedding (1, 0)
    b.view(-1)[1] = 1.0  # embedding (0, 1)
    assert torch.allclose(identity_distance(_FixedEmbed(), a, b), torch.tensor([1.0]))
    assert torch.allclose(identity_distance(_FixedEmbed(), a, a), torch.tensor([0.0]))


def _l1(a, b):
    return (a - b).abs().flatten(1).mean(1)


def test_three_term_loss_weights_the_terms_like_guide():
    cfg = EraseConfig()
    u = SynthesisOutput(torch.ones(1, 3, 2, 2), torch.full((1, 4), 2.0))
    s = SynthesisOutput(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4))
    u.images.view(-1)[0] = 2.0
    terms = unlearning_terms(u, s, cfg, _l1, _FixedEmbed())
    assert torch.allclose(terms["mse"], torch.tensor([4.0]))
    expected = 1e-2 * 4.0 + 1.0 * terms["lpips"] + 0.1 * terms["id"]
    assert torch.allclose(terms["total"], expected)


def test_ltu_sums_adjacency_and_global_samples_and_averages_local_codes():
    cfg = EraseConfig(feature_mse_weight=0.0, id_weight=0.0)
    # rows: 2 local codes, 2 adjacency, 3 global; per-row L1 distance = row index
    img_u = torch.stack([torch.full((3, 2, 2), float(i)) for i in range(7)])
    out_u = SynthesisOutput(img_u)
    out_s = SynthesisOutput(torch.zeros_like(img_u))
    loss = ltu_loss(out_u, out_s, k=2, n_adj=2, n_glob=3, cfg=cfg, perceptual=_l1, identity=None)
    assert loss.parts["local"] == 0.5  # mean of 0, 1
    assert loss.parts["adjacency"] == 5.0  # 2 + 3
    assert loss.parts["global"] == 15.0  # 4 + 5 + 6
    assert float(loss.total) == 0.5 + 5.0 + 15.0
