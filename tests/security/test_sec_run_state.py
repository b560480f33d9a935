"""Resume states, latent files and declared rendering sizes: values a file chooses that would drive work or memory
later (a step count, a history, optimiser moments, a number of codes, a rendering resolution) are checked as data,
and against what the machine can do, before they are used."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch

from guide_unlearn import EraseConfig
from guide_unlearn.engine import STATE_FILE
from guide_unlearn.errors import (CheckpointError, ConfigError, GuideUnlearnError, LatentError, SaveError,
                                  UnsafeCheckpointError)
from guide_unlearn.testing import interrupted_at, tiny_eraser
from hostile import rewrite_zip, system_pickle, torch_bytes, write
from test_sec_fuzz import _run_forked

CFG = EraseConfig(iterations=4)
RUN = dict(checkpoint_every=2, progress=False)


@pytest.fixture(scope="module")
def saved_state(tmp_path_factory):
    """(a real erase state written at step 2 of a 4-step run, the eraser, the person's codes)."""
    folder = tmp_path_factory.mktemp("state")
    eraser = tiny_eraser()
    w = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=torch.Generator().manual_seed(1)))
    with interrupted_at(4), pytest.raises(KeyboardInterrupt):
        eraser.erase(w.detach(), CFG, state_dir=folder, measure=False, **RUN)
    return (folder / STATE_FILE).read_bytes(), eraser, w.detach()


def _resume_with(tmp_path: Path, saved_state, edit) -> None:
    """Write the saved state after ``edit(state)`` (re-saved as torch.save would) and resume the run from it."""
    data, eraser, w = saved_state
    state = torch.load(io.BytesIO(data), weights_only=True)
    edit(state)
    write(tmp_path / STATE_FILE, torch_bytes(state))
    eraser.erase(w, CFG, state_dir=tmp_path, measure=False, **RUN)


def test_an_untouched_state_resumes(tmp_path, saved_state):
    _resume_with(tmp_path, saved_state, lambda s: None)
    assert not (tmp_path / STATE_FILE).exists()


@pytest.mark.parametrize("edit, why", [
    (lambda s: s.update(step=-10 ** 12), r"step .* not an integer in \[0, 4\]"),  # the loop would run forever
    (lambda s: s.update(step=10 ** 12), "not an integer in"),
    (lambda s: s.update(step=2.0), "not an integer in"),
    (lambda s: s.update(history=[{"loss": 1.0}] * 100), "history"),
    (lambda s: s.update(history=[{"loss": "x"}]), "expected a number"),
    (lambda s: s.update(history="x"), "expected a list"),
    (lambda s: s["trainable"].update({k: v.double() for k, v in s["trainable"].items()}), "does not match"),
    (lambda s: s["trainable"].update({k: torch.full_like(v, float("nan")) for k, v in s["trainable"].items()}),
     "NaN"),
    (lambda s: s["trainable"].clear(), "does not match"),
    (lambda s: s["optimizer"]["state"][0].update(exp_avg=torch.zeros(10 ** 3)), "does not match"),
    (lambda s: s["optimizer"]["state"][0].update(step=torch.tensor(1e9)), "step count"),
    (lambda s: s["optimizer"]["state"].update({10 ** 6: {}}), "does not have"),
    (lambda s: s["optimizer"]["param_groups"][0].update(params=[0, 0, 0]), "parameter groups"),
    (lambda s: s["optimizer"]["param_groups"][0].update(lr="fast"), "expected"),
    (lambda s: s.update(rng=torch.zeros(7, dtype=torch.uint8)), "random generator"),
    (lambda s: s.update(optimizer=[]), "not Adam"),
])
def test_a_malformed_resume_state_is_refused_before_anything_is_restored(tmp_path, saved_state, edit, why):
    eraser = saved_state[1]
    before = {n: p.detach().clone() for n, p in eraser.generator.named_parameters()}
    with pytest.raises(ConfigError, match=why):
        _resume_with(tmp_path, saved_state, edit)
    after = dict(eraser.generator.named_parameters())
    assert set(after) == set(before) and all(torch.equal(before[n], after[n]) for n in before)


