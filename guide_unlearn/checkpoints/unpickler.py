"""The restricted unpickler for NVIDIA network pickles and the inert objects it builds (SPEC §3.1).

:class:`SafeUnpickler` resolves every admitted global to a replacement written here, never to the real one:

- ``torch_utils.persistence._reconstruct_persistent_obj`` -> :class:`PersistentStub` (class name and state;
  ``module_src`` is kept only as a hash and never executed);
- ``training.*`` classes and a few torch containers -> :class:`ObjectStub` subclasses that only record state;
- ``dnnlib`` EasyDicts -> :class:`AttrDict`;
- tensors / parameters / numpy values -> wrappers that validate their arguments;
- ``torch.storage._load_from_bytes`` -> a loader that scans the bytes with :func:`.policy.scan_torch_bytes` and
  then reads them with ``torch.load(weights_only=True)``.

Run it only on bytes :func:`.policy.scan_pickle` accepted; :func:`.nvidia.read_nvidia_pickle` does both.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, UnsafeCheckpointError
from .policy import NVIDIA_PICKLE_POLICY, STORAGE_BYTES_POLICY, PicklePolicy, _refuse, qualified_name, scan_torch_bytes

__all__ = ["AttrDict", "ObjectStub", "PersistentStub", "SafeUnpickler"]


# ----------------------------------------------------------------------------------------------------------------
# Inert stand-ins for everything an NVIDIA pickle builds.


class ObjectStub:
    """An object the pickle asked for, never created: its class name and the state handed to it.

    ``qualname`` is the pickle's global (``training.triplane.OSGDecoder``) or, for persistent objects,
    ``persistent:<class_name>``; ``state`` is the dict BUILD / the persistence meta gave it; ``args`` are the
    constructor arguments of a REDUCE / NEWOBJ.
    """

    qualname = "stub"

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slotstate) form
        if not isinstance(state, dict):
            raise CheckpointError(f"malformed pickle: {self.qualname} got a {type(state).__name__} state, not a dict")
        self.state.update(state)

    def __repr__(self) -> str:
        return f"<stub {self.qualname}>"


class PersistentStub(ObjectStub):
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` returns here: the class name and the
    module state; ``module_src`` is reduced to its sha256 and length and never executed."""

    def __init__(self, meta: Any):
        super().__init__()
        if not isinstance(meta, dict):
            raise CheckpointError(
                f"malformed persistence pickle: metadata is a {type(meta).__name__}, not a dict; the file is not an "
                "NVIDIA network pickle this library understands")
        missing = [k for k in ("type", "version", "module_src", "class_name", "state") if k not in meta]
        if missing:
            raise CheckpointError(f"malformed persistence pickle: metadata lacks {missing}")
        if (meta["type"] != "class" or not isinstance(meta["class_name"], str)
                or not isinstance(meta["module_src"], str)):
            raise CheckpointError("malformed persistence pickle: metadata is not a persistent class record")
        self.class_name: str = meta["class_name"]
        self.version = meta["version"]
        src = meta["module_src"].encode("utf-8", "replace")
        self.module_src_sha256 = hashlib.sha256(src).hexdigest()
        self.module_src_len = len(src)
        self.qualname = f"persistent:{self.class_name}"
        state = meta["state"]
        if state is not None:
            self.__setstate__(dict(state) if isinstance(state, dict) else state)


class AttrDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a dict whose keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: Any) -> None:  # EasyDict has no instance state beyond its items
        if state:
            raise CheckpointError("malformed pickle: EasyDict with instance state")


_STUB_CLASSES: dict[str, type] = {}


def _stub_class(qualified: str) -> type:
    cls = _STUB_CLASSES.get(qualified)
    if cls is None:
        cls = type(qualified.rpartition(".")[2] + "Stub", (ObjectStub,), {"qualname": qualified})
        _STUB_CLASSES[qualified] = cls
    return cls


def _validate_tensor_args(storage: Any, offset: Any, size: Any, stride: Any) -> None:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise CheckpointError(f"malformed pickle: tensor built on a {type(storage).__name__}, not a storage")
    ints = (offset, *size, *stride) if isinstance(size, (tuple, list, torch.Size)) and isinstance(
        stride, (tuple, list)) else None
    if ints is None or not all(isinstance(i, int) and not isinstance(i, bool) for i in ints):
        raise CheckpointError("malformed pickle: tensor offset / size / stride are not integers")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> torch.Tensor:
    _validate_tensor_args(storage, storage_offset, size, stride)
    if backward_hooks:
        raise UnsafeCheckpointError("refused a tensor that carries backward hooks (callables run during backward)")
    if metadata:
        raise UnsafeCheckpointError("refused a tensor that carries extra python metadata")
    try:
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride),
                                               bool(requires_grad), OrderedDict())
    except RuntimeError as exc:
        raise CheckpointError(f"malformed tensor in pickle ({exc}); the file is corrupted") from None


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None) -> nn.Parameter:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"malformed pickle: parameter built from a {type(data).__name__}")
    if backward_hooks:
        raise UnsafeCheckpointError("refused a parameter that carries backward hooks")
    if state:
        raise UnsafeCheckpointError("refused a parameter that carries extra python state")
    return nn.Parameter(data, requires_grad=bool(requires_grad))


