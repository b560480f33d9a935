"""Atomic file and folder writes: nothing half-written is ever left behind (write to a temporary name, rename),
and nothing the user owns is replaced.

The rule every writer of the library follows: a missing path or an existing EMPTY folder is free; an existing file
is replaced only on request (``overwrite=True`` / ``--overwrite``); an existing folder is replaced only on request
AND when it is a complete artefact of this library that holds no other file (each writer passes a ``recognise``
function that identifies its own artefacts). Everything written gets the modes of a normally created file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Collection, Iterator, Mapping, Optional, Union

from .errors import SaveError

PathLike = Union[str, os.PathLike]


def sha256_file(path: PathLike, chunk: int = 1 << 20, kind: str = "checkpoint") -> str:
    """Hex sha256 of a file's bytes, read through the reading gate (a regular file of at most the ``kind``'s
    size)."""
    from .gate import sha256

    return sha256(path, kind, chunk=chunk)


# -- the writing rule -------------------------------------------------------------------------------------------
# A command writes only inside the output it was given; inside it, it never follows a link (its own bookkeeping
# files included) and never deletes what it did not write. These helpers check the first two before each write.


def no_links_below(root: PathLike, path: PathLike, what: str = "output") -> Path:
    """``path`` if it lies (lexically) inside ``root`` and neither it nor any folder between ``root`` and it is a
    symbolic link; SaveError otherwise (nothing is followed, so nothing outside ``root`` can be reached)."""
    root, path = Path(root), Path(path)
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise SaveError(f"{path} is not inside the {what} {root}; nothing was written") from None
    if any(part in ("", ".", "..") for part in rel.parts):
        raise SaveError(f"{path} leaves the {what} {root}; nothing was written")
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise SaveError(f"{current} is a symbolic link inside the {what} {root}; it is never followed, replaced "
                            "or deleted (it may lead outside the folder): remove it yourself or choose another "
                            "folder")
    return path


def remove_owned(path: PathLike, root: PathLike, what: str = "output") -> None:
    """Delete ``path`` — a file or folder this library wrote inside ``root`` — without following any link: the
    path and its parents below ``root`` must not be links (:func:`no_links_below`), and a folder is removed with
    ``shutil.rmtree``, which never follows links inside it."""
    path = no_links_below(root, path, what)
    try:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    except OSError as e:
        raise SaveError(f"could not remove {path}: {e.strerror or e}") from e


def replace_files(folder: PathLike, contents: Mapping[str, bytes]) -> None:
    """Replace several files of ``folder`` together, all or nothing: every new content is written to a temporary
    file first (nothing changes if one of them fails), then each is renamed into place; if a rename fails, the
    files already replaced get their previous content back. The files must be regular files (or missing): a link
    is never written through. Raises SaveError (nothing changed)."""
    folder = Path(folder)
    for name in contents:
        target = folder / name
        if "/" in name or "\\" in name or target.is_symlink() or (target.exists() and not target.is_file()):
            raise SaveError(f"{target} is a link or not a regular file; it is never replaced (nothing was written)")
    temps: dict[str, Path] = {}
    backups: dict[str, Path] = {}
    done: list[str] = []
    try:
        for name, data in contents.items():
            fd, tmp = temp_file_beside(folder / name)
            temps[name] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for name, tmp in temps.items():
            target = folder / name
            if target.exists():
                backups[name] = target.with_name(f".{name}.bak-{uuid.uuid4().hex[:8]}")
                os.link(target, backups[name])  # the previous content stays reachable until all are in place
            os.replace(tmp, target)
            done.append(name)
    except OSError as e:
        for name in done:
            if name in backups:
                os.replace(backups.pop(name), folder / name)
            else:
                with contextlib.suppress(OSError):
                    (folder / name).unlink()
        raise SaveError(f"could not update {folder}: {e.strerror or e}; nothing was changed") from e
    finally:
        for p in (*temps.values(), *backups.values()):
            with contextlib.suppress(OSError):
                p.unlink()


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


def atomic_write_bytes(path: PathLike, data: bytes, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``; the file gets the
    mode of a normally created file (:func:`temp_file_beside`). An existing file is replaced only with
    ``overwrite`` (:func:`check_output_file`); a folder never is."""
    path = Path(path)
    check_output_file(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_file_beside(path)
    except OSError as e:
        raise SaveError(f"could not write {path}: {e.strerror or e}; choose a folder you can write to (nothing "
                        "was written)") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and (path.exists() or path.is_symlink()):
            raise SaveError(f"{path} appeared while it was being written; choose another name (nothing was "
                            "written)")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, SaveError):
            raise
        raise SaveError(f"could not write {path}: {e.strerror or e}; free some disk space or choose another "
                        "folder (nothing was written)") from e


