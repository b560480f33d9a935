"""Fidelity: small checkpoints in the official StyleGAN2 structures load bit-identically; exports round-trip."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from ckpt_writers import render, tiny_generator, write_nvidia_pickle
from guide_unlearn.adapters.stylegan2 import StyleGAN2Generator
from guide_unlearn.adapters.stylegan2 import convert as sg2
from guide_unlearn.errors import CheckpointError
from guide_unlearn.pipelines.loading import load_generator


def _same_model(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert torch.equal(render(a), render(b))


@pytest.mark.parametrize("fmt,protocol", [("ada", 4), ("sg3", 3)])
def test_nvidia_pickle_loads_bit_identical(tmp_path, fmt, protocol):
    g = tiny_generator(conv_clamp=256.0)
    path = write_nvidia_pickle(tmp_path / "network-snapshot.pkl", g, fmt=fmt, protocol=protocol)
    loaded = load_generator(path)
    assert isinstance(loaded, StyleGAN2Generator)
    assert loaded.config.conv_clamp == 256.0 and loaded.config.channel_base == 256
    _same_model(g, loaded)


def test_guide_last_pkl_with_only_g_ema_loads(tmp_path):
    g = tiny_generator(seed=3)
    loaded = load_generator(write_nvidia_pickle(tmp_path / "last.pkl", g, only_g_ema=True))
    _same_model(g, loaded)


def test_nvidia_pickle_without_init_kwargs_infers_the_config(tmp_path):
    from ckpt_writers import official_names, to_persistent

    g = tiny_generator(seed=4)
    with official_names():
        g_ema = to_persistent(g)  # _init_kwargs = {}
    loaded = load_generator(write_nvidia_pickle(tmp_path / "nokw.pkl", g, g_ema_override=g_ema))
    _same_model(g, loaded)


def test_nvidia_pickle_with_other_architecture_is_refused_clearly(tmp_path):
    from ckpt_writers import nvidia_kwargs, official_names, to_persistent

    g = tiny_generator()
    with official_names():
        kw = nvidia_kwargs(g)
        kw["synthesis_kwargs"]["architecture"] = "resnet"
        g_ema = to_persistent(g, top_extra={"_init_kwargs": kw})
    with pytest.raises(CheckpointError, match="architecture 'resnet'"):
        load_generator(write_nvidia_pickle(tmp_path / "resnet.pkl", g, g_ema_override=g_ema))


def _rosinality_pt(path: Path, g: torch.nn.Module, with_args: bool = False) -> Path:
    g_ema = sg2.to_rosinality_state_dict(g, include_latent_avg=False)
    ckpt = {"g_ema": g_ema, "latent_avg": g.w_avg.detach().clone()}
    if with_args:  # a rosinality training checkpoint: also g, d, optimisers and the argparse options
        ckpt.update(g=g_ema, d={"convs.0.0.weight": torch.randn(4, 3, 1, 1)}, g_optim={"state": {}, "param_groups": []},
                    args=argparse.Namespace(size=16, latent=32, n_mlp=2, channel_multiplier=2, lr=0.002))
    torch.save(ckpt, path)
    return path


def test_rosinality_pt_loads_bit_identical(tmp_path):
    g = tiny_generator(seed=5)
    _same_model(g, load_generator(_rosinality_pt(tmp_path / "550000.pt", g)))


def test_rosinality_training_checkpoint_with_namespace_loads(tmp_path):
    g = tiny_generator(seed=6)
    _same_model(g, load_generator(_rosinality_pt(tmp_path / "train.pt", g, with_args=True)))


def test_rosinality_names_follow_the_spec_map():
    g = tiny_generator()
    ros = sg2.to_rosinality_state_dict(g)
    assert ros["input.input"].shape == (1, 32, 4, 4)
    assert ros["style.1.weight"].shape == (32, 32)  # mapping.fc0
    assert ros["convs.0.conv.weight"].shape == (1, 32, 32, 3, 3)  # b8.conv0, leading 1
    assert ros["convs.3.noise.weight"].shape == (1,)  # b16.conv1.noise_strength
    assert ros["noises.noise_4"].shape == (1, 1, 16, 16)  # b16.conv1.noise_const
    assert ros["to_rgbs.1.bias"].shape == (1, 3, 1, 1)  # b16.torgb.bias
    assert torch.equal(ros["to_rgbs.0.upsample.kernel"], g.state_dict()["synthesis.b8.resample_filter"] * 4)
    assert torch.equal(ros["convs.2.conv.modulation.weight"], g.state_dict()["synthesis.b16.conv0.affine.weight"])


def test_rosinality_state_dict_with_unknown_key_is_refused():
    g = tiny_generator()
    ros = sg2.to_rosinality_state_dict(g, include_latent_avg=False)
    ros["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="extra.weight"):
        sg2.from_rosinality(ros)


@pytest.mark.parametrize("layout", ["nvidia", "rosinality"])
def test_safetensors_export_round_trips(tmp_path, layout):
    g = tiny_generator(seed=7)
    path = sg2.export_safetensors(g, tmp_path / f"erased-{layout}.safetensors", layout=layout)
    _same_model(g, load_generator(path))


def test_nvidia_export_keys_equal_official_g_ema_keys():
    g = tiny_generator()
    sd = sg2.to_nvidia_state_dict(g)
    assert "mapping.w_avg" in sd and "synthesis.b16.conv0.noise_const" in sd
    assert all(v.device.type == "cpu" for v in sd.values())


def test_export_refuses_unmerged_adapters():
    g = tiny_generator()
    g.register_buffer("lora_A_dummy", torch.zeros(1))
    with pytest.raises(CheckpointError, match="merge"):
        sg2.to_nvidia_state_dict(g)


def test_folder_format_round_trips(tmp_path):
    g = tiny_generator(seed=8)
    g.save_pretrained(tmp_path / "model")
    _same_model(g, load_generator(tmp_path / "model"))


def test_state_dict_pt_in_nvidia_names_loads(tmp_path):
    g = tiny_generator(seed=9)
    torch.save(g.state_dict(), tmp_path / "sd.pt")
    _same_model(g, load_generator(tmp_path / "sd.pt"))