def _load_storage_from_bytes(data: Any):
    """Replacement of ``torch.storage._load_from_bytes``: scan the bytes, then ``torch.load(weights_only=True)``."""
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError(f"malformed pickle: storage from a {type(data).__name__}, not bytes")
    scan_torch_bytes(bytes(data), STORAGE_BYTES_POLICY, where="tensor storage bytes")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(f"tensor storage bytes refused by torch's weights-only loader: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt bytes
        raise CheckpointError(f"corrupted tensor storage in pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise CheckpointError(f"malformed pickle: storage bytes hold a {type(storage).__name__}")
    return storage


def _np_scalar(dtype: Any, data: Any = None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafeCheckpointError("refused numpy scalar of object dtype (it would hold arbitrary objects)")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise CheckpointError("malformed numpy scalar in pickle")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str):
        raise CheckpointError("malformed numpy dtype in pickle")
    dt = np.dtype(spec)
    if dt.hasobject:
        raise UnsafeCheckpointError("refused numpy object dtype 'O' (it would hold arbitrary objects)")
    return dt


def _np_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not np.ndarray:
        raise UnsafeCheckpointError("refused numpy array reconstruction of a non-ndarray class")
    return np.ndarray((0,), dtype=np.uint8)


_REPLACEMENTS: dict[str, Any] = {
    "torch_utils.persistence._reconstruct_persistent_obj": PersistentStub,
    "dnnlib.util.EasyDict": AttrDict,
    "dnnlib.EasyDict": AttrDict,
    "collections.OrderedDict": OrderedDict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "torch.storage._load_from_bytes": _load_storage_from_bytes,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "numpy.core.multiarray.scalar": _np_scalar,
    "numpy._core.multiarray.scalar": _np_scalar,
    "numpy.dtype": _np_dtype,
    "numpy.core.multiarray._reconstruct": _np_reconstruct,
    "numpy._core.multiarray._reconstruct": _np_reconstruct,
    "numpy.ndarray": np.ndarray,
}
_NEWOBJ_OK = (ObjectStub, AttrDict, OrderedDict, set, frozenset)


# ----------------------------------------------------------------------------------------------------------------
# The unpickler: only the replacements above can be reached from the opcodes.


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler lets BUILD / NEWOBJ / REDUCE be restricted
    """Unpickler for NVIDIA network pickles: every global resolves to an inert stub or a validated replacement.

    Use only after :func:`scan_pickle` accepted the bytes (``read_nvidia_pickle`` does both). REDUCE may only call
    what ``find_class`` returned, NEWOBJ may only create stubs / plain containers, BUILD may only fill stubs and
    numpy arrays / dtypes; persistent ids are refused.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, policy: PicklePolicy = NVIDIA_PICKLE_POLICY, where: str = "pickle"):
        super().__init__(file)
        self._policy = policy
        self._where = where
        self._callables: list[Any] = []

    def find_class(self, module: str, name: str) -> Any:
        qualified = qualified_name(module, name)
        if not self._policy.allows(qualified):
            raise _refuse(self._policy, qualified, -1, self._where)
        obj = _REPLACEMENTS.get(qualified)
        if obj is None:
            obj = _stub_class(qualified)  # training.* classes and the few torch.nn containers
        self._callables.append(obj)
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"{self._where}: refused a persistent id; a {self._policy.name} has none")

    def _allowed_callable(self, func: Any) -> bool:
        return any(func is c for c in self._callables)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not self._allowed_callable(func):
            raise UnsafeCheckpointError(f"{self._where}: refused a call of a {type(func).__name__} object")
        if not isinstance(args, tuple):
            raise CheckpointError(f"{self._where}: malformed REDUCE arguments")
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (isinstance(cls, type) and issubclass(cls, _NEWOBJ_OK) and self._allowed_callable(cls)):
            raise UnsafeCheckpointError(f"{self._where}: refused creating an object of {cls!r}")
        self.append(cls.__new__(cls, *args) if not issubclass(cls, ObjectStub) else cls(*args))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (isinstance(cls, type) and issubclass(cls, ObjectStub) and self._allowed_callable(cls)):
            raise UnsafeCheckpointError(f"{self._where}: refused creating an object of {cls!r}")
        self.append(cls(*args, **kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _refuse_opcode(self) -> None:
        raise UnsafeCheckpointError(f"{self._where}: refused a protocol-0/1 object-construction opcode (INST/OBJ)")

    dispatch[pickle.INST[0]] = _refuse_opcode
    dispatch[pickle.OBJ[0]] = _refuse_opcode

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, (ObjectStub, AttrDict)):
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            inst.__setstate__(state)
            if inst.hasobject:
                raise UnsafeCheckpointError(f"{self._where}: refused numpy object dtype")
        elif type(inst) is np.ndarray:
            if not (isinstance(state, tuple) and len(state) == 5 and isinstance(state[2], np.dtype)
                    and not state[2].hasobject and isinstance(state[4], (bytes, bytearray))):
                raise UnsafeCheckpointError(f"{self._where}: refused a numpy array of objects")
            inst.__setstate__(state)
        else:
            raise UnsafeCheckpointError(f"{self._where}: refused setting the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = load_build
