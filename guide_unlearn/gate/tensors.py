"""Binary payloads the gate hands to their parsers: ``torch.load`` (only of streams a pickle scan admitted),
safetensors files, and images.

- :func:`torch_load` is the library's only call of ``torch.load``: always ``weights_only=True``, on a stream the
  gate opened (or bytes already in memory), after :func:`guide_unlearn.checkpoints.torch_zip.load_torch_file` or
  the NVIDIA unpickler scanned it with an allow-list.
- :func:`safetensors_header` reads a header (bounded JSON) without touching the data; :func:`load_safetensors`
  loads a file whose path the gate checked (small kinds from memory, large ones through safetensors' own reader).
- :func:`open_image` decodes a photo from bytes the gate read (regular file, size cap), with a pixel cap.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import Any, Iterable, Optional, Union

from .files import check_file, open_file, read_bytes
from .kinds import Kind, get_kind
from .parse import parse_json

__all__ = ["MAX_PIXELS", "load_npz", "load_safetensors", "open_image", "parse_safetensors", "safetensors_header", "torch_load"]

PathLike = Union[str, os.PathLike]
KindLike = Union[str, Kind]
MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own limit
MAX_PIXELS = 64_000_000  # decoded photo size (about 8000 x 8000)
_IN_MEMORY = 256 << 20  # safetensors files up to this size are loaded from bytes the gate read


def torch_load(source: Union[bytes, Any], where: str, kind: KindLike, safe_globals: Iterable[type] = (),
               map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of ``source`` (bytes, or a stream from :func:`open_file`) that a pickle
    scan has admitted. ``safe_globals`` are extra classes torch's weights-only unpickler may build (e.g.
    ``argparse.Namespace``). torch's own refusals become ``UnsafeCheckpointError``; any other failure the kind's
    error naming ``where``."""
    import pickle

    import torch

    from ..errors import GuideUnlearnError, UnsafeCheckpointError

    kind = get_kind(kind)
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(stream, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UnsafeCheckpointError(f"{where}: refused by torch's weights-only loader: {first[:300]}") from None
    except GuideUnlearnError:
        raise
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise kind.error(f"{where}: the {kind.name} cannot be read ({type(exc).__name__}: {first}); it is probably "
                         "truncated or corrupted: get a fresh copy") from None


def _read_header(f: Any, size: int, where: str, kind: Kind
                 ) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]], int]:
    head = f.read(8)
    if len(head) < 8:
        raise kind.error(f"{where}: not a readable safetensors file (too short); get a fresh copy")
    (n,) = struct.unpack("<Q", head)
    if not 2 <= n <= MAX_SAFETENSORS_HEADER or 8 + n > size:
        raise kind.error(f"{where}: not a readable safetensors file (its header claims {n} bytes in a file of "
                         f"{size}: truncated, or not safetensors); download or export it again")
    header = parse_json(f.read(n), f"{where} (safetensors header)",
                        Kind(kind.name, MAX_SAFETENSORS_HEADER, kind.error, max_depth=8))
    if not isinstance(header, dict):
        raise kind.error(f"{where}: the safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise kind.error(f"{where}: the safetensors metadata must map strings to strings")
    tensors: dict[str, tuple[str, tuple[int, ...]]] = {}
    data = size - 8 - n
    end = 0
    for name, spec in header.items():
        ok = isinstance(spec, dict) and isinstance(spec.get("dtype"), str) and isinstance(spec.get("shape"), list) \
            and all(type(d) is int and d >= 0 for d in spec["shape"]) and len(spec["shape"]) <= 16
        offsets = spec.get("data_offsets") if isinstance(spec, dict) else None
        ok = ok and isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets) \
            and 0 <= offsets[0] <= offsets[1]
        if not ok:
            raise kind.error(f"{where}: safetensors header entry {str(name)[:60]!r} is malformed (dtype, shape or "
                             "data offsets); get a fresh copy")
        end = max(end, offsets[1])
        tensors[name] = (spec["dtype"], tuple(spec["shape"]))
    if end > data:
        raise kind.error(f"{where}: safetensors file truncated: tensors need {end} bytes of data, the file holds "
                         f"{data}; download or export it again")
    return meta, tensors, data


