"""Sharing patches on the hub: the model card, pulling by repo id from huggingface_hub's cache, pushing.

No hub is reachable here: pulls go through huggingface_hub's real snapshot_download against a cache laid out
exactly as huggingface_hub writes it (blobs/, snapshots/<commit>/ links, refs/); pushes run huggingface_hub up to
the commit it would send, with only the two HTTP calls (create_repo, create_commit) replaced.
"""

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard

from guide_unlearn import ForgetPatch
from guide_unlearn.errors import PatchError
from guide_unlearn.card import model_card
from guide_unlearn.hub import HubPatchNotFoundError
from guide_unlearn.hub_paths import is_hub_cache_link

C1 = "1" * 40
C2 = "2" * 40
AUDIT = {"protocol": "offline-v1", "metrics": {"id_similarity_drop": 0.31, "others_kept": 0.99},
         "networks": {"identity": "dlib"}, "date": "2026-11-30T12:00:00Z"}


def _patch(seed: int = 0, **meta) -> ForgetPatch:
    g = torch.Generator().manual_seed(seed)
    tensors = {"synthesis.b8.conv0.lora_A.weight": torch.randn(2, 18, generator=g),
               "synthesis.b8.conv0.lora_B.weight": torch.randn(4, 2, generator=g)}
    metadata = {"generator_family": "stylegan2", "base_fingerprint": "sha256:" + "ab" * 32, "base_name": "demo-faces",
                "method": "lora",
                "erase_config": {"full_finetune": False, "lr": 0.005, "iterations": 100, "progress": True},
                "final_losses": {"loss": 0.25, "local": 0.125}, "library_version": "0.1.0", **meta}
    return ForgetPatch("lora", tensors, metadata, {"r": 2, "lora_alpha": 2.0, "target_modules": ["synthesis.b8.conv0"]})


