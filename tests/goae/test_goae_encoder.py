"""GOAE: official key layout and size on the meta device, the key converter, the inverter's behaviour."""

import math
from pathlib import Path

import pytest
import torch

from guide_unlearn.adapters.eg3d.testing import tiny_generator, tiny_inverter
from guide_unlearn.adapters.goae import GOAEConfig, GOAEInverter, GOAEncoder, build_goae_ffhq
from guide_unlearn.adapters.goae.convert import (is_derived_buffer, load_goae_checkpoint, load_official_state_dict,
                                                 official_to_timm, timm_to_official)
from guide_unlearn.errors import CheckpointError, InputError
from guide_unlearn.protocols import Inverter

DATA = Path(__file__).resolve().parents[1] / "eg3d" / "data"


def _official_names():
    out = {}
    for line in (DATA / "goae_encoder_ffhq_names.txt").read_text().splitlines():
        key, shape = line.split(" ")
        out[key] = tuple(int(s) for s in shape.split(","))
    return out


@pytest.fixture(scope="module")
def full():
    return build_goae_ffhq("meta")


@pytest.fixture(scope="module")
def tiny():
    g = tiny_generator(seed=0)
    return g, tiny_inverter(g, seed=0)


# -- full size -------------------------------------------------------------------------------------------------

def test_full_size_official_layout_converts_onto_the_encoder_exactly(full):
    official = _official_names()
    params, derived = official_to_timm({k: torch.empty(s, device="meta") for k, s in official.items()})
    ours = {k: tuple(v.shape) for k, v in full.encoder.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in params.items()} == ours
    buffers = {k: tuple(v.shape) for k, v in full.encoder.named_buffers()}
    assert all(buffers[k] == tuple(v.shape) for k, v in derived.items())
    assert len(derived) == sum(1 for k in official if is_derived_buffer(k)) == 2 * 24 + 2
    assert set(timm_to_official(ours)) == set(official) - {k for k in official if is_derived_buffer(k)}


def test_full_size_loads_the_official_layout_strictly(full):
    state = {k: torch.empty(s, device="meta") for k, s in _official_names().items()}
    load_official_state_dict(full.encoder, state)
    del state["cross_att_fine.linear2.bias"]
    with pytest.raises(CheckpointError, match="1 missing"):
        load_official_state_dict(full.encoder, state)


def test_full_size_parameter_count_matches_spec(full):
    total = sum(p.numel() for p in full.encoder.parameters())
    swin = sum(p.numel() for p in full.encoder.swin_model.parameters())
    assert total == 111_218_822  # ≈ 111.2 M
    assert swin == pytest.approx(86.9e6, abs=0.05e6) and total - swin == pytest.approx(24.3e6, abs=0.05e6)


def test_full_size_inverts_512_images_to_14_ws_on_meta(full):
    assert full.invert(torch.empty(2, 3, 512, 512, device="meta")).shape == (2, 14, 512)
    assert full.input_alignment == "eg3d"


# -- derived buffers: what timm recomputes equals the Swin V2 definition GOAE stored ------------------------------

def _swin_v2_tables(window, pretrained):
    """Independent Swin V2 formulas: log-spaced relative coordinates and the pairwise relative index."""
    r = torch.arange(-(window - 1), window, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).unsqueeze(0)
    table = table / ((pretrained if pretrained > 0 else window) - 1) * 8
    table = torch.sign(table) * torch.log2(table.abs() + 1) / math.log2(8)
    ij = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (ij[:, :, None] - ij[:, None, :]).permute(1, 2, 0) + (window - 1)
    return table, rel[..., 0] * (2 * window - 1) + rel[..., 1]


def test_recomputed_relative_position_buffers_follow_the_swin_v2_definition(tiny):
    enc = tiny[1].encoder
    cfg = enc.config
    for i, stage in enumerate(enc.swin_model.layers):
        side = cfg.img_size // cfg.patch_size // 2 ** i
        window = min(cfg.window_size, side)
        table, index = _swin_v2_tables(window, cfg.pretrained_window_sizes[i])
        attn = stage.blocks[0].attn
        assert torch.allclose(attn.relative_coords_table, table, atol=1e-6)
        assert torch.equal(attn.relative_position_index, index)


# -- converter round trip and checks (tiny) --------------------------------------------------------------------

def _official_state(encoder):
    """What GOAE's torch.save would contain for this encoder: official names + the derived buffers."""
    state = timm_to_official(encoder.state_dict())
    for name, buf in encoder.named_buffers():
        if is_derived_buffer(name):
            state[timm_to_official({name: buf}).popitem()[0]] = buf.clone()
    return state


def test_official_state_round_trips_through_a_weights_only_file(tiny, tmp_path):
    g, inv = tiny
    state = _official_state(inv.encoder)
    assert any(".layers.0.downsample." in k for k in state) and not any(".layers.3.downsample." in k for k in state)
    torch.save(state, tmp_path / "encoder.pt")
    fresh = GOAEncoder(inv.encoder.config)
    load_goae_checkpoint(tmp_path / "encoder.pt", fresh)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.allclose(fresh(x), inv.encoder(x), atol=1e-6)


def test_converter_rejects_buffers_from_other_swin_settings(tiny):
    state = _official_state(tiny[1].encoder)
    key = next(k for k in state if k.endswith("relative_coords_table"))
    state[key] = state[key] * 2
    with pytest.raises(CheckpointError, match="other Swin settings"):
        load_official_state_dict(GOAEncoder(tiny[1].encoder.config), state)


def test_missing_checkpoint_file_says_where_to_get_it(tmp_path):
    with pytest.raises(CheckpointError, match="encoder_FFHQ.pt"):
        load_goae_checkpoint(tmp_path / "nope.pt", GOAEncoder(GOAEConfig(img_size=64, embed_dim=8, depths=(1, 1, 1, 1),
                                                                         num_heads=(1, 1, 1, 1), window_size=4)))


# -- inverter --------------------------------------------------------------------------------------------------

def test_inverter_protocol_shapes_and_w_avg_offset(tiny):
    g, inv = tiny
    assert isinstance(inv, Inverter) and inv.input_alignment == "eg3d"
    x = torch.rand(2, 3, 128, 128) * 2 - 1  # resized to the encoder's 64²
    ws = inv.invert(x)
    assert ws.shape == (2, g.num_ws, g.w_dim)
    assert torch.allclose(ws, inv.encoder(inv.preprocess(x)) + g.w_avg, atol=1e-6)
    img = g.synthesis(ws, generator=torch.Generator().manual_seed(0)).images  # the codes drive the generator
    assert img.shape == (2, 3, 64, 64)


def test_inversion_is_deterministic_by_default_even_after_train(tiny):
    _, inv = tiny
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    inv.train()
    assert not inv.encoder.training
    assert torch.equal(inv.invert(x), inv.invert(x))
    inv.eval()


def test_official_train_mode_is_random_but_seeded(tiny):
    g, inv = tiny
    compat = GOAEInverter(inv.encoder, g.w_avg, official_train_mode=True)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    a = compat.invert(x, generator=torch.Generator().manual_seed(1))
    b = compat.invert(x, generator=torch.Generator().manual_seed(1))
    c = compat.invert(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, inv.invert(x)) and not inv.encoder.training


def test_bad_images_raise_input_error(tiny):
    _, inv = tiny
    with pytest.raises(InputError):
        inv.invert(torch.zeros(1, 64, 64))
    with pytest.raises(InputError):
        inv.invert(torch.full((1, 3, 64, 64), float("nan")))