def safetensors_header(path: PathLike, kind: KindLike, root: Optional[PathLike] = None
                       ) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]], int]:
    """(metadata {str: str}, {tensor name: (dtype, shape)}, data bytes) of a safetensors file, read from its
    header alone (bounded JSON; offsets checked against the file's size). Raises the kind's error."""
    kind = get_kind(kind)
    with open_file(path, kind, root) as f:
        return _read_header(f, f.size, str(path), kind)


def parse_safetensors(data: bytes, where: str, kind: KindLike) -> tuple[dict, dict]:
    """(tensors, metadata) of safetensors bytes already read through the gate; the header is bounded and checked
    before safetensors parses it. Raises the kind's error."""
    from safetensors.torch import load

    kind = get_kind(kind)
    meta, _, _ = _read_header(io.BytesIO(data), len(data), where, kind)
    try:
        return dict(load(bytes(data))), meta
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise kind.error(f"{where}: not a readable safetensors file ({str(exc)[:200]}); get a fresh copy") from None


def load_safetensors(path: PathLike, kind: KindLike, root: Optional[PathLike] = None) -> tuple[dict, dict]:
    """(tensors {name: tensor}, metadata) of a safetensors file the gate checked (regular, inside ``root``, at
    most the kind's size). Raises the kind's error for anything safetensors cannot read."""
    from safetensors.torch import load_file

    kind = get_kind(kind)
    real, size = check_file(path, kind, root)
    if size <= _IN_MEMORY:
        return parse_safetensors(read_bytes(real, kind), str(path), kind)
    meta, _, _ = safetensors_header(real, kind)  # bounded header first: safetensors parses it unbounded
    try:  # large weights: safetensors' own reader (memory-maps), on the path the gate just checked
        return dict(load_file(str(real))), meta
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise kind.error(f"{path}: not a readable safetensors file ({str(exc)[:200]}); get a fresh copy") from None


def open_image(path: PathLike, kind: KindLike = "photo", root: Optional[PathLike] = None):
    """A fully decoded PIL image from a file the gate read (regular, at most the kind's bytes), refused beyond
    :data:`MAX_PIXELS` decoded pixels (decompression bombs). Raises the kind's error (ImageLoadError for photos)."""
    from PIL import Image, UnidentifiedImageError

    kind = get_kind(kind)
    data = read_bytes(path, kind, root)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > MAX_PIXELS:
                raise kind.error(f"{path} is {img.width}x{img.height} pixels, over the {MAX_PIXELS:,}-pixel limit; "
                                 "downscale it first")
            img.load()
    except kind.error:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise kind.error(f"{path} is too large to decode safely ({exc}); downscale it first") from None
    except UnidentifiedImageError:
        raise kind.error(f"{path} is not a readable image (UnidentifiedImageError: not an image format PIL "
                         "recognises); pass a JPEG or PNG photo") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        raise kind.error(f"{path} is not a readable image ({type(exc).__name__}: {str(exc)[:200]}); pass a JPEG or "
                         "PNG photo") from None
    img.filename = str(path)  # type: ignore[attr-defined]
    return img



def load_npz(path: PathLike, kind: KindLike, root: Optional[PathLike] = None) -> dict:
    """The arrays of a ``.npz`` file read through the gate: no pickled objects (``allow_pickle=False``), and the
    sizes its members declare bounded (16 × the file + 64 MiB) before anything is decompressed. Raises the kind's
    error."""
    import zipfile

    import numpy as np

    kind = get_kind(kind)
    data = read_bytes(path, kind, root)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            declared = sum(i.file_size for i in zf.infolist())
        if declared > 16 * len(data) + (64 << 20):
            raise kind.error(f"{path}: the archive declares {declared} bytes once unpacked from {len(data)}; refusing "
                             "a decompression bomb")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except kind.error:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, struct.error) as exc:
        raise kind.error(f"{path}: not a readable .npz file ({type(exc).__name__}: {str(exc)[:200]})") from None
