"""The restricted unpickler for NVIDIA network pickles and the inert objects it builds (docs/checkpoints.md).

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
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, UnsafeCheckpointError
from ..gate import torch_load
from .limits import MAX_NDIM, check_view_args
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


def _storage_elements(storage: Any) -> int:
    if isinstance(storage, torch.TypedStorage):
        return int(storage._size())
    return int(storage.nbytes())  # an untyped storage is rebuilt as bytes


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None) -> torch.Tensor:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise CheckpointError(f"malformed pickle: tensor built on a {type(storage).__name__}, not a storage")
    if isinstance(size, torch.Size):
        size = tuple(size)
    check_view_args(_storage_elements(storage), storage_offset, size, stride, "malformed pickle")
    if backward_hooks:
        raise UnsafeCheckpointError("refused a tensor that carries backward hooks (callables run during backward)")
    if metadata:
        raise UnsafeCheckpointError("refused a tensor that carries extra python metadata")
    if type(requires_grad) is not bool:
        raise CheckpointError("malformed pickle: requires_grad is not a bool")
    try:
        return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride),
                                               requires_grad, OrderedDict())
    except (RuntimeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"malformed tensor in pickle ({str(exc)[:200]}); the file is corrupted") from None


def _rebuild_parameter(data, requires_grad=True, backward_hooks=None, state=None) -> nn.Parameter:
    if not isinstance(data, torch.Tensor) or isinstance(data, nn.Parameter):
        raise CheckpointError(f"malformed pickle: parameter built from a {type(data).__name__}")
    if backward_hooks:
        raise UnsafeCheckpointError("refused a parameter that carries backward hooks")
    if state:
        raise UnsafeCheckpointError("refused a parameter that carries extra python state")
    if type(requires_grad) is not bool:
        raise CheckpointError("malformed pickle: requires_grad is not a bool")
    try:
        return nn.Parameter(data, requires_grad=requires_grad and data.is_floating_point())
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(f"malformed parameter in pickle ({str(exc)[:200]})") from None


def _load_storage_from_bytes(data: Any):
    """Replacement of ``torch.storage._load_from_bytes``: scan the bytes (pickles and declared storage sizes),
    then ``torch.load(weights_only=True)``."""
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError(f"malformed pickle: storage from a {type(data).__name__}, not bytes")
    scan_torch_bytes(bytes(data), STORAGE_BYTES_POLICY, where="tensor storage bytes")
    storage = torch_load(bytes(data), "tensor storage bytes in the pickle", "checkpoint")
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise CheckpointError(f"malformed pickle: storage bytes hold a {type(storage).__name__}")
    return storage


# numpy: only plain numbers. A dtype is one of these scalar codes (no fields, no sub-array, no void, no object);
# arrays and scalars are rebuilt from exactly as many bytes as their shape needs.
_NP_CODES = frozenset(["b1", "?"] + [f"{k}{n}" for k in "iu" for n in (1, 2, 4, 8)]
                      + ["f2", "f4", "f8", "c8", "c16"])
_NATIVE_ORDERS = ("=", "|", "<" if np.little_endian else ">")


class _NdarrayClass:
    """What ``numpy.ndarray`` resolves to: a token only :func:`_np_reconstruct` accepts, never a callable."""

    def __repr__(self) -> str:
        return "<numpy.ndarray token>"


_NDARRAY = _NdarrayClass()


def _plain_dtype(dtype: Any) -> bool:
    return (isinstance(dtype, np.dtype) and dtype.kind in "biufc" and dtype.fields is None
            and dtype.subdtype is None and not dtype.hasobject and dtype.itemsize <= 16)


def _np_scalar(dtype: Any, data: Any = None):
    if not _plain_dtype(dtype):
        raise UnsafeCheckpointError("refused a numpy scalar that is not a plain number (object, structured or "
                                    "void dtype)")
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise CheckpointError("malformed numpy scalar in pickle")
    return np.frombuffer(bytes(data), dtype=dtype, count=1)[0]


def _np_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, str) or spec not in _NP_CODES:
        raise UnsafeCheckpointError(f"refused numpy dtype {str(spec)[:40]!r}: only plain numbers (bool, int, "
                                    "float, complex) are admitted")
    dt = np.dtype(spec)
    if not _plain_dtype(dt):  # pragma: no cover - the codes above are all plain
        raise UnsafeCheckpointError("refused a numpy dtype that is not a plain number")
    return dt


def _np_reconstruct(cls: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if cls is not _NDARRAY:
        raise UnsafeCheckpointError("refused numpy array reconstruction of a non-ndarray class")
    if shape != (0,) or dtype_code not in (b"b", "b"):
        raise CheckpointError("malformed numpy array in pickle (reconstruction arguments)")
    return np.ndarray((0,), dtype=np.uint8)


def _check_dtype_state(dtype: np.dtype, state: Any) -> None:
    """The BUILD state of a plain numpy dtype: (version, byte order, None, None, None, elsize, alignment, flags).
    Nothing is applied: a non-native byte order or any field / sub-array / size change is refused."""
    ok = (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4) and state[1] in _NATIVE_ORDERS
          and state[2] is None and state[3] is None and state[4] is None
          and state[5] in (-1, dtype.itemsize) and state[6] in (-1, dtype.alignment) and state[7] == 0
          and (len(state) == 8 or isinstance(state[8], dict) and not state[8]))
    if not ok:
        raise UnsafeCheckpointError("refused a numpy dtype state other than a plain native-order number (fields, "
                                    "sub-arrays, sizes or byte orders are not admitted)")


def _check_array_state(state: Any) -> None:
    """The BUILD state of a plain numpy array: (1, shape, plain dtype, is_fortran, raw bytes of exactly the
    shape's size)."""
    if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and isinstance(state[1], tuple)
            and _plain_dtype(state[2]) and type(state[3]) is bool and isinstance(state[4], (bytes, bytearray))):
        raise UnsafeCheckpointError("refused a numpy array that is not plain numbers (objects, fields, views)")
    shape = state[1]
    if len(shape) > MAX_NDIM or not all(type(n) is int and n >= 0 for n in shape):
        raise CheckpointError("malformed numpy array in pickle (shape)")
    numel = 1
    for n in shape:
        numel *= n
    if numel * state[2].itemsize != len(state[4]):
        raise CheckpointError(f"malformed numpy array in pickle: shape {shape} needs {numel * state[2].itemsize} "
                              f"bytes, the pickle holds {len(state[4])}")


