"""Where face and identity networks find their weight files.

Search order for a file ``name`` of a model family ``sub`` (e.g. ``sub="mtcnn"``, ``name="pnet.pt"``):

1. an explicit ``path`` given by the caller (a file, or a folder holding ``name``);
2. ``$GUIDE_SHARED/weights/<sub>/<name>`` (GUIDE_SHARED defaults to a ``shared`` folder beside the working
   directory or beside the repository checkout);
3. the cache folder ``$GUIDE_UNLEARN_CACHE/<sub>/<name>``, default ``~/.cache/guide_unlearn/<sub>/<name>``;
4. for the families in ``TORCH_HUB_FAMILIES`` (files that another tool caches under torch's hub folder, e.g.
   pytorch-fid's Inception), ``$TORCH_HOME/hub/checkpoints/<name>``, default ``~/.cache/torch/hub/checkpoints``.

Nothing is ever downloaded: a missing file raises BackendUnavailableError saying where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Union

from ..errors import BackendUnavailableError

PathLike = Union[str, os.PathLike]

# families whose files are also looked for in torch's hub cache, where the tools that publish them keep them
# (pytorch-fid downloads pt_inception-2015-12-05-6726825d.pth there)
TORCH_HUB_FAMILIES = frozenset({"inception"})


def torch_home() -> Path:
    """torch's cache folder: $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "torch"


def cache_dir() -> Path:
    """The user cache folder: $GUIDE_UNLEARN_CACHE, else $XDG_CACHE_HOME/guide_unlearn, else ~/.cache/guide_unlearn."""
    if os.environ.get("GUIDE_UNLEARN_CACHE"):
        return Path(os.environ["GUIDE_UNLEARN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "guide_unlearn"


def shared_dirs() -> list[Path]:
    """Candidate shared/ folders: $GUIDE_SHARED if set, else ./../shared and the one beside the checkout."""
    if os.environ.get("GUIDE_SHARED"):
        return [Path(os.environ["GUIDE_SHARED"]).expanduser()]
    here = Path(__file__).resolve()
    return [Path.cwd().parent / "shared", here.parents[2].parent / "shared"]


def candidate_paths(sub: str, name: str, path: Optional[PathLike] = None) -> list[Path]:
    """Every place (in search order) where ``name`` of family ``sub`` may be."""
    out: list[Path] = []
    if path is not None:
        p = Path(path).expanduser()
        out.append(p / name if p.is_dir() else p)
        return out  # an explicit path is authoritative: never fall back silently
    out += [d / "weights" / sub / name for d in shared_dirs()]
    out.append(cache_dir() / sub / name)
    if sub in TORCH_HUB_FAMILIES:
        out.append(torch_home() / "hub" / "checkpoints" / name)
    return out


def find_weight(sub: str, name: str, path: Optional[PathLike] = None, what: str = "",
                extra: Iterable[Path] = (), install_hint: str = "") -> Path:
    """Resolve a weight file (see the module docstring) or raise BackendUnavailableError saying where to put it."""
    candidates = candidate_paths(sub, name, path) + ([] if path is not None else list(extra))
    for candidate in candidates:
        if candidate.is_file():
            from guide_unlearn.gate import check_file

            check_file(candidate, "face-weights")  # the reading gate: regular file, size cap (before dlib / onnx)
            return candidate
    where = ", ".join(str(c) for c in candidates)
    hint = f" {install_hint}" if install_hint else ""
    raise BackendUnavailableError(
        f"{what or name} weights not found (looked in: {where}); pass path=..., set GUIDE_SHARED to a folder "
        f"with weights/{sub}/{name}, or copy the file to {cache_dir() / sub / name}.{hint}")
