"""The writing rule: a command writes only inside the output it was given, never follows a link it finds there (its
own bookkeeping files included), never deletes what it did not write, and updates an artefact all or nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from guide_unlearn.errors import GuideUnlearnError, PatchError, SaveError
from guide_unlearn.io import atomic_write_bytes, replace_files
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.pipelines import queue
from guide_unlearn.pipelines.queue import MANIFEST, read_manifest, run_queue
from guide_unlearn.pipelines.request_lists import Request
from hostile import yaml_alias_bomb

MODEL = "tiny-stylegan2"


def _requests(*ids):  # requests that fail alone at once (no photos): the queue runs without training anything
    return [Request(i, ()) for i in ids]


@pytest.fixture
def finished(tmp_path) -> Path:
    out = tmp_path / "out"
    assert run_queue(_requests("a", "b"), MODEL, out, progress=False)["failed"] == 2
    return out


@pytest.fixture
def user_file(tmp_path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.json").write_text("the user's own file")
    return outside / "a.json"


def _untouched(user_file: Path) -> bool:
    return user_file.read_text() == "the user's own file" and len(list(user_file.parent.iterdir())) == 1


def test_a_results_folder_that_is_a_link_out_of_out_is_never_followed_when_resuming(finished, user_file):
    os.symlink(user_file.parent, finished / ".results")
    with pytest.raises(SaveError, match="symbolic link"):
        run_queue(_requests("a", "b"), MODEL, finished, progress=False)
    assert _untouched(user_file)


def test_a_result_file_that_is_a_link_is_neither_deleted_nor_rewritten(finished, user_file):
    (finished / ".results").mkdir()
    os.symlink(user_file, finished / ".results" / "a.json")
    with pytest.raises(SaveError, match="symbolic link"):
        run_queue(_requests("a", "b"), MODEL, finished, progress=False)
    assert _untouched(user_file) and (finished / ".results" / "a.json").is_symlink()


def test_a_manifest_that_is_a_link_is_never_read_or_replaced(finished, user_file):
    user_file.write_text((finished / MANIFEST).read_text())  # even a link to a valid manifest
    (finished / MANIFEST).unlink()
    os.symlink(user_file, finished / MANIFEST)
    before = user_file.read_text()
    for overwrite in (False, True):
        with pytest.raises(SaveError, match="symbolic link"):
            run_queue(_requests("a", "b"), MODEL, finished, overwrite=overwrite, progress=False)
    assert user_file.read_text() == before


def test_a_patch_folder_that_is_a_link_out_of_out_is_not_written_into(finished, tmp_path):
    elsewhere = tmp_path / "someone_elses_patch"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("keep")
    os.symlink(elsewhere, finished / "a")
    with pytest.raises(SaveError, match="symbolic link|did not write"):
        run_queue(_requests("a", "b"), "tiny-eg3d", finished, overwrite=True, progress=False)
    assert [p.name for p in elsewhere.iterdir()] == ["notes.txt"] and (finished / "a").is_symlink()


def test_a_temporary_looking_link_is_not_followed_by_the_cleanup(finished, user_file):
    os.symlink(user_file.parent, finished / ".a.tmp-0badc0de")
    run_queue(_requests("a", "b"), MODEL, finished, progress=False)
    assert _untouched(user_file)


def test_overwrite_removes_only_what_the_other_queue_wrote(finished, tmp_path):
    ForgetPatch("lora", {"m.lora_A.weight": torch.ones(1, 2), "m.lora_B.weight": torch.ones(2, 1)},
                {"generator_family": "stylegan2", "base_fingerprint": "sha256:0"},
                {"r": 1, "lora_alpha": 1.0, "target_modules": ["m"]}).save_pretrained(finished / "my-own-patch")
    with pytest.raises(SaveError, match="did not write.*my-own-patch"):
        run_queue(_requests("a", "b"), "tiny-eg3d", finished, overwrite=True, progress=False)
    assert (finished / "my-own-patch" / "forget_patch.json").is_file()


def test_an_interrupted_run_leaves_a_manifest_with_every_request(tmp_path, monkeypatch):
    real = queue._run_unit
    calls = []

    def interrupted(eraser, unit, *args, **kwargs):
        calls.append(unit.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(eraser, unit, *args, **kwargs)

    monkeypatch.setattr(queue, "_run_unit", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_queue(_requests("a", "b", "c"), MODEL, out, progress=False)
    rows = read_manifest(out)
    assert [(r["request_id"], r["status"]) for r in rows] == [("a", "failed"), ("b", "pending"), ("c", "pending")]
    assert "run the same command again" in rows[1]["error"]
    monkeypatch.setattr(queue, "_run_unit", real)
    summary = run_queue(_requests("a", "b", "c"), MODEL, out, progress=False)  # the rerun finishes it
    assert summary["resumed"] and summary["pending"] == 0 and summary["failed"] == 3
    assert not (out / ".results").exists()


def test_writes_never_go_through_a_link(tmp_path, user_file):
    os.symlink(user_file, tmp_path / "picture.png")
    with pytest.raises(SaveError, match="symbolic link"):
        atomic_write_bytes(tmp_path / "picture.png", b"x", overwrite=True)
    assert _untouched(user_file)


def _patch_folder(tmp_path: Path) -> Path:
    patch = ForgetPatch("lora", {"m.lora_A.weight": torch.ones(1, 2), "m.lora_B.weight": torch.ones(2, 1)},
                        {"generator_family": "stylegan2", "base_fingerprint": "sha256:0"},
                        {"r": 1, "lora_alpha": 1.0, "target_modules": ["m"]})
    return patch.save_pretrained(tmp_path / "patch")


SUMMARY = {"protocol": "offline-v1", "metrics": {"id": 0.1}, "networks": {}, "date": "2026-01-01"}


def test_recording_an_audit_into_a_patch_with_a_hostile_card_changes_nothing(tmp_path):
    from guide_unlearn.pipelines.audit.report import record_audit

    folder = _patch_folder(tmp_path)
    (folder / "README.md").write_text(yaml_alias_bomb())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(PatchError, match="alias"):
        record_audit(folder, SUMMARY)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_recording_an_audit_replaces_metadata_and_card_together(tmp_path):
    from guide_unlearn.pipelines.audit.report import record_audit

    folder = _patch_folder(tmp_path)
    record_audit(folder, SUMMARY)
    assert json.loads((folder / "forget_patch.json").read_text())["audit"]["protocol"] == "offline-v1"
    assert "offline-v1" in (folder / "README.md").read_text()
    assert ForgetPatch.from_pretrained(folder).metadata["audit"]["metrics"] == {"id": 0.1}


def test_a_failed_rename_puts_the_files_already_replaced_back(tmp_path, monkeypatch):
    (tmp_path / "a").write_bytes(b"old a")
    (tmp_path / "b").write_bytes(b"old b")
    real, calls = os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2 and not str(src).startswith(str(tmp_path / ".a.bak")):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", second_fails)
    with pytest.raises(SaveError, match="nothing was changed"):
        replace_files(tmp_path, {"a": b"new a", "b": b"new b"})
    monkeypatch.setattr(os, "replace", real)
    assert (tmp_path / "a").read_bytes() == b"old a" and (tmp_path / "b").read_bytes() == b"old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_replace_files_refuses_a_link(tmp_path, user_file):
    os.symlink(user_file, tmp_path / "README.md")
    with pytest.raises(SaveError):
        replace_files(tmp_path, {"README.md": b"card"})
    assert _untouched(user_file)


def test_every_refusal_here_is_a_guide_unlearn_error():
    assert issubclass(SaveError, GuideUnlearnError) and issubclass(PatchError, GuideUnlearnError)


def test_a_folder_the_queue_did_not_write_in_a_units_place_is_never_replaced(finished):
    ForgetPatch("lora", {"m.lora_A.weight": torch.ones(1, 2), "m.lora_B.weight": torch.ones(2, 1)},
                {"generator_family": "stylegan2", "base_fingerprint": "sha256:0"},
                {"r": 1, "lora_alpha": 1.0, "target_modules": ["m"]}).save_pretrained(finished / "b")
    before = {p.name: p.read_bytes() for p in (finished / "b").iterdir()}
    rows = {r["request_id"]: r for r in read_manifest(finished)} if run_queue(
        [Request("a", ()), Request("b", (Path("/nonexistent.jpg"),))], MODEL, finished, progress=False) else {}
    assert "never replaced" in rows["b"]["error"]
    assert {p.name: p.read_bytes() for p in (finished / "b").iterdir()} == before
