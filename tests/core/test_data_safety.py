"""Nothing a user owns is replaced, and a saved generator loads again with its lineage, whichever way it is saved."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from guide_unlearn import EraseConfig, ForgetPatch
from guide_unlearn.cli import main
from guide_unlearn.errors import PatchStateError, SaveError
from guide_unlearn.fingerprint import patch_state
from guide_unlearn.io import atomic_write_bytes
from guide_unlearn.pipelines.eraser import IdentityEraser
from guide_unlearn.pipelines.loading import load_generator
from guide_unlearn.testing import tiny_eraser


def _codes(eraser, seed):
    g = torch.Generator().manual_seed(seed)
    return eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=g)).detach()


@pytest.fixture(scope="module")
def erased():
    """A tiny eraser and two small patches made for its base."""
    eraser = tiny_eraser()
    cfg = EraseConfig(iterations=3)
    p1 = eraser.erase(_codes(eraser, 1), cfg, measure=False).patch
    p2 = eraser.erase(_codes(eraser, 2), cfg, measure=False).patch
    return eraser, p1, p2


def _render(generator, ws):
    with torch.no_grad():
        return generator.synthesis(ws, None, noise_mode="const").images


# -- folders and files ----------------------------------------------------------------------------------------------
def test_patch_save_refuses_an_existing_patch_unless_asked_then_replaces_it(tmp_path, erased):
    _, p1, p2 = erased
    p1.save_pretrained(tmp_path / "p")
    with pytest.raises(SaveError, match="overwrite=True"):
        p2.save_pretrained(tmp_path / "p")
    assert ForgetPatch.from_pretrained(tmp_path / "p").patch_id == p1.patch_id
    p2.save_pretrained(tmp_path / "p", overwrite=True)
    assert ForgetPatch.from_pretrained(tmp_path / "p").patch_id == p2.patch_id


def test_a_folder_holding_user_files_is_never_replaced_even_with_overwrite(tmp_path, erased):
    _, p1, _ = erased
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "thesis.tex").write_text("mine")
    with pytest.raises(SaveError, match="never replaced"):
        p1.save_pretrained(tmp_path / "p", overwrite=True)
    p1.save_pretrained(tmp_path / "q")
    (tmp_path / "q" / "notes.txt").write_text("mine too")  # a user file added to a patch folder
    with pytest.raises(SaveError, match=r"did not write \(notes.txt\)"):
        p1.save_pretrained(tmp_path / "q", overwrite=True)
    assert (tmp_path / "p" / "thesis.tex").read_text() == "mine"
    assert (tmp_path / "q" / "notes.txt").read_text() == "mine too"


def test_an_existing_empty_folder_counts_as_free(tmp_path, erased):
    _, p1, _ = erased
    (tmp_path / "p").mkdir()
    p1.save_pretrained(tmp_path / "p")
    assert ForgetPatch.from_pretrained(tmp_path / "p").patch_id == p1.patch_id


def test_an_existing_file_is_replaced_only_when_asked(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"user picture")
    with pytest.raises(SaveError, match="--overwrite"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"user picture"
    atomic_write_bytes(target, b"new", overwrite=True)
    assert target.read_bytes() == b"new"


# -- the command line ------------------------------------------------------------------------------------------------
def test_erase_and_merge_refuse_a_user_folder_before_loading_any_model(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    # the model name does not exist: the output check must come first and be the error reported
    code = main(["erase", "x.jpg", "--model", "no-such-model", "--out", str(tmp_path / "out"), "--overwrite"])
    assert code == 2 and "never replaced" in capsys.readouterr().err
    code = main(["merge", "p", "--model", "no-such-model", "--out", str(tmp_path / "out"), "--overwrite"])
    assert code == 2 and "never replaced" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_apply_refuses_to_replace_an_existing_picture_without_overwrite(tmp_path, capsys, erased):
    _, p1, _ = erased
    p1.save_pretrained(tmp_path / "p")
    (tmp_path / "preview.png").write_bytes(b"user file")
    code = main(["apply", str(tmp_path / "p"), "--model", "tiny-stylegan2", "--out", str(tmp_path / "preview.png")])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "preview.png").read_bytes() == b"user file"
    code = main(["apply", str(tmp_path / "p"), "--model", "tiny-stylegan2", "--out", str(tmp_path / "preview.png"),
                 "--overwrite"])
    assert code == 0 and (tmp_path / "preview.png").read_bytes()[:4] == b"\x89PNG"


# -- saving a generator keeps it loadable and keeps its lineage ------------------------------------------------------
def test_generator_saved_the_diffusers_way_with_a_patch_applied_loads_patched_with_its_lineage(tmp_path, erased):
    eraser, p1, p2 = erased
    ws = _codes(eraser, 1)
    eraser.apply_patch(p1)
    try:
        patched = _render(eraser.generator, ws)
        eraser.generator.save_pretrained(tmp_path / "g")  # diffusers' entry point, LoRA still applied
    finally:
        eraser.remove_patch(p1)
    loaded = load_generator(tmp_path / "g")
    assert torch.allclose(_render(loaded, ws), patched, atol=1e-5)
    state = patch_state(loaded)
    assert state["base_fingerprint"] == patch_state(eraser.generator)["base_fingerprint"]
    assert [m["patch_id"] for m in state["merged"]] == [p1.patch_id]
    again = IdentityEraser(loaded, perceptual=eraser.perceptual, inverter=eraser.inverter)
    again.apply_patch(p2)  # a later patch made for the original base still applies
    with pytest.raises(PatchStateError, match="already applied"):
        again.apply_patch(p1)  # and the merged one is not applied twice


def test_generator_saved_after_merge_patches_keeps_the_base_fingerprint(tmp_path):
    eraser = tiny_eraser()
    cfg = EraseConfig(iterations=2)
    p1 = eraser.erase(_codes(eraser, 3), cfg, measure=False).patch
    p2 = eraser.erase(_codes(eraser, 4), cfg, measure=False).patch
    base = patch_state(eraser.generator)["base_fingerprint"]
    eraser.apply_patch(p1)
    eraser.merge_patches()
    eraser.generator.save_pretrained(tmp_path / "g")
    loaded = load_generator(tmp_path / "g")
    assert patch_state(loaded)["base_fingerprint"] == base
    IdentityEraser(loaded, perceptual=eraser.perceptual, inverter=eraser.inverter).apply_patch(p2)


def test_a_generator_folder_whose_weights_changed_after_export_is_refused(tmp_path):
    from guide_unlearn.errors import CheckpointError

    eraser = tiny_eraser()
    eraser.save_pretrained(tmp_path / "g")
    other = tiny_eraser(seed=1)
    (tmp_path / "g" / "diffusion_pytorch_model.safetensors").unlink()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in other.generator.state_dict().items()},
              str(tmp_path / "g" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(CheckpointError, match="lineage is unknown"):
        load_generator(tmp_path / "g")


def test_exports_carry_licence_card_and_code_book_with_normal_modes(tmp_path):
    old = os.umask(0o022)
    try:
        eraser = IdentityEraser.from_pretrained("demo-faces", identity_model=None)
        eraser.save_pretrained(tmp_path / "export")
        code = main(["convert", "demo-faces", str(tmp_path / "converted")])
    finally:
        os.umask(old)
    assert code == 0
    for folder in (tmp_path / "export", tmp_path / "converted"):
        names = sorted(p.name for p in folder.iterdir())
        assert {"LICENSE", "README.md", "code_book.safetensors", "config.json", "guide_unlearn.json",
                "diffusion_pytorch_model.safetensors"} <= set(names)
        assert "non-commercial" in (folder / "LICENSE").read_text().lower()
        assert "demo-faces" in (folder / "README.md").read_text()
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        assert {stat.S_IMODE((folder / n).stat().st_mode) for n in names} == {0o644}
        record = json.loads((folder / "guide_unlearn.json").read_text())
        assert set(record["files"]) == set(names) - {"guide_unlearn.json"}
    again = IdentityEraser.from_pretrained(str(tmp_path / "export"), identity_model=None)
    assert patch_state(again.generator)["base_fingerprint"] == patch_state(eraser.generator)["base_fingerprint"]


def test_every_generator_family_saves_through_the_lineage_writer(tmp_path):
    from guide_unlearn.testing import tiny_generator

    for family in ("stylegan2", "eg3d"):
        g = tiny_generator(family)
        base = patch_state(g)["base_fingerprint"]
        g.save_pretrained(tmp_path / family)
        record = json.loads((tmp_path / family / "guide_unlearn.json").read_text())
        assert record["base_fingerprint"] == base
        assert patch_state(load_generator(tmp_path / family))["base_fingerprint"] == base
        with pytest.raises(SaveError, match="overwrite"):
            g.save_pretrained(tmp_path / family)
