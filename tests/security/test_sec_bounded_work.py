"""Class 3: small hostile files end in a typed error in bounded time and memory — shared references, deep
nesting, attacker-chosen sizes, absurd declared architectures, special files."""

from __future__ import annotations

import json
import os
import pickle
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from ckpt_writers import official_names, to_persistent, write_nvidia_pickle
from guide_unlearn.checkpoints import detect_format, load_torch_file, read_nvidia_pickle
from guide_unlearn.checkpoints.policy import TORCH_LEGACY_MAGIC
from guide_unlearn.errors import CheckpointError, GuideUnlearnError, PatchError
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.pipelines.loading import load_generator
from guide_unlearn.testing import tiny_generator
from hostile import Asm, nested_json, rewrite_zip, safetensors_bytes, torch_bytes, write


@pytest.fixture(scope="module")
def gen():
    return tiny_generator("stylegan2")


LIMIT_S = 60.0  # generous for a loaded 2-core CI machine; the unbounded versions take hours or exhaust memory


def _timed(fn, limit: float = LIMIT_S):
    start = time.perf_counter()
    with pytest.raises(GuideUnlearnError) as info:
        fn()
    assert time.perf_counter() - start < limit
    return info.value


def _dag(depth: int):
    x = [1]
    for _ in range(depth):
        x = [x, x]
    return x  # 2**depth leaves, pickled in a few hundred bytes


@pytest.mark.parametrize("where", ["_init_kwargs", "attribute"])
def test_shared_references_that_expand_exponentially_are_refused(tmp_path, gen, where):
    with official_names():
        extra = {"_init_kwargs": {"z_dim": _dag(40)}} if where == "_init_kwargs" else {"tree": _dag(40)}
        path = write_nvidia_pickle(tmp_path / "g.pkl", gen, g_ema_override=to_persistent(gen, top_extra=extra))
    assert path.stat().st_size < 1 << 20
    err = _timed(lambda: load_generator(path))
    assert isinstance(err, CheckpointError) and "expands" in str(err)


def test_deeply_nested_tuple_as_dict_key_is_refused_before_hashing(tmp_path):
    a = Asm().empty_dict().empty_tuple()
    for _ in range(100_000):
        a.tuple1()
    data = a.none().setitem().stop()
    err = _timed(lambda: read_nvidia_pickle(write(tmp_path / "k.pkl", data)))
    assert "nested deeper" in str(err)


def test_deeply_nested_tuple_key_in_a_torch_file_is_refused_before_torch_reads_it(tmp_path):
    a = Asm(2).empty_dict().empty_tuple()
    for _ in range(100_000):
        a.tuple1()
    evil = a.none().setitem().stop()
    data = rewrite_zip(torch_bytes({}), lambda n, d: (n, evil if n.endswith("data.pkl") else d))
    assert "nested deeper" in str(_timed(lambda: load_torch_file(write(tmp_path / "k.pt", data))))


def test_tuple_keys_a_few_levels_deep_still_load(tmp_path):
    key = ((1, 2), ("a", (3.5,)))
    assert read_nvidia_pickle(write(tmp_path / "ok.pkl", pickle.dumps({key: 1}, protocol=4))) == {key: 1}


def test_deeply_nested_values_are_refused_when_converted(tmp_path, gen):
    deep: list = []
    for _ in range(200):
        deep = [deep]
    with official_names():
        path = write_nvidia_pickle(tmp_path / "g.pkl", gen,
                                   g_ema_override=to_persistent(gen, top_extra={"_init_kwargs": {"z_dim": deep}}))
    assert "nested" in str(_timed(lambda: load_generator(path)))


def test_rereading_one_shared_dict_many_times_hits_the_work_budget(tmp_path):
    a = Asm().empty_dict().put(0).mark()
    for i in range(40_000):
        a.int(i).int(i)
    a.setitems().pop()
    for _ in range(40_000):
        a.glob("training.networks", "Thing").empty_tuple().newobj().get(0).build().pop()
    data = a.none().stop()
    err = _timed(lambda: read_nvidia_pickle(write(tmp_path / "w.pkl", data)))
    assert "budget" in str(err) or "size allows" in str(err)


def test_legacy_storage_declaring_more_elements_than_the_file_holds_is_refused(tmp_path):
    parts = [Asm(2).int(TORCH_LEGACY_MAGIC).stop(), Asm(2).int(1001).stop(), Asm(2).empty_dict().stop(),
             Asm(2).mark().str("storage").glob("torch", "FloatStorage").str("0").str("cpu").int(10 ** 12)
             .none().tuple().op(b"Q").stop(),
             Asm(2).mark().str("0").op(b"l").stop()]
    stream = b"".join(parts) + b"\0" * 16
    data = Asm().glob("torch.storage", "_load_from_bytes").bytes(stream).tuple1().reduce().stop()
    err = _timed(lambda: read_nvidia_pickle(write(tmp_path / "s.pkl", data)))
    assert "storage declares" in str(err)


def test_zero_stride_view_of_huge_shape_is_refused_in_a_torch_file(tmp_path):
    path = write(tmp_path / "v.pt", torch_bytes({"w": torch.ones(1).expand(1 << 40)}))
    assert "view" in str(_timed(lambda: load_torch_file(path)))