def test_entries_a_later_version_adds_to_the_state_are_left_alone(tmp_path, saved_state):
    _resume_with(tmp_path, saved_state, lambda s: s.update(method_state={"anything": torch.ones(2)}))


@pytest.mark.parametrize("special", ["link_out", "fifo"])
def test_a_resume_state_that_is_a_fifo_or_a_link_out_is_refused(tmp_path, saved_state, special):
    data, eraser, w = saved_state
    (tmp_path / "run").mkdir()
    if special == "fifo":
        os.mkfifo(tmp_path / "run" / STATE_FILE)
    else:
        (tmp_path / "elsewhere.pt").write_bytes(data)
        os.symlink(tmp_path / "elsewhere.pt", tmp_path / "run" / STATE_FILE)
    # never read (a FIFO would block the reader): refused when read, or when the run would write its state there
    with pytest.raises((ConfigError, SaveError), match="outside|not a regular file"):
        eraser.erase(w, CFG, state_dir=tmp_path / "run", measure=False, **RUN)



@pytest.mark.parametrize("special", ["fifo", "link_inside", "link_out", "dev_zero", "folder"])
def test_a_state_file_that_is_not_a_regular_file_is_refused_before_any_work(tmp_path, saved_state, special,
                                                                            monkeypatch):
    import guide_unlearn.engine as engine
    from guide_unlearn.pipelines import photos

    data, eraser, w = saved_state
    run = tmp_path / "run"
    run.mkdir()
    state = run / STATE_FILE
    if special == "fifo":
        os.mkfifo(state)
    elif special == "link_inside":  # even a link to a real state inside the folder: a run never follows a link
        (run / "copy.pt").write_bytes(data)
        state.symlink_to(run / "copy.pt")
    elif special == "link_out":
        (tmp_path / "elsewhere.pt").write_bytes(data)
        state.symlink_to(tmp_path / "elsewhere.pt")
    elif special == "dev_zero":
        state.symlink_to("/dev/zero")
    else:
        state.mkdir()

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the state file was checked")

    monkeypatch.setattr(engine._Loop, "train", no_work)
    monkeypatch.setattr(photos, "prepare_images", no_work)
    with pytest.raises(ConfigError, match="symbolic link|not a regular file|delete"):
        eraser.erase(w, CFG, state_dir=run, measure=False, **RUN)
    with pytest.raises(ConfigError, match="symbolic link|not a regular file|delete"):
        eraser.erase(tmp_path / "photo.png", CFG, state_dir=run, measure=False, **RUN)  # before the photo is read
    assert state.is_symlink() or state.is_dir() or state.is_fifo()  # left as it was