def _cache_repo(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], ref: str = "main") -> Path:
    """Lay out ``files`` ({path in repo: bytes}) as huggingface_hub's cache does. -> the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap = repo / "snapshots" / commit
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snap


def _files(patch: ForgetPatch, tmp: Path, sub: str = "") -> dict[str, bytes]:
    folder = patch.save_pretrained(tmp / f"saved-{patch.patch_id}")
    return {(f"{sub}/" if sub else "") + p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh huggingface_hub cache per test (HF_HOME in a temporary folder)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf_home" / "hub"


# -- the card -----------------------------------------------------------------------------------------------------
def test_the_saved_card_loads_with_modelcard_and_has_the_hub_fields(tmp_path):
    folder = _patch(requests=[{"request_id": "req-7f3a", "final_losses": {"loss": 0.3}}]).save_pretrained(tmp_path / "p")
    data = ModelCard.load(folder / "README.md").data.to_dict()
    assert data["library_name"] == "guide_unlearn"
    assert {"unlearning", "identity-unlearning", "lora", "guide"} <= set(data["tags"])
    assert "base_model" not in data  # 'demo-faces' is a registry name, not a hub model id
    block = data["guide_unlearn"]
    assert block["card_format"] == "guide_unlearn.model_card" and block["card_version"] == 1
    assert block["base_name"] == "demo-faces" and block["base_fingerprint"] == "sha256:" + "ab" * 32
    assert block["preset"] == "lora" and block["erase_config_digest"].startswith("sha256:")
    assert block["request_ids"] == ["req-7f3a"]
    assert block["final_losses"] == {"loss": 0.25, "local": 0.125}
    assert "audit" not in block


def test_the_card_carries_the_audit_summary_when_the_patch_was_audited(tmp_path):
    folder = _patch(audit=AUDIT).save_pretrained(tmp_path / "p")
    card = ModelCard.load(folder / "README.md")
    assert card.data.to_dict()["guide_unlearn"]["audit"] == AUDIT
    assert "offline-v1" in card.text and "0.31" in card.text


def test_the_recipe_digest_ignores_runtime_knobs_and_follows_the_recipe():
    a = model_card({**_meta(), "erase_config": {"lr": 0.005, "progress": True}}).data.to_dict()
    b = model_card({**_meta(), "erase_config": {"lr": 0.005, "progress": False}}).data.to_dict()
    c = model_card({**_meta(), "erase_config": {"lr": 0.001, "progress": True}}).data.to_dict()
    assert a["guide_unlearn"]["erase_config_digest"] == b["guide_unlearn"]["erase_config_digest"]
    assert a["guide_unlearn"]["erase_config_digest"] != c["guide_unlearn"]["erase_config_digest"]


def _meta():
    return {"kind": "lora", "patch_id": "0" * 16, "format_version": 1, "base_name": "x"}


def test_the_licence_defaults_to_the_base_models_and_the_caller_can_set_it(tmp_path):
    nc = {"license": "other", "license_name": "guide-unlearn-demo-faces-nc", "license_link": "LICENSE"}
    default = ModelCard.load(_patch(base_license=nc).save_pretrained(tmp_path / "a") / "README.md").data.to_dict()
    assert {k: default[k] for k in nc} == nc
    chosen = _patch(base_license=nc).save_pretrained(tmp_path / "b", card={"license": "cc-by-nc-4.0"})
    assert ModelCard.load(chosen / "README.md").data.to_dict()["license"] == "cc-by-nc-4.0"
    with pytest.raises(PatchError, match="license_name"):
        _patch().save_pretrained(tmp_path / "c", card={"license": "other"})
    assert not (tmp_path / "c").exists()


def test_demo_faces_patches_record_the_non_commercial_licence_of_their_base():
    from guide_unlearn.pipelines.registry import base_license

    assert base_license("demo-faces")["license"] == "other"
    assert base_license("tiny-stylegan2") is None and base_license(None) is None


def test_base_model_is_written_only_for_a_hub_model_id(tmp_path):
    folder = _patch().save_pretrained(tmp_path / "p", card={"base_model": "someone/eg3d-ffhq"})
    assert ModelCard.load(folder / "README.md").data.to_dict()["base_model"] == "someone/eg3d-ffhq"
    with pytest.raises(PatchError, match="hub model id"):
        _patch().save_pretrained(tmp_path / "q", card={"base_model": "eg3d-ffhq"})


def test_the_card_says_it_holds_no_photo_code_or_name_and_shows_how_to_apply(tmp_path):
    text = ModelCard.load(_patch().save_pretrained(tmp_path / "p") / "README.md").text
    assert "no photo" in text and "no latent code" in text and "no name" in text
    code = text.split("```python\n")[1].split("```")[0].strip().splitlines()
    assert len(code) == 3 and "apply_patch" in code[2]


# -- pulling ------------------------------------------------------------------------------------------------------
def test_a_cached_hub_patch_loads_offline_by_repo_id(tmp_path, cache):
    p = _patch()
    _cache_repo(cache, "user/repo", C1, _files(p, tmp_path))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    loaded = ForgetPatch.from_pretrained("user/repo")
    assert loaded.patch_id == p.patch_id
    assert all(torch.equal(loaded.tensors[k], p.tensors[k]) for k in p.tensors)


def test_a_revision_selects_that_snapshot(tmp_path, cache):
    old, new = _patch(0), _patch(1)
    _cache_repo(cache, "user/repo", C1, _files(old, tmp_path), ref="v1")
    _cache_repo(cache, "user/repo", C2, _files(new, tmp_path), ref="main")
    assert ForgetPatch.from_pretrained("user/repo").patch_id == new.patch_id
    assert ForgetPatch.from_pretrained("user/repo", revision="v1").patch_id == old.patch_id
    assert ForgetPatch.from_pretrained("user/repo", revision=C1).patch_id == old.patch_id


def test_a_subfolder_selects_one_of_several_patches_in_a_repo(tmp_path, cache):
    a, b = _patch(0), _patch(1)
    _cache_repo(cache, "user/patches", C1, {**_files(a, tmp_path, "person-a"), **_files(b, tmp_path, "person-b")})
    assert ForgetPatch.from_pretrained("user/patches", subfolder="person-b").patch_id == b.patch_id
    assert ForgetPatch.from_pretrained("user/patches", subfolder="person-a").patch_id == a.patch_id
    with pytest.raises(HubPatchNotFoundError, match="subfolder"):
        ForgetPatch.from_pretrained("user/patches")
    with pytest.raises(PatchError, match=r"\.\."):
        ForgetPatch.from_pretrained("user/patches", subfolder="../other")


def test_a_pinned_commit_already_cached_loads_without_the_offline_flag(tmp_path, cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(HfApi, "list_repo_tree", _no_network)
    monkeypatch.setattr(HfApi, "repo_info", _no_network)
    p = _patch()
    _cache_repo(cache, "user/repo", C1, _files(p, tmp_path))
    assert ForgetPatch.from_pretrained("user/repo", revision=C1).patch_id == p.patch_id


def _no_network(*args, **kwargs):
    raise AssertionError("this call must not reach the network")


def test_a_local_folder_wins_over_a_hub_id_of_the_same_spelling(tmp_path, cache, monkeypatch):
    local, remote = _patch(0), _patch(1)
    _cache_repo(cache, "user/repo", C1, _files(remote, tmp_path))
    monkeypatch.chdir(tmp_path)
    local.save_pretrained(Path("user") / "repo")
    assert ForgetPatch.from_pretrained("user/repo").patch_id == local.patch_id


def test_a_name_that_is_neither_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HubPatchNotFoundError) as e:
        ForgetPatch.from_pretrained("user/missing")
    msg = str(e.value)
    assert str(tmp_path / "user" / "missing") in msg and "hub repo 'user/missing'" in msg
    assert "HF_HUB_OFFLINE=1" in msg and "unset it" in msg
    with pytest.raises(HubPatchNotFoundError, match="not a hub repo id"):
        ForgetPatch.from_pretrained("no-such-folder")


def test_a_hub_repo_holding_a_pickle_is_refused(tmp_path, cache):
    files = _files(_patch(), tmp_path)
    _cache_repo(cache, "user/repo", C1, {**files, "pytorch_model.bin": b"\x80\x04K\x01."})
    with pytest.raises(PatchError, match="pickle"):
        ForgetPatch.from_pretrained("user/repo")


def test_a_hub_repo_with_oversized_json_is_refused(tmp_path, cache):
    files = _files(_patch(), tmp_path)
    meta = json.loads(files["forget_patch.json"])
    meta["padding"] = "x" * (1 << 20)
    _cache_repo(cache, "user/repo", C1, {**files, "forget_patch.json": json.dumps(meta).encode()})
    with pytest.raises(PatchError, match="over the 1048576-byte limit"):
        ForgetPatch.from_pretrained("user/repo")


def _listing(*entries):
    """A stand-in for the hub's tree listing (the HTTP call only): RepoFile entries as huggingface_hub parses them."""
    from huggingface_hub.hf_api import RepoFile

    def list_repo_tree(self, repo_id, path_in_repo=None, **kwargs):
        return iter([RepoFile(path=p, size=n, oid="0" * 40) for p, n in entries])
    return list_repo_tree


