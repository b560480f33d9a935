"""Read NVIDIA "persistence" pickles without executing anything they contain (SPEC §3.1).

An official network pickle (stylegan2-ada / stylegan3 ``*.pkl``, EG3D ``ffhq*.pkl``, GUIDE's ``last.pkl``) is a
plain pickle whose modules rebuild themselves by ``exec``-ing the source text stored inside the file. Loading one
the normal way runs that text. Here it never runs:

1. :func:`scan_pickle` walks the opcodes with :mod:`pickletools` (which only parses) and refuses every global
   outside an explicit allow-list *before* a single object is built.
2. :class:`SafeUnpickler` then builds the objects, but every allowed global resolves to a replacement written
   here: persistent objects and ``training.*`` classes become inert :class:`ObjectStub` s that only record their
   state, tensors are rebuilt by validated wrappers, and the storage bytes handed to
   ``torch.storage._load_from_bytes`` are scanned with the same rules and then read with
   ``torch.load(weights_only=True)``. ``module_src`` is kept only as a hash.
3. :func:`flatten_module` turns the stubs of one network into a state dict with PyTorch's dotted names, plus the
   constructor kwargs (``_init_kwargs``) and plain attributes (``rendering_kwargs``,
   ``neural_rendering_resolution``, ...). The networks are never instantiated.

See docs/threat_model.md for what the allow-list admits and why.
"""

from __future__ import annotations

import _compat_pickle
import hashlib
import io
import os
import pickle
import pickletools
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, UnsafeCheckpointError

__all__ = [
    "NVIDIA_PICKLE_POLICY",
    "STORAGE_BYTES_POLICY",
    "TORCH_FILE_POLICY",
    "NvidiaModule",
    "ObjectStub",
    "PersistentStub",
    "PicklePolicy",
    "SafeUnpickler",
    "flatten_module",
    "load_nvidia_module",
    "module_from_stub",
    "qualified_name",
    "read_nvidia_pickle",
    "scan_pickle",
    "scan_torch_bytes",
    "to_plain",
]

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a legacy (non-zip) torch.save stream
_STORAGE_TYPES = (
    "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
    "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "ComplexFloatStorage", "ComplexDoubleStorage",
)


# ----------------------------------------------------------------------------------------------------------------
# Policies: which globals a pickle may name.


@dataclass(frozen=True)
class PicklePolicy:
    """An explicit allow-list of pickle globals.

    name:              shown in error messages ("NVIDIA network pickle", ...).
    exact:             fully qualified names (``module.name``) that may appear.
    stub_prefixes:     module prefixes whose classes become inert stubs (``training`` for NVIDIA pickles).
    persistent_ids:    whether PERSID / BINPERSID opcodes may appear (torch.save streams use them for storages).
    """

    name: str
    exact: frozenset
    stub_prefixes: tuple = ()
    persistent_ids: bool = False

    def allows(self, qualified: str) -> bool:
        """True when ``qualified`` (``module.name``) is admitted."""
        if qualified in self.exact:
            return True
        module, _, attr = qualified.rpartition(".")
        return bool(attr) and attr.isidentifier() and any(
            module == p or module.startswith(p + ".") for p in self.stub_prefixes
        ) and all(part.isidentifier() for part in module.split("."))


_TORCH_MODULE_STUBS = (
    "torch.nn.modules.container.Sequential", "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict", "torch.nn.modules.activation.Softplus",
    "torch.nn.modules.activation.ReLU", "torch.nn.modules.activation.LeakyReLU",
    "torch.nn.modules.activation.Sigmoid", "torch.nn.modules.activation.Tanh",
    "torch.nn.modules.linear.Identity",
)
_NUMPY_NAMES = (
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
)
_TENSOR_NAMES = (
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
)

NVIDIA_PICKLE_POLICY = PicklePolicy(
    name="NVIDIA network pickle",
    exact=frozenset(
        ("torch_utils.persistence._reconstruct_persistent_obj", "dnnlib.util.EasyDict", "dnnlib.EasyDict",
         "collections.OrderedDict", "builtins.set", "builtins.frozenset", "torch.storage._load_from_bytes")
        + _TENSOR_NAMES + _TORCH_MODULE_STUBS + _NUMPY_NAMES
    ),
    stub_prefixes=("training",),
)

