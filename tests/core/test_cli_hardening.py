"""Issue #11 part B: one clear line (exit 2) before the expensive work, messages that name what they mean, quiet
warnings, and the first hour's conveniences (progress bars, sample(), repr, labelled pictures, --version)."""

import argparse
import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import guide_unlearn
from guide_unlearn.cli import build_parser, main
from guide_unlearn import errors
from guide_unlearn.errors import InputError, NoFaceError, PatchMismatchError
from guide_unlearn.testing import tiny_eraser, tiny_generator


@pytest.fixture()
def latent(tmp_path) -> Path:
    gen = tiny_generator()
    ws = gen.mapping(torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(2))).detach()
    save_file({"ws": ws.contiguous()}, str(tmp_path / "ws.safetensors"))
    return tmp_path / "ws.safetensors"


@pytest.fixture()
def tiny_patch(tmp_path, latent) -> Path:
    """A real 1-step patch of tiny-stylegan2, saved as the CLI would."""
    assert main(["erase", "--latent", str(latent), "--model", "tiny-stylegan2", "--out", str(tmp_path / "patch"),
                 "--iterations", "1", "--quiet"]) == 0
    return tmp_path / "patch"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# -- one clear line, exit 2, before the expensive work -------------------------------------------------------------

def test_an_output_folder_below_a_file_is_refused_before_the_model_loads(tmp_path, latent, capsys):
    (tmp_path / "afile").write_text("mine")
    # eg3d-ffhq's weights are not on this machine: reaching the model would fail with a missing-weights error.
    code = main(["erase", "--latent", str(latent), "--model", "eg3d-ffhq", "--out", str(tmp_path / "afile" / "p")])
    err = _one_line_error(capsys)
    assert code == 2 and "is a file" in err and "internal error" not in err
    assert (tmp_path / "afile").read_text() == "mine"


def test_an_output_folder_that_is_a_file_is_refused(tmp_path, latent, capsys):
    (tmp_path / "taken").write_text("mine")
    code = main(["merge", str(tmp_path), "--model", "eg3d-ffhq", "--out", str(tmp_path / "taken")])
    assert code == 2 and "a folder is needed" in _one_line_error(capsys)


def test_a_picture_path_that_is_a_folder_is_refused(tmp_path, capsys):
    (tmp_path / "dir.png").mkdir()
    code = main(["apply", str(tmp_path), "--model", "eg3d-ffhq", "--out", str(tmp_path / "dir.png")])
    assert code == 2 and "is a folder" in _one_line_error(capsys)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a location no one can write)")
def test_an_unwritable_output_location_is_refused_before_the_model_loads(latent, capsys):
    code = main(["erase", "--latent", str(latent), "--model", "eg3d-ffhq", "--out", "/proc/guide-unlearn-patch"])
    err = _one_line_error(capsys)
    assert code == 2 and "not writable" in err and "internal error" not in err


def test_verbose_flag_works_after_the_sub_command_too():
    parser = build_parser()
    assert parser.parse_args(["info", "x", "-v"]).verbose is True
    assert parser.parse_args(["-v", "info", "x"]).verbose is True
    assert parser.parse_args(["info", "x"]).verbose is False


def test_version_flag_prints_the_library_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"guide-unlearn {guide_unlearn.__version__}"


def test_out_of_range_flags_are_refused_before_the_model_loads(tmp_path, latent, capsys):
    code = main(["erase", "--latent", str(latent), "--model", "eg3d-ffhq", "--out", str(tmp_path / "p"),
                 "--iterations", "0"])
    err = _one_line_error(capsys)
    assert code == 2 and "iterations" in err and "weights" not in err


def test_a_malformed_camera_is_refused_before_the_model_loads(tmp_path, latent, capsys):
    code = main(["erase", "--latent", str(latent), "--model", "eg3d-ffhq", "--out", str(tmp_path / "p"),
                 "--camera", "0.3"])
    err = _one_line_error(capsys)
    assert code == 2 and "--camera" in err and "weights" not in err


