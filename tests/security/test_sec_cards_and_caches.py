"""Model cards (YAML), the hub cache and the checkpoint cache: small hostile files end in a typed error in bounded
time and memory, and nothing outside the cache or the patch folder is read."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from guide_unlearn.card import read_card_block, refreshed_card
from guide_unlearn.checkpoints import CheckpointSource, cached_path
from guide_unlearn.errors import CheckpointError, GuideUnlearnError, PatchError
from guide_unlearn.hub import resolve_patch_folder
from guide_unlearn.patch import ForgetPatch
from hostile import nested_json, yaml_alias_bomb
from test_sec_fuzz import _run_forked

COMMIT = "c" * 40


def _patch() -> ForgetPatch:
    return ForgetPatch("lora", {"m.lora_A.weight": torch.ones(1, 2), "m.lora_B.weight": torch.ones(2, 1)},
                       {"generator_family": "stylegan2", "base_fingerprint": "sha256:0", "base_name": "demo"},
                       {"r": 1, "lora_alpha": 1.0, "target_modules": ["m"]})


def _bounded(fn) -> str:
    """Run ``fn`` in a forked child with the fuzz harness's memory and time bounds -> 'typed' / 'ok' / failure."""
    status, detail, _ = _run_forked(fn)
    assert status in ("typed", "ok"), f"{status}: {detail}"
    return status


# -- model cards ------------------------------------------------------------------------------------------------
def test_a_yaml_alias_bomb_card_is_refused_without_expanding_it(tmp_path):
    folder = _patch().save_pretrained(tmp_path / "p")
    (folder / "README.md").write_text(yaml_alias_bomb())
    assert len(yaml_alias_bomb()) < 1000
    with pytest.raises(PatchError, match="alias"):
        read_card_block(folder / "README.md")
    assert _bounded(lambda: read_card_block(folder / "README.md")) == "typed"


def test_info_of_a_patch_with_an_alias_bomb_card_exits_2(tmp_path, capsys):
    from guide_unlearn.cli import main

    folder = _patch().save_pretrained(tmp_path / "p")
    (folder / "README.md").write_text(yaml_alias_bomb())
    assert main(["info", str(folder)]) == 2
    assert "alias" in capsys.readouterr().err


@pytest.mark.parametrize("header, why", [
    ("guide_unlearn: " + nested_json(500), "nested deeper"),
    ("guide_unlearn:\n  request_ids: 5", "expected a list"),
    ("guide_unlearn:\n  final_losses: {loss: [1, 2]}", "expected a number"),
    ("license: [a, b]", "expected a string"),
    ("guide_unlearn: !!python/object/apply:os.system ['true']", "not valid YAML"),
    ("- a\n- b", "not a mapping"),
    ("guide_unlearn: {card_format: x, card_version: 99999999999999999999999}", "expected an integer"),
])
def test_malformed_card_headers_are_typed_errors(tmp_path, header, why):
    folder = _patch().save_pretrained(tmp_path / "p")
    (folder / "README.md").write_text(f"---\n{header}\n---\n# card\n")
    with pytest.raises(PatchError, match=why):
        read_card_block(folder / "README.md")


def test_a_card_that_is_not_utf8_is_a_typed_error(tmp_path):
    folder = _patch().save_pretrained(tmp_path / "p")
    (folder / "README.md").write_bytes(b"---\nlicense: \xff\xfe\n---\n")
    with pytest.raises(PatchError, match="UTF-8"):
        read_card_block(folder / "README.md")


@pytest.mark.parametrize("special", ["fifo", "dev_zero", "outside"])
def test_a_card_that_is_a_fifo_or_a_link_out_is_refused_without_reading_it(tmp_path, special):
    folder = _patch().save_pretrained(tmp_path / "p")
    card = folder / "README.md"
    card.unlink()
    if special == "fifo":
        os.mkfifo(card)
    elif special == "dev_zero":
        os.symlink("/dev/zero", card)
    else:
        (tmp_path / "elsewhere.md").write_text("---\nlicense: mit\n---\n")
        os.symlink(tmp_path / "elsewhere.md", card)
    assert _bounded(lambda: read_card_block(card)) == "typed"
    for read in (read_card_block, lambda c: refreshed_card(c, {"kind": "lora"})):
        with pytest.raises(PatchError):
            read(card)


def test_a_good_card_still_reads(tmp_path):
    folder = _patch().save_pretrained(tmp_path / "p")
    assert read_card_block(folder / "README.md")["kind"] == "lora"


# -- the hub cache ----------------------------------------------------------------------------------------------
@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hub"


def _cache_patch(cache: Path, tmp_path: Path, repo_id: str = "user/repo") -> Path:
    """The patch laid out in the hub cache as huggingface_hub writes it. -> the repo folder."""
    files = {p.name: p.read_bytes() for p in _patch().save_pretrained(tmp_path / "src").iterdir()}
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return repo