@pytest.mark.parametrize("name,size,why", [("p/model.pkl", 10, "pickle"), ("p/forget_patch.json", 2 << 20, "limit")])
def test_an_unsafe_file_on_the_hub_is_refused_before_anything_is_downloaded(monkeypatch, cache, name, size, why):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("guide_unlearn.hub.hub_unreachable", lambda *a, **k: None)  # as if the hub answered
    monkeypatch.setattr(HfApi, "list_repo_tree", _listing(("p/adapter_model.safetensors", 100), (name, size)))
    monkeypatch.setattr(HfApi, "repo_info", _no_network)
    with pytest.raises(PatchError, match=f"{why}.*nothing was downloaded"):
        ForgetPatch.from_pretrained("user/repo", subfolder="p")
    assert not cache.exists()


def test_an_unreachable_hub_falls_back_to_the_cached_snapshot(tmp_path, cache, monkeypatch):
    import httpx2

    def unreachable(self, *args, **kwargs):
        raise httpx2.ConnectError("Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("guide_unlearn.hub.hub_unreachable", lambda *a, **k: None)  # the probe passes, the listing fails
    monkeypatch.setattr(HfApi, "list_repo_tree", unreachable)
    monkeypatch.setattr(HfApi, "repo_info", _no_network)
    p = _patch()
    _cache_repo(cache, "user/repo", C1, _files(p, tmp_path))
    assert ForgetPatch.from_pretrained("user/repo").patch_id == p.patch_id


def test_a_hub_file_whose_bytes_differ_from_the_recorded_sha256_is_refused(tmp_path, cache):
    files = _files(_patch(), tmp_path)
    blob = bytearray(files["adapter_model.safetensors"])
    blob[-1] ^= 1
    _cache_repo(cache, "user/repo", C1, {**files, "adapter_model.safetensors": bytes(blob)})
    with pytest.raises(PatchError, match="sha256"):
        ForgetPatch.from_pretrained("user/repo")


def test_only_the_caches_own_links_into_its_blobs_are_followed(tmp_path, cache):
    files = _files(_patch(), tmp_path)
    snap = _cache_repo(cache, "user/repo", C1, files)
    assert is_hub_cache_link(snap / "forget_patch.json")
    outside = tmp_path / "elsewhere.safetensors"
    outside.write_bytes(files["adapter_model.safetensors"])
    (snap / "adapter_model.safetensors").unlink()
    os.symlink(outside, snap / "adapter_model.safetensors")
    assert not is_hub_cache_link(snap / "adapter_model.safetensors")
    with pytest.raises(PatchError, match="symbolic link"):
        ForgetPatch.from_pretrained("user/repo")


def test_a_linked_folder_inside_a_cached_snapshot_is_refused(tmp_path, cache):
    snap = _cache_repo(cache, "user/repo", C1, {"README.md": b"# empty"})
    _patch().save_pretrained(tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", snap / "p")
    with pytest.raises(PatchError, match="linked folder"):
        ForgetPatch.from_pretrained("user/repo", subfolder="p")


def test_a_symlink_in_a_local_patch_folder_is_refused(tmp_path):
    folder = _patch().save_pretrained(tmp_path / "p")
    real = tmp_path / "meta.json"
    (folder / "forget_patch.json").rename(real)
    os.symlink(real, folder / "forget_patch.json")
    with pytest.raises(PatchError, match="symbolic link"):
        ForgetPatch.from_pretrained(folder)


def test_an_eraser_applies_a_patch_by_repo_id(tmp_path, cache):
    from guide_unlearn import EraseConfig
    from guide_unlearn.testing import tiny_eraser

    eraser = tiny_eraser()
    ws = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=torch.Generator().manual_seed(3)))
    patch = eraser.erase(ws.detach(), EraseConfig(iterations=2), measure=False).patch
    _cache_repo(cache, "user/tiny", C1, _files(patch, tmp_path))
    applied = eraser.apply_patch("user/tiny")
    assert applied.patch_id == patch.patch_id and eraser.applied_patches == [applied]