def test_an_unwritable_picture_extension_is_refused_before_the_model_loads(tmp_path, capsys):
    code = main(["apply", str(tmp_path), "--model", "eg3d-ffhq", "--out", str(tmp_path / "preview.gif")])
    err = _one_line_error(capsys)
    assert code == 2 and ".gif" in err and ".jpg" in err and not (tmp_path / "preview.gif").exists()


# -- messages name what they mean ----------------------------------------------------------------------------------

def test_a_folder_without_forget_patch_json_is_reported_as_not_a_patch(tmp_path, tiny_patch, capsys):
    bare = tmp_path / "bare-adapter"
    bare.mkdir()
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (bare / f).write_bytes((tiny_patch / f).read_bytes())
    for argv in (["info", str(bare)], ["apply", str(bare), "--model", "tiny-stylegan2", "--out",
                                       str(tmp_path / "x.png")]):
        capsys.readouterr()
        assert main(argv) == 2
        err = _one_line_error(capsys)
        assert "not a forget patch" in err and "forget_patch.json" in err and "config.json is" not in err


def test_the_wrong_base_error_names_the_base_the_patch_was_made_for(tmp_path, tiny_patch, capsys):
    code = main(["apply", str(tiny_patch), "--model", "tiny-eg3d", "--out", str(tmp_path / "x.png")])
    err = _one_line_error(capsys)
    assert code == 2 and "'tiny-stylegan2'" in err and "--model tiny-stylegan2" in err


def test_the_wrong_fingerprint_error_names_the_base_in_python(tiny_patch):
    from guide_unlearn.pipelines.eraser import IdentityEraser

    other = IdentityEraser(tiny_generator(seed=1), name="another-tiny")
    with pytest.raises(PatchMismatchError, match=r"made for 'tiny-stylegan2'.*'another-tiny'.*from_pretrained"):
        other.apply_patch(tiny_patch)


def test_the_no_face_error_gives_the_flag_on_the_cli_and_the_keyword_in_python(tmp_path, capsys):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (96, 96), (128, 128, 128)).save(blank)
    with pytest.raises(NoFaceError, match="align=False"):
        tiny_eraser().invert(str(blank))
    code = main(["erase", str(blank), "--model", "tiny-stylegan2", "--out", str(tmp_path / "p"), "--quiet"])
    err = _one_line_error(capsys)
    assert code == 2 and "--no-align" in err and "align=False" not in err