def test_a_cached_patch_still_loads(hub_cache, tmp_path):
    _cache_patch(hub_cache, tmp_path)
    assert ForgetPatch.from_pretrained("user/repo").kind == "lora"


@pytest.mark.parametrize("ref", ["fifo", "dev_zero", "traversal", "huge"])
def test_hostile_hub_refs_are_typed_errors_without_hanging(hub_cache, tmp_path, ref):
    repo = _cache_patch(hub_cache, tmp_path)
    main = repo / "refs" / "main"
    main.unlink()
    if ref == "fifo":
        os.mkfifo(main)
    elif ref == "dev_zero":
        os.symlink("/dev/zero", main)
    elif ref == "traversal":  # a "commit" naming a folder outside the cache, holding a patch
        _patch().save_pretrained(tmp_path / "evil")
        main.write_text(os.path.relpath(tmp_path / "evil", repo / "snapshots"))
    else:
        main.write_text(COMMIT + " " * (1 << 20))
    assert _bounded(lambda: ForgetPatch.from_pretrained("user/repo")) == "typed"
    with pytest.raises(PatchError):
        ForgetPatch.from_pretrained("user/repo")


def test_a_snapshot_folder_linked_out_of_the_cache_is_refused(hub_cache, tmp_path):
    repo = _cache_patch(hub_cache, tmp_path)
    evil = _patch().save_pretrained(tmp_path / "evil")
    other = "d" * 40
    os.symlink(evil, repo / "snapshots" / other)
    (repo / "refs" / "main").write_text(other)
    with pytest.raises(PatchError, match="link"):
        ForgetPatch.from_pretrained("user/repo")


def test_a_local_subfolder_linked_out_of_the_folder_is_refused(tmp_path):
    folder = tmp_path / "patches"
    folder.mkdir()
    _patch().save_pretrained(tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", folder / "p1")
    with pytest.raises(PatchError, match="outside"):
        resolve_patch_folder(folder, subfolder="p1")


def test_a_malformed_hub_listing_is_a_typed_error(monkeypatch, hub_cache):
    from huggingface_hub import HfApi

    class Entry:  # what a hostile mirror's tree listing could parse into
        path, size = None, "big"

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("guide_unlearn.hub.hub_unreachable", lambda *a, **k: None)
    monkeypatch.setattr(HfApi, "list_repo_tree", lambda self, *a, **k: iter([Entry()]))
    with pytest.raises(PatchError, match="listing is malformed"):
        ForgetPatch.from_pretrained("user/repo")


# -- the checkpoint cache ---------------------------------------------------------------------------------------
@pytest.fixture
def ckpt_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GUIDE_UNLEARN_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "cache" / "models--guide-unlearn--thing"
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "snapshots" / COMMIT / "thing.pkl").write_bytes(b"\x80\x04K\x01.")
    return repo


SOURCE = CheckpointSource("thing", "thing.pkl")


def test_a_cached_checkpoint_is_found(ckpt_cache):
    assert cached_path(SOURCE) == ckpt_cache / "snapshots" / COMMIT / "thing.pkl"


@pytest.mark.parametrize("hostile", ["fifo_ref", "dev_zero_ref", "file_linked_out", "file_is_fifo"])
def test_hostile_checkpoint_cache_entries_are_typed_errors(ckpt_cache, tmp_path, hostile):
    main, snap_file = ckpt_cache / "refs" / "main", ckpt_cache / "snapshots" / COMMIT / "thing.pkl"
    if hostile.endswith("_ref"):
        main.unlink()
        os.mkfifo(main) if hostile == "fifo_ref" else os.symlink("/dev/zero", main)
    else:
        snap_file.unlink()
        if hostile == "file_is_fifo":
            os.mkfifo(snap_file)
        else:
            (tmp_path / "secret.pkl").write_bytes(b"\x80\x04K\x02.")
            os.symlink(tmp_path / "secret.pkl", snap_file)
    assert _bounded(lambda: cached_path(SOURCE)) == "typed"
    with pytest.raises(CheckpointError):
        cached_path(SOURCE)


def test_a_checkpoints_folder_entry_linked_out_of_it_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (tmp_path / "secret.pkl").write_bytes(b"\x80\x04K\x02.")
    os.symlink(tmp_path / "secret.pkl", folder / "thing.pkl")
    monkeypatch.setenv("GUIDE_UNLEARN_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("GUIDE_UNLEARN_CHECKPOINTS", str(folder))
    with pytest.raises(CheckpointError, match="outside"):
        cached_path(SOURCE)


def test_every_error_above_is_typed():
    assert issubclass(PatchError, GuideUnlearnError) and issubclass(CheckpointError, GuideUnlearnError)
