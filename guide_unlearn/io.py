"""Atomic file and folder writes: nothing half-written is ever left behind (write to a temporary name, rename)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator, Union

from .errors import SaveError

PathLike = Union[str, os.PathLike]


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def temp_file_beside(path: PathLike, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a new, uniquely named hidden file next to ``path`` for writing. -> (fd, its path).

    Unlike ``mkstemp`` (always 0o600), the file gets the mode of a normally created one (0o666 minus the umask,
    applied by the kernel), so what is renamed into place stays readable to other users of a shared folder.
    """
    path = Path(path)
    while True:
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}{suffix}"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``; the file gets the
    mode of a normally created file (:func:`temp_file_beside`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise SaveError(f"could not write {path}: {e.strerror or e}; free some disk space or choose another "
                        "folder (nothing was written)") from e


@contextlib.contextmanager
def atomic_directory(path: PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path``; on success rename it to ``path``.

    On any error the temporary folder is removed and an existing ``path`` is left untouched. OSErrors become
    :class:`SaveError`.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise SaveError(f"{path} already exists; pass overwrite=True or choose another folder")
    if path.exists() and not path.is_dir():
        raise SaveError(f"{path} exists and is not a folder; choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SaveError(f"could not write {path}: {e.strerror or e}; free some disk space or choose another "
                        "folder (nothing was written)") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
