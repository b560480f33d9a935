"""Bounds every loader applies to attacker-controlled files (docs/threat_model.md, "Bounded work").

A loaded file decides sizes, nesting and shapes; these helpers make sure that none of them reaches Python's
recursion, a hash of a deep object, an allocation or a special file before it has been checked:

- :func:`regular_file` / :func:`read_regular_file`: only regular files are read, and never past the size ``stat``
  reported (``/proc/self/pagemap`` reports 0 bytes and never ends: it is refused as empty);
- :func:`loads_json`: JSON with a size cap and a nesting cap (checked on the text before parsing);
- :func:`check_nesting`: a walk of loaded data with a depth cap and a cap on the *expanded* size, so a small
  file whose shared references make a huge tree is refused instead of walked;
- :func:`check_tensor_extent`: a tensor view may not address more elements than its storage holds (no zero-stride
  views of enormous shape) and its dimensions are bounded;
- :func:`check_view_args`: the same, on the raw (offset, size, stride) a pickle hands to a tensor rebuild, before
  torch sees them.

Every failure raises the error class the caller passes (a :class:`~guide_unlearn.errors.GuideUnlearnError`).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Type, Union

from ..errors import CheckpointError, GuideUnlearnError
from ..gate import Kind, check_file, parse_json, read_bytes
from ..gate import json_depth as _json_depth

__all__ = [
    "MAX_DEPTH", "MAX_EXPANDED_NODES", "MAX_JSON_BYTES", "MAX_NDIM", "MAX_TENSOR_ELEMENTS",
    "check_nesting", "check_tensor_extent", "check_view_args", "loads_json", "read_regular_file", "regular_file",
]

MAX_DEPTH = 64  # nesting of containers in metadata / kwargs / JSON
MAX_EXPANDED_NODES = 1_000_000  # nodes a walk of loaded data may visit (shared references counted each time)
MAX_JSON_BYTES = 16 << 20  # config / metadata JSON files
MAX_NDIM = 16  # dimensions of one tensor
MAX_TENSOR_ELEMENTS = 1 << 34  # elements of one tensor (64 GiB of float32): no generator comes close

PathLike = Union[str, os.PathLike]
ErrorClass = Type[GuideUnlearnError]


def _kind(what: str, max_bytes: int, error: ErrorClass, allow_empty: bool = False, max_depth: int = MAX_DEPTH):
    return Kind(what, max_bytes, error, max_depth=max_depth, allow_empty=allow_empty)


def regular_file(path: PathLike, what: str = "file", error: ErrorClass = CheckpointError,
                 allow_empty: bool = False) -> int:
    """Size in bytes of ``path`` if it is a regular file (links followed); else ``error``. The reading gate's
    check (:func:`guide_unlearn.gate.check_file`): devices, FIFOs, sockets and folders are refused, and so are
    empty files unless ``allow_empty`` — which covers ``/proc`` and ``/sys`` files, which report size 0."""
    return check_file(path, _kind(what, 1 << 62, error, allow_empty))[1]


def read_regular_file(path: PathLike, max_bytes: int, what: str = "file",
                      error: ErrorClass = CheckpointError) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (the reading gate's :func:`~guide_unlearn.gate.read_bytes`)."""
    return read_bytes(path, _kind(what, max_bytes, error))


def json_depth(data: bytes) -> int:
    """Maximal ``[`` / ``{`` nesting of JSON text (strings skipped), computed without parsing."""
    return _json_depth(data)


def loads_json(data: Union[bytes, str], where: str, error: ErrorClass = CheckpointError,
               max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text whose size and nesting are bounded first (the reading gate's
    :func:`~guide_unlearn.gate.parse_json`)."""
    return parse_json(data, where, _kind("JSON text", max_bytes, error, max_depth=max_depth),
                      max_depth=max_depth)


def check_nesting(obj: Any, where: str, error: ErrorClass = CheckpointError, max_depth: int = MAX_DEPTH,
                  max_nodes: int = MAX_EXPANDED_NODES) -> int:
    """Walk ``obj`` (dicts, lists, tuples, sets) iteratively; refuse nesting deeper than ``max_depth`` or more
    than ``max_nodes`` visited nodes (a DAG of shared references is counted as the tree it expands to, so
    anything that later walks it recursively is bounded too). -> the number of nodes."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise error(f"{where}: the data expands to more than {max_nodes} items (shared references); refusing it")
        if depth > max_depth:
            raise error(f"{where}: data nested deeper than {max_depth} levels; the file is malformed or hostile")
        if isinstance(item, dict):
            children: Iterable[Any] = [*item.keys(), *item.values()]
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = item
        else:
            continue
        stack.extend((c, depth + 1) for c in children)
    return nodes


def check_view_args(numel_storage: int, offset: Any, size: Any, stride: Any, where: str,
                    error: ErrorClass = CheckpointError) -> None:
    """Refuse a tensor view (offset, size, stride) that is not plain non-negative integers, has more than
    :data:`MAX_NDIM` dimensions, or addresses more elements than the storage's ``numel_storage`` (so no zero- or
    overlapping-stride view can stand for more data than the file holds)."""
    if not isinstance(size, (tuple, list)) or not isinstance(stride, (tuple, list)) or len(size) != len(stride):
        raise error(f"{where}: malformed tensor (size / stride are not sequences of the same length)")
    ints = (offset, *size, *stride)
    if not all(type(i) is int for i in ints):
        raise error(f"{where}: malformed tensor (offset / size / stride are not integers)")
    if len(size) > MAX_NDIM or any(i < 0 for i in ints):
        raise error(f"{where}: malformed tensor (negative sizes or more than {MAX_NDIM} dimensions)")
    numel = 1
    for s in size:
        numel *= s
    if numel == 0:
        return
    extent = offset + sum((s - 1) * st for s, st in zip(size, stride)) + 1
    if numel > numel_storage or extent > numel_storage:
        raise error(f"{where}: a tensor view of {numel} elements (reaching element {extent}) over a storage of "
                    f"{numel_storage}; overlapping or out-of-range views are refused")


def check_tensor_extent(t: Any, where: str, error: ErrorClass = CheckpointError) -> None:
    """Refuse a loaded tensor that addresses more elements than its storage holds (zero / overlapping strides
    of huge shape), has more than :data:`MAX_NDIM` dimensions, or more than :data:`MAX_TENSOR_ELEMENTS`."""
    if t.ndim > MAX_NDIM or t.numel() > MAX_TENSOR_ELEMENTS:
        raise error(f"{where}: tensor of shape {list(t.shape)[:MAX_NDIM]} is larger than any supported model")
    if t.device.type == "meta" or t.numel() == 0:
        return
    elements = t.untyped_storage().nbytes() // max(1, t.element_size())
    check_view_args(elements, int(t.storage_offset()), list(t.shape), list(t.stride()), where, error)