# -- pushing ------------------------------------------------------------------------------------------------------
class _Sent:
    """Records the two HTTP calls huggingface_hub would make; everything before them is huggingface_hub's code."""

    def __init__(self, monkeypatch):
        self.repos, self.commits = [], []
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # as on a connected machine with a token
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")
        monkeypatch.setattr(HfApi, "create_repo", self.create_repo)
        monkeypatch.setattr(HfApi, "create_commit", self.create_commit)

    def create_repo(self, repo_id, **kwargs):
        from huggingface_hub import RepoUrl

        self.repos.append((repo_id, kwargs))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        from huggingface_hub import CommitInfo

        self.commits.append((repo_id, list(operations), kwargs))
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{C1}", commit_message="",
                          commit_description="", oid=C1)


def _op_bytes(op: CommitOperationAdd) -> bytes:
    with op.as_file() as f:
        return f.read()


def test_push_sends_the_patch_files_and_card_in_one_commit_to_a_private_repo(tmp_path, monkeypatch):
    sent = _Sent(monkeypatch)
    p = _patch()
    info = p.push_to_hub("user/patches", subfolder="person-a", commit_message="erase request req-1")
    assert info.oid == C1
    assert sent.repos == [("user/patches", {"private": True, "exist_ok": True, "repo_type": "model"})]
    (repo_id, ops, kwargs), = sent.commits
    assert repo_id == "user/patches" and kwargs["commit_message"] == "erase request req-1"
    assert all(isinstance(op, CommitOperationAdd) for op in ops)
    assert sorted(op.path_in_repo for op in ops) == ["person-a/README.md", "person-a/adapter_config.json",
                                                     "person-a/adapter_model.safetensors", "person-a/forget_patch.json"]
    local = _files(p, tmp_path)
    sent_bytes = {op.path_in_repo.split("/", 1)[1]: _op_bytes(op) for op in ops}
    for name in ("adapter_config.json", "adapter_model.safetensors", "forget_patch.json"):
        assert sent_bytes[name] == local[name]
    card = sent_bytes["README.md"].decode()
    assert 'ForgetPatch.from_pretrained("user/patches", subfolder="person-a")' in card


