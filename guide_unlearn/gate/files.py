"""Opening files: the one place the library opens a file it was given (or found in a folder it was given) for
reading.

- Regular files only. The file is opened without blocking (``O_NONBLOCK``: opening a FIFO for reading would wait
  for a writer forever) and *then* checked with ``fstat`` on the open descriptor, so what is checked is what is
  read: a device, FIFO, socket or folder is refused, whatever link led to it.
- Never past the size ``fstat`` reported (:class:`BoundedFile`), and never more than the kind's cap
  (``/proc`` files report 0 bytes and never end: an empty file is refused unless the kind allows it).
- Inside the folder it belongs to: with ``root``, the file's real location must lie inside the real ``root``
  (links that stay inside are fine); the one exception is a Hugging Face cache snapshot's file, a link into the
  same repo's ``blobs/`` (:func:`hub_blob_link`).
- A folder the user gave (a folder of photos) is listed by :func:`list_folder`: every file in it checked by the
  same rules before any is read, and at most the kind's number of entries looked at.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .kinds import Kind, get_kind

__all__ = ["BoundedFile", "check_file", "hub_blob_link", "inside", "list_folder", "open_file", "read_bytes", "sha256"]

PathLike = Union[str, os.PathLike]


class BoundedFile(io.RawIOBase):
    """A read-only binary file that never reads (or allocates for) more than the ``size`` bytes ``fstat`` reported
    when it was opened: ``read(n)`` with an attacker-declared ``n`` returns at most what is left."""

    def __init__(self, f: Any, size: int, name: str = ""):
        super().__init__()
        self._f, self.size, self.name = f, int(size), name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._f.seek(pos, whence)

    def _left(self) -> int:
        return max(0, self.size - self._f.tell())

    def read(self, n: Optional[int] = -1) -> bytes:
        left = self._left()
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readline(self, limit: Optional[int] = -1) -> bytes:
        left = self._left()
        return self._f.readline(left if limit is None or limit < 0 else min(limit, left))

    def peek(self, n: int = 0) -> bytes:
        pos = self._f.tell()
        data = self.read(max(1, n))
        self._f.seek(pos)
        return data

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()


def hub_blob_link(path: PathLike) -> bool:
    """True when ``path`` is a link that huggingface_hub's cache made: it sits (lexically) under
    ``.../models--<owner>--<name>/snapshots/<revision>/`` and resolves to a file directly inside the same
    ``models--<owner>--<name>/blobs/`` folder, which is itself a real folder (not a link)."""
    path = Path(path)
    if not path.is_symlink():
        return False
    parts = Path(os.path.abspath(path)).parts
    try:
        i = len(parts) - 1 - parts[::-1].index("snapshots")
    except ValueError:
        return False
    if i < 1 or not parts[i - 1].startswith(("models--", "datasets--", "spaces--")) or i + 2 >= len(parts):
        return False
    repo = Path(*parts[:i])
    blobs = repo / "blobs"
    if blobs.is_symlink() or not blobs.is_dir():
        return False
    target = Path(os.path.realpath(path))
    return target.parent == Path(os.path.realpath(blobs))


def inside(path: PathLike, root: PathLike, kind: Union[str, Kind], hub_blobs: bool = True) -> Path:
    """``path`` if its real location lies inside the real ``root`` (or it is a Hugging Face cache link into its
    repo's blobs, with ``hub_blobs``); else the kind's error naming both. -> the real path to open."""
    kind = get_kind(kind)
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
        return Path(real)
    if hub_blobs and hub_blob_link(path):
        return Path(real)
    raise kind.error(f"{path} is reached through a symbolic link to {real}, outside the folder {root} it belongs "
                     f"to; a {kind.name} must be a file inside that folder (the only links followed are "
                     "huggingface_hub's cache links into the same repo's blobs/). Copy the real file into the folder")


def _open_fd(path: PathLike, kind: Kind) -> tuple[int, os.stat_result]:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise kind.error(f"{path}: no such file; pass the path of the {kind.name}") from None
    except IsADirectoryError:
        raise kind.error(f"{path} is a folder, not a {kind.name}; pass the file itself") from None
    except OSError as exc:
        raise kind.error(f"{path}: cannot open the {kind.name} ({exc.strerror or exc}); check the path and its "
                         "permissions") from None
    try:
        st = os.fstat(fd)
    except OSError as exc:  # pragma: no cover - fstat on an open descriptor
        os.close(fd)
        raise kind.error(f"{path}: cannot read the {kind.name} ({exc.strerror or exc})") from None
    return fd, st


def _check_stat(path: PathLike, st: os.stat_result, kind: Kind) -> int:
    if not stat.S_ISREG(st.st_mode):
        raise kind.error(f"{path}: the {kind.name} is not a regular file (a device, pipe, socket or folder); pass "
                         "the file itself")
    if st.st_size == 0 and not kind.allow_empty:
        raise kind.error(f"{path}: the {kind.name} is empty (an interrupted copy or download, or a special file "
                         "such as /proc/...); get a complete copy")
    if st.st_size > kind.max_bytes:
        raise kind.error(f"{path}: the {kind.name} is {st.st_size} bytes, over the {kind.max_bytes}-byte limit "
                         f"for a {kind.name}; refusing it")
    return int(st.st_size)


def check_file(path: PathLike, kind: Union[str, Kind], root: Optional[PathLike] = None) -> tuple[Path, int]:
    """Check, without reading its content, that ``path`` is a regular file of at most the kind's size (inside
    ``root`` when given). For files a third-party library reads by path (onnx, dlib, safetensors' mmap).
    -> (the real path to hand over, its size)."""
    kind = get_kind(kind)
    real = inside(path, root, kind) if root is not None else Path(os.path.realpath(path))
    fd, st = _open_fd(real, kind)
    try:
        return real, _check_stat(path, st, kind)
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_file(path: PathLike, kind: Union[str, Kind], root: Optional[PathLike] = None) -> Iterator[BoundedFile]:
    """Open ``path`` for reading as a ``kind`` file (module docstring): regular, at most the kind's size, inside
    ``root`` when given. Yields a :class:`BoundedFile` (``.size`` holds the size). Raises the kind's error."""
    kind = get_kind(kind)
    real = inside(path, root, kind) if root is not None else path
    fd, st = _open_fd(real, kind)
    try:
        size = _check_stat(path, st, kind)
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        raw = os.fdopen(fd, "rb", buffering=1 << 16)
    except BaseException:
        os.close(fd)
        raise
    f = BoundedFile(raw, size, str(path))
    try:
        yield f
    finally:
        f.close()


def read_bytes(path: PathLike, kind: Union[str, Kind], root: Optional[PathLike] = None) -> bytes:
    """The whole content of a ``kind`` file (:func:`open_file`'s checks), at most the kind's cap."""
    kind = get_kind(kind)
    with open_file(path, kind, root) as f:
        try:
            data = f.read()
        except OSError as exc:
            raise kind.error(f"{path}: cannot read the {kind.name} ({exc.strerror or exc})") from None
    if len(data) != f.size:
        raise kind.error(f"{path}: the {kind.name} changed while it was read; try again")
    return data


def sha256(path: PathLike, kind: Union[str, Kind], root: Optional[PathLike] = None, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a ``kind`` file's bytes, read in chunks through :func:`open_file`."""
    kind = get_kind(kind)
    h = hashlib.sha256()
    with open_file(path, kind, root) as f:
        try:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
        except OSError as exc:
            raise kind.error(f"{path}: cannot read the {kind.name} ({exc.strerror or exc})") from None
    return h.hexdigest()


def list_folder(folder: PathLike, kind: Union[str, Kind], recursive: bool = True) -> list[Path]:
    """The files under ``folder`` (sub-folders included unless ``recursive`` is False; entries whose name starts
    with "." skipped), sorted, each listed once (a link to a file inside is dropped when its target is listed), each
    checked without being read: its real location inside the real ``folder`` (a link may lead only to another
    place inside it; a link to a folder inside is not followed, its files are listed where they are), a regular
    file (not a pipe, device or socket, whatever link led to it), at most the kind's size. At most the kind's
    ``max_entries`` entries (files and folders, skipped ones included) are looked at: a folder with more is
    refused without reading the rest of it, so the listing ends in bounded time. Raises the kind's error naming
    the entry and what to do. -> the paths as found under ``folder`` (not resolved)."""
    kind = get_kind(kind)
    folder = Path(folder)
    found: list[Path] = []
    pending, seen = [folder], 0
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    seen += 1
                    if seen > kind.max_entries:
                        raise kind.error(f"{folder} holds more than {kind.max_entries} entries (files and folders); "
                                         f"a folder of {kind.name}s is read only up to that many: split it, or pass "
                                         "a smaller folder")
                    if entry.name.startswith("."):
                        continue
                    path = Path(entry.path)
                    if _listed_folder(path, entry, folder, kind):
                        if recursive:
                            pending.append(path)
                    elif not entry.is_dir():
                        found.append(path)
        except OSError as exc:
            raise kind.error(f"cannot list the folder {current} ({exc.strerror or exc}); check the path and its "
                             "permissions") from None
    once: dict[str, Path] = {}
    for path in sorted(found, key=lambda p: (p.is_symlink(), str(p))):  # real files first, then links to them
        once.setdefault(os.path.realpath(path), path)
    return sorted(once.values())


def _listed_folder(path: Path, entry: os.DirEntry, folder: Path, kind: Kind) -> bool:
    """Check one entry of :func:`list_folder`: True for a real sub-folder to list, False for a file that passed
    the checks (or a link to a folder inside, which is not followed); the kind's error otherwise."""
    if entry.is_symlink():
        inside(path, folder, kind, hub_blobs=False)  # the link leads somewhere inside the folder, or it is refused
    elif entry.is_dir(follow_symlinks=False):
        return True
    try:
        st = os.stat(path)  # follows a link inside; never opens (a FIFO would block an open for reading)
    except OSError as exc:
        raise kind.error(f"{path}: a broken link or unreadable entry in {folder} ({exc.strerror or exc}); remove it "
                         "from the folder") from None
    if stat.S_ISDIR(st.st_mode):
        return False  # a link to a folder inside: its files are listed where they really are
    if not stat.S_ISREG(st.st_mode):
        raise kind.error(f"{path} in {folder} is not a regular file (a pipe, device or socket); a folder of "
                         f"{kind.name}s may hold only files: remove it from the folder")
    if st.st_size > kind.max_bytes:
        raise kind.error(f"{path} in {folder} is {st.st_size} bytes, over the {kind.max_bytes}-byte limit for a "
                         f"{kind.name}; remove it from the folder (or shrink it)")
    return False
