"""Class 4: a patch whose fingerprint matches (the fingerprint is public) still cannot poison the generator:
non-finite or non-float tensors, bad alpha / rank, targets outside the synthesis layers and files reached through
links leaving the folder are refused. The same for code books."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from guide_unlearn import ForgetPatch
from guide_unlearn.adapters.projector import CodeBook
from guide_unlearn.adapters.projector.code_book import FORMAT
from guide_unlearn.errors import CheckpointError, PatchError
from guide_unlearn.fingerprint import patch_state
from guide_unlearn.io import sha256_file
from guide_unlearn.testing import tiny_eraser


@pytest.fixture(scope="module")
def eraser():
    return tiny_eraser()


def _lora(eraser, targets=None, r: int = 2, alpha: float = 2.0, fill: float = 0.01) -> ForgetPatch:
    gen = eraser.generator
    targets = targets or gen.lora_target_modules()[:2]
    modules = dict(gen.named_modules())
    tensors = {}
    for t in targets:
        w = getattr(modules[t], "base_layer", modules[t]).weight
        tensors[f"{t}.lora_A.weight"] = torch.full((r, w[0].numel()), fill)
        tensors[f"{t}.lora_B.weight"] = torch.full((w.shape[0], r), fill)
    meta = {"generator_family": gen.family, "base_fingerprint": patch_state(gen)["base_fingerprint"]}
    return ForgetPatch("lora", tensors, meta, {"r": r, "lora_alpha": alpha, "target_modules": sorted(targets)})


def _delta(eraser, names) -> ForgetPatch:
    params = dict(eraser.generator.named_parameters())
    tensors = {n: torch.full_like(params[n], 0.01) for n in names}
    meta = {"generator_family": eraser.generator.family,
            "base_fingerprint": patch_state(eraser.generator)["base_fingerprint"]}
    return ForgetPatch("delta", tensors, meta)


def _resign(folder: Path, tensors: dict) -> None:
    """Rewrite the tensor file and its sha256 in the metadata (what an attacker would do)."""
    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists() else "delta_model.safetensors"
    save_file(tensors, str(folder / name))
    meta = json.loads((folder / "forget_patch.json").read_text())
    meta["files"] = {name: sha256_file(folder / name)}
    meta.pop("patch_id", None)
    (folder / "forget_patch.json").write_text(json.dumps(meta))


def test_a_well_formed_patch_applies_and_changes_the_output(eraser, tmp_path):
    folder = _lora(eraser).save_pretrained(tmp_path / "p")
    ws = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=torch.Generator().manual_seed(0)))
    before = eraser.synthesize(ws)
    patch = eraser.apply_patch(folder)
    try:
        assert not torch.equal(before, eraser.synthesize(ws))
    finally:
        eraser.remove_patch(patch)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_tensors_are_refused(eraser, tmp_path, bad):
    patch = _lora(eraser)
    folder = patch.save_pretrained(tmp_path / "p")
    tensors = {k: v.clone() for k, v in patch.tensors.items()}
    next(iter(tensors.values()))[0, 0] = bad
    _resign(folder, tensors)
    with pytest.raises(PatchError, match="NaN or Inf"):
        ForgetPatch.from_pretrained(folder)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.bool, torch.int64])
def test_non_float_tensors_are_refused(eraser, tmp_path, dtype):
    patch = _lora(eraser)
    folder = patch.save_pretrained(tmp_path / "p")
    _resign(folder, {k: v.to(dtype) for k, v in patch.tensors.items()})
    with pytest.raises(PatchError, match="floating point"):
        ForgetPatch.from_pretrained(folder)


@pytest.mark.parametrize("alpha", ["NaN", "Infinity", "-Infinity", "0", "-2", "true", '"2"', "1e300"])
def test_bad_lora_alpha_is_refused(eraser, tmp_path, alpha):
    folder = _lora(eraser).save_pretrained(tmp_path / "p")
    text = (folder / "adapter_config.json").read_text()
    (folder / "adapter_config.json").write_text(text.replace('"lora_alpha": 2.0', f'"lora_alpha": {alpha}'))
    with pytest.raises(PatchError, match="lora_alpha"):
        ForgetPatch.from_pretrained(folder)


@pytest.mark.parametrize("r", [3, 1, 0, -1, 2.0, True])
def test_rank_disagreeing_with_the_tensors_is_refused(eraser, tmp_path, r):
    folder = _lora(eraser).save_pretrained(tmp_path / "p")
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["r"] = r
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(PatchError, match="rank|r must be"):
        ForgetPatch.from_pretrained(folder)


def test_lora_targets_in_the_mapping_network_are_refused_at_apply_time(eraser, tmp_path):
    mapping = [n for n, m in eraser.generator.named_modules() if n.startswith("mapping.fc")][:1]
    folder = _lora(eraser, targets=mapping).save_pretrained(tmp_path / "p")
    patch = ForgetPatch.from_pretrained(folder)
    with pytest.raises(PatchError, match="not synthesis layers"):
        eraser.apply_patch(patch)
    assert not eraser.applied_patches


def test_delta_patch_on_mapping_parameters_is_refused_and_leaves_weights_untouched(eraser, tmp_path):
    name = "mapping.fc0.weight"
    before = dict(eraser.generator.named_parameters())[name].detach().clone()
    folder = _delta(eraser, [name]).save_pretrained(tmp_path / "p")
    with pytest.raises(PatchError, match="not synthesis parameters"):
        eraser.apply_patch(folder)
    assert torch.equal(dict(eraser.generator.named_parameters())[name], before)


def test_delta_patch_on_synthesis_parameters_applies(eraser, tmp_path):
    name = eraser.generator.full_finetune_parameters()[0]
    patch = eraser.apply_patch(_delta(eraser, [name]).save_pretrained(tmp_path / "p"))
    eraser.remove_patch(patch)


def test_lora_whose_product_overflows_is_refused_at_apply_time(eraser, tmp_path):
    patch = _lora(eraser, fill=1e30)
    with pytest.raises(PatchError, match="non-finite"):
        eraser.apply_patch(patch)
    assert not eraser.applied_patches


def test_files_linked_from_outside_the_patch_folder_are_refused(eraser, tmp_path):
    folder = _lora(eraser).save_pretrained(tmp_path / "p")
    outside = tmp_path / "elsewhere.safetensors"
    os.replace(folder / "adapter_model.safetensors", outside)
    (folder / "adapter_model.safetensors").symlink_to(outside)
    with pytest.raises(PatchError, match="outside the patch folder|symbolic link"):
        ForgetPatch.from_pretrained(folder)


def test_a_hugging_face_cache_snapshot_with_links_into_its_blobs_loads(eraser, tmp_path):
    src = _lora(eraser).save_pretrained(tmp_path / "p")
    repo = tmp_path / "hub" / "models--someone--forget-patch"
    snap = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in src.iterdir():
        blob = repo / "blobs" / sha256_file(f)
        blob.write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    assert ForgetPatch.from_pretrained(snap).patch_id == ForgetPatch.from_pretrained(src).patch_id


def test_a_snapshot_linking_into_another_repos_blobs_is_refused(eraser, tmp_path):
    src = _lora(eraser).save_pretrained(tmp_path / "p")
    hub = tmp_path / "hub"
    snap = hub / "models--a--b" / "snapshots" / "r1"
    other = hub / "models--c--d" / "blobs"
    snap.mkdir(parents=True)
    other.mkdir(parents=True)
    for f in src.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(other / f.name)
    with pytest.raises(PatchError, match="outside the patch folder|symbolic link"):
        ForgetPatch.from_pretrained(snap)


# -- code books ----------------------------------------------------------------------------------------------


def _book(path: Path, threshold="0.6", codes=None, descriptors=None) -> Path:
    tensors = {"codes": torch.randn(3, 8) if codes is None else codes,
               "descriptors": torch.rand(3, 4) if descriptors is None else descriptors}
    save_file(tensors, str(path), metadata={"format": FORMAT, "descriptor": "test", "threshold": threshold})
    return path


def _describe(images):
    return np.zeros((images.shape[0], 4))


def test_a_well_formed_code_book_loads(tmp_path):
    book = CodeBook.load(_book(tmp_path / "b.safetensors"), describe=_describe)
    assert len(book) == 3 and book.threshold == pytest.approx(0.6)


@pytest.mark.parametrize("threshold", ["nan", "inf", "-1", "0", "1e9", "abc"])
def test_code_book_threshold_must_be_a_finite_number_in_range(tmp_path, threshold):
    with pytest.raises(CheckpointError):
        CodeBook.load(_book(tmp_path / "b.safetensors", threshold=threshold), describe=_describe)


@pytest.mark.parametrize("which", ["codes", "descriptors"])
def test_code_book_with_non_finite_values_is_refused(tmp_path, which):
    bad = torch.randn(3, 8) if which == "codes" else torch.rand(3, 4)
    bad[1, 1] = math.nan
    with pytest.raises(CheckpointError, match="finite"):
        CodeBook.load(_book(tmp_path / "b.safetensors", **{which: bad}), describe=_describe)


def test_code_book_with_integer_codes_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="floating point"):
        CodeBook.load(_book(tmp_path / "b.safetensors", codes=torch.ones(3, 8, dtype=torch.int64)),
                      describe=_describe)
