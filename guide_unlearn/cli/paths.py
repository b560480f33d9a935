"""Checks of the command line's output paths, made before any model is loaded or any step runs.

A path that cannot be written (a file where a folder is needed, a folder where a file is needed, no permission,
a read-only file system) is reported as one :class:`~guide_unlearn.errors.SaveError` line (exit 2) before minutes
of compute, not as an internal error afterwards. Nothing is created by the checks: the nearest existing folder
is probed with a temporary file that is removed at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

from guide_unlearn.errors import SaveError

__all__ = ["check_output_file", "check_output_folder"]

PathLike = Union[str, os.PathLike]


def check_output_folder(path: PathLike, option: str = "--out") -> Path:
    """``path`` as a folder this process could create or fill. -> the Path. Raises SaveError (one line naming
    ``option``) when a file stands where the folder or one of its parents must be, or when its nearest existing
    parent cannot be written."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise SaveError(f"{option} {p} is a file, but a folder is needed there; choose another path")
    _check_parents(p, option)
    return p


def check_output_file(path: PathLike, option: str = "--out") -> Path:
    """``path`` as a file this process could write. -> the Path. Raises SaveError (one line naming ``option``)
    when it is a folder, when a file stands where one of its parent folders must be, or when its nearest existing
    parent cannot be written."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise SaveError(f"{option} {p} is a folder, but a file is needed there; give a file name such as "
                        f"{p / 'preview.png'}")
    _check_parents(p, option)
    return p


def _check_parents(p: Path, option: str) -> None:
    """Every existing ancestor of ``p`` must be a folder, and the nearest one writable."""
    parent = p.parent if not p.is_dir() else p
    while not parent.exists():
        if parent.is_symlink():  # a dangling link where a folder must be
            raise SaveError(f"{option} {p}: {parent} is a broken link; choose another path")
        parent = parent.parent
    if not parent.is_dir():
        raise SaveError(f"{option} {p}: {parent} is a file, but it would have to be a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".guide-unlearn-probe-", dir=parent)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SaveError(f"{option} {p} cannot be written: {parent} is not writable ({reason}); choose a folder you "
                        "can write to") from None
    os.close(fd)
    os.unlink(probe)