def test_zero_stride_view_of_huge_shape_is_refused_in_a_network_pickle(tmp_path):
    path = write(tmp_path / "v.pkl", pickle.dumps({"w": torch.ones(1).expand(1 << 40)}, protocol=4))
    assert "view" in str(_timed(lambda: read_nvidia_pickle(path)))


@pytest.mark.parametrize("key,value", [("z_dim", 50_000), ("channel_max", 10 ** 9), ("mapping_layers", 10 ** 6),
                                       ("img_resolution", 1 << 40), ("w_dim", -3), ("mapping_lr_multiplier", 1e400)])
def test_model_folder_declaring_an_absurd_architecture_is_refused_before_building(tmp_path, gen, key, value):
    folder = tmp_path / "m"
    gen.save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    _timed(lambda: load_generator(folder))


def test_model_folder_whose_config_disagrees_with_its_tensors_is_refused(tmp_path, gen):
    folder = tmp_path / "m"
    gen.save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config["z_dim"] = 4000  # within bounds, but the weights are for another z_dim
    (folder / "config.json").write_text(json.dumps(config))
    assert "do not match" in str(_timed(lambda: load_generator(folder)))


def test_network_pickle_whose_kwargs_declare_an_absurd_size_is_refused(tmp_path, gen):
    with official_names():
        import sys

        E = sys.modules["dnnlib.util"].EasyDict
        kw = E(z_dim=50_000, w_dim=gen.w_dim, c_dim=0, img_resolution=gen.img_resolution, img_channels=3,
               mapping_kwargs=E(num_layers=gen.config.mapping_layers),
               synthesis_kwargs=E(channel_base=10 ** 9, channel_max=10 ** 9))
        path = write_nvidia_pickle(tmp_path / "g.pkl", gen, g_ema_override=to_persistent(
            gen, top_extra={"_init_kwargs": kw, "_init_args": ()}))
    _timed(lambda: load_generator(path))


def test_nested_json_in_a_safetensors_header_is_refused(tmp_path):
    header = {"__metadata__": {"format": "pt"}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4],
                                                      "x": json.loads(nested_json(30))}}
    raw = safetensors_bytes(header, b"\0" * 4).replace(nested_json(30).encode(), nested_json(100_000).encode())
    path = write(tmp_path / "n.safetensors", raw[:0] + len(raw[8:]).to_bytes(8, "little") + raw[8:])
    assert "nested" in str(_timed(lambda: detect_format(path)))


def test_nested_config_json_of_a_model_folder_is_refused(tmp_path, gen):
    folder = tmp_path / "m"
    gen.save_pretrained(str(folder))
    (folder / "config.json").write_text('{"_class_name": "StyleGAN2Generator", "x": ' + nested_json(50_000) + "}")
    assert "nested" in str(_timed(lambda: load_generator(folder)))


@pytest.mark.parametrize("special", ["/proc/self/pagemap", "/dev/zero"])
def test_special_files_are_refused_as_checkpoints(tmp_path, special):
    if not os.path.exists(special):
        pytest.skip(f"{special} is not available on this system")
    link = tmp_path / "model.pkl"
    link.symlink_to(special)
    _timed(lambda: load_generator(link))


def test_special_file_as_a_model_folder_config_is_refused(tmp_path, gen):
    folder = tmp_path / "m"
    gen.save_pretrained(str(folder))
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to("/dev/zero")
    _timed(lambda: load_generator(folder))


def _lora_patch_folder(tmp_path: Path, gen, r: int = 2) -> Path:
    targets = gen.lora_target_modules()[:2]
    tensors = {}
    modules = dict(gen.named_modules())
    for t in targets:
        w = modules[t].weight
        tensors[f"{t}.lora_A.weight"] = torch.zeros(r, w[0].numel())
        tensors[f"{t}.lora_B.weight"] = torch.zeros(w.shape[0], r)
    patch = ForgetPatch("lora", tensors, {"generator_family": "stylegan2", "base_fingerprint": "sha256:0"},
                        {"r": r, "lora_alpha": float(r), "target_modules": targets})
    return patch.save_pretrained(tmp_path / "patch")


def test_patch_declaring_a_rank_of_millions_is_refused_without_allocating(tmp_path, gen):
    folder = _lora_patch_folder(tmp_path, gen)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["r"] = 5_000_000
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    assert isinstance(_timed(lambda: ForgetPatch.from_pretrained(folder)), PatchError)


def test_patch_metadata_nested_deeply_is_refused(tmp_path, gen):
    folder = _lora_patch_folder(tmp_path, gen)
    text = (folder / "forget_patch.json").read_text()
    (folder / "forget_patch.json").write_text(text.replace('"base_fingerprint"',
                                                           '"x": ' + nested_json(20_000) + ', "base_fingerprint"', 1))
    assert "nested" in str(_timed(lambda: ForgetPatch.from_pretrained(folder)))


def test_patch_tensor_file_linked_to_a_device_is_refused(tmp_path, gen):
    folder = _lora_patch_folder(tmp_path, gen)
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.safetensors").symlink_to("/dev/zero")
    assert isinstance(_timed(lambda: ForgetPatch.from_pretrained(folder)), PatchError)


def test_ordered_dict_round_trips_in_a_torch_file(tmp_path):
    sd = OrderedDict(a=torch.ones(2), b=torch.zeros(3))
    assert list(load_torch_file(write(tmp_path / "o.pt", torch_bytes(sd)))) == ["a", "b"]
