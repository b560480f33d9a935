"""CMMD (CLIP-MMD, Jayasumana et al. 2024): the MMD maths against an explicit double loop, the CLIP embedder on
tiny random CLIP models saved by transformers (safetensors only), and the extra figure of the audit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import guide_unlearn
from guide_unlearn import metrics as M
from guide_unlearn.adapters.perceptual.cmmd import load_clip_embedder
from guide_unlearn.config import EraseConfig
from guide_unlearn.errors import BackendUnavailableError, CheckpointError, InputError
from guide_unlearn.images import tensor_to_pil
from guide_unlearn.pipelines.audit import METRIC_KEYS
from guide_unlearn.testing import tiny_eraser

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=30,
            patch_size=6, projection_dim=16)


def _save_vision(folder, seed=0, **overrides):
    torch.manual_seed(seed)
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**{**TINY, **overrides})).eval()
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    model = _save_vision(folder)
    return folder, model


def test_mmd_matches_an_explicit_double_loop_with_sigma_10_and_scale_1000():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)) * 6, rng.normal(2, 6, size=(4, 3))

    def k(a, b):
        return sum(math.exp(-np.sum((p - q) ** 2) / (2 * 10.0 ** 2)) for p in a for q in b) / (len(a) * len(b))

    expected = 1000 * (k(x, x) + k(y, y) - 2 * k(x, y))
    assert M.mmd_rbf(x, y) == pytest.approx(expected, rel=1e-10)
    assert M.mmd_rbf(x, x) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InputError):
        M.mmd_rbf(x, y[:, :2])


def test_embedder_preprocesses_like_the_clip_image_processor_and_gives_unit_vectors(clip_dir):
    folder, model = clip_dir
    clip = load_clip_embedder(folder)
    g = torch.Generator().manual_seed(1)

    def noise(side):
        return Image.fromarray((torch.rand(side, side, 3, generator=g) * 255).to(torch.uint8).numpy())

    proc = transformers.CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30})
    pils = [noise(30) for _ in range(3)]  # at the model's size: normalisation only
    got = clip.embed(pils)
    with torch.no_grad():
        ref = model(pixel_values=proc(images=pils, return_tensors="pt")["pixel_values"]).image_embeds
    assert got.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(got, torch.nn.functional.normalize(ref, dim=1).double().numpy(), atol=1e-5)
    big = [noise(48)]  # resized by both with PIL's bicubic: equal up to one grey level of rounding
    diff = (clip._pixels(big) - proc(images=big, return_tensors="pt")["pixel_values"]).abs() * clip.std * 255
    assert diff.max() < 1.01 and (diff > 0.01).float().mean() < 0.02


def test_a_full_clip_folder_loads_its_vision_tower_and_ignores_the_text_tower(tmp_path):
    text = dict(hidden_size=16, intermediate_size=20, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
                max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    cfg = transformers.CLIPConfig(vision_config=TINY, text_config=text, projection_dim=16)
    torch.manual_seed(2)
    full = transformers.CLIPModel(cfg).eval()
    full.save_pretrained(tmp_path / "clip")
    clip = load_clip_embedder(tmp_path / "clip")
    x = torch.rand(1, 3, 30, 30) * 2 - 1
    with torch.no_grad():
        pixels = (torch.from_numpy(np.asarray(tensor_to_pil(x[0]), np.float32)).permute(2, 0, 1)[None] / 255
                  - clip.mean) / clip.std
        expected = torch.nn.functional.normalize(full.visual_projection(
            full.vision_model(pixel_values=pixels).pooler_output), dim=1)
    np.testing.assert_allclose(clip.from_generator(x), expected.double().numpy(), atol=1e-5)


def test_pickle_only_weights_are_refused(clip_dir, tmp_path):
    folder, model = clip_dir
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors only.*pytorch_model.bin"):
        load_clip_embedder(tmp_path)


def test_weights_of_another_size_are_a_checkpoint_error_naming_the_shapes(clip_dir, tmp_path):
    folder, _ = clip_dir
    _save_vision(tmp_path, projection_dim=8)
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))  # says projection_dim 16
    with pytest.raises(CheckpointError, match=r"visual_projection.weight: file \(8, 32\), expected \(16, 32\)"):
        load_clip_embedder(tmp_path)


def test_a_missing_folder_says_what_it_needs(tmp_path):
    with pytest.raises(BackendUnavailableError, match="config.json and model.safetensors"):
        load_clip_embedder(tmp_path / "nowhere")


def test_audit_reports_cmmd_as_an_extra_figure_and_keeps_the_17_keys(clip_dir):
    folder, _ = clip_dir
    eraser = tiny_eraser("stylegan2", inverter_steps=10)
    g = torch.Generator().manual_seed(3)
    ws = eraser.generator.mapping(torch.randn(3, eraser.generator.z_dim, generator=g), None)
    pics = [tensor_to_pil(x) for x in eraser.synthesize(ws)]
    patch = eraser.erase(ws[:1], config=EraseConfig(iterations=10), measure=False).patch
    common = dict(protocol="toy-v1", attacks=(), samples=8)
    with_clip = guide_unlearn.audit(eraser, patch, pics[:1], real=pics[1:3], clip_path=folder, **common)
    assert tuple(with_clip.metrics) == METRIC_KEYS
    cmmd = with_clip.details["cmmd"]
    assert math.isfinite(cmmd["cmmd_pre"]) and cmmd["cmmd_pre"] >= 0 and cmmd["samples"] == 8
    assert cmmd["cmmd_real_delta"] == pytest.approx(cmmd["patched_vs_real"] - cmmd["source_vs_real"])
    assert with_clip.networks["cmmd"]["digest"].startswith("sha256:")
    without = guide_unlearn.audit(eraser, patch, pics[:1], **common)
    assert "clip_path" in without.details["cmmd"]["not_run"] and "cmmd" not in without.networks
    assert with_clip.metrics["fd_pre"] == pytest.approx(without.metrics["fd_pre"])


@pytest.mark.slow
def test_cli_clip_flag_writes_cmmd_into_the_report_and_a_bad_folder_is_exit_2(clip_dir, tmp_path, capsys):
    from guide_unlearn.cli import EXIT_USER_ERROR, main

    folder, _ = clip_dir
    eraser = tiny_eraser("stylegan2", inverter_steps=5)
    ws = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=torch.Generator().manual_seed(4)),
                                  None)
    tensor_to_pil(eraser.synthesize(ws)[0]).save(tmp_path / "p0.png")
    patch = eraser.erase(ws, config=EraseConfig(iterations=5), measure=False).patch
    patch_dir = patch.save_pretrained(tmp_path / "patch")
    args = ["audit", str(patch_dir), "--model", "tiny-stylegan2", "--photo", str(tmp_path / "p0.png"),
            "--protocol", "toy-v1", "--samples", "6", "--no-attacks"]
    assert main(args + ["--clip", str(tmp_path / "nowhere"), "--out", str(tmp_path / "bad")]) == EXIT_USER_ERROR
    assert "config.json" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(args + ["--clip", str(folder), "--out", str(tmp_path / "audit")]) == 0
    saved = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert saved["details"]["cmmd"]["cmmd_pre"] >= 0 and saved["networks"]["cmmd"]["folder"] == str(folder)