_ATOMS = (str, bytes, int, float, bool, type(None), complex)


def _check_key(key: Any, where: str) -> None:
    """A dict key / set item may be an atom or a tuple of atoms nested at most 4 deep (hashing it is cheap and
    cannot recurse deeply)."""
    stack, seen = [(key, 0)], 0
    while stack:
        item, depth = stack.pop()
        seen += 1
        if type(item) in _ATOMS or isinstance(item, np.generic) and _plain_dtype(item.dtype):
            continue
        if type(item) is tuple and depth < 4 and seen < 256:
            stack.extend((i, depth + 1) for i in item)
            continue
        raise CheckpointError(f"{where}: malformed pickle: a dict key / set item that is a "
                              f"{type(item).__name__} (or a tuple nested too deep)")


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
    "numpy.ndarray": _NDARRAY,
}
_CONTAINERS = (dict, list, set, OrderedDict, AttrDict)


# ----------------------------------------------------------------------------------------------------------------
# The unpickler: only the replacements above can be reached from the opcodes.


class SafeUnpickler(pickle._Unpickler):  # the pure-Python unpickler lets every opcode be restricted
    """Unpickler for NVIDIA network pickles: every global resolves to an inert stub or a validated replacement.

    Use only after :func:`scan_pickle` accepted the bytes (``read_nvidia_pickle`` does both). REDUCE may only call
    what ``find_class`` returned (``numpy.ndarray`` is a token, not a callable), NEWOBJ may only create stubs and
    empty plain containers, BUILD may only fill stubs and validate plain numpy dtypes / arrays; SETITEM(S),
    APPEND(S) and ADDITEMS only fill dicts / lists / sets this unpickler created, with keys that are atoms or
    shallow tuples; persistent ids, INST / OBJ and extension codes are refused. Work that re-reads shared
    (memoised) objects is charged to a budget proportional to the file size (``work_budget``).
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, policy: PicklePolicy = NVIDIA_PICKLE_POLICY, where: str = "pickle",
                 work_budget: int = 1 << 26):
        super().__init__(file)
        self._policy = policy
        self._where = where
        self._callables: dict[int, Any] = {}
        self._own: dict[int, Any] = {}  # containers and arrays this unpickler created (kept alive: ids stay unique)
        self._storages: dict[int, Any] = {}
        self._work = 0
        self._budget = int(work_budget)

    # -- bookkeeping --------------------------------------------------------------------------------------------
    def _charge(self, units: int) -> None:
        self._work += int(units) + 1
        if self._work > self._budget:
            raise CheckpointError(f"{self._where}: the pickle re-reads shared data more than {self._budget} times "
                                  "its size allows; refusing a file that would take unbounded time to load")

    def _mine(self, obj: Any) -> Any:
        self._own[id(obj)] = obj
        return obj

    def _is_mine(self, obj: Any, types: tuple) -> bool:
        return self._own.get(id(obj)) is obj and type(obj) in types

    def _keys(self, keys: Any) -> None:
        for k in keys:
            _check_key(k, self._where)

    def find_class(self, module: str, name: str) -> Any:
        qualified = qualified_name(module, name)
        if not self._policy.allows(qualified):
            raise _refuse(self._policy, qualified, -1, self._where)
        obj = _REPLACEMENTS.get(qualified)
        if obj is None:
            obj = _stub_class(qualified)  # training.* classes and the few torch.nn containers
        if obj is not _NDARRAY:
            self._callables[id(obj)] = obj
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(f"{self._where}: refused a persistent id; a {self._policy.name} has none")

    def _allowed_callable(self, func: Any) -> bool:
        return self._callables.get(id(func)) is func

    # -- calls --------------------------------------------------------------------------------------------------
    def _call(self, func: Any, args: tuple) -> Any:
        where = self._where
        if func is OrderedDict or func is AttrDict:
            if args == ():
                return self._mine(func())
            if len(args) == 1 and isinstance(args[0], (list, tuple, dict)):
                src = args[0]
                self._charge(len(src))
                pairs = list(src.items()) if isinstance(src, dict) else list(src)
                if not all(type(p) in (tuple, list) and len(p) == 2 for p in pairs):
                    raise CheckpointError(f"{where}: malformed pickle: {func.__name__} from something else than pairs")
                self._keys(p[0] for p in pairs)
                return self._mine(func(pairs))
            raise CheckpointError(f"{where}: malformed pickle: {func.__name__} arguments")
        if func is set or func is frozenset:
            if args == ():
                return self._mine(func())
            if len(args) == 1 and type(args[0]) in (list, tuple, set, frozenset):
                self._charge(len(args[0]))
                self._keys(args[0])
                return self._mine(func(args[0]))
            raise CheckpointError(f"{where}: malformed pickle: {func.__name__} arguments")
        if func is _load_storage_from_bytes:
            data = args[0] if len(args) == 1 else None
            cached = self._storages.get(id(data))
            if cached is not None and cached[0] is data:
                return cached[1]
            self._charge(len(data) if isinstance(data, (bytes, bytearray)) else 1)
            storage = func(*args)
            self._storages[id(data)] = (data, storage)
            return storage
        if func is PersistentStub:
            meta = args[0] if len(args) == 1 else None
            state = meta.get("state") if isinstance(meta, dict) else None
            self._charge(len(meta or ()) + (len(state) if isinstance(state, dict) else 0))
        elif func is _np_reconstruct:
            return self._mine(func(*args))
        else:
            self._charge(sum(len(a) if isinstance(a, (bytes, bytearray, str, tuple, list, dict)) else 1
                             for a in args))
        return func(*args)

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not self._allowed_callable(func):
            raise UnsafeCheckpointError(f"{self._where}: refused a call of a {type(func).__name__} object")
        if not isinstance(args, tuple):
            raise CheckpointError(f"{self._where}: malformed REDUCE arguments")
        try:
            self.stack[-1] = self._call(func, args)
        except TypeError as exc:
            raise CheckpointError(f"{self._where}: malformed call arguments in the pickle ({str(exc)[:200]})"
                                  ) from None

    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if not (isinstance(cls, type) and self._allowed_callable(cls)):
            raise UnsafeCheckpointError(f"{self._where}: refused creating an object of {cls!r}")
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise CheckpointError(f"{self._where}: malformed NEWOBJ arguments")
        if issubclass(cls, ObjectStub) and cls is not PersistentStub:
            self._charge(len(args) + len(kwargs))
            try:
                return cls(*args, **kwargs)
            except TypeError as exc:
                raise CheckpointError(f"{self._where}: malformed NEWOBJ arguments ({exc})") from None
        if cls in _CONTAINERS + (frozenset,) and not args and not kwargs:
            return self._mine(cls())
        raise UnsafeCheckpointError(f"{self._where}: refused creating an object of {cls!r} with arguments")

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, {}))

    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _refuse_opcode(self) -> None:
        raise UnsafeCheckpointError(f"{self._where}: refused a protocol-0/1 object-construction opcode (INST/OBJ) "
                                    "or an extension-registry code")

    dispatch[pickle.INST[0]] = _refuse_opcode
    dispatch[pickle.OBJ[0]] = _refuse_opcode
    dispatch[pickle.EXT1[0]] = _refuse_opcode
    dispatch[pickle.EXT2[0]] = _refuse_opcode
    dispatch[pickle.EXT4[0]] = _refuse_opcode

    # -- containers ---------------------------------------------------------------------------------------------
    def load_empty_dictionary(self) -> None:
        self.append(self._mine({}))

    dispatch[pickle.EMPTY_DICT[0]] = load_empty_dictionary

    def load_empty_list(self) -> None:
        self.append(self._mine([]))

    dispatch[pickle.EMPTY_LIST[0]] = load_empty_list

    def load_empty_set(self) -> None:
        self.append(self._mine(set()))

    dispatch[pickle.EMPTY_SET[0]] = load_empty_set

    def load_list(self) -> None:
        self.append(self._mine(list(self.pop_mark())))

    dispatch[pickle.LIST[0]] = load_list

    def load_dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise CheckpointError(f"{self._where}: malformed pickle (odd DICT items)")
        self._keys(items[0::2])
        self.append(self._mine({items[i]: items[i + 1] for i in range(0, len(items), 2)}))

    dispatch[pickle.DICT[0]] = load_dict

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self._keys(items)
        self.append(self._mine(frozenset(items)))

    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def _target(self, types: tuple, what: str) -> Any:
        if not self.stack:
            raise CheckpointError(f"{self._where}: malformed pickle (stack underflow)")
        target = self.stack[-1]
        if not self._is_mine(target, types):
            raise UnsafeCheckpointError(f"{self._where}: refused {what} on a {type(target).__name__}; only dicts, "
                                        "lists and sets the pickle itself built can be filled")
        return target

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        _check_key(key, self._where)
        self._target((dict, OrderedDict, AttrDict), "SETITEM")[key] = value

    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise CheckpointError(f"{self._where}: malformed pickle (odd SETITEMS items)")
        target = self._target((dict, OrderedDict, AttrDict), "SETITEMS")
        self._keys(items[0::2])
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_append(self) -> None:
        value = self.stack.pop()
        self._target((list,), "APPEND").append(value)

    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._target((list,), "APPENDS").extend(items)

    dispatch[pickle.APPENDS[0]] = load_appends

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target((set,), "ADDITEMS")
        self._keys(items)
        target.update(items)

    dispatch[pickle.ADDITEMS[0]] = load_additems

    # -- BUILD --------------------------------------------------------------------------------------------------
    def load_build(self) -> None:
        state = self.stack.pop()
        if not self.stack:
            raise CheckpointError(f"{self._where}: malformed pickle (stack underflow)")
        inst = self.stack[-1]
        if isinstance(inst, (ObjectStub, AttrDict)):
            parts = state if isinstance(state, tuple) else (state,)
            self._charge(sum(len(p) if isinstance(p, dict) else 1 for p in parts))
            inst.__setstate__(state)
        elif isinstance(inst, np.dtype):
            _check_dtype_state(inst, state)  # validated, nothing applied: dtypes are shared singletons
        elif self._is_mine(inst, (np.ndarray,)) and inst.size == 0 and inst.dtype == np.uint8:
            _check_array_state(state)
            self._charge(len(state[4]))
            inst.__setstate__(state)
            del self._own[id(inst)]  # built once
        else:
            raise UnsafeCheckpointError(f"{self._where}: refused setting the state of a {type(inst).__name__}")

    dispatch[pickle.BUILD[0]] = load_build
