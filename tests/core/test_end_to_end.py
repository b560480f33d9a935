"""Raw photos in, patches out, on the tiny backends; name resolution and its errors."""

import pytest
import torch

from guide_unlearn import EraseConfig, IdentityEraser
from guide_unlearn.errors import CheckpointError, GuideUnlearnError, NoFaceError
from guide_unlearn.pipelines.photos import prepare_images
from guide_unlearn.testing import build_generator, build_inverter, tiny_eraser

CFG = EraseConfig(iterations=3)


def test_erase_from_an_unaligned_photo_on_tiny_stylegan2(shared_dir):
    eraser = tiny_eraser(inverter_steps=5)
    result = eraser.erase(shared_dir / "faces" / "e4e_notebook" / "input_img.jpg", CFG)
    assert result.w_source.shape == (1, eraser.generator.num_ws, eraser.generator.w_dim)
    assert result.patch.num_parameters > 0 and result.metrics["before_mse"] > 0


def test_erase_from_an_unaligned_photo_on_tiny_eg3d_uses_the_estimated_camera(shared_dir):
    eraser = tiny_eraser("eg3d", inverter_steps=3)
    photo = shared_dir / "faces" / "goae_eg3d_real_person"
    first = sorted(p for p in photo.iterdir() if p.suffix in (".png", ".jpg"))[0]
    images, cams = prepare_images(eraser, first, None, align=True)
    assert cams.shape == (1, 25)
    frontal = eraser.generator.frontal_camera(1)
    assert not torch.allclose(cams, frontal)  # a real estimate, not the fallback
    result = eraser.erase(first, CFG)
    assert result.views_before.shape[0] == 11 and result.views_after.shape == result.views_before.shape


def test_a_photo_without_a_face_names_the_file(tmp_path):
    from PIL import Image

    Image.new("RGB", (96, 96), (120, 130, 140)).save(tmp_path / "wall.png")
    with pytest.raises(NoFaceError, match="wall.png"):
        tiny_eraser().erase(tmp_path / "wall.png", CFG)


def test_camera_may_be_given_as_yaw_and_pitch():
    eraser = tiny_eraser("eg3d", inverter_steps=2)
    w = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim)).detach()
    photos = eraser.synthesize(w)
    codes = eraser.invert(photos, camera=(1.4, 1.5))
    assert codes.shape == w.shape


def test_full_size_architectures_build_on_meta():
    eg3d = build_generator("eg3d-ffhq", device="meta")
    goae = build_inverter("goae-ffhq", device="meta")
    assert round(sum(p.numel() for p in eg3d.parameters()) / 1e6, 2) == 30.66
    assert round(sum(p.numel() for p in goae.parameters()) / 1e6, 1) == 111.2


def test_an_unavailable_official_model_says_which_file_is_missing(monkeypatch):
    monkeypatch.setenv("GUIDE_UNLEARN_OFFLINE", "1")
    with pytest.raises(GuideUnlearnError, match="ffhqrebalanced512-128.pkl"):
        IdentityEraser.from_pretrained("eg3d-ffhq")


def test_a_generator_folder_loads_with_its_merged_patch_record(tmp_path):
    from guide_unlearn.lineage import save_generator

    eraser = tiny_eraser()
    w = eraser.generator.mapping(torch.randn(2, eraser.generator.z_dim)).detach()
    p1 = eraser.erase(w[:1], CFG, measure=False).patch
    p2 = eraser.erase(w[1:], CFG, measure=False).patch
    eraser.apply_patch(p1)
    eraser.merge_patches()
    save_generator(eraser.generator, tmp_path / "g")
    again = IdentityEraser.from_pretrained(str(tmp_path / "g"))
    assert torch.equal(again.synthesize(w), eraser.synthesize(w))
    assert [m["patch_id"] for m in again.merged_patches] == [p1.patch_id]
    again.apply_patch(p2)  # made for the original base: still applies
    with pytest.raises(GuideUnlearnError):
        again.apply_patch(p1)  # already merged