STORAGE_BYTES_POLICY = PicklePolicy(
    name="tensor storage bytes (legacy torch.save)",
    exact=frozenset(tuple(f"torch.{s}" for s in _STORAGE_TYPES)
                    + ("torch._utils._rebuild_tensor_v2", "collections.OrderedDict")),
    persistent_ids=True,
)

TORCH_FILE_POLICY = PicklePolicy(
    name="torch.save checkpoint",
    exact=frozenset(
        tuple(f"torch.{s}" for s in _STORAGE_TYPES)
        + _TENSOR_NAMES
        + ("collections.OrderedDict", "builtins.set", "builtins.frozenset", "torch.Size",
           # training scripts (rosinality, e4e) save their argparse options; a Namespace is a bag of attributes
           "argparse.Namespace")
    ),
    persistent_ids=True,
)


# ----------------------------------------------------------------------------------------------------------------
# 1. Opcode scan (parses, builds nothing).

_MARK = object()
_UNKNOWN = object()
_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
               "BINUNICODE8"}


def qualified_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 would import it: protocol-2 names (``__builtin__``, ``copy_reg``) are mapped the
    way the unpickler maps them, so the allow-list sees the real target."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _refuse(policy: PicklePolicy, qualified: str, pos: int, where: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{where}: refused global '{qualified}' (byte {pos}); it is not on the allow-list for a {policy.name}, and "
        f"importing or calling it could run code. The file was not loaded. Only use checkpoints from their official "
        f"source; see docs/threat_model.md for what is admitted."
    )


def scan_pickle(stream: Union[bytes, bytearray, io.BufferedIOBase], policy: PicklePolicy,
                where: str = "pickle") -> list[str]:
    """Walk ONE pickle's opcodes (up to STOP) and return the globals it names, in order.

    Nothing is unpickled: :func:`pickletools.genops` only parses. A small symbolic stack resolves
    STACK_GLOBAL's module/name strings (including memoised ones); a name computed any other way, an
    extension-registry code or (unless the policy allows them) a persistent id is refused.

    Raises:
        UnsafeCheckpointError: a global outside ``policy`` (the message names it).
        CheckpointError: the bytes are truncated or not a pickle.
    """
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    found: list[str] = []
    stack: list[Any] = []
    memo: dict[Any, Any] = {}

    def pop() -> Any:
        if not stack:
            raise CheckpointError(f"{where}: malformed pickle (stack underflow); the file is corrupted")
        return stack.pop()

    def pop_to_mark() -> None:
        while True:
            if pop() is _MARK:
                return

    def check(qualified: str, pos: int) -> None:
        if not policy.allows(qualified):
            raise _refuse(policy, qualified, pos, where)
        found.append(qualified)

    try:
        for op, arg, pos in pickletools.genops(stream):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                check(qualified_name(module, attr), pos)
            elif name == "STACK_GLOBAL":
                attr, module = pop(), pop()
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise UnsafeCheckpointError(
                        f"{where}: refused a global whose module/name is computed at load time (byte {pos}); "
                        "official checkpoints never do this. The file was not loaded.")
                check(qualified_name(module, attr), pos)
                stack.append(_UNKNOWN)
                continue
            elif name in ("EXT1", "EXT2", "EXT4"):
                raise UnsafeCheckpointError(
                    f"{where}: refused extension-registry global code {arg} (byte {pos}); it names a global "
                    "indirectly. The file was not loaded.")
            elif name in ("PERSID", "BINPERSID") and not policy.persistent_ids:
                raise UnsafeCheckpointError(
                    f"{where}: refused a persistent id (byte {pos}); a {policy.name} has none. The file was not "
                    "loaded.")
            # stack bookkeeping (only strings and memo references matter)
            if name in _STRING_OPS:
                stack.append(arg if isinstance(arg, str) else _UNKNOWN)
                continue
            if name == "MARK":
                stack.append(_MARK)
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _UNKNOWN
                continue
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1] if stack else _UNKNOWN
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(arg, _UNKNOWN))
                continue
            if name == "DUP":
                stack.append(stack[-1] if stack else _UNKNOWN)
                continue
            before = op.stack_before
            if pickletools.markobject in before:
                pop_to_mark()
                for _ in range(before.index(pickletools.markobject)):
                    pop()
            else:
                for _ in before:
                    pop()
            stack.extend(_UNKNOWN for _ in op.stack_after)
    except ValueError as exc:  # pickletools: truncated stream / unknown opcode
        raise CheckpointError(
            f"{where}: not a complete pickle ({exc}); the file is truncated or corrupted. Download it again."
        ) from None
    return found