def test_the_cli_refuses_a_state_file_that_is_a_fifo_before_loading_the_model(tmp_path, capsys):
    from guide_unlearn.cli import main

    (tmp_path / "state").mkdir()
    os.mkfifo(tmp_path / "state" / STATE_FILE)
    torch.save({"ws": torch.zeros(1, 4, 8)}, tmp_path / "w.pt")
    code = main(["erase", "--latent", str(tmp_path / "w.pt"), "--model", "no-such-model", "--out",
                 str(tmp_path / "patch"), "--state-dir", str(tmp_path / "state"), "--checkpoint-every", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "not a regular file" in err and "no-such-model" not in err

# -- latent files -----------------------------------------------------------------------------------------------
def _zero_stride_latent() -> bytes:
    """A tiny .pt whose 'ws' is a view of 1 element as [100000, 14, 512] (zero strides): 28 GB once used."""
    t = torch.zeros(1).as_strided((100_000, 14, 512), (0, 0, 0))
    buf = io.BytesIO()
    torch.save({"ws": t}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("content, error, why", [
    (_zero_stride_latent(), LatentError, "overlapping or out-of-range"),
    (torch_bytes({"ws": torch.zeros(5000, 4, 8)}), LatentError, "K <= 4096"),
    (torch_bytes({"ws": torch.full((1, 4, 8), float("nan"))}), LatentError, "NaN"),
    (torch_bytes({"ws": torch.zeros(1, 4, 8, dtype=torch.int64)}), LatentError, "float tensor"),
    (torch_bytes({"ws": "codes"}), LatentError, "not a tensor"),
])
def test_hostile_latent_files_are_refused_before_the_model_loads(tmp_path, content, error, why):
    from guide_unlearn.cli.erase import load_latent

    with pytest.raises(error, match=why):
        load_latent(str(write(tmp_path / "codes.pt", content)))


def test_a_latent_file_that_would_run_code_is_refused(tmp_path):
    from guide_unlearn.cli.erase import load_latent

    data = torch_bytes({"ws": torch.zeros(1, 4, 8)})
    evil = rewrite_zip(data, lambda n, d: (n, system_pickle(f"touch {tmp_path / 'PWNED'}"))
                       if n.endswith("data.pkl") else (n, d))
    with pytest.raises(UnsafeCheckpointError):
        load_latent(str(write(tmp_path / "codes.pt", evil)))
    assert not (tmp_path / "PWNED").exists()


def test_the_cli_refuses_a_zero_stride_latent_with_exit_2_in_bounded_memory(tmp_path):
    from guide_unlearn.cli import main

    path = write(tmp_path / "codes.pt", _zero_stride_latent())
    status, detail, _ = _run_forked(lambda: str(main(["erase", "--latent", str(path), "--model", "tiny-stylegan2",
                                                      "--out", str(tmp_path / "p"), "--iterations", "1",
                                                      "--quiet"])))
    assert (status, detail) == ("ok", "2")


def test_the_memory_a_latent_file_needs_is_checked_before_the_erase(tmp_path, monkeypatch, capsys):
    from guide_unlearn.cli import main
    from guide_unlearn.gate import memory

    eraser = tiny_eraser()
    ws = eraser.generator.mapping(torch.randn(4, eraser.generator.z_dim, generator=torch.Generator().manual_seed(0)))
    from safetensors.torch import save_file

    save_file({"ws": ws.detach().contiguous()}, str(tmp_path / "codes.safetensors"))
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1 << 16)  # a machine with 64 KiB free
    assert main(["erase", "--latent", str(tmp_path / "codes.safetensors"), "--model", "tiny-stylegan2", "--out",
                 str(tmp_path / "p"), "--iterations", "1", "--quiet"]) == 2
    assert "needs about" in capsys.readouterr().err and not (tmp_path / "p").exists()


# -- declared rendering sizes -----------------------------------------------------------------------------------
def _eg3d_folder(tmp_path: Path, **config) -> Path:
    from guide_unlearn.testing import tiny_generator

    folder = tmp_path / "eg3d"
    tiny_generator("eg3d").save_pretrained(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(config)
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "guide_unlearn.json").unlink()  # the record lists config.json's old digest; not what is tested here
    return folder


def test_a_model_folder_whose_first_rendering_cannot_fit_is_refused_at_load(tmp_path):
    from guide_unlearn.pipelines.loading import load_generator

    # every value within the config bounds; one rendering would need ~10^14 bytes
    folder = _eg3d_folder(tmp_path, neural_rendering_resolution=8192, depth_resolution=1024,
                          depth_resolution_importance=1024)
    status, detail, _ = _run_forked(lambda: type(load_generator(folder)).__name__)
    assert status == "typed" and "needs about" in detail, detail


def test_a_model_folder_of_reasonable_size_loads(tmp_path):
    from guide_unlearn.pipelines.loading import load_generator

    assert load_generator(_eg3d_folder(tmp_path, neural_rendering_resolution=32)).neural_rendering_resolution == 32


def test_the_bound_follows_the_machine(tmp_path, monkeypatch):
    from guide_unlearn.gate import memory
    from guide_unlearn.pipelines.loading import load_generator

    folder = _eg3d_folder(tmp_path, neural_rendering_resolution=32)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1 << 10)
    with pytest.raises(CheckpointError, match="needs about"):
        load_generator(folder)


def test_every_refusal_here_is_typed():
    assert all(issubclass(e, GuideUnlearnError) for e in (ConfigError, LatentError, CheckpointError))
