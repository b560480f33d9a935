"""A deletion tool does not guess: whom to erase, whether to download, whether it worked, which settings count."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from guide_unlearn import EraseConfig
from guide_unlearn.checkpoints import CheckpointSource, resolve_file
from guide_unlearn.cli import main
from guide_unlearn.errors import CheckpointError, FaceChoiceError
from guide_unlearn.outputs import judge_erasure
from guide_unlearn.pipelines.assembly import align_photo
from guide_unlearn.resume import STATE_FILE
from guide_unlearn.testing import interrupted_at, tiny_eraser


def _codes(eraser, n=1, seed=5):
    g = torch.Generator().manual_seed(seed)
    return eraser.generator.mapping(torch.randn(n, eraser.generator.z_dim, generator=g)).detach()


# -- several faces, tiny faces ---------------------------------------------------------------------------------------
def test_a_photo_with_several_faces_is_refused_with_the_faces_listed_unless_one_is_chosen(shared_dir):
    photo = shared_dir / "faces" / "deepface_train" / "img38.jpg"  # a subject and a blurred onlooker
    with pytest.raises(FaceChoiceError, match=r"2 faces.*#0: box \[.*#1: box .*face=INDEX.*--face INDEX") as info:
        align_photo(Image.open(photo), "ffhq", str(photo))
    assert [f["index"] for f in info.value.faces] == [0, 1]
    sizes = [f["size"][0] * f["size"][1] for f in info.value.faces]
    assert sizes[0] > sizes[1] > 0  # largest first, as the indices are explained
    crop0, _ = align_photo(Image.open(photo), "ffhq", str(photo), face=0)
    crop1, _ = align_photo(Image.open(photo), "ffhq", str(photo), face=1)
    assert crop0.size == crop1.size == (1024, 1024)
    assert np.abs(np.asarray(crop0, dtype=float) - np.asarray(crop1, dtype=float)).mean() > 5  # two people


def test_a_face_far_smaller_than_the_inverter_needs_is_refused_unless_chosen(shared_dir):
    face = Image.open(shared_dir / "faces" / "guide_celebahq512" / "aligned_5.jpg").convert("RGB").resize((96, 96))
    canvas = Image.new("RGB", (640, 640), (128, 128, 128))
    canvas.paste(face, (272, 272))
    with pytest.raises(FaceChoiceError, match=r"far smaller than the 128 px.*--face INDEX"):
        align_photo(canvas, "ffhq", "small.jpg", min_face=128)  # e.g. a 1024² generator's 1/8
    crop, _ = align_photo(canvas, "ffhq", "small.jpg", face=0, min_face=128)
    assert crop.size == (1024, 1024)


def test_face_choice_reaches_the_eraser_and_the_command_line(shared_dir, tmp_path, capsys):
    photo = shared_dir / "faces" / "deepface_train" / "img38.jpg"
    eraser = tiny_eraser(inverter_steps=2)
    with pytest.raises(FaceChoiceError):
        eraser.invert(str(photo))
    assert eraser.invert(str(photo), face=1).shape == (1, eraser.generator.num_ws, eraser.generator.w_dim)
    code = main(["erase", str(photo), "--model", "tiny-stylegan2", "--out", str(tmp_path / "p"), "--iterations", "1",
                 "--quiet"])
    assert code == 2 and "--face INDEX" in capsys.readouterr().err and not (tmp_path / "p").exists()


# -- downloads are explicit ------------------------------------------------------------------------------------------
def test_a_missing_checkpoint_is_not_downloaded_unless_asked(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # even online, nothing is fetched behind the user's back
    tried = []
    monkeypatch.setattr("guide_unlearn.checkpoints.resolve._store_in_cache", lambda *a, **k: tried.append(a))
    src = CheckpointSource("tiny-remote", "tiny.pkl", url="http://127.0.0.1:9/tiny.pkl")
    with pytest.raises(CheckpointError, match="guide-unlearn download tiny-remote"):
        resolve_file(src)
    with pytest.raises(CheckpointError):
        resolve_file(src, allow_download=None)
    assert tried == []


def test_the_missing_weights_error_says_where_to_put_the_file_how_to_download_it_and_what_works_offline(monkeypatch,
                                                                                                     capsys, tmp_path):
    from guide_unlearn.checkpoints.resolve import manual_path
    from guide_unlearn.pipelines.registry import REGISTRY

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    photo = tmp_path / "x.png"
    Image.new("RGB", (64, 64), (128, 100, 90)).save(photo)  # a readable photo: the arguments pass their checks
    code = main(["erase", str(photo), "--out", str(tmp_path / "p")])  # default model eg3d-ffhq, not downloaded
    err = capsys.readouterr().err
    assert code == 2
    assert str(manual_path(REGISTRY["eg3d-ffhq"].source)) in err
    assert "guide-unlearn download eg3d-ffhq" in err and "--model demo-faces" in err


# -- success is judged from the measured figures ---------------------------------------------------------------------
def test_judge_erasure_reads_the_measured_figures():
    good = judge_erasure({"erased_mse": 0.01, "before_mse": 0.2, "preserved_mse": 0.001, "random_pair_mse": 0.1})
    assert good["succeeded"] is True and good["problems"] == []
    barely = judge_erasure({"erased_mse": 0.19, "before_mse": 0.2, "preserved_mse": 0.001, "random_pair_mse": 0.1},
                           iterations=2)
    assert barely["succeeded"] is False and barely["erased"] is False and barely["erasure_ratio"] == 0.95
    assert "NOT ERASED" in barely["problems"][0] and "now 2" in barely["problems"][0]
    assert judge_erasure({})["succeeded"] is None


def test_an_erase_that_barely_moved_the_person_warns_and_fails_with_strict(tmp_path, capsys):
    from safetensors.torch import save_file

    eraser = tiny_eraser()
    save_file({"ws": _codes(eraser)}, str(tmp_path / "ws.safetensors"))
    args = ["erase", "--latent", str(tmp_path / "ws.safetensors"), "--model", "tiny-stylegan2", "--iterations", "1",
            "--lr", "1e-6", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    line = json.loads(out.strip().splitlines()[-1])
    assert line["erased"] is False and line["verdict"]["erasure_ratio"] > 0.9
    assert "NOT ERASED" in err and "--strict" in err
    assert main(args + ["--out", str(tmp_path / "b"), "--strict"]) == 3
    assert (tmp_path / "b" / "forget_patch.json").is_file()  # the patch is still written


# -- which settings count --------------------------------------------------------------------------------------------
def test_erase_keyword_overrides_keep_the_models_recommended_settings():
    eraser = tiny_eraser()
    eraser.erase_defaults = {"truncation_psi": 1.6, "global_samples": 3}
    cfg = eraser.default_config(iterations=2)
    assert (cfg.iterations, cfg.truncation_psi, cfg.global_samples) == (2, 1.6, 3)
    result = eraser.erase(_codes(eraser), iterations=2, progress=False, measure=False)
    used = result.patch.metadata["erase_config"]
    assert (used["iterations"], used["truncation_psi"], used["global_samples"]) == (2, 1.6, 3)


def test_a_misspelt_keyword_setting_is_a_config_error_naming_the_field():
    from guide_unlearn.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean iterations"):
        tiny_eraser().erase(torch.zeros(1, 8, 32), iteratons=5)


def test_a_plain_erase_config_that_drops_the_recommended_settings_is_not_silent(caplog):
    eraser = tiny_eraser()
    eraser.erase_defaults = {"truncation_psi": 1.6}
    with caplog.at_level(logging.WARNING):
        eraser.erase(_codes(eraser), EraseConfig(iterations=1), measure=False)
    assert "truncation_psi=1.6" in caplog.text and "default_config(iterations=" in caplog.text


def test_presentation_settings_change_neither_the_digest_nor_what_a_patch_records():
    a = EraseConfig(iterations=3)
    assert a.digest() != a.replace(lr=1e-3).digest() and "progress" not in a.recipe_dict()
    from guide_unlearn.card import erase_config_digest

    assert erase_config_digest(a.to_dict()) == a.digest()  # one digest of a recipe in the whole library
    shown = {**a.to_dict(), "progress": False, "log_every": 5, "checkpoint_every": 2}  # a record that holds them
    assert erase_config_digest(shown) == a.digest()


def test_resume_accepts_a_run_that_differs_only_in_presentation(tmp_path):
    cfg = EraseConfig(iterations=6)
    eraser = tiny_eraser()
    w = _codes(eraser)
    straight = eraser.erase(w, cfg, measure=False, progress=False)
    with interrupted_at(4), pytest.raises(KeyboardInterrupt):
        eraser.erase(w, cfg, state_dir=tmp_path, measure=False, checkpoint_every=2, progress=True)
    assert (tmp_path / STATE_FILE).is_file()
    resumed = eraser.erase(w, cfg, state_dir=tmp_path, measure=False, checkpoint_every=3, progress=False)
    assert resumed.patch.patch_id == straight.patch.patch_id
