"""StyleGAN2 against the official code: NVIDIA's persistence pickle (stylegan2-ada-pytorch) and rosinality's .pt,
each loaded with load_generator, compared with what the official networks computed from the same file."""

from __future__ import annotations

import pytest
import torch

import golden_common as gc
from guide_unlearn import load_generator


@pytest.fixture(scope="module")
def nvidia(golden):
    meta, t = golden("sg2_nvidia")
    return load_generator(gc.DATA / meta["file"]), meta, t


@pytest.fixture(scope="module")
def rosinality(golden, tmp_path_factory):
    meta, t = golden("sg2_rosinality")
    stored = {k[len("stored."):]: v for k, v in t.items() if k.startswith("stored.")}
    path = tmp_path_factory.mktemp("ros") / "stylegan2-golden.pt"
    gc.write_recipe_state(meta, path, lambda sd: {"g_ema": sd, "latent_avg": t["latent_avg"]}, stored=stored)
    return load_generator(path), meta, t


def test_nvidia_pickle_loads_with_the_official_init_kwargs(nvidia):
    g, meta, _ = nvidia
    assert (g.img_resolution, g.z_dim, g.w_dim, g.num_ws) == (32, 32, 32, 8)
    assert g.config.conv_clamp == meta["synthesis_kwargs"]["conv_clamp"]


def test_nvidia_mapping_matches_the_official_with_and_without_truncation(nvidia):
    g, meta, t = nvidia
    with torch.no_grad():
        gc.agree("sg2 nvidia: mapping", g.mapping(t["z"], None), t["ws"])
        gc.agree("sg2 nvidia: mapping, psi 0.6 cutoff 5",
                 g.mapping(t["z"], None, meta["truncation_psi"], meta["truncation_cutoff"]), t["ws_trunc"])


@pytest.mark.parametrize("mode, codes", [("const", "ws"), ("none", "ws_trunc")])
def test_nvidia_synthesis_matches_the_official_image(nvidia, mode, codes):
    g, _, t = nvidia
    with torch.no_grad():
        image = g.synthesis(t[codes], noise_mode=mode).images
    gc.agree(f"sg2 nvidia: image, noise {mode} (conv_clamp active)", image, t[f"img_{mode}"])


def test_nvidia_random_noise_from_the_same_seed_gives_the_official_image(nvidia):
    g, meta, t = nvidia
    rng = torch.Generator().manual_seed(meta["random_noise_seed"])  # the official run seeded torch's global one
    with torch.no_grad():
        image = g.synthesis(t["ws"], noise_mode="random", generator=rng).images
    gc.agree("sg2 nvidia: image, seeded random noise", image, t["img_random"])


def test_rosinality_mapping_and_image_match_the_official(rosinality):
    g, _, t = rosinality
    with torch.no_grad():
        ws = g.mapping(t["z"])
        gc.agree("sg2 rosinality: mapping (style)", ws[:, 0], t["ws"])
        gc.agree("sg2 rosinality: image, stored noise", g.synthesis(ws, noise_mode="const").images, t["img_const"])


def test_rosinality_truncation_toward_latent_avg_matches_the_official(rosinality):
    g, meta, t = rosinality
    with torch.no_grad():
        ws = g.mapping(t["z"], truncation_psi=meta["truncation_psi"])
        gc.agree("sg2 rosinality: image, truncation 0.6 to latent_avg", g.synthesis(ws, noise_mode="const").images,
                 t["img_trunc"])


def test_rosinality_random_noise_from_the_same_seed_gives_the_official_image(rosinality):
    g, meta, t = rosinality
    rng = torch.Generator().manual_seed(meta["random_noise_seed"])
    with torch.no_grad():
        gc.agree("sg2 rosinality: image, seeded random noise",
                 g.synthesis(g.mapping(t["z"]), noise_mode="random", generator=rng).images, t["img_random"])
