"""Tell checkpoint formats apart from their first bytes, and say what a file *seems* to be when it is not usable.

Nothing here unpickles anything: pickles are only parsed (``pickletools``) and zip archives only listed.
"""

from __future__ import annotations

import os
import pickletools
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from ..errors import CheckpointError
from ..gate import Kind, open_file, safetensors_header
from ..gate.kinds import GiB

_PROBE = Kind("checkpoint", 64 * GiB, CheckpointError, allow_empty=True)

__all__ = ["FileFormat", "detect_format", "describe_file"]

PathLike = Union[str, os.PathLike]

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class FileFormat:
    """What a checkpoint path holds.

    kind: 'folder' (our config.json + safetensors), 'pickle' (plain pickle, e.g. NVIDIA network pickle),
          'torch-zip' (torch.save, zip format), 'torch-legacy' (torch.save, pre-1.6 format), 'safetensors'.
    description: one human sentence (used in error messages).
    """

    kind: str
    description: str


def _pickle_end(f) -> int | None:
    """Offset just past the first pickle's STOP, or None when the stream ends first (truncated)."""
    try:
        for _ in pickletools.genops(f):
            pass
    except ValueError:
        return None
    return f.tell()


def _first_arg(f):
    try:
        for op, arg, _ in pickletools.genops(f):
            if op.name not in ("PROTO", "FRAME"):
                return arg
    except ValueError:
        return None
    return None


MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own limit


def _looks_like_safetensors(head: bytes) -> bool:
    """Full signature: an 8-byte little-endian header length, then a JSON object starting with '{'."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= MAX_SAFETENSORS_HEADER


def _safetensors_header(path: Path) -> FileFormat:
    _, tensors, _ = safetensors_header(path, "checkpoint")  # bounded JSON; offsets checked against the size
    return FileFormat("safetensors", f"a safetensors file with {len(tensors)} tensors")


def detect_format(path: PathLike) -> FileFormat:
    """Identify a checkpoint file or folder from its content (never from its extension alone).

    Raises:
        CheckpointError: missing, empty, truncated or of an unsupported kind; the message says what the file
            seems to be (an HTML page, a gzip archive, a truncated pickle / zip / safetensors, ...).
    """
    path = Path(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return FileFormat("folder", "a model folder (config.json + weights)")
        if (path / "forget_patch.json").is_file():
            raise CheckpointError(f"{path} is a forget patch, not a model; apply it to its base model "
                                  "(`guide-unlearn apply PATCH --model BASE`, or IdentityEraser.apply_patch)")
        raise CheckpointError(f"{path}: a folder without config.json is not a saved model; pass a checkpoint file "
                              "or a folder written by save_pretrained / `guide-unlearn convert`")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    with open_file(path, _PROBE) as probe:
        size, head = probe.size, probe.read(64)
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download, or a special file such as "
                              "/proc/...); download it again")
    if head[:4] == b"PK\x03\x04":
        try:
            with open_file(path, "checkpoint") as f, zipfile.ZipFile(f) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, struct.error):
            raise CheckpointError(
                f"{path}: looks like a torch.save zip checkpoint but is truncated or corrupted (no readable zip "
                f"directory in {size} bytes); download it again") from None
        if any(n.casefold().endswith(".pkl") for n in names):
            return FileFormat("torch-zip", "a torch.save checkpoint (zip format)")
        raise CheckpointError(f"{path}: a zip archive, but not a torch checkpoint (no data.pkl; first entries "
                              f"{names[:3]})")
    if _looks_like_safetensors(head):
        return _safetensors_header(path)
    if head[:1] == b"\x80":
        with open_file(path, "checkpoint") as f:
            end = _pickle_end(f)
            if end is None:
                raise CheckpointError(
                    f"{path}: looks like a pickle (NVIDIA network pickle or legacy torch.save) but it is truncated "
                    f"or corrupted ({size} bytes, no complete pickle); download it again")
            f.seek(0)
            if _first_arg(f) == TORCH_LEGACY_MAGIC:
                return FileFormat("torch-legacy", "a torch.save checkpoint (legacy, pre-1.6 format)")
        return FileFormat("pickle", "a plain pickle (e.g. an NVIDIA network pickle)")
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        raise CheckpointError(
            f"{path}: this is an HTML web page, not a checkpoint (a download link that returned a page, e.g. "
            "Google Drive's 'virus scan' confirmation); download the file itself in a browser")
    if head[:2] == b"\x1f\x8b":
        raise CheckpointError(f"{path}: a gzip archive; decompress it first")
    if head[:4] in (b"\x08\x07\x12\x0c",) or head[:2] == b"\x08\x03":
        raise CheckpointError(f"{path}: looks like an ONNX / protobuf model, which is not a generator checkpoint")
    if head[:5] == b"\x89HDF\r":
        raise CheckpointError(f"{path}: an HDF5 (Keras / TensorFlow) file; only PyTorch checkpoints are supported")
    raise CheckpointError(
        f"{path}: unknown file format (first bytes {head[:8]!r}); supported: NVIDIA .pkl, torch .pt, "
        ".safetensors, or a model folder")


def describe_file(path: PathLike) -> str:
    """One sentence saying what ``path`` seems to be (never raises)."""
    try:
        return f"it seems to be {detect_format(path).description}"
    except CheckpointError as exc:
        return str(exc).split(": ", 1)[-1]
