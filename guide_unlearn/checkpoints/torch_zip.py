"""``torch.save`` checkpoints (zip or legacy format), loaded with ``weights_only=True`` after an allow-list scan.

Training scripts (rosinality's ``train.py``, e4e) store their options as an ``argparse.Namespace``; torch's
weights-only loader refuses it by default. Namespace is admitted here, narrowly: it is a plain attribute bag whose
construction runs no code (docs/threat_model.md). Everything else outside :data:`TORCH_FILE_POLICY` is refused
with the offending global named, before torch sees the file.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Union

import torch

from ..errors import CheckpointError
from ..gate import load_safetensors, open_file, torch_load
from .formats import detect_format
from .limits import check_nesting, check_tensor_extent
from .policy import TORCH_FILE_POLICY, TORCH_LEGACY_MAGIC, BoundedReader, scan_legacy_stream, scan_torch_zip

__all__ = ["load_torch_file", "load_state_file", "namespace_to_dict", "scan_torch_file"]


_ZIP_MAGIC = b"PK\x03\x04"


def _kind_of_stream(f: Any, path: Path) -> str:
    """'torch-zip' or 'torch-legacy' from an open file's first bytes; CheckpointError saying what it seems to be."""
    head = f.read(8)
    f.seek(0)
    if head[:4] == _ZIP_MAGIC:
        return "torch-zip"
    if head[:1] == b"\x80" and _legacy_magic(f):
        return "torch-legacy"
    from .formats import detect_format

    raise CheckpointError(f"{path}: expected a torch.save checkpoint, found {detect_format(path).description}")


def _legacy_magic(f: Any) -> bool:
    import pickletools

    try:
        for op, arg, _ in pickletools.genops(f):
            if op.name not in ("PROTO", "FRAME"):
                return arg == TORCH_LEGACY_MAGIC
    except ValueError:
        return False
    finally:
        f.seek(0)
    return False


def _scan_stream(f: Any, path: Path, size: int) -> None:
    """The allow-list scan of an open torch.save stream (zip by torch's own rule, or the legacy format)."""
    if _kind_of_stream(f, path) == "torch-zip":
        scan_torch_zip(f, size, TORCH_FILE_POLICY, str(path))
    else:
        scan_legacy_stream(BoundedReader(f, size), size, TORCH_FILE_POLICY, str(path))
    f.seek(0)


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


def scan_torch_file(path: Union[str, os.PathLike], kind: str = "checkpoint") -> None:
    """Run the allow-list scan of :func:`load_torch_file` alone (for backends that then load the file themselves
    with ``weights_only=True``). Raises UnsafeCheckpointError / CheckpointError."""
    path = Path(path)
    with open_file(path, kind) as f:
        _scan_stream(f, path, f.size)


def load_torch_file(path: Union[str, os.PathLike], map_location: Any = "cpu", kind: str = "checkpoint",
                    root: Union[None, str, os.PathLike] = None) -> Any:
    """Load a ``torch.save`` file safely: opened once through the reading gate (a regular file of at most the
    ``kind``'s size, inside ``root`` when given), scanned against the allow-list, then read from the same open file
    by ``torch.load(weights_only=True)`` (:func:`guide_unlearn.gate.torch_load`); every loaded tensor's view is
    bounded by its storage.

    ``argparse.Namespace`` objects (training options) are admitted and returned as Namespaces; use
    :func:`namespace_to_dict` to read them.

    Raises:
        UnsafeCheckpointError: the file names a global outside :data:`TORCH_FILE_POLICY` (named in the message).
        CheckpointError: missing, truncated, or not a torch.save file (the message says what it seems to be); the
            ``kind``'s own error for a file that is not regular, too large or outside ``root``.
    """
    path = Path(path)
    with open_file(path, kind, root) as f:
        _scan_stream(f, path, f.size)
        obj = torch_load(f, str(path), kind, safe_globals=[argparse.Namespace],
                         map_location=map_location)
    _check_loaded(obj, str(path))
    return obj


def load_state_file(path: Union[str, os.PathLike]) -> dict:
    """A flat {name: tensor} dict from a ``.safetensors`` file or a ``torch.save`` of a state dict (a
    ``{"state_dict": {...}}`` wrapper is unwrapped). Raises CheckpointError when the file holds something else.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt.kind == "safetensors":
        return load_safetensors(path, "checkpoint")[0]
    obj = load_torch_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    raise CheckpointError(f"{path}: not a flat state dict (top-level keys {sorted(map(str, obj))[:8]})"
                          if isinstance(obj, dict) else f"{path}: holds a {type(obj).__name__}, not a state dict")


def namespace_to_dict(opts: Any) -> dict:
    """Training options as a dict: accepts an ``argparse.Namespace`` (rosinality) or a dict (e4e saves
    ``vars(opts)``); anything else gives {}."""
    if isinstance(opts, argparse.Namespace):
        return dict(vars(opts))
    if isinstance(opts, dict):
        return dict(opts)
    return {}
