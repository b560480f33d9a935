"""Classes 5 and 6: malformed inputs give GuideUnlearnError subclasses (the CLI exits 2), and formats are told
apart by their full signatures (a safetensors file whose header length starts with byte 0x80 loads)."""

from __future__ import annotations

import json
import struct
import sys

import pytest
import torch
from safetensors.torch import save_file

from ckpt_writers import official_names, to_persistent, write_nvidia_pickle
from guide_unlearn.checkpoints import detect_format
from guide_unlearn.cli import main
from guide_unlearn.errors import CheckpointError, PatchError
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.pipelines.loading import load_generator
from guide_unlearn.testing import tiny_generator
from hostile import Asm, write


@pytest.fixture(scope="module")
def gen():
    return tiny_generator("stylegan2")


def test_safetensors_whose_header_length_starts_with_0x80_loads(tmp_path, gen):
    sd = {k: v.contiguous() for k, v in gen.state_dict().items()}
    config = {k: v for k, v in gen.config.items() if not k.startswith("_")}
    path = tmp_path / "g.safetensors"
    for pad in range(512):
        save_file(sd, str(path), metadata={"format": "stylegan2-nvidia", "config": json.dumps(config),
                                           "pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    head = path.read_bytes()[:8]
    assert head[0] == 0x80 and struct.unpack("<Q", head)[0] < 1 << 20
    assert detect_format(path).kind == "safetensors"
    loaded = load_generator(path)
    z = torch.randn(1, gen.z_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded(z, noise_mode="const"), gen(z, noise_mode="const"))


def test_a_truncated_pickle_is_still_told_apart(tmp_path):
    path = write(tmp_path / "t.pkl", Asm().empty_dict().stop()[:-1])
    with pytest.raises(CheckpointError, match="truncated"):
        detect_format(path)


@pytest.mark.parametrize("value", ["abc", [1, 2], {"x": 1}, None, 10 ** 30, 2.5])
def test_network_pickle_kwargs_of_the_wrong_type_give_a_checkpoint_error(tmp_path, gen, value):
    with official_names():
        E = sys.modules["dnnlib.util"].EasyDict
        kw = E(z_dim=value, w_dim=gen.w_dim, c_dim=0, img_resolution=gen.img_resolution, img_channels=3,
               mapping_kwargs=E(num_layers=gen.config.mapping_layers), synthesis_kwargs=E())
        path = write_nvidia_pickle(tmp_path / "g.pkl", gen, g_ema_override=to_persistent(
            gen, top_extra={"_init_kwargs": kw, "_init_args": ()}))
    with pytest.raises(CheckpointError):
        load_generator(path)


@pytest.mark.parametrize("edit", [
    lambda m: m.update(files="not a dict"),
    lambda m: m.update(files={"adapter_model.safetensors": 7}),
    lambda m: m.update(base_fingerprint=["x"]),
    lambda m: m.update(format_version=True),
])
def test_malformed_patch_metadata_gives_a_patch_error(tmp_path, gen, edit):
    t = gen.lora_target_modules()[0]
    w = dict(gen.named_modules())[t].weight
    patch = ForgetPatch("lora", {f"{t}.lora_A.weight": torch.zeros(1, w[0].numel()),
                                 f"{t}.lora_B.weight": torch.zeros(w.shape[0], 1)},
                        {"generator_family": "stylegan2", "base_fingerprint": "sha256:0"},
                        {"r": 1, "lora_alpha": 1.0, "target_modules": [t]})
    folder = patch.save_pretrained(tmp_path / "p")
    meta = json.loads((folder / "forget_patch.json").read_text())
    edit(meta)
    (folder / "forget_patch.json").write_text(json.dumps(meta))
    with pytest.raises(PatchError):
        ForgetPatch.from_pretrained(folder)


def test_the_cli_exits_2_on_a_hostile_file(tmp_path, capsys):
    path = write(tmp_path / "evil.pkl", Asm().np_dtype("V16").stop())
    assert main(["info", str(path)]) == 2
    assert "error" in capsys.readouterr().err


# -- the newer kinds: every malformed value is a typed error before it is used ---------------------------------
def _tiny_patch(gen) -> ForgetPatch:
    t = gen.lora_target_modules()[0]
    w = dict(gen.named_modules())[t].weight
    return ForgetPatch("lora", {f"{t}.lora_A.weight": torch.zeros(1, w[0].numel()),
                                f"{t}.lora_B.weight": torch.zeros(w.shape[0], 1)},
                       {"generator_family": "stylegan2", "base_fingerprint": "sha256:0"},
                       {"r": 1, "lora_alpha": 1.0, "target_modules": [t]})


@pytest.mark.parametrize("history, why", [
    ({"step": [0, 1], "loss": [1.0]}, "as many points"),  # the report's figure code zips the series
    ({"step": list(range(20_000)), "loss": [0.5] * 20_000}, "list of 0..10000"),
    ({"step": [0], "loss": ["x"]}, "expected a number"),
    ({"step": [0], "loss": {"a": 1}}, "expected a list"),
    ("a string", "expected an object"),
])
def test_malformed_loss_histories_never_reach_the_report(tmp_path, gen, history, why):
    folder = _tiny_patch(gen).save_pretrained(tmp_path / "p")
    meta = json.loads((folder / "forget_patch.json").read_text())
    meta["loss_history"] = history
    (folder / "forget_patch.json").write_text(json.dumps(meta))
    with pytest.raises(PatchError, match=why):
        ForgetPatch.from_pretrained(folder)


@pytest.mark.parametrize("edit, why", [
    (lambda m: m.update(final_losses={"loss": "low"}), "expected a number"),
    (lambda m: m.update(requests=[{"final_losses": {}}]), "missing request_id"),
    (lambda m: m.update(requests="everyone"), "expected a list"),
    (lambda m: m.update(audit={"metrics": [1]}), "expected an object"),
    (lambda m: m.update(base_merged="abc"), "expected a list"),
    (lambda m: m.update(kind=["lora"]), "expected a string"),
    (lambda m: m.update(base_name="x" * 5000), "expected a string of at most"),
])
def test_malformed_patch_metadata_values_are_typed_errors(tmp_path, gen, edit, why):
    folder = _tiny_patch(gen).save_pretrained(tmp_path / "p")
    meta = json.loads((folder / "forget_patch.json").read_text())
    edit(meta)
    (folder / "forget_patch.json").write_text(json.dumps(meta))
    with pytest.raises(PatchError, match=why):
        ForgetPatch.from_pretrained(folder)


@pytest.mark.parametrize("edit, why", [
    (lambda r: r.update(merged_patches="x"), "expected a list"),
    (lambda r: r.update(merged_patches=[{"kind": "lora"}]), "missing patch_id"),
    (lambda r: r.update(merged_patches=[{"patch_id": "../etc"}]), "matching"),
    (lambda r: r.update(base_fingerprint=7), "expected a string"),
    (lambda r: r.update(files={"a/b": "0" * 64}), "matching"),
    (lambda r: r.pop("base_fingerprint"), "missing base_fingerprint"),
])
def test_malformed_lineage_records_are_typed_errors(tmp_path, gen, edit, why):
    folder = tmp_path / "g"
    gen.save_pretrained(str(folder))
    record = json.loads((folder / "guide_unlearn.json").read_text())
    edit(record)
    (folder / "guide_unlearn.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=why):
        load_generator(folder)


@pytest.mark.parametrize("name, content, why", [
    ("r.csv", b"request_id,photo\na,\xff.jpg\n", "UTF-8"),
    ("r.csv", b"request_id,photo\na,x\x00.jpg\n", "NUL"),
    ("r.csv", b"request_id,photo\na," + b"x" * 10_000 + b"\n", "readable CSV"),
    ("r.csv", b"request_id,photo\na,x.jpg,extra\n", "more fields"),
    ("r.csv", b'request_id,photo\n"a,x.jpg\n', "readable CSV|more fields|request id"),
    ("r.jsonl", b'{"request_id": "a", "photos": 5}\n', "expected"),
    ("r.jsonl", b'{"request_id": "a", "photos": [' + b"[" * 100 + b"]" * 100 + b"]}\n", "nested deeper"),
    ("r.jsonl", b'{"request_id": "a", "photo": "' + b"x" * 5000 + b'"}\n', "expected"),
    ("r.jsonl", b"\xff\n", "UTF-8"),
])
def test_malformed_request_lists_are_typed_errors(tmp_path, name, content, why):
    from guide_unlearn.errors import InputError
    from guide_unlearn.pipelines.request_lists import read_requests

    with pytest.raises(InputError, match=why):
        read_requests(write(tmp_path / name, content))


def test_request_photos_outside_the_lists_folder_fail_their_request_alone(tmp_path):
    from guide_unlearn.pipelines.request_lists import read_requests

    (tmp_path / "list").mkdir()
    (tmp_path / "someone_else.jpg").write_bytes(b"x")
    (tmp_path / "list" / "mine.jpg").write_bytes(b"x")
    path = write(tmp_path / "list" / "r.csv", b"request_id,photo\na,../someone_else.jpg\nb,mine.jpg\nc,/etc/hostname\n")
    requests = {r.request_id: r for r in read_requests(path)}
    assert "outside" in requests["a"].problem and "outside" in requests["c"].problem
    assert requests["b"].problem is None and requests["b"].photos == ((tmp_path / "list" / "mine.jpg").resolve(),)
