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

import json
import os
import re
import stat
from typing import Any, Iterable, Type, Union

from ..errors import CheckpointError, GuideUnlearnError

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


def regular_file(path: PathLike, what: str = "file", error: ErrorClass = CheckpointError,
                 allow_empty: bool = False) -> int:
    """Size in bytes of ``path`` if it is a regular file (symlinks followed); else ``error``.

    Devices, FIFOs, sockets and folders are refused, and so are empty files unless ``allow_empty`` — which covers
    ``/proc`` and ``/sys`` files, which report size 0 whatever they produce.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: the {what} is not a regular file (a device, pipe, socket or folder); pass the file "
                    "itself")
    if st.st_size == 0 and not allow_empty:
        raise error(f"{path}: the {what} is empty (or a special file such as /proc/...); pass a real file")
    if not os.access(path, os.R_OK):
        raise error(f"{path}: the {what} is not readable (permission denied); check its permissions")
    return int(st.st_size)


def read_regular_file(path: PathLike, max_bytes: int, what: str = "file",
                      error: ErrorClass = CheckpointError) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (read no further than its stat'd size)."""
    size = regular_file(path, what, error)
    if size > max_bytes:
        raise error(f"{path}: the {what} is {size} bytes, over the {max_bytes}-byte limit; refusing it")
    try:
        with open(path, "rb") as f:
            data = f.read(size)
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    return data


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(data: bytes) -> int:
    """Maximal ``[`` / ``{`` nesting of JSON text (strings skipped), computed without parsing."""
    import numpy as np

    stripped = _JSON_STRING.sub(b'""', data)
    arr = np.frombuffer(stripped, dtype=np.uint8)
    step = (np.isin(arr, (0x5B, 0x7B)).astype(np.int64) - np.isin(arr, (0x5D, 0x7D)).astype(np.int64))
    return int(np.cumsum(step).max()) if len(step) else 0


def loads_json(data: Union[bytes, str], where: str, error: ErrorClass = CheckpointError,
               max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text whose size and nesting are bounded first (no RecursionError, no deep objects)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise error(f"{where}: {len(raw)} bytes of JSON, over the {max_bytes}-byte limit; refusing it")
    if json_depth(raw) > max_depth:
        raise error(f"{where}: JSON nested deeper than {max_depth} levels; the file is malformed or hostile")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"{where}: not valid JSON ({str(exc)[:200]}); get a fresh copy of the file") from None


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
