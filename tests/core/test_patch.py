"""ForgetPatch: format, safety, application to the right base only, stacking, merging."""

import json
import os

import pytest
import torch

from guide_unlearn import EraseConfig, ForgetPatch
from guide_unlearn.errors import PatchError, PatchMismatchError, PatchStateError, SaveError
from guide_unlearn.testing import tiny_eraser

CFG = EraseConfig(iterations=6)


@pytest.fixture(scope="module")
def made():
    eraser = tiny_eraser()
    g = torch.Generator().manual_seed(7)
    ws = eraser.generator.mapping(torch.randn(3, eraser.generator.z_dim, generator=g)).detach()
    p1 = eraser.erase(ws[:1], CFG, measure=False).patch
    p2 = eraser.erase(ws[1:2], CFG.replace(lora_rank=2, lora_alpha=2.0,
                                           lora_targets=("synthesis.b8.conv0", "synthesis.b16.conv1")),
                      measure=False).patch
    return eraser, ws, p1, p2


def _render(eraser, ws):
    return eraser.synthesize(ws)


def test_save_then_load_reproduces_outputs_bit_for_bit(made, tmp_path):
    eraser, ws, p1, _ = made
    eraser.apply_patch(p1)
    direct = _render(eraser, ws)
    eraser.remove_patch(p1)
    p1.save_pretrained(tmp_path / "p")
    loaded = ForgetPatch.from_pretrained(tmp_path / "p")
    eraser.apply_patch(loaded)
    again = _render(eraser, ws)
    eraser.remove_patch(loaded)
    assert torch.equal(direct, again)
    assert loaded.patch_id == p1.patch_id
    assert sorted(os.listdir(tmp_path / "p")) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                                                  "forget_patch.json"]


def test_patch_metadata_has_no_person_data(made, tmp_path):
    _, ws, p1, _ = made
    p1.save_pretrained(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "forget_patch.json").read_text())
    assert {"base_fingerprint", "generator_family", "erase_config", "final_losses", "library_version"} <= set(meta)
    text = json.dumps(meta)
    assert "w_u" not in text and "w_source" not in text
    assert set(p1.tensors) == {k for k in p1.tensors if ".lora_A." in k or ".lora_B." in k}


def test_a_patch_for_another_base_model_is_refused(made):
    _, _, p1, _ = made
    other = tiny_eraser(seed=1)
    with pytest.raises(PatchMismatchError, match="base weights"):
        other.apply_patch(p1)
    assert other.applied_patches == []


def test_applying_the_same_patch_twice_is_refused(made):
    eraser, _, p1, _ = made
    eraser.apply_patch(p1)
    try:
        with pytest.raises(PatchStateError, match="already applied"):
            eraser.apply_patch(p1)
    finally:
        eraser.remove_patch(p1)


def test_removing_a_patch_that_is_not_applied_is_refused(made):
    eraser, _, p1, _ = made
    with pytest.raises(PatchStateError, match="not applied"):
        eraser.remove_patch(p1)


def test_two_patches_of_different_rank_and_targets_stack(made):
    eraser, ws, p1, p2 = made
    base = _render(eraser, ws)
    eraser.apply_patch(p1)
    only1 = _render(eraser, ws)
    eraser.apply_patch(p2)
    both = _render(eraser, ws)
    assert [p.patch_id for p in eraser.applied_patches] == [p1.patch_id, p2.patch_id]
    eraser.remove_patch(p1)
    only2 = _render(eraser, ws)
    eraser.remove_patch(p2)
    assert torch.equal(_render(eraser, ws), base)
    assert not torch.allclose(both, only1) and not torch.allclose(both, only2)


def test_merging_keeps_outputs_and_the_base_fingerprint(made):
    eraser = tiny_eraser()
    _, ws, p1, p2 = made
    eraser.apply_patch(p1)
    eraser.apply_patch(p2)
    stacked = _render(eraser, ws)
    records = eraser.merge_patches()
    assert [r["patch_id"] for r in records] == [p1.patch_id, p2.patch_id]
    assert (_render(eraser, ws) - stacked).abs().max() < 1e-5
    assert eraser.applied_patches == []
    with pytest.raises(PatchStateError):
        eraser.apply_patch(p1)  # already merged
    # a new patch made for the same base still applies after the merge
    p3 = tiny_eraser().erase(ws[2:3], CFG, measure=False).patch
    eraser.apply_patch(p3)


def test_tampered_tensor_file_is_refused(made, tmp_path):
    _, _, p1, _ = made
    p1.save_pretrained(tmp_path / "p")
    f = tmp_path / "p" / "adapter_model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(PatchError, match="sha256"):
        ForgetPatch.from_pretrained(tmp_path / "p")


def test_missing_file_is_reported(made, tmp_path):
    _, _, p1, _ = made
    p1.save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "adapter_config.json").unlink()
    with pytest.raises(PatchError, match="missing"):
        ForgetPatch.from_pretrained(tmp_path / "p")


def test_a_pickle_inside_the_folder_is_refused(made, tmp_path):
    _, _, p1, _ = made
    p1.save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "adapter_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(PatchError, match="pickle"):
        ForgetPatch.from_pretrained(tmp_path / "p")


def test_oversized_metadata_is_refused(made, tmp_path):
    _, _, p1, _ = made
    p1.save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "forget_patch.json").write_text(" " * (2 << 20))
    with pytest.raises(PatchError, match="limit"):
        ForgetPatch.from_pretrained(tmp_path / "p")


def test_a_full_disk_leaves_nothing_half_written(made, tmp_path, monkeypatch):
    _, _, p1, _ = made
    import pathlib

    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    with pytest.raises(SaveError, match="No space left"):
        p1.save_pretrained(tmp_path / "p")
    assert os.listdir(tmp_path) == []


def test_a_patch_with_mismatched_shapes_is_refused(made):
    eraser, _, p1, _ = made
    bad = ForgetPatch(p1.kind, {k: v[..., :1].clone() if "lora_A" in k else v for k, v in p1.tensors.items()},
                      dict(p1.metadata), dict(p1.lora_config))
    with pytest.raises(PatchMismatchError):
        eraser.apply_patch(bad)
    assert eraser.applied_patches == []


def test_weighted_combination_is_exactly_the_weighted_sum_of_deltas(made):
    eraser, ws, p1, p2 = made
    base = _render(eraser, ws)
    combined = ForgetPatch.combine([p1, p2], [0.5, 2.0])
    assert combined.lora_config["r"] == 4 + 2
    eraser.apply_patch(combined)
    via_combined = _render(eraser, ws)
    eraser.remove_patch(combined)
    # the same function, built from the two patches' own deltas
    from guide_unlearn import lora as L

    eraser.apply_patch(p1)
    eraser.apply_patch(p2)
    model = eraser.generator
    with torch.no_grad():
        for _, layer in L.lora_layers(model):
            for name, w in ((p1.adapter_name, 0.5), (p2.adapter_name, 2.0)):
                if name in layer.lora_B:
                    layer.lora_B[name].weight.mul_(w)
    via_weights = _render(eraser, ws)
    eraser.remove_patch(p1)
    eraser.remove_patch(p2)
    assert (via_combined - via_weights).abs().max() < 1e-5
    assert not torch.allclose(via_combined, base)


def test_patches_can_be_switched_off_without_removing_them(made):
    eraser, ws, p1, _ = made
    base = _render(eraser, ws)
    eraser.apply_patch(p1)
    try:
        with eraser.patches_disabled():
            assert torch.equal(_render(eraser, ws), base)
        assert not torch.equal(_render(eraser, ws), base)
    finally:
        eraser.remove_patch(p1)
