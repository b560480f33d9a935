"""Full-size architectures on the meta device: names and shapes equal the official ones; totals match the architecture arithmetic in docs/eg3d.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from guide_unlearn.adapters.stylegan2 import convert as sg2
from guide_unlearn.adapters.stylegan2.networks import MappingNetwork, SynthesisNetwork
from guide_unlearn.errors import BackendUnavailableError, CheckpointError
from guide_unlearn.pipelines.registry import REGISTRY, build_architecture

DATA = Path(__file__).parent / "data"


def _expected(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def _shapes(named) -> dict:
    return {k: list(v.shape) for k, v in named}


def test_stylegan2_ffhq_1024_names_and_shapes_equal_nvidia_g_ema():
    g = build_architecture("stylegan2-ffhq")
    exp = _expected("stylegan2_ffhq_1024.json")
    assert _shapes(g.named_parameters()) == exp["params"]
    assert _shapes(g.named_buffers()) == exp["buffers"]


def test_stylegan2_ffhq_1024_counts_30_370_060_params():
    g = build_architecture("stylegan2-ffhq")
    assert next(g.parameters()).device.type == "meta"
    assert sum(p.numel() for p in g.parameters()) == 30_370_060


def test_stylegan2_ffhq_256_names_shapes_and_count():
    g = build_architecture("stylegan2-ffhq-256")
    exp = _expected("stylegan2_ffhq_256.json")
    assert _shapes(g.named_parameters()) == exp["params"]
    synthesis = sum(p.numel() for n, p in g.named_parameters() if n.startswith("synthesis."))
    assert round(synthesis / 1e6, 2) == 22.67
    assert round(sum(p.numel() for p in g.parameters()) / 1e6, 1) == 24.8


def test_eg3d_512_backbone_names_shapes_and_counts():
    with torch.device("meta"):
        backbone = torch.nn.Module()
        backbone.synthesis = SynthesisNetwork(w_dim=512, img_resolution=256, img_channels=96, channel_base=32768,
                                              channel_max=512)
        backbone.mapping = MappingNetwork(z_dim=512, c_dim=25, w_dim=512, num_ws=14, num_layers=2)
    root = torch.nn.Module()
    root.backbone = backbone
    exp = _expected("eg3d_ffhq_backbone.json")
    assert _shapes(root.named_parameters()) == exp["params"]
    assert _shapes(root.named_buffers()) == exp["buffers"]
    syn = sum(p.numel() for n, p in root.named_parameters() if ".synthesis." in n)
    mapping = sum(p.numel() for n, p in root.named_parameters() if ".mapping." in n)
    assert round(syn / 1e6, 2) == 28.21 and round(mapping / 1e6, 2) == 0.80


def test_rosinality_export_of_full_size_generator_has_official_names_and_shapes():
    g = build_architecture("stylegan2-ffhq")
    ros = sg2.to_rosinality_state_dict(g, include_latent_avg=False)
    assert {k: list(v.shape) for k, v in ros.items()} == _expected("rosinality_ffhq_1024.json")["state_dict"]


def test_rosinality_config_of_full_size_names_is_ffhq_config_f():
    shapes = _expected("rosinality_ffhq_1024.json")["state_dict"]
    fake = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    cfg = sg2.config_from_rosinality(fake)
    assert cfg["img_resolution"] == 1024 and cfg["channel_base"] == 32768 and cfg["mapping_layers"] == 8


def test_every_registry_entry_has_a_file_name_and_no_unpublished_digest():
    for entry in REGISTRY.values():
        if entry.bundled or entry.format in ("projector", "tiny"):  # in the package / no weights at all
            assert entry.format in ("folder", "projector", "tiny")
            continue
        assert entry.filename and entry.format in ("nvidia-pkl", "rosinality-pt", "e4e-pt", "goae-pt")
        assert entry.sha256 is None  # no published digests exist for these files


@pytest.mark.parametrize("name", ["eg3d-ffhq", "goae-ffhq"])
def test_eg3d_and_goae_architectures_build_or_say_backend_missing(name):
    try:
        model = build_architecture(name)
    except BackendUnavailableError as exc:
        assert name.split("-")[0] in str(exc).lower()
        return
    assert isinstance(model, torch.nn.Module)
    assert next(model.parameters()).device.type == "meta"


def test_unknown_architecture_name_lists_known_names():
    with pytest.raises(CheckpointError, match="stylegan2-ffhq"):
        build_architecture("stylegan4-ffhq")
