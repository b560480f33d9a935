"""What a new user ran into: patches made on merged generators, the hub without network or token, accelerate's
process count, the checkpoint location, messages, progress bars, start-up time, the card's licence link, the
eraser's repr and the printed patch size."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time

import pytest
import torch

from guide_unlearn import EraseConfig, ForgetPatch
from guide_unlearn.cli import ProgressSafeHandler, main
from guide_unlearn.errors import PatchMismatchError
from guide_unlearn.testing import tiny_eraser

CFG = EraseConfig(iterations=2)


def _codes(eraser, seed):
    z = torch.randn(1, eraser.generator.z_dim, generator=torch.Generator().manual_seed(seed))
    return eraser.generator.mapping(z).detach()


# -- patches made on a merged generator --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def merged_export(tmp_path_factory):
    """(a merged export: tiny base + patch A folded in, patch A, a patch C made on the merged export)."""
    folder = tmp_path_factory.mktemp("merged")
    eraser = tiny_eraser()
    a = eraser.erase(_codes(eraser, 1), CFG, measure=False, progress=False).patch
    eraser.apply_patch(a)
    eraser.merge_patches()
    eraser.save_pretrained(folder / "g")
    from guide_unlearn import IdentityEraser

    merged = IdentityEraser.from_pretrained(str(folder / "g"))
    c = merged.erase(_codes(merged, 2), CFG, measure=False, progress=False).patch
    return folder / "g", a, c


def test_a_patch_records_the_exact_weights_it_was_trained_on(merged_export):
    _, a, c = merged_export
    assert c.base_merged == [a.patch_id] and c.base_fingerprint == a.base_fingerprint
    assert a.base_merged == []


def test_a_patch_made_on_a_merged_generator_is_refused_by_the_plain_base(merged_export):
    _, a, c = merged_export
    plain = tiny_eraser()
    with pytest.raises(PatchMismatchError, match=f"{a.patch_id}.*merged"):
        plain.apply_patch(c)
    assert plain.applied_patches == []


def test_it_applies_where_those_patches_are_merged_or_applied(merged_export, tmp_path):
    from guide_unlearn import IdentityEraser

    folder, a, c = merged_export
    assert IdentityEraser.from_pretrained(str(folder)).apply_patch(c).patch_id == c.patch_id
    stacked = tiny_eraser()
    stacked.apply_patch(a)
    assert stacked.apply_patch(c).patch_id == c.patch_id  # base + A applied = the weights C was trained on
    saved = ForgetPatch.from_pretrained(c.save_pretrained(tmp_path / "c"))
    assert saved.base_merged == [a.patch_id]  # survives the round trip


def test_info_of_a_merged_folder_says_it_is_merged(merged_export, capsys):
    folder, a, _ = merged_export
    assert main(["info", str(folder)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["merged"] is True and "merged generator" in out["note"]
    assert [m["patch_id"] for m in out["merged_patches"]] == [a.patch_id]


# -- the hub without network or token ---------------------------------------------------------------------------
def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def patch_folder(tmp_path):
    return ForgetPatch("lora", {"m.lora_A.weight": torch.ones(1, 2), "m.lora_B.weight": torch.ones(2, 1)},
                       {"generator_family": "stylegan2", "base_fingerprint": "sha256:0"},
                       {"r": 1, "lora_alpha": 1.0, "target_modules": ["m"]}).save_pretrained(tmp_path / "p")


def test_push_without_a_token_exits_2_at_once(patch_folder, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(patch_folder.parent / "hf"))
    start = time.perf_counter()
    assert main(["push", str(patch_folder), "user/repo"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no Hugging Face token" in line and "hf auth login" in line and "token=" not in line
    assert time.perf_counter() - start < 10


def test_push_in_offline_mode_exits_2_at_once(patch_folder, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["push", str(patch_folder), "user/repo"]) == 2
    assert "HF_HUB_OFFLINE" in _one_error_line(capsys.readouterr().err)


def test_push_without_network_exits_2_with_one_line(patch_folder, monkeypatch, capsys):
    import httpx2
    from huggingface_hub import HfApi

    def no_network(self, *args, **kwargs):
        raise httpx2.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(HfApi, "create_repo", no_network)
    assert main(["push", str(patch_folder), "user/repo"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot be reached" in line and "ConnectError" in line and "internal error" not in line


def test_pulling_without_network_exits_2_quickly_with_one_line(monkeypatch, tmp_path, capsys):
    from huggingface_hub import HfApi

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("guide_unlearn.hub.hub_unreachable", lambda *a, **k: "ConnectError: no route to host")
    monkeypatch.setattr(HfApi, "list_repo_tree", lambda *a, **k: pytest.fail("retried the hub"))
    start = time.perf_counter()
    assert main(["info", "user/repo"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "cannot be reached" in line and "local_files_only" not in line and "subfolder=" not in line
    assert time.perf_counter() - start < 10


# -- accelerate's process count ---------------------------------------------------------------------------------
def test_a_launch_with_fewer_processes_than_asked_says_so_and_names_the_cpu_recipe(monkeypatch, capsys):
    from guide_unlearn.cli import batch

    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "accelerate", "launch", "--cpu",
                                 "--num_processes", "2"])
    try:
        time.sleep(0.3)
        monkeypatch.setattr(os, "getppid", lambda: launcher.pid)
        monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
        monkeypatch.delenv("WORLD_SIZE", raising=False)
        assert batch.asked_processes() == 2
        batch._say_if_fewer_processes()
        err = capsys.readouterr().err
        assert "asked for 2 processes but started 1" in err and "--multi_gpu --num_processes 2" in err
        monkeypatch.setenv("WORLD_SIZE", "2")  # as many as asked: nothing to say
        batch._say_if_fewer_processes()
        assert capsys.readouterr().err == ""
    finally:
        launcher.kill()
        launcher.wait()


def test_overwrite_help_says_what_it_replaces(capsys):
    with pytest.raises(SystemExit):
        main(["erase-batch", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "ANOTHER queue" in help_text and "never replaced" in help_text


# -- where checkpoints go, and messages -------------------------------------------------------------------------
def test_an_offline_download_names_where_to_put_a_file_fetched_by_hand(tmp_path, monkeypatch):
    from guide_unlearn.checkpoints import CheckpointSource, resolve_file
    from guide_unlearn.checkpoints.resolve import DownloadError, manual_path

    monkeypatch.setenv("GUIDE_UNLEARN_CACHE", str(tmp_path / "cache"))
    src = CheckpointSource("thing", "thing.pkl", url="http://127.0.0.1:9/thing.pkl")
    with pytest.raises(DownloadError) as info:
        resolve_file(src, allow_download=True, progress=False)
    assert str(manual_path(src)) in str(info.value) and "by hand" in str(info.value)


def test_download_where_prints_the_one_place_a_file_goes(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GUIDE_UNLEARN_CACHE", str(tmp_path / "cache"))
    assert main(["download", "--where", "eg3d-ffhq"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["put_it_at"] == str(tmp_path / "cache" / "models--guide-unlearn--eg3d-ffhq" / "snapshots" / "manual"
                                   / out["file"])


def test_info_of_a_missing_path_does_not_speak_of_model(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothere" / "x.pt")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no such file or folder" in line and "--model" not in line


def test_the_cli_prints_the_not_erased_verdict_once():
    from pathlib import Path

    from guide_unlearn.cli.erase import _one_verdict_line

    pipelines = Path(__file__).resolve().parents[2] / "pipelines"  # the line the CLI holds back is still logged
    assert any('logger.warning("the erase did not succeed' in p.read_text() for p in pipelines.rglob("*.py"))
    root, seen = logging.getLogger(), []
    handler = logging.Handler()
    handler.emit = seen.append
    root.addHandler(handler)
    log = logging.getLogger("guide_unlearn.pipelines.requests")
    try:
        with _one_verdict_line():
            log.warning("the erase did not succeed: %s", "id 0.9")
            log.warning("something else")
        log.warning("the erase did not succeed: %s", "after the command")
    finally:
        root.removeHandler(handler)
    assert [r.getMessage() for r in seen] == ["something else", "the erase did not succeed: after the command"]


def test_warnings_are_written_between_progress_bar_lines():
    from tqdm import tqdm

    buf = io.StringIO()
    handler = ProgressSafeHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    with tqdm(total=3, file=buf, ascii=True) as bar:
        bar.update(1)
        handler.emit(logging.LogRecord("x", logging.WARNING, __file__, 1, "weights not found", None, None))
        bar.update(1)
    assert "\nWARNING: weights not found\n" in buf.getvalue().replace("\r", "\n")


@pytest.mark.parametrize("argv", [["--version"], ["erase"], ["info"], ["erase-batch", "x"]])
def test_version_and_argument_errors_answer_without_importing_torch(argv):
    code = ("import sys\nfrom guide_unlearn.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)" % argv)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


# -- the card's licence link, the eraser's repr, the printed patch size ------------------------------------------
def test_the_cards_licence_link_resolves_inside_the_patch_folder(tmp_path):
    from guide_unlearn.gate import read_card
    from guide_unlearn.pipelines.registry import base_license

    patch = ForgetPatch("lora", {"m.lora_A.weight": torch.ones(1, 2), "m.lora_B.weight": torch.ones(2, 1)},
                        {"generator_family": "stylegan2", "base_fingerprint": "sha256:0", "base_name": "demo-faces",
                         "base_license": base_license("demo-faces")},
                        {"r": 1, "lora_alpha": 1.0, "target_modules": ["m"]})
    folder = patch.save_pretrained(tmp_path / "p")
    header, _ = read_card(folder / "README.md")
    assert header["license"] == "other" and (folder / header["license_link"]).is_file()
    assert "non-commercial" in (folder / header["license_link"]).read_text().lower()
    assert ForgetPatch.from_pretrained(folder).patch_id == patch.patch_id  # the extra file is part of the patch


def test_the_eraser_repr_is_one_line_and_builds_nothing():
    from guide_unlearn import IdentityEraser

    eraser = IdentityEraser.from_pretrained("demo-faces")
    text = repr(eraser)
    assert "\n" not in text and "model='demo-faces'" in text and "inverter=<built at first use>" in text
    assert type(eraser.__dict__["_inverter"]).__name__ == "Deferred"  # still not built


def test_patch_bytes_is_the_size_of_the_written_tensor_file(tmp_path, capsys):
    from safetensors.torch import save_file

    eraser = tiny_eraser()
    save_file({"ws": _codes(eraser, 3).contiguous()}, str(tmp_path / "codes.safetensors"))
    assert main(["erase", "--latent", str(tmp_path / "codes.safetensors"), "--model", "tiny-stylegan2", "--out",
                 str(tmp_path / "p"), "--iterations", "2", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["patch_bytes"] == (tmp_path / "p" / "adapter_model.safetensors").stat().st_size
    assert out["patch_folder_bytes"] == sum(f.stat().st_size for f in (tmp_path / "p").iterdir())