def test_a_pushed_patch_pulls_back_by_repo_id_and_subfolder(tmp_path, cache, monkeypatch):
    sent = _Sent(monkeypatch)
    p = _patch(seed=5)
    p.push_to_hub("user/patches", subfolder="person-a")
    _, ops, _ = sent.commits[0]
    _cache_repo(cache, "user/patches", C1, {op.path_in_repo: _op_bytes(op) for op in ops})
    assert ForgetPatch.from_pretrained("user/patches", subfolder="person-a").patch_id == p.patch_id


def test_push_refuses_a_name_that_is_not_a_repo_id(monkeypatch):
    sent = _Sent(monkeypatch)
    with pytest.raises(PatchError, match="repo id"):
        _patch().push_to_hub("not a repo")
    assert sent.repos == [] and sent.commits == []


# -- command line -------------------------------------------------------------------------------------------------
def test_cli_info_describes_a_hub_patch_and_its_card(tmp_path, cache, capsys):
    from guide_unlearn.cli import main

    p = _patch(audit=AUDIT)
    _cache_repo(cache, "user/repo", C1, _files(p, tmp_path))
    assert main(["info", "user/repo"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["patch_id"] == p.patch_id and out["card"]["audit"]["protocol"] == "offline-v1"


def test_cli_push_uploads_a_patch_folder(tmp_path, monkeypatch, capsys):
    from guide_unlearn.cli import main

    sent = _Sent(monkeypatch)
    folder = _patch().save_pretrained(tmp_path / "p")
    assert main(["push", str(folder), "user/patches", "--subfolder", "p1"]) == 0
    assert json.loads(capsys.readouterr().out)["commit"] == C1
    assert sent.repos[0][1]["private"] is True
    assert "p1/adapter_model.safetensors" in {op.path_in_repo for op in sent.commits[0][1]}


def test_a_patch_saved_by_the_erase_command_carries_its_model_card(tmp_path, capsys):
    from safetensors.torch import save_file

    from guide_unlearn.cli import main
    from guide_unlearn.testing import tiny_generator

    gen = tiny_generator()
    ws = gen.mapping(torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(2))).detach()
    save_file({"ws": ws.contiguous()}, str(tmp_path / "ws.safetensors"))
    assert main(["erase", "--latent", str(tmp_path / "ws.safetensors"), "--model", "tiny-stylegan2", "--out",
                 str(tmp_path / "patch"), "--iterations", "2", "--quiet"]) == 0
    block = ModelCard.load(tmp_path / "patch" / "README.md").data.to_dict()["guide_unlearn"]
    meta = json.loads((tmp_path / "patch" / "forget_patch.json").read_text())
    assert block["base_name"] == "tiny-stylegan2" and block["patch_id"] == meta["patch_id"]
    assert block["base_fingerprint"] == meta["base_fingerprint"] and block["final_losses"] == meta["final_losses"]
