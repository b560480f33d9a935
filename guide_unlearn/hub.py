"""Sharing forget patches on the Hugging Face Hub: push by repo id, pull by repo id (the model card itself is
:mod:`guide_unlearn.card`).

Pulling: :func:`resolve_patch_folder` turns ``"user/repo"`` (optionally a revision and a sub-folder) into a folder
of the local huggingface_hub cache, fetching only the patch's files. The loader then applies its usual checks; the
one kind of symbolic link it follows is the cache's own ``snapshots/<rev>/<file>`` -> ``../../blobs/<hash>`` link
of the same repo (:func:`guide_unlearn.hub_paths.is_hub_cache_link`).

This module is core: it knows the patch format and huggingface_hub, never a backend or a pipeline.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from .card import CARD_FILE
from .errors import PatchError
from .hub_paths import looks_like_repo_id
from .patch_format import DELTA_FILE, LORA_CONFIG_FILE, LORA_FILE, MAX_JSON_BYTES, META_FILE

if TYPE_CHECKING:  # pragma: no cover
    from .patch import ForgetPatch

__all__ = ["HubPatchNotFoundError", "hub_cache_dir", "push_patch", "resolve_patch_folder"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class HubPatchNotFoundError(PatchError, FileNotFoundError):
    """A name is neither a local patch folder nor a patch found on the hub (or in its local cache)."""


# -- pulling ----------------------------------------------------------------------------------------------------
def hub_cache_dir() -> Path:
    """The huggingface_hub cache folder, read from the environment at call time (``HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``)."""
    from guide_unlearn.checkpoints.resolve import hf_hub_cache

    return hf_hub_cache()


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to 1/true/yes/on now (read at call time, unlike huggingface_hub)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _check_subfolder(subfolder: Optional[str]) -> Optional[str]:
    if subfolder in (None, ""):
        return None
    sub = str(subfolder).replace("\\", "/").strip("/")
    if not sub or any(p in ("", ".", "..") for p in sub.split("/")) or os.path.isabs(str(subfolder)):
        raise PatchError(f"subfolder {subfolder!r} must be a relative path inside the repo or folder, without '..'")
    return sub


def resolve_patch_folder(name_or_path: Union[str, os.PathLike], revision: Optional[str] = None,
                         subfolder: Optional[str] = None, token: Union[None, bool, str] = None,
                         cache_dir: Union[None, str, os.PathLike] = None) -> Path:
    """The local folder of a patch given a folder path or a hub repo id ``"user/repo"``.

    A local path that exists always wins over a hub id of the same spelling. A repo id is fetched (naming it is
    the request to download it), only the patch's files of ``subfolder``; with ``HF_HUB_OFFLINE=1``, or when a
    pinned commit is already cached, nothing is fetched and the cached snapshot is used. Raises
    HubPatchNotFoundError saying where it looked and what to do.
    """
    sub = _check_subfolder(subfolder)
    local = Path(name_or_path).expanduser()
    if local.exists():
        if revision is not None:
            raise PatchError(f"{local} is a local folder; revision={revision!r} applies to hub repos only (drop it, "
                             "or move the folder away to load the hub repo of the same name)")
        return local / sub if sub else local
    name = str(name_or_path)
    if not looks_like_repo_id(name):
        raise HubPatchNotFoundError(
            f"no patch at {name!r}: looked for a local folder {local.absolute()} (not found), and it is not a hub "
            "repo id ('user/repo'). Pass the folder written by patch.save_pretrained() or a hub repo id")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    prefix = f"{sub}/" if sub else ""
    patterns = [prefix + f for f in (META_FILE, LORA_CONFIG_FILE, LORA_FILE, DELTA_FILE, CARD_FILE)]
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    offline = hub_offline() or (revision is not None and _COMMIT.match(revision) is not None
                                and _cached_commit(cache, name, revision, prefix + META_FILE))
    if not offline:
        offline = not _check_remote_files(name, revision, sub, token)
    try:
        folder = snapshot_download(name, revision=revision, cache_dir=str(cache), allow_patterns=patterns,
                                   local_files_only=bool(offline), token=token, library_name="guide_unlearn")
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        mode = ("HF_HUB_OFFLINE=1 is set, so only the cache was searched; unset it to download" if hub_offline()
                else "check the id and revision, run `hf auth login` for a private repo, or download it on a "
                     "machine with access and copy the cache")
        raise HubPatchNotFoundError(
            f"no patch at {name!r}: looked for a local folder {local.absolute()} (not found) and for hub repo "
            f"{name!r} (revision {revision or 'main'}) in the cache {cache} and on the hub: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. {mode}") from e
    path = Path(folder) / sub if sub else Path(folder)
    if sub and not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder)):
        raise PatchError(f"{path} leads out of the cached snapshot {folder} through a linked folder; the "
                         "huggingface_hub cache never links folders — delete this snapshot and download it again")
    if not (path / META_FILE).exists():
        raise HubPatchNotFoundError(
            f"hub repo {name!r} (revision {revision or 'main'}) has no {prefix}{META_FILE}: it holds no forget patch "
            f"{'in that sub-folder' if sub else 'at its top level'}; pass subfolder=... naming the patch's folder")
    return path


def _cached_commit(cache: Path, repo_id: str, commit: str, meta_rel: str) -> bool:
    """True when the snapshot of ``commit`` (immutable) is already in the cache with the patch's metadata."""
    snap = cache / ("models--" + repo_id.replace("/", "--")) / "snapshots" / commit
    return (snap / meta_rel).exists()