def scan_torch_bytes(data: bytes, policy: PicklePolicy = STORAGE_BYTES_POLICY, where: str = "storage bytes") -> None:
    """Scan a torch.save stream held in memory: a zip archive (every ``*.pkl`` member) or the legacy format
    (magic, protocol, sys-info, object and storage-key pickles, then raw tensor bytes).

    Raises UnsafeCheckpointError / CheckpointError like :func:`scan_pickle`.
    """
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                members = [n for n in zf.namelist() if n.endswith(".pkl")]
                if not members:
                    raise CheckpointError(f"{where}: a zip archive without data.pkl is not a torch.save stream")
                for member in members:
                    scan_pickle(zf.read(member), policy, where=f"{where} ({member})")
        except zipfile.BadZipFile as exc:
            raise CheckpointError(f"{where}: corrupted zip archive ({exc})") from None
        return
    stream = io.BytesIO(data)
    scan_pickle(stream, policy, where=where)  # whatever these bytes are, their first pickle must pass the scan
    stream.seek(0)
    if _first_constant(stream) != TORCH_LEGACY_MAGIC:
        raise CheckpointError(f"{where}: not a torch.save stream (no legacy magic number and not a zip archive)")
    stream.seek(0)
    for _ in range(5):  # magic number, protocol version, sys info, the object, the storage keys
        scan_pickle(stream, policy, where=where)


def _first_constant(stream: io.BytesIO) -> Any:
    """The argument of the first data opcode of a pickle (parsed, not unpickled), or None."""
    try:
        for op, arg, _ in pickletools.genops(stream):
            if op.name not in ("PROTO", "FRAME"):
                return arg
    except ValueError:
        return None
    return None


# ----------------------------------------------------------------------------------------------------------------
# 2. Inert stand-ins for everything an NVIDIA pickle builds.


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


