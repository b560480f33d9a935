"""Security: malicious checkpoints are refused before any of their code runs, with the offending global named."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

from ckpt_writers import (
    Evil,
    Persistent,
    module_state,
    official_names,
    tiny_generator,
    to_persistent,
    write_nvidia_pickle,
)
from guide_unlearn.checkpoints import NVIDIA_PICKLE_POLICY, load_torch_file, read_nvidia_pickle, scan_pickle
from guide_unlearn.errors import CheckpointError, GuideUnlearnError, UnsafeCheckpointError
from guide_unlearn.pipelines.loading import load_generator


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    """A file that a payload would create; every test asserts it does not exist afterwards."""
    return tmp_path / "PWNED"


def _write(path: Path, obj, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def test_reduce_calling_os_system_is_refused_and_named(tmp_path, sentinel):
    path = _write(tmp_path / "evil.pkl", {"G_ema": Evil(os.system, f"touch {sentinel}")})
    with pytest.raises(UnsafeCheckpointError, match=r"'posix\.system'|'nt\.system'"):
        load_generator(path)
    assert not sentinel.exists()


def test_reduce_calling_subprocess_is_refused_and_named(tmp_path, sentinel):
    path = _write(tmp_path / "evil.pkl", {"G_ema": Evil(subprocess.call, ["touch", str(sentinel)])})
    with pytest.raises(UnsafeCheckpointError, match=r"'subprocess\.call'"):
        read_nvidia_pickle(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("func", [builtins.exec, builtins.eval])
def test_reduce_calling_exec_or_eval_is_refused_and_named(tmp_path, sentinel, func):
    code = f"open({str(sentinel)!r}, 'w').write('x')"
    path = _write(tmp_path / "evil.pkl", {"G_ema": Evil(func, code)}, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match=rf"'builtins\.{func.__name__}'"):
        read_nvidia_pickle(path)
    assert not sentinel.exists()


def test_payload_hidden_deep_inside_a_legitimate_persistence_object_is_refused(tmp_path, sentinel):
    g = tiny_generator()
    with official_names():
        g_ema = to_persistent(g)
        # bury the payload in synthesis.b8.conv0's state, among real tensors
        b8 = g_ema.state["_modules"]["synthesis"].state["_modules"]["b8"]
        b8.state["_modules"]["conv0"].state["activation"] = Evil(os.system, f"touch {sentinel}")
    path = write_nvidia_pickle(tmp_path / "deep.pkl", g, g_ema_override=g_ema)
    with pytest.raises(UnsafeCheckpointError, match=r"system"):
        load_generator(path)
    assert not sentinel.exists()


def test_module_src_is_never_executed_and_a_malformed_object_fails_typed(tmp_path, sentinel):
    src = f"open({str(sentinel)!r}, 'w').write('executed')\nclass Generator: pass\n"
    with official_names():
        bogus = Persistent("Generator", {"note": "no module state"}, module_src=src)
    g = tiny_generator()
    path = write_nvidia_pickle(tmp_path / "src.pkl", g, module_src=src, g_ema_override=bogus)
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    assert not isinstance(info.value, UnsafeCheckpointError)  # its globals are the legitimate ones
    assert "no torch module state" in str(info.value)
    assert not sentinel.exists()


def test_legitimate_module_src_with_side_effects_loads_without_running(tmp_path, sentinel):
    src = f"open({str(sentinel)!r}, 'w').write('executed')\n"
    g = tiny_generator()
    path = write_nvidia_pickle(tmp_path / "ok.pkl", g, module_src=src)
    loaded = load_generator(path)
    assert torch.equal(loaded.state_dict()["synthesis.b4.const"], g.state_dict()["synthesis.b4.const"])
    assert not sentinel.exists()


def test_gadget_inside_an_allowed_module_family_is_refused(tmp_path, sentinel):
    np_testing = pytest.importorskip("numpy.testing._private.utils")
    code = f"open({str(sentinel)!r}, 'w').write('x')"
    path = _write(tmp_path / "np.pkl", {"G_ema": Evil(np_testing.runstring, code, {})})
    with pytest.raises(UnsafeCheckpointError, match=r"numpy\.testing\._private\.utils\.runstring"):
        read_nvidia_pickle(path)
    assert not sentinel.exists()


def test_torch_loader_outside_the_allow_list_is_refused(tmp_path, sentinel):
    inner = tmp_path / "inner.pt"
    inner.write_bytes(pickle.dumps(Evil(os.system, f"touch {sentinel}")))
    path = _write(tmp_path / "t.pkl", {"G_ema": Evil(torch.load, str(inner))})
    with pytest.raises(UnsafeCheckpointError, match=r"'torch\.serialization\.load'"):
        read_nvidia_pickle(path)
    assert not sentinel.exists()


def test_storage_bytes_that_are_a_malicious_pickle_are_refused(tmp_path, sentinel):
    payload = pickle.dumps(Evil(os.system, f"touch {sentinel}"), protocol=2)
    path = _write(tmp_path / "storage.pkl", {"G_ema": Evil(torch.storage._load_from_bytes, payload)})
    with pytest.raises(UnsafeCheckpointError, match=r"system"):
        read_nvidia_pickle(path)
    assert not sentinel.exists()


def test_torch_zip_whose_data_pkl_imports_outside_the_allow_list_is_refused(tmp_path, sentinel):
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {"w": torch.zeros(2)}, "args": Evil(os.system, f"touch {sentinel}")}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"system"):
        load_torch_file(path)
    with pytest.raises(UnsafeCheckpointError):
        load_generator(path)
    assert not sentinel.exists()


def test_refusal_is_a_package_error():
    assert issubclass(UnsafeCheckpointError, CheckpointError)
    assert issubclass(UnsafeCheckpointError, GuideUnlearnError)


def test_scan_resolves_memoised_stack_global_names():
    data = pickle.dumps([Evil(os.getcwd), Evil(os.getcwd)], protocol=4)  # second one uses BINGET memo refs
    with pytest.raises(UnsafeCheckpointError, match=r"'posix\.getcwd'|'nt\.getcwd'"):
        scan_pickle(data, NVIDIA_PICKLE_POLICY)


def test_scan_lists_the_globals_of_a_legitimate_pickle(tmp_path):
    path = write_nvidia_pickle(tmp_path / "ok.pkl", tiny_generator())
    found = set(scan_pickle(path.read_bytes(), NVIDIA_PICKLE_POLICY))
    assert "torch_utils.persistence._reconstruct_persistent_obj" in found
    assert "torch._utils._rebuild_parameter" in found
    assert "torch.storage._load_from_bytes" in found


def test_training_classes_become_inert_stubs(tmp_path):
    from collections import OrderedDict

    from guide_unlearn.adapters.stylegan2.layers import FullyConnectedLayer

    with official_names() as off:
        dec = off.OSGDecoder()  # EG3D: a plain (non-persistent) training.* module holding a torch Sequential
        dec.net = torch.nn.Sequential(torch.nn.Softplus())
        dec.net._modules = OrderedDict([("0", to_persistent(FullyConnectedLayer(2, 3))), ("1", torch.nn.Softplus()),
                                        ("2", to_persistent(FullyConnectedLayer(3, 4)))])
        root = module_state(torch.nn.Module(), {"decoder": dec})
        data = pickle.dumps({"G_ema": Persistent("TriPlaneGenerator", root)})
    path = tmp_path / "tri.pkl"
    path.write_bytes(data)
    from guide_unlearn.checkpoints import load_nvidia_module

    mod = load_nvidia_module(path)
    assert mod.class_name == "TriPlaneGenerator"
    assert set(mod.state_dict) == {"decoder.net.0.weight", "decoder.net.0.bias", "decoder.net.2.weight",
                                   "decoder.net.2.bias"}
    assert mod.state_dict["decoder.net.2.weight"].shape == (4, 3)


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
def test_tensor_with_backward_hooks_is_refused(tmp_path):
    from collections import OrderedDict

    hooks = OrderedDict(a=set)  # an allowed callable, but hooks must never be attached
    storage = torch.zeros(2).storage()  # typed, as in torch 1.x pickles
    evil = Evil(torch._utils._rebuild_tensor_v2, storage, 0, (2,), (1,), False, hooks)
    path = _write(tmp_path / "hooks.pkl", {"G_ema": evil})
    with pytest.raises(UnsafeCheckpointError, match="backward hooks"):
        read_nvidia_pickle(path)


def test_build_on_a_non_stub_object_is_refused(tmp_path):
    class Obj:
        def __reduce__(self):
            return (set, ([1],), {"x": 1})  # BUILD on a set instance

    path = _write(tmp_path / "build.pkl", {"G_ema": Obj()})
    with pytest.raises(UnsafeCheckpointError, match="state of a set"):
        read_nvidia_pickle(path)


def test_numpy_scalars_in_kwargs_load_as_python_numbers(tmp_path):
    import numpy as np

    g = tiny_generator()
    with official_names():
        top = {"_init_args": (), "_init_kwargs": {"z_dim": np.int64(32), "w_dim": 32, "c_dim": 0,
                                                  "img_resolution": 16, "img_channels": 3,
                                                  "mapping_kwargs": {"num_layers": 2},
                                                  "synthesis_kwargs": {"channel_base": 256, "channel_max": 32}},
               "scale": np.float32(0.5)}
        g_ema = to_persistent(g, top_extra=top)
    path = write_nvidia_pickle(tmp_path / "np.pkl", g, g_ema_override=g_ema)
    from guide_unlearn.checkpoints import load_nvidia_module

    mod = load_nvidia_module(path)
    assert mod.init_kwargs["z_dim"] == 32 and type(mod.init_kwargs["z_dim"]) is int
    assert mod.attributes["scale"] == 0.5


def test_truncated_network_pickle_gives_typed_error(tmp_path):
    path = write_nvidia_pickle(tmp_path / "full.pkl", tiny_generator())
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_generator(cut)


def test_plain_pickle_without_networks_says_what_it_holds(tmp_path):
    path = _write(tmp_path / "list.pkl", [1, 2, 3])
    with pytest.raises(CheckpointError, match="holds a list"):
        load_generator(path)


def test_scan_reads_bytes_without_touching_the_filesystem(tmp_path, sentinel):
    data = pickle.dumps(Evil(os.system, f"touch {sentinel}"))
    with pytest.raises(UnsafeCheckpointError):
        scan_pickle(io.BytesIO(data), NVIDIA_PICKLE_POLICY)
    assert not sentinel.exists()
