"""The guide-unlearn command line."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from guide_unlearn.cli import main


@pytest.mark.parametrize("command", ["erase", "apply", "merge", "info", "push"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert command in capsys.readouterr().out


def _latent(tmp_path):
    from guide_unlearn.testing import tiny_generator

    gen = tiny_generator()
    ws = gen.mapping(torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(2))).detach()
    save_file({"ws": ws.contiguous()}, str(tmp_path / "ws.safetensors"))
    return tmp_path / "ws.safetensors"


def test_erase_from_a_saved_latent_writes_a_patch_and_a_picture(tmp_path, capsys):
    code = main(["erase", "--latent", str(_latent(tmp_path)), "--model", "tiny-stylegan2", "--out",
                 str(tmp_path / "patch"), "--iterations", "3", "--quiet"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "patch" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "patch_before_after.png").is_file()
    assert report["patch_bytes"] > 0
    assert main(["info", str(tmp_path / "patch")]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "lora"


def test_apply_and_merge_commands(tmp_path, capsys):
    main(["erase", "--latent", str(_latent(tmp_path)), "--model", "tiny-stylegan2", "--out", str(tmp_path / "p"),
          "--iterations", "2", "--quiet"])
    capsys.readouterr()
    assert main(["apply", str(tmp_path / "p"), "--model", "tiny-stylegan2", "--out", str(tmp_path / "prev.png")]) == 0
    assert (tmp_path / "prev.png").is_file()
    assert main(["merge", str(tmp_path / "p"), "--model", "tiny-stylegan2", "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").is_file()
    assert (tmp_path / "merged" / "guide_unlearn.json").is_file()


def test_errors_exit_non_zero_with_one_line(tmp_path, capsys):
    code = main(["erase", str(tmp_path / "missing.jpg"), "--model", "tiny-stylegan2", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "missing.jpg" in err
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "guide_unlearn.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "erase" in out.stdout
