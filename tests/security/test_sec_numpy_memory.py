"""Class 1: numpy globals in NVIDIA pickles admit plain numbers only; no crafted dtype, array or container fill
reaches numpy's C code."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from guide_unlearn.checkpoints import read_nvidia_pickle
from guide_unlearn.errors import CheckpointError, UnsafeCheckpointError
from hostile import Asm, write

STATE = (3, "<", None, None, None, -1, -1, 0)


def _load(tmp_path, data: bytes):
    return read_nvidia_pickle(write(tmp_path / "x.pkl", data))


def test_plain_numpy_arrays_and_scalars_load_with_their_values(tmp_path):
    value = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(2.5), "b": np.array([True, False])}
    out = _load(tmp_path, pickle.dumps(value, protocol=4))
    assert np.array_equal(out["a"], value["a"]) and out["a"].dtype == np.float32
    assert out["s"] == 2.5 and out["b"].tolist() == [True, False]


@pytest.mark.parametrize("state", [
    (3, "|", None, ("a", "b"), {"a": (np.dtype("u1"), 0), "b": (np.dtype("u1"), 4096)}, 2, 1, 16),  # fields
    (3, "<", (np.dtype("u1"), (1 << 20,)), None, None, -1, -1, 0),  # sub-array
    (3, "<", None, None, None, 1 << 20, -1, 0),  # element size larger than the type
    (3, "<", None, None, None, -1, -1, 63),  # flags (e.g. "holds objects")
])
def test_dtype_build_states_beyond_a_plain_number_are_refused(tmp_path, state):
    a = Asm().np_dtype("u1")
    try:
        a.plain(state)
    except TypeError:  # states holding dicts / dtypes: pickled by pickle itself below
        data = pickle.dumps(state, protocol=4)[2:-1]
        a.op(data)
    with pytest.raises((UnsafeCheckpointError, CheckpointError)):
        _load(tmp_path, a.build().stop())
    assert np.dtype("u1").itemsize == 1 and np.dtype("u1").fields is None  # the shared dtype was not touched


@pytest.mark.parametrize("code", ["O", "V16", "U8", "S4", "M8", "f4,i4", "(4)f4", "|O"])
def test_dtype_specs_other_than_plain_numbers_are_refused(tmp_path, code):
    with pytest.raises(UnsafeCheckpointError, match="dtype"):
        _load(tmp_path, Asm().np_dtype(code).stop())


def test_big_endian_dtype_state_is_refused(tmp_path):
    with pytest.raises(UnsafeCheckpointError):
        _load(tmp_path, Asm().np_dtype("f4", (3, ">", None, None, None, -1, -1, 0)).stop())


def test_ndarray_cannot_be_called_directly_on_a_buffer(tmp_path):
    # numpy.ndarray(shape, dtype, buffer, offset, strides): an arbitrary view over a small buffer
    a = Asm().glob("numpy", "ndarray").mark().plain((1 << 20,)).np_dtype("u1", STATE).bytes(b"x" * 8).int(0)
    data = a.plain((1,)).tuple().reduce().stop()
    with pytest.raises(UnsafeCheckpointError):
        _load(tmp_path, data)


def _array(a: Asm, shape: tuple, raw: bytes, code: str = "f4", fortran: bool = False) -> Asm:
    a.glob("numpy.core.multiarray", "_reconstruct").glob("numpy", "ndarray").plain((0,)).bytes(b"b").tuple3()
    a.reduce().mark().int(1).plain(shape).np_dtype(code, STATE).plain(fortran).bytes(raw).tuple().build()
    return a


@pytest.mark.parametrize("shape,raw", [((1 << 30,), b"\0" * 8), ((4, 4), b"\0" * 60), ((-1,), b"")])
def test_array_whose_shape_disagrees_with_its_bytes_is_refused(tmp_path, shape, raw):
    with pytest.raises(CheckpointError, match="numpy array"):
        _load(tmp_path, _array(Asm(), shape, raw).stop())


def test_array_state_with_an_object_dtype_is_refused(tmp_path):
    a = Asm().glob("numpy.core.multiarray", "_reconstruct").glob("numpy", "ndarray").plain((0,)).bytes(b"b")
    a.tuple3().reduce().mark().int(1).plain((2,)).np_dtype("O").false().bytes(b"\0" * 16).tuple().build()
    with pytest.raises(UnsafeCheckpointError):
        _load(tmp_path, a.stop())


def test_an_array_is_built_only_once(tmp_path):
    a = _array(Asm(), (2,), b"\0" * 8)
    a.mark().int(1).plain((4,)).np_dtype("f4", STATE).false().bytes(b"\0" * 16).tuple().build()
    with pytest.raises(UnsafeCheckpointError):
        _load(tmp_path, a.stop())


@pytest.mark.parametrize("target", ["stub", "array", "tuple"])
@pytest.mark.parametrize("opcode", ["setitem", "append", "additems"])
def test_container_fills_only_reach_containers_the_pickle_built(tmp_path, target, opcode):
    a = Asm()
    if target == "stub":
        a.glob("training.networks", "Thing").empty_tuple().newobj()
    elif target == "array":
        _array(a, (2,), b"\0" * 8)
    else:
        a.plain((1, 2))
    if opcode == "setitem":
        a.int(0).int(7).setitem()
    elif opcode == "append":
        a.int(7).append()
    else:
        a.mark().int(7).op(b"\x90")
    with pytest.raises(UnsafeCheckpointError, match="only dicts, lists and sets"):
        _load(tmp_path, a.stop())


def test_plain_containers_built_by_the_pickle_can_be_filled(tmp_path):
    data = pickle.dumps({"d": {1: 2}, "l": [1, 2], "s": {3}, "f": frozenset([4])}, protocol=4)
    assert _load(tmp_path, data) == {"d": {1: 2}, "l": [1, 2], "s": {3}, "f": frozenset([4])}