Recognise = Callable[[Path], Optional[Collection[str]]]
"""How a writer recognises its own artefact: folder -> the names of the files it holds that the writer wrote (a
complete artefact), or None when the folder is not one of its artefacts (or is incomplete)."""


def umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)  # elsewhere: the classic read-by-setting (restored at once)
    os.umask(old)
    return old


def normalise_modes(root: PathLike) -> None:
    """Give ``root`` and everything under it the modes of normally created entries (folders 0o777, files 0o666,
    minus the umask; executables keep their x bits). Undoes the 0o700 / 0o600 of ``mkdtemp`` / ``mkstemp`` and
    of libraries that write through them (safetensors' ``save_file``), so artefacts stay readable to the other
    users of a shared folder, as any file the user made would be."""
    mask = umask()
    root = Path(root)
    entries = [root] + sorted(root.rglob("*"))
    for p in entries:
        if p.is_symlink():
            continue
        if p.is_dir():
            os.chmod(p, 0o777 & ~mask)
        else:
            x = p.stat().st_mode & 0o111
            os.chmod(p, (0o666 | (0o777 if x else 0)) & ~mask)


def check_output_file(path: PathLike, overwrite: bool = False) -> Path:
    """Refuse (SaveError) to replace an existing file unless ``overwrite``; never replace a folder. Cheap: run it
    before expensive work, and again when writing. -> the path."""
    path = Path(path)
    if path.is_symlink():  # the writing rule: a link is never written through, replaced or deleted
        raise SaveError(f"{path} is a symbolic link; it is never written through or replaced (it may lead outside "
                        "the folder): choose another name or remove the link yourself (nothing was written)")
    if path.is_dir():
        raise SaveError(f"{path} is a folder; pass a file name (nothing was written)")
    if path.exists():
        if not overwrite:
            raise SaveError(f"{path} already exists; choose another name, or pass --overwrite (command line) / "
                            "overwrite=True (Python) to replace it (nothing was written)")
        if not path.is_file():
            raise SaveError(f"{path} exists and is not a regular file; choose another name (nothing was written)")
    return path


def check_output_dir(path: PathLike, overwrite: bool = False, recognise: Optional[Recognise] = None,
                     what: str = "folder") -> Path:
    """May an artefact folder be written at ``path``? Free: missing, or an existing EMPTY folder. An existing
    non-empty folder is replaced only with ``overwrite`` AND when ``recognise`` identifies it as a complete
    artefact of this library holding no other file; a folder with anything else in it is never replaced. Raises
    SaveError saying why and what to do. Cheap: run it before expensive work, and again when writing."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise SaveError(f"{path} exists and is not a folder; choose another path for the {what} (nothing was "
                        "written)")
    if not path.exists():
        return path
    try:
        entries = sorted(p.name for p in path.iterdir())
    except OSError as e:
        raise SaveError(f"cannot read the existing folder {path} ({e.strerror or e}); choose another path") from e
    if not entries:
        return path  # an empty folder is free
    owned = recognise(path) if recognise is not None else None
    if owned is None:
        listed = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise SaveError(f"{path} already exists and is not a {what} written by guide_unlearn (it holds {listed}); "
                        "it is never replaced, even with --overwrite / overwrite=True: choose another path or empty "
                        "it yourself (nothing was written)")
    foreign = [n for n in entries if n not in set(owned)]
    if foreign:
        listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise SaveError(f"{path} holds files guide_unlearn did not write ({listed}); it is never replaced, even with "
                        "--overwrite / overwrite=True: move them out or choose another path (nothing was written)")
    if not overwrite:
        raise SaveError(f"{path} already holds a {what}; choose another path, or pass --overwrite (command line) / "
                        "overwrite=True (Python) to replace it (nothing was written)")
    return path


@contextlib.contextmanager
def atomic_directory(path: PathLike, overwrite: bool = False, recognise: Optional[Recognise] = None,
                     what: str = "folder") -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path``; on success give it the normal modes
    (:func:`normalise_modes`) and rename it to ``path``.

    Whether an existing ``path`` may be replaced is :func:`check_output_dir`'s rule (checked before and again
    just before the swap): missing or empty is free; otherwise only with ``overwrite`` and only a complete
    artefact that ``recognise`` identifies, holding nothing else. On any error the temporary folder is removed
    and an existing ``path`` is left untouched. OSErrors become :class:`SaveError`.
    """
    path = Path(path)
    check_output_dir(path, overwrite, recognise, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as e:
        raise SaveError(f"could not write {path}: {e.strerror or e}; choose a folder you can write to (nothing "
                        "was written)") from e
    try:
        yield tmp
        normalise_modes(tmp)
        check_output_dir(path, overwrite, recognise, what)  # the folder may have changed meanwhile
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)  # put the previous artefact back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, SaveError):
            raise
        raise SaveError(f"could not write {path}: {e.strerror or e}; free some disk space or choose another "
                        "folder (nothing was written)") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