def test_a_latent_file_with_the_wrong_key_lists_the_keys_it_holds(tmp_path, capsys):
    save_file({"codes": torch.zeros(1, 8, 32), "extra": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    code = main(["erase", "--latent", str(tmp_path / "w.safetensors"), "--model", "tiny-stylegan2", "--out",
                 str(tmp_path / "p")])
    err = _one_line_error(capsys)
    assert code == 2 and "'codes'" in err and "'extra'" in err and "'ws'" in err


def test_an_unknown_model_name_suggests_the_nearest_and_lists_every_name(tmp_path, latent, capsys):
    code = main(["erase", "--latent", str(latent), "--model", "tiny-stylegn2", "--out", str(tmp_path / "p")])
    err = _one_line_error(capsys)
    assert code == 2 and "did you mean 'tiny-stylegan2'" in err
    assert all(name in err for name in ("tiny-eg3d", "demo-faces", "eg3d-ffhq", "stylegan2-ffhq"))
    with pytest.raises(guide_unlearn.CheckpointError, match="did you mean 'demo-faces'"):
        guide_unlearn.IdentityEraser.from_pretrained("demo-face")


def test_info_accepts_the_tiny_model_names_erase_accepts(capsys):
    assert main(["info", "tiny-stylegan2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "stylegan2" and report["base_fingerprint"].startswith("sha256:")
    eraser = tiny_eraser()
    from guide_unlearn.fingerprint import patch_state

    assert report["base_fingerprint"] == patch_state(eraser.generator)["base_fingerprint"]


def test_a_missing_cuda_device_is_a_guide_unlearn_error(tmp_path, latent, capsys):
    missing = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(errors.DeviceError, match="CUDA"):
        guide_unlearn.IdentityEraser.from_pretrained("tiny-stylegan2", device=missing)
    with pytest.raises(errors.DeviceError, match="not a torch device"):
        guide_unlearn.IdentityEraser.from_pretrained("tiny-stylegan2", device="gpu")
    with pytest.raises(errors.DeviceError, match="CUDA"):  # the loaders check it before reading the file
        guide_unlearn.load_generator("demo-faces", device=missing)
    code = main(["erase", "--latent", str(latent), "--model", "tiny-stylegan2", "--out", str(tmp_path / "p"),
                 "--device", missing])
    err = _one_line_error(capsys)
    assert code == 2 and "CUDA" in err and "internal error" not in err


# -- warnings ------------------------------------------------------------------------------------------------------

def _missing_weights_records(caplog):
    return [r for r in caplog.records if r.levelno >= logging.WARNING
            and ("ArcFace" in r.getMessage() or "LPIPS" in r.getMessage())]


@pytest.fixture()
def fresh_warnings(monkeypatch, tmp_path):
    """No ArcFace / VGG weights anywhere, and no warning given yet in this process."""
    from guide_unlearn.adapters.perceptual import distances
    from guide_unlearn.pipelines import assembly

    monkeypatch.setenv("GUIDE_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setattr(assembly, "_WARNED", set(), raising=False)
    monkeypatch.setattr(distances, "_WARNED", set(), raising=False)


@pytest.fixture()
def model_folder(tmp_path) -> Path:
    """tiny-stylegan2 saved as a model folder: loading it takes the full path (default loss networks)."""
    from guide_unlearn.lineage import save_generator

    save_generator(tiny_generator(), tmp_path / "model")
    return tmp_path / "model"


def test_missing_weights_warnings_are_one_short_line_each_once_per_process(fresh_warnings, caplog):
    from guide_unlearn.adapters.perceptual import default_perceptual
    from guide_unlearn.pipelines.assembly import default_identity_model

    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert default_identity_model(torch.device("cpu")) is None
        default_perceptual("cpu")
    warned = _missing_weights_records(caplog)
    assert len(warned) == 2
    for record in warned:
        message = record.getMessage()
        assert "\n" not in message and len(message) <= 120, message


def test_commands_that_do_not_train_print_no_missing_weights_warning(fresh_warnings, model_folder, latent, tmp_path,
                                                                     caplog, capsys):
    caplog.set_level(logging.WARNING)
    assert main(["erase", "--latent", str(latent), "--model", str(model_folder), "--out", str(tmp_path / "p"),
                 "--iterations", "1", "--quiet"]) == 0
    assert len(_missing_weights_records(caplog)) == 2  # the erase trains: it says which stand-ins it used
    caplog.clear()
    from guide_unlearn.pipelines import assembly
    from guide_unlearn.adapters.perceptual import distances

    assembly._WARNED.clear()
    distances._WARNED.clear()
    assert main(["apply", str(tmp_path / "p"), "--model", str(model_folder), "--out", str(tmp_path / "a.png")]) == 0
    assert main(["merge", str(tmp_path / "p"), "--model", str(model_folder), "--out", str(tmp_path / "m")]) == 0
    assert main(["info", str(model_folder)]) == 0
    assert _missing_weights_records(caplog) == []


# -- the first hour ------------------------------------------------------------------------------------------------

def test_inversion_shows_a_progress_bar_unless_quiet(capsys):
    eraser = tiny_eraser(inverter_steps=3)
    photo = eraser.synthesize(eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim)))
    eraser.invert(photo, align=False)
    assert "inverting" in capsys.readouterr().err
    eraser.invert(photo, align=False, progress=False)
    eraser.erase(photo, config=eraser.default_config(iterations=1), measure=False, progress=False)
    assert capsys.readouterr().err == ""


def test_sample_renders_seeded_random_faces():
    from guide_unlearn.pipelines.eraser import IdentityEraser

    gen = tiny_generator(use_noise=True)
    with torch.no_grad():  # a trained model's noise strengths are non-zero (a fresh one's are 0)
        for name, p in gen.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.5)
    eraser = IdentityEraser(gen, perceptual=torch.nn.L1Loss())
    a = eraser.sample(3, seed=0)
    assert a.shape == (3, 3, 32, 32) and float(a.min()) >= -1 and float(a.max()) <= 1
    assert torch.equal(a, eraser.sample(3, seed=0))
    other = eraser.sample(3, seed=1)
    const = eraser.sample(3, seed=0, noise_mode="const")  # the same codes, the generator's fixed noise
    assert not torch.equal(a, const)  # the seed drives the noise too
    assert float((a - const).abs().mean()) < float((a - other).abs().mean())  # ... and above all the faces
    with pytest.raises(InputError, match="noise_mode"):
        eraser.sample(1, noise_mode="loud")


def test_forget_patch_repr_is_one_line(tiny_patch):
    from guide_unlearn import ForgetPatch

    patch = ForgetPatch.from_pretrained(tiny_patch)
    text = repr(patch)
    assert "\n" not in text and len(text) < 250
    assert patch.patch_id in text and "tiny-stylegan2" in text and "lora" in text


def test_image_tensors_outside_minus_one_to_one_are_refused():
    eraser = tiny_eraser(inverter_steps=1)
    with pytest.raises(InputError, match=r"\[-1, 1\].*x / 127.5 - 1"):
        eraser.invert(torch.full((1, 3, 32, 32), 200.0), align=False)
    with pytest.raises(InputError, match=r"\[-1, 1\].*x \* 2 - 1"):
        eraser.erase(torch.rand(1, 3, 32, 32) * 0.5 + 1.0)  # [0, 1.5]: a [0, 1] image scaled once too often


def test_apply_writes_a_jpeg_for_a_jpg_name(tmp_path, tiny_patch, capsys):
    assert main(["apply", str(tiny_patch), "--model", "tiny-stylegan2", "--out", str(tmp_path / "p.jpg"),
                 "--samples", "2"]) == 0
    with Image.open(tmp_path / "p.jpg") as img:
        assert img.format == "JPEG"


def test_pictures_have_a_label_per_row():
    from guide_unlearn.images import image_strip

    rows = [torch.full((2, 3, 24, 24), -1.0) for _ in range(4)]  # black images
    plain = image_strip(rows)
    labelled = image_strip(rows, ["photo", "before", "after", "target"])
    column = labelled.width - plain.width
    assert column > 10 and labelled.height == plain.height
    import numpy as np

    left = np.asarray(labelled)[:, :column].min(axis=2)  # the label column: white with dark text
    for i in range(4):
        band = left[i * 24:(i + 1) * 24]
        assert band.min() < 100 and np.median(band) == 255  # text in every row, on white


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"erase", "apply", "merge", "info", "convert"} <= set(commands)
    for name, command in [("guide-unlearn", parser), *commands.items()]:
        for action in command._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


# -- the same classes, found elsewhere -----------------------------------------------------------------------------

def test_convert_checks_its_destination_before_loading_the_source(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    # eg3d-ffhq's weights are not on this machine: loading SRC first would fail with a missing-weights error.
    code = main(["convert", "eg3d-ffhq", str(tmp_path / "afile" / "out")])
    err = _one_line_error(capsys)
    assert code == 2 and "is a file" in err


def test_a_patch_passed_as_a_model_is_named_a_patch(tiny_patch):
    from guide_unlearn.pipelines.loading import load_generator

    with pytest.raises(guide_unlearn.CheckpointError, match="is a forget patch, not a model"):
        load_generator(tiny_patch)


def test_python_patch_loading_says_not_a_patch_for_a_bare_adapter(tmp_path, tiny_patch):
    from guide_unlearn import ForgetPatch

    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "adapter_config.json").write_bytes((tiny_patch / "adapter_config.json").read_bytes())
    with pytest.raises(guide_unlearn.PatchError, match="not a forget patch.*bare LoRA adapter"):
        ForgetPatch.from_pretrained(tmp_path / "bare")


def test_inverters_called_directly_refuse_images_outside_the_range():
    from guide_unlearn.adapters.projector import CodeInverter, OptimizationInverter

    gen = tiny_generator()
    for inverter in (OptimizationInverter(gen, steps=1), CodeInverter(gen, starts=1, steps=1, refine_steps=0)):
        with pytest.raises(InputError, match=r"outside the expected range \[-1, 1\]"):
            inverter.invert(torch.full((1, 3, 32, 32), 255.0))
