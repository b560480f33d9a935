"""The inverters against the official code: e4e (encoder4editing's pSp inference path) and GOAE (GUIDE's goae
package), each written in its official file layout and loaded with load_inverter."""

from __future__ import annotations

import pytest
import torch

import golden_common as gc
from guide_unlearn import load_generator, load_inverter

pytestmark = pytest.mark.slow  # full-width encoders (e4e: 132 M parameters with its decoder; GOAE: 111 M)


@pytest.fixture(scope="module")
def e4e_file(golden, tmp_path_factory):
    meta, t = golden("e4e")
    stored = {k[len("stored."):]: v for k, v in t.items() if k.startswith("stored.")}
    path = tmp_path_factory.mktemp("e4e") / "e4e_golden.pt"
    gc.write_recipe_state(meta, path, lambda sd: {"state_dict": sd, "opts": meta["opts"],
                                                  "latent_avg": t["latent_avg"]}, stored=stored)
    return path, meta, t


def test_e4e_codes_of_fixed_images_match_the_official_inference(e4e_file):
    path, meta, t = e4e_file
    inverter = load_inverter(path)
    images = gc.seeded([2, 3, 256, 256], meta["images_seed"], "uniform") * 2 - 1
    assert gc.checksum(images) == pytest.approx(meta["images_checksum"], rel=1e-12)
    with torch.no_grad():
        gc.agree("e4e: W+ codes (encoder + latent_avg)", inverter.invert(images), t["codes"])


def test_e4e_decoder_renders_the_official_codes_as_the_official_decoder(e4e_file):
    path, _, t = e4e_file
    generator = load_generator(path)
    with torch.no_grad():
        image = generator.synthesis(t["codes"], noise_mode="const").images
    gc.agree("e4e: decoder image of the codes (stored noise)", image, t["image"])


@pytest.fixture(scope="module")
def goae(golden, tmp_path_factory):
    from guide_unlearn.adapters.goae.convert import timm_to_official
    from guide_unlearn.adapters.goae.encoder import GOAEConfig, GOAEncoder

    meta, t = golden("goae")
    with torch.device("cpu"):
        ours = timm_to_official(dict(GOAEncoder(GOAEConfig()).named_buffers()))
    kept = {}
    for name, expected in meta["kept_checksums"].items():  # the buffers Swin computes: the same in both codes
        kept[name] = ours[name]
        assert gc.checksum(kept[name]) == pytest.approx(expected, rel=1e-6, abs=1e-6), name
    path = gc.write_recipe_state(meta, tmp_path_factory.mktemp("goae") / "encoder_FFHQ.pt", kept=kept)
    images = gc.seeded([2, 3, 256, 256], meta["images_seed"], "uniform") * 2 - 1
    assert gc.checksum(images) == pytest.approx(meta["images_checksum"], rel=1e-12)
    return path, images, meta, t


def test_goae_offsets_of_fixed_images_match_the_official_encoder(goae):
    path, images, _, t = goae
    eg3d = load_generator(gc.DATA / "eg3d.pkl")
    inverter = load_inverter(path, generator=eg3d)
    with torch.no_grad():
        w = inverter.invert(images)
    gc.agree("GOAE: offsets w (eval mode)", w - eg3d.w_avg, t["w"])


def test_goae_official_train_mode_is_another_inversion_and_the_compat_flag_reproduces_it(goae):
    """unlearn.py never calls eval() on GOAE: dropout and stochastic depth stay on. The official train-mode codes
    differ from the eval-mode ones by tens of percent of their scale; GOAEInverter(official_train_mode=True)
    reproduces them draw for draw from the same seed."""
    from guide_unlearn.adapters.goae.inverter import GOAEInverter

    path, images, meta, t = goae
    eg3d = load_generator(gc.DATA / "eg3d.pkl")
    inverter = load_inverter(path, generator=eg3d)
    compat = GOAEInverter(inverter.encoder, eg3d.w_avg.detach(), official_train_mode=True)
    rng = torch.Generator().manual_seed(meta["train_mode_generator_seed"])
    with torch.no_grad():
        w = compat.invert(images, generator=rng) - eg3d.w_avg
    gap = gc.relative_error(t["w_train"], t["w"])
    gc.ACHIEVED.append(("goae", "GOAE: official train-mode codes vs eval-mode codes (the quirk's size)", gap, None))
    assert gap > 0.05
    gc.agree("GOAE: official train-mode codes, official_train_mode=True from the same seed", w, t["w_train"])