def _check_remote_files(repo_id: str, revision: Optional[str], sub: Optional[str], token) -> bool:
    """Before downloading: list the patch's folder on the hub (one request) and refuse a pickle or an oversized
    JSON file there. -> False when the hub cannot be reached (the caller then uses the cache only, instead of
    huggingface_hub retrying the connection a second time), True otherwise."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        from httpx2 import HTTPError as TransportError  # huggingface_hub >= 1.x
    except ImportError:  # pragma: no cover - older huggingface_hub on requests
        from requests import RequestException as TransportError

    try:
        entries = list(HfApi(token=token).list_repo_tree(repo_id, path_in_repo=sub or None, revision=revision))
    except HfHubHTTPError:
        return True  # not found / private / gated: snapshot_download reports it (after looking in the cache)
    except (TransportError, OSError):
        return False
    for e in entries:
        fname = e.path.rsplit("/", 1)[-1]
        size = getattr(e, "size", None)
        if fname.lower().endswith(_PICKLE_SUFFIXES):
            raise PatchError(f"hub repo {repo_id!r} holds a pickle file {e.path!r} beside the patch; forget patches "
                             "are safetensors-only and nothing was downloaded. Ask its owner to remove it")
        if fname.endswith(".json") and isinstance(size, int) and size > MAX_JSON_BYTES:
            raise PatchError(f"hub repo {repo_id!r}: {e.path} is {size} bytes, over the {MAX_JSON_BYTES}-byte "
                             "limit for patch JSON files; nothing was downloaded")
    return True


# -- pushing ----------------------------------------------------------------------------------------------------
def push_patch(patch: "ForgetPatch", repo_id: str, private: bool = True, token: Union[None, bool, str] = None,
               commit_message: Optional[str] = None, revision: Optional[str] = None,
               subfolder: Optional[str] = None, license: Union[None, str, Mapping[str, Any]] = None,
               base_model: Optional[str] = None):
    """Upload a patch (its files and its model card) to ``repo_id`` in one commit. -> huggingface_hub CommitInfo.

    The repo is created if missing (private by default). ``subfolder`` puts the patch under that folder, so one
    repo can hold many patches for one base; ``revision`` names an existing branch to commit to.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    if not looks_like_repo_id(repo_id):
        raise PatchError(f"{repo_id!r} is not a hub repo id; use 'user/repo' (or 'org/repo')")
    sub = _check_subfolder(subfolder)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="guide_unlearn_push_") as tmp:
        folder = patch.save_pretrained(Path(tmp) / "patch", card={"license": license, "base_model": base_model,
                                                                   "repo_id": repo_id, "subfolder": sub})
        files = sorted(p for p in folder.iterdir() if p.is_file())
        # Bytes are read now: the temporary folder is gone when the commit is sent.
        ops = [CommitOperationAdd(path_in_repo=(f"{sub}/" if sub else "") + p.name, path_or_fileobj=p.read_bytes())
               for p in files]
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    target = getattr(repo, "repo_id", None) or repo_id
    message = commit_message or f"Add forget patch {patch.patch_id}" + (f" in {sub}/" if sub else "")
    return api.create_commit(target, ops, commit_message=message, revision=revision, repo_type="model")
