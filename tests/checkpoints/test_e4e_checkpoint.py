"""e4e: an official-structure ``e4e_ffhq_encode.pt`` gives both the inverter and the decoder, bit-identically."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from ckpt_writers import render, tiny_generator
from guide_unlearn.adapters.e4e import E4EConfig, E4EInverter
from guide_unlearn.adapters.stylegan2.convert import to_rosinality_state_dict
from guide_unlearn.errors import CheckpointError
from guide_unlearn.pipelines.loading import load_generator, load_inverter
from guide_unlearn.protocols import Inverter

DATA = Path(__file__).parent / "data"
TINY = E4EConfig(num_ws=6, w_dim=32, input_size=32, stage_channels=(8, 12, 16, 32), stage_units=(1, 1, 2, 1),
                 se_reduction=4)


def _tiny_e4e(seed: int = 0, config: E4EConfig = TINY) -> E4EInverter:
    torch.manual_seed(seed)
    inv = E4EInverter(config)
    with torch.no_grad():
        for name, b in inv.named_buffers():
            if "running_var" in name:
                b.uniform_(0.5, 1.5)
            elif "running_mean" in name:
                b.normal_(0, 0.1)
        inv.latent_avg.copy_(torch.randn(1, config.w_dim).expand(config.num_ws, -1))
    return inv.eval()


def _write_e4e(path: Path, inv: E4EInverter, gen: torch.nn.Module, opts_as_namespace: bool = False) -> Path:
    sd = {f"encoder.{k}": v for k, v in inv.encoder.state_dict().items()}
    dec = to_rosinality_state_dict(gen, include_latent_avg=False)
    sd.update({f"decoder.{k}": v for k, v in dec.items()})
    opts = {"encoder_type": "Encoder4Editing", "dataset_type": "ffhq_encode", "start_from_latent_avg": True,
            "stylegan_size": 16, "lpips_lambda": 0.8, "checkpoint_path": None}
    torch.save({"state_dict": sd, "opts": argparse.Namespace(**opts) if opts_as_namespace else opts,
                "latent_avg": inv.latent_avg.clone()}, path)
    return path


@pytest.fixture(scope="module")
def e4e_file(tmp_path_factory):
    inv, gen = _tiny_e4e(), tiny_generator(seed=21)
    gen.w_avg.copy_(inv.latent_avg[0])  # e4e's latent_avg is its decoder's mean latent, repeated
    path = _write_e4e(tmp_path_factory.mktemp("e4e") / "e4e_ffhq_encode.pt", inv, gen)
    return path, inv, gen


def test_e4e_inverter_loads_bit_identical(e4e_file):
    path, inv, _ = e4e_file
    loaded = load_inverter(path)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(loaded.invert(images), inv.invert(images))


def test_e4e_inverter_implements_the_protocol(e4e_file):
    loaded = load_inverter(e4e_file[0])
    assert isinstance(loaded, Inverter) and loaded.input_alignment == "ffhq"
    assert loaded.invert(torch.zeros(1, 3, 64, 64)).shape == (1, 6, 32)  # resized to the encoder's 32²


def test_e4e_decoder_becomes_our_generator(e4e_file):
    path, inv, gen = e4e_file
    loaded = load_generator(path)
    assert torch.equal(render(loaded), render(gen))
    assert torch.equal(loaded.w_avg, inv.latent_avg[0])


def test_e4e_opts_as_namespace_also_load(tmp_path):
    inv, gen = _tiny_e4e(seed=2), tiny_generator(seed=22)
    path = _write_e4e(tmp_path / "e4e.pt", inv, gen, opts_as_namespace=True)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(load_inverter(path).invert(images), inv.invert(images))


def test_encoder_uses_all_three_pyramid_levels():
    cfg = E4EConfig(num_ws=9, w_dim=32, input_size=32, stage_channels=(8, 12, 16, 32), stage_units=(1, 1, 2, 1),
                    se_reduction=4)
    inv = _tiny_e4e(seed=3, config=cfg)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    base = inv.invert(x)
    with torch.no_grad():
        inv.encoder.latlayer2.bias.add_(1.0)  # only heads >= middle_ind (7) read p1
    moved = (inv.invert(x) - base).abs().amax(dim=2)[0]
    assert torch.all(moved[:7] == 0) and torch.all(moved[7:] > 0)


def test_wrong_encoder_keys_are_a_checkpoint_error(tmp_path):
    inv, gen = _tiny_e4e(), tiny_generator()
    path = _write_e4e(tmp_path / "e4e.pt", inv, gen)
    ckpt = torch.load(path, weights_only=False)  # our own test file
    del ckpt["state_dict"]["encoder.latlayer1.bias"]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="latlayer1.bias"):
        load_inverter(path)


def test_full_size_e4e_encoder_names_and_shapes_match_official():
    expected = json.loads((DATA / "e4e_ffhq_encoder.json").read_text())
    with torch.device("meta"):
        enc = E4EInverter().encoder
    assert {k: list(v.shape) for k, v in enc.named_parameters()} == expected["params"]
    assert {k: list(v.shape) for k, v in enc.named_buffers()} == expected["buffers"]


def test_full_size_e4e_encoder_counts_267m_params():
    from guide_unlearn.pipelines.registry import build_architecture

    inv = build_architecture("e4e-ffhq")
    body = sum(p.numel() for n, p in inv.encoder.named_parameters() if n.startswith(("input_layer", "body")))
    heads = sum(p.numel() for n, p in inv.encoder.named_parameters() if n.startswith("styles"))
    assert round(body / 1e6, 1) == 31.0 and round(heads / 1e6) == 236
    assert round(sum(p.numel() for p in inv.parameters()) / 1e6) == 267
