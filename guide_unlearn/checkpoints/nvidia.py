"""NVIDIA network pickles as data: scan + restricted unpickling, then stubs -> state dict + config (docs/checkpoints.md).

:func:`read_nvidia_pickle` scans a file with :data:`.policy.NVIDIA_PICKLE_POLICY` and unpickles it with
:class:`.unpickler.SafeUnpickler`. :func:`flatten_module` turns the stubs of one network into a state dict with
PyTorch's dotted names; :func:`load_nvidia_module` packages that with the constructor kwargs (``_init_kwargs``)
and plain attributes (``rendering_kwargs``, ``neural_rendering_resolution``, ...) as an :class:`NvidiaModule`.
The networks are never instantiated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch

from ..errors import CheckpointError, UnsafeCheckpointError
from ..gate import open_file
from .policy import NVIDIA_PICKLE_POLICY, scan_pickle
from .unpickler import ObjectStub, SafeUnpickler

__all__ = ["NvidiaModule", "flatten_module", "load_nvidia_module", "module_from_stub", "read_nvidia_pickle", "to_plain"]


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
    if not path.exists():
        raise CheckpointError(f"{where}: no such file; pass the path of the downloaded .pkl")
    with open_file(path, "checkpoint") as f:
        size = f.size
        head = f.read(2)
        if not head or head[0] != 0x80:
            from .formats import describe_file

            raise CheckpointError(f"{where}: not an NVIDIA network pickle; {describe_file(path)}")
        f.seek(0)
        scan_pickle(f, NVIDIA_PICKLE_POLICY, where=where)
        f.seek(0)
        try:
            return SafeUnpickler(f, NVIDIA_PICKLE_POLICY, where=where, work_budget=16 * size + (1 << 20)).load()
        except (UnsafeCheckpointError, CheckpointError):
            raise
        except (Exception, RecursionError) as exc:  # noqa: BLE001 - any other failure is a malformed file
            raise CheckpointError(f"{where}: malformed network pickle ({type(exc).__name__}: {str(exc)[:200]})"
                                  ) from None


# ----------------------------------------------------------------------------------------------------------------
# Stubs -> state dict + config.


def to_plain(obj: Any, _depth: int = 0, _budget: Optional[list] = None) -> Any:
    """Plain python data (dict / list / tuple / str / int / float / bool / None) from pickled kwargs: EasyDicts
    become dicts, numpy scalars python numbers. Stubs, tensors and other objects raise ``TypeError``; nesting
    deeper than 50 and data that expands to more than 100 000 items (shared references counted each time, or the
    ``_budget`` a caller shares between several calls) raise CheckpointError."""
    budget = [100_000] if _budget is None else _budget
    budget[0] -= 1
    if budget[0] < 0:
        raise CheckpointError("malformed network pickle: plain data expands to too many items (shared "
                              "references); refusing it")
    if _depth > 50:
        raise CheckpointError("malformed network pickle: plain data nested deeper than 50 levels")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) or isinstance(k, int) and abs(k) > 1 << 64:
                raise TypeError(f"not plain data: a {type(k).__name__} key")
            out[str(k)] = to_plain(v, _depth + 1, budget)
        return out
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, _depth + 1, budget) for v in obj]
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
    _flatten(obj, prefix, out, depth=0, budget=[100_000])
    return out


def _flatten(obj: Any, prefix: str, out: dict, depth: int, budget: list) -> None:
    label = prefix.rstrip(".") or "<root>"
    budget[0] -= 1
    if budget[0] < 0:
        raise CheckpointError("malformed network pickle: the module tree expands to more than 100000 modules "
                              "(shared sub-modules); refusing it")
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
    if not isinstance(skip, (set, frozenset, list, tuple)):
        raise CheckpointError(f"malformed network pickle: {label} has a non-persistent buffer set of "
                              f"{type(skip).__name__}")
    for group in (params, buffers):
        for name, value in group.items():
            if value is None or (group is buffers and name in skip):
                continue
            if not isinstance(value, torch.Tensor) or not isinstance(name, str):
                raise CheckpointError(f"malformed network pickle: {prefix}{name} is a {type(value).__name__}")
            budget[0] -= 1
            if budget[0] < 0:
                raise CheckpointError("malformed network pickle: more than 100000 tensors; refusing it")
            out[f"{prefix}{name}"] = value.detach()
    for name, child in modules.items():
        if child is None:
            continue
        if not isinstance(name, str):
            raise CheckpointError(f"malformed network pickle: a sub-module of {label} is named by a "
                                  f"{type(name).__name__}")
        _flatten(child, f"{prefix}{name}.", out, depth + 1, budget)


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
    budget = [100_000]  # shared by every conversion below: a DAG of shared references is bounded as a whole
    try:
        init_kwargs = to_plain(state.get("_init_kwargs") or {}, _budget=budget)
        init_args = state.get("_init_args") or ()
        init_args = list(to_plain(tuple(init_args) if isinstance(init_args, (list, tuple)) else init_args,
                                  _budget=budget))
    except TypeError as exc:
        raise CheckpointError(f"{where}: constructor arguments are not plain data ({exc})") from None
    attributes = {}
    for key, value in state.items():
        if not isinstance(key, str) or key.startswith("_") or key == "training":
            continue
        try:
            attributes[key] = to_plain(value, _budget=budget)
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