def read_nvidia_pickle(path: Union[str, os.PathLike]) -> Any:
    """Scan, then safely unpickle an NVIDIA network pickle; returns the top-level object (normally a dict with
    ``G``, ``D``, ``G_ema``, ``augment_pipe``, ``training_set_kwargs``) with every network as an inert stub.

    Raises:
        UnsafeCheckpointError: a global outside :data:`NVIDIA_PICKLE_POLICY` (named in the message) — nothing
            was unpickled.
        CheckpointError: missing, truncated, not a pickle, or malformed.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file; pass the path of the downloaded .pkl")
    with open(path, "rb") as f:
        head = f.read(2)
        if not head or head[0] != 0x80:
            from .formats import describe_file

            raise CheckpointError(f"{where}: not an NVIDIA network pickle; {describe_file(path)}")
        f.seek(0)
        scan_pickle(f, NVIDIA_PICKLE_POLICY, where=where)
        f.seek(0)
        try:
            return SafeUnpickler(f, NVIDIA_PICKLE_POLICY, where=where).load()
        except (UnsafeCheckpointError, CheckpointError):
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError) as exc:
            raise CheckpointError(f"{where}: malformed network pickle ({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------------------------------------------
# 3. Stubs -> state dict + config.


def to_plain(obj: Any, _depth: int = 0) -> Any:
    """Plain python data (dict / list / tuple / str / int / float / bool / None) from pickled kwargs: EasyDicts
    become dicts, numpy scalars python numbers. Stubs, tensors and other objects raise ``TypeError``."""
    if _depth > 50:
        raise TypeError("nesting too deep")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, _depth + 1) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"not plain data: {type(obj).__name__}")


def flatten_module(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """State dict of a stubbed module tree with PyTorch's dotted names.

    Each stub's ``_parameters`` and ``_buffers`` (minus ``_non_persistent_buffers_set``) are taken as they are,
    ``_modules`` recursed into; None entries (e.g. ``bias=False``) are skipped.

    Raises:
        CheckpointError: a node is not a (stubbed) torch module or holds something other than tensors.
    """
    out: dict[str, torch.Tensor] = {}
    _flatten(obj, prefix, out, depth=0)
    return out


def _flatten(obj: Any, prefix: str, out: dict, depth: int) -> None:
    label = prefix.rstrip(".") or "<root>"
    if depth > 64:
        raise CheckpointError(f"malformed network pickle: module tree deeper than 64 at {label}")
    if not isinstance(obj, ObjectStub):
        raise CheckpointError(f"malformed network pickle: {label} is a {type(obj).__name__}, not a module")
    state = obj.state
    params, buffers, modules = state.get("_parameters"), state.get("_buffers"), state.get("_modules")
    if not all(isinstance(x, dict) for x in (params, buffers, modules)):
        raise CheckpointError(
            f"malformed network pickle: {label} ({obj.qualname}) has no torch module state "
            "(_parameters / _buffers / _modules); the file is not a network pickle this library understands")
    skip = state.get("_non_persistent_buffers_set") or set()
    for group in (params, buffers):
        for name, value in group.items():
            if value is None or (group is buffers and name in skip):
                continue
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"malformed network pickle: {prefix}{name} is a {type(value).__name__}")
            out[f"{prefix}{name}"] = value.detach()
    for name, child in modules.items():
        if child is None:
            continue
        _flatten(child, f"{prefix}{name}.", out, depth + 1)


@dataclass
class NvidiaModule:
    """One network of an NVIDIA pickle, read without instantiating it.

    class_name:   the persistent class (``Generator``, ``TriPlaneGenerator``, ...).
    state_dict:   {dotted name: tensor} (e.g. ``mapping.fc0.weight`` [512, 512], ``synthesis.b4.const``).
    init_kwargs:  the constructor kwargs recorded by the persistence decorator, as plain data.
    init_args:    the positional constructor args, as plain data.
    attributes:   the module's plain-data attributes (``rendering_kwargs``, ``neural_rendering_resolution``,
                  ``z_dim``, ...); anything that is not plain data is left out.
    module_src_sha256: hash of the embedded (never executed) source, to identify the code version.
    """

    class_name: str
    state_dict: dict
    init_kwargs: dict = field(default_factory=dict)
    init_args: list = field(default_factory=list)
    attributes: dict = field(default_factory=dict)
    module_src_sha256: Optional[str] = None


def module_from_stub(stub: Any, where: str = "network") -> NvidiaModule:
    """:class:`NvidiaModule` from one stubbed network (the value of ``G_ema`` etc.)."""
    if not isinstance(stub, ObjectStub):
        raise CheckpointError(f"{where} is a {type(stub).__name__}, not a network")
    state = stub.state
    try:
        init_kwargs = to_plain(state.get("_init_kwargs") or {})
        init_args = list(to_plain(tuple(state.get("_init_args") or ())))
    except TypeError as exc:
        raise CheckpointError(f"{where}: constructor arguments are not plain data ({exc})") from None
    attributes = {}
    for key, value in state.items():
        if key.startswith("_") or key == "training":
            continue
        try:
            attributes[key] = to_plain(value)
        except TypeError:
            continue
    return NvidiaModule(
        class_name=getattr(stub, "class_name", stub.qualname.rpartition(".")[2]),
        state_dict=flatten_module(stub),
        init_kwargs=init_kwargs if isinstance(init_kwargs, dict) else {},
        init_args=init_args,
        attributes=attributes,
        module_src_sha256=getattr(stub, "module_src_sha256", None),
    )


def load_nvidia_module(path: Union[str, os.PathLike], key: str = "G_ema") -> NvidiaModule:
    """Read network ``key`` of an NVIDIA pickle (default the EMA generator) as an :class:`NvidiaModule`.

    The other networks (G, D, augment_pipe) are parsed as inert stubs and dropped.

    Raises:
        UnsafeCheckpointError, CheckpointError: see :func:`read_nvidia_pickle`; also when ``key`` is absent.
    """
    data = read_nvidia_pickle(path)
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: the pickle holds a {type(data).__name__}, not a dict of networks")
    if key not in data:
        raise CheckpointError(f"{path}: no '{key}' network in the pickle (it has {sorted(map(str, data))})")
    return module_from_stub(data[key], where=f"{path}['{key}']")


def globals_of(data: bytes, policy: PicklePolicy) -> list[str]:
    """Convenience: the globals named by a pickle held in memory (scan only)."""
    return scan_pickle(data, policy)


def iter_allowed(policy: PicklePolicy) -> Iterable[str]:
    """The exact names a policy admits, sorted (for docs and tests)."""
    return sorted(policy.exact)

