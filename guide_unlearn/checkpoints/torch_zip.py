"""``torch.save`` checkpoints (zip or legacy format), loaded with ``weights_only=True`` after an allow-list scan.

Training scripts (rosinality's ``train.py``, e4e) store their options as an ``argparse.Namespace``; torch's
weights-only loader refuses it by default. Namespace is admitted here, narrowly: it is a plain attribute bag whose
construction runs no code (docs/threat_model.md). Everything else outside :data:`TORCH_FILE_POLICY` is refused
with the offending global named, before torch sees the file.
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path
from typing import Any, Union

import torch

from ..errors import CheckpointError, UnsafeCheckpointError
from .formats import detect_format
from .limits import check_nesting, check_tensor_extent, regular_file
from .policy import TORCH_FILE_POLICY, BoundedReader, scan_legacy_stream, scan_torch_zip

__all__ = ["load_torch_file", "load_state_file", "namespace_to_dict", "scan_torch_file"]


def _scan_torch_file(path: Path, kind: str) -> None:
    where = str(path)
    size = regular_file(path, "checkpoint")
    if kind == "torch-zip":
        scan_torch_zip(path, size, TORCH_FILE_POLICY, where)
        return
    with open(path, "rb") as f:
        scan_legacy_stream(BoundedReader(f, size), size, TORCH_FILE_POLICY, where)


def _check_loaded(obj: Any, where: str) -> None:
    """Refuse loaded tensors whose views address more than their storage (zero-stride views of huge shape) and
    containers nested too deep or expanding too far."""
    check_nesting(obj, where)
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            check_tensor_extent(item, where)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, argparse.Namespace):
            stack.extend(vars(item).values())


def scan_torch_file(path: Union[str, os.PathLike]) -> None:
    """Run the allow-list scan of :func:`load_torch_file` alone (for backends that then load the file themselves
    with ``weights_only=True``). Raises UnsafeCheckpointError / CheckpointError."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt.kind not in ("torch-zip", "torch-legacy"):
        raise CheckpointError(f"{path}: expected a torch.save checkpoint, found {fmt.description}")
    _scan_torch_file(path, fmt.kind)


def load_torch_file(path: Union[str, os.PathLike], map_location: Any = "cpu") -> Any:
    """Load a ``torch.save`` file safely: allow-list scan, then ``torch.load(weights_only=True)``.

    ``argparse.Namespace`` objects (training options) are admitted and returned as Namespaces; use
    :func:`namespace_to_dict` to read them.

    Raises:
        UnsafeCheckpointError: the file names a global outside :data:`TORCH_FILE_POLICY` (named in the message).
        CheckpointError: missing, truncated, or not a torch.save file (the message says what it seems to be).
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt.kind not in ("torch-zip", "torch-legacy"):
        raise CheckpointError(f"{path}: expected a torch.save checkpoint, found {fmt.description}")
    _scan_torch_file(path, fmt.kind)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UnsafeCheckpointError(f"{path}: refused by torch's weights-only loader: {first}") from None
    except (CheckpointError, UnsafeCheckpointError):
        raise
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: {fmt.description} that cannot be read ({type(exc).__name__}: {first}); it is probably "
            "truncated or corrupted: download it again") from None
    _check_loaded(obj, str(path))
    return obj


def load_state_file(path: Union[str, os.PathLike]) -> dict:
    """A flat {name: tensor} dict from a ``.safetensors`` file or a ``torch.save`` of a state dict (a
    ``{"state_dict": {...}}`` wrapper is unwrapped). Raises CheckpointError when the file holds something else.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt.kind == "safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"{path}: unreadable safetensors file ({str(exc)[:300]})") from None
    obj = load_torch_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    raise CheckpointError(f"{path}: not a flat state dict (top-level keys {sorted(map(str, obj))[:8]})"
                          if isinstance(obj, dict) else f"{path}: holds a {type(obj).__name__}, not a state dict")


def namespace_to_dict(opts: Any) -> dict:
    """Training options as a dict: accepts an ``argparse.Namespace`` (rosinality, SPEC) or a dict (e4e saves
    ``vars(opts)``); anything else gives {}."""
    if isinstance(opts, argparse.Namespace):
        return dict(vars(opts))
    if isinstance(opts, dict):
        return dict(opts)
    return {}
