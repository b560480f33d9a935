"""Sharing forget patches on the Hugging Face Hub: push by repo id, pull by repo id (the model card itself is
:mod:`guide_unlearn.card`).

Pulling: :func:`resolve_patch_folder` turns ``"user/repo"`` (optionally a revision and a sub-folder) into a folder
of the local huggingface_hub cache, fetching only the patch's files. The loader then applies its usual checks; the
one kind of symbolic link it follows is the cache's own ``snapshots/<rev>/<file>`` -> ``../../blobs/<hash>`` link
of the same repo (:func:`guide_unlearn.hub_paths.is_hub_cache_link`).

This module is core: it knows the patch format and huggingface_hub, never a backend or a pipeline.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from .card import CARD_FILE
from . import gate
from .errors import PatchError
from .hub_paths import looks_like_repo_id
from .patch_format import DELTA_FILE, LORA_CONFIG_FILE, LORA_FILE, MAX_JSON_BYTES, META_FILE

if TYPE_CHECKING:  # pragma: no cover
    from .patch import ForgetPatch

__all__ = ["HubPatchNotFoundError", "HubUnavailableError", "hub_cache_dir", "push_patch", "resolve_patch_folder"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class HubPatchNotFoundError(PatchError, FileNotFoundError):
    """A name is neither a local patch folder nor a patch found on the hub (or in its local cache)."""


class HubUnavailableError(HubPatchNotFoundError):
    """The hub cannot be used now: no network, ``HF_HUB_OFFLINE=1``, no token for an upload, or the repo is not
    reachable; the message says which and what to do (nothing was uploaded / nothing is in the cache)."""


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

    A local path that exists always wins over a hub id of the same spelling; its ``subfolder`` must really lie
    inside it (a linked sub-folder leading out is refused). A repo id is fetched (naming it is the request to
    download it), only the patch's files of ``subfolder``; with ``HF_HUB_OFFLINE=1``, when a pinned commit is
    already cached, or when the hub cannot be reached (one quick probe, no retries), the cached snapshot is used.
    The cache is checked before huggingface_hub reads it (``refs/`` regular files holding a commit hash, no linked
    folders) and the snapshot after. Raises HubPatchNotFoundError saying where it looked and what to do.
    """
    sub = _check_subfolder(subfolder)
    local = Path(name_or_path).expanduser()
    if local.exists():
        if revision is not None:
            raise PatchError(f"{local} is a local folder; revision={revision!r} applies to hub repos only (drop it, "
                             "or move the folder away to load the hub repo of the same name)",
                             cli_message=f"{local} is a local folder; --revision applies to hub repos only")
        if not sub:
            return local
        gate.inside(local / sub, local, "patch-metadata", hub_blobs=False)  # a sub-folder linked out is refused
        return local / sub
    name = str(name_or_path)
    if not looks_like_repo_id(name):
        raise HubPatchNotFoundError(
            f"no patch at {name!r}: looked for a local folder {local.absolute()} (not found), and it is not a hub "
            "repo id ('user/repo'). Pass the folder written by patch.save_pretrained() or a hub repo id",
            cli_message=f"no patch at {name!r}: no such folder ({local.absolute()}), and it is not a hub repo id "
                        "('user/repo'); pass a patch folder written by `guide-unlearn erase` or a hub repo id")
    if revision is not None and not _REVISION.fullmatch(str(revision)) or ".." in str(revision or ""):
        raise PatchError(f"revision {str(revision)[:80]!r} is not a branch, tag or commit name")
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    _check_cached_repo(cache, name, revision)
    folder = _snapshot(name, revision, sub, token, cache, local)
    return _patch_in_snapshot(cache, name, Path(folder), sub, revision)


_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,254}")


def _repo_cache(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _check_cached_repo(cache: Path, repo_id: str, revision: Optional[str]) -> None:
    """Before huggingface_hub reads its cache: the repo's folders are real folders (not links out of the cache)
    and the ref it will read is a regular file holding a commit hash (never a FIFO, a device or a link)."""
    from .checkpoints.resolve import read_ref

    repo = _repo_cache(cache, repo_id)
    for folder in (repo, repo / "refs", repo / "snapshots", repo / "blobs"):
        if folder.is_symlink():
            raise PatchError(f"{folder} is a link in the huggingface_hub cache, which never links folders; delete "
                             f"{repo} and download the patch again")
    commit = revision if revision and _COMMIT.fullmatch(revision) else None
    if commit is None and (repo / "refs").is_dir():
        commit = read_ref(repo, revision or "main", kind="hub-ref")
    if commit is not None and (repo / "snapshots" / commit).is_symlink():
        raise PatchError(f"{repo / 'snapshots' / commit} is a link in the huggingface_hub cache, which never links "
                         f"folders; delete {repo} and download the patch again")


def _snapshot(name: str, revision: Optional[str], sub: Optional[str], token, cache: Path, local: Path) -> str:
    """huggingface_hub's snapshot folder of the patch's files (downloaded unless offline / unreachable)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    prefix = f"{sub}/" if sub else ""
    patterns = [prefix + f for f in (META_FILE, LORA_CONFIG_FILE, LORA_FILE, DELTA_FILE, CARD_FILE, "LICENSE")]
    unreachable = None
    offline = hub_offline() or (revision is not None and _COMMIT.match(revision) is not None
                                and _cached_commit(cache, name, revision, prefix + META_FILE))
    if not offline:
        unreachable = hub_unreachable()
        offline = unreachable is not None or not _check_remote_files(name, revision, sub, token)
    try:
        return snapshot_download(name, revision=revision, cache_dir=str(cache), allow_patterns=patterns,
                                 local_files_only=bool(offline), token=token, library_name="guide_unlearn")
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        where = f"hub repo {name!r} (revision {revision or 'main'})"
        if hub_offline():
            why = f"HF_HUB_OFFLINE=1 is set and the cache {cache} holds no snapshot of {where}; unset it to download"
        elif unreachable is not None:
            why = (f"the Hugging Face Hub cannot be reached ({unreachable}) and the cache {cache} holds no snapshot "
                   f"of {where}; connect to the network, or copy the patch folder to this machine and pass its path")
        else:
            why = (f"{where} was not found ({type(e).__name__}); check the id and revision, run `hf auth login` for "
                   "a private repo, or copy the patch folder to this machine and pass its path")
        raise HubUnavailableError(f"no patch at {name!r} (no local folder {local.absolute()}): {why}") from None


def _patch_in_snapshot(cache: Path, name: str, folder: Path, sub: Optional[str], revision: Optional[str]) -> Path:
    """The patch folder inside a cached snapshot: every folder from the repo down is a real folder of the cache
    (a linked snapshot or sub-folder would load a patch from outside it), and it holds forget_patch.json."""
    repo = _repo_cache(cache, name)
    path = folder / sub if sub else folder
    try:
        rel = path.relative_to(repo)
    except ValueError:
        rel = None
    current = repo
    for part in (rel.parts if rel is not None else ()):
        current = current / part
        if current.is_symlink():
            raise PatchError(f"{current} is a linked folder inside the cached snapshot {folder}; the huggingface_hub "
                             "cache never links folders — delete this snapshot and download it again")
    if rel is None or not Path(os.path.realpath(path)).is_relative_to(os.path.realpath(repo)):
        raise PatchError(f"{path} leads out of the cached snapshot {folder} through a linked folder; the "
                         "huggingface_hub cache never links folders — delete this snapshot and download it again")
    if not (path / META_FILE).exists():
        where = "in that sub-folder" if sub else "at its top level"
        raise HubPatchNotFoundError(
            f"hub repo {name!r} (revision {revision or 'main'}) has no {(sub + '/') if sub else ''}{META_FILE}: it "
            f"holds no forget patch {where}; pass subfolder=... naming the patch's folder",
            cli_message=f"hub repo {name!r} (revision {revision or 'main'}) holds no forget patch {where}; pass "
                        "--subfolder naming the patch's folder")
    return path


def hub_unreachable(timeout: float = 5.0) -> Optional[str]:
    """None when the Hugging Face Hub endpoint answers one request (no retries, ``timeout`` seconds), else the
    reason in a few words. Used before any call that huggingface_hub would retry for a minute."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
    except Exception as exc:  # noqa: BLE001 - any transport failure means: not reachable now
        text = " ".join(str(exc).split())[:120]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return None


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
        entries = []
        for e in HfApi(token=token).list_repo_tree(repo_id, path_in_repo=sub or None, revision=revision):
            entries.append(e)
            if len(entries) > 100_000:
                raise PatchError(f"hub repo {repo_id!r} lists more than 100000 files beside the patch; refusing it")
    except HfHubHTTPError:
        return True  # not found / private / gated: snapshot_download reports it (after looking in the cache)
    except (TransportError, OSError):
        return False
    except PatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed listing from the hub (or a mirror) breaks its parser
        raise PatchError(f"hub repo {repo_id!r}: the hub's file listing is malformed ({type(exc).__name__}); nothing "
                         "was downloaded") from None
    for e in entries:
        path, size = getattr(e, "path", None), getattr(e, "size", None)
        if not isinstance(path, str) or len(path) > 4096 or not (size is None or type(size) is int):
            raise PatchError(f"hub repo {repo_id!r}: the hub's file listing is malformed (an entry {str(path)[:80]!r} "
                             "without a proper path or size); nothing was downloaded")
        fname = path.rsplit("/", 1)[-1]
        if fname.lower().endswith(_PICKLE_SUFFIXES):
            raise PatchError(f"hub repo {repo_id!r} holds a pickle file {path!r} beside the patch; forget patches "
                             "are safetensors-only and nothing was downloaded. Ask its owner to remove it")
        if fname.endswith(".json") and isinstance(size, int) and size > MAX_JSON_BYTES:
            raise PatchError(f"hub repo {repo_id!r}: {path} is {size} bytes, over the {MAX_JSON_BYTES}-byte "
                             "limit for patch JSON files; nothing was downloaded")
    return True


# -- pushing ----------------------------------------------------------------------------------------------------
def push_patch(patch: "ForgetPatch", repo_id: str, private: bool = True, token: Union[None, bool, str] = None,
               commit_message: Optional[str] = None, revision: Optional[str] = None,
               subfolder: Optional[str] = None, license: Union[None, str, Mapping[str, Any]] = None,
               base_model: Optional[str] = None):
    """Upload a patch (its files and its model card) to ``repo_id`` in one commit. -> huggingface_hub CommitInfo.

    The repo is created if missing (private by default). ``subfolder`` puts the patch under that folder, so one
    repo can hold many patches for one base; ``revision`` names an existing branch to commit to. Without a token,
    with ``HF_HUB_OFFLINE=1`` or without network it fails at once with :class:`HubUnavailableError` (nothing is
    uploaded).
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    if not looks_like_repo_id(repo_id):
        raise PatchError(f"{repo_id!r} is not a hub repo id; use 'user/repo' (or 'org/repo')")
    sub = _check_subfolder(subfolder)
    token = _push_token(token)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="guide_unlearn_push_") as tmp:
        folder = patch.save_pretrained(Path(tmp) / "patch", card={"license": license, "base_model": base_model,
                                                                   "repo_id": repo_id, "subfolder": sub})
        # Bytes are read now (through the gate): the temporary folder is gone when the commit is sent.
        ops = [CommitOperationAdd(path_in_repo=(f"{sub}/" if sub else "") + p.name,
                                  path_or_fileobj=gate.read_bytes(p, "patch-tensors", root=folder))
               for p in sorted(folder.iterdir()) if p.is_file()]
    message = commit_message or f"Add forget patch {patch.patch_id}" + (f" in {sub}/" if sub else "")
    with _hub_errors(repo_id, "upload"):
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        target = getattr(repo, "repo_id", None) or repo_id
        return api.create_commit(target, ops, commit_message=message, revision=revision, repo_type="model")


def _push_token(token: Union[None, bool, str]) -> Union[bool, str]:
    """The token an upload will use, checked before anything runs: HubUnavailableError when offline mode is set
    or no token is configured (the message says how to log in)."""
    if hub_offline():
        raise HubUnavailableError("pushing needs the Hugging Face Hub, and HF_HUB_OFFLINE=1 is set; unset it (nothing "
                                  "was uploaded)")
    if token is False:
        raise HubUnavailableError("pushing needs a Hugging Face token, and token=False was passed (nothing was "
                                  "uploaded)")
    if token is None or token is True:
        from huggingface_hub import get_token

        found = get_token()
        if not found:
            raise HubUnavailableError(
                "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN, or pass token=... (nothing was "
                "uploaded)", cli_message="no Hugging Face token: log in with `hf auth login` or set HF_TOKEN "
                                         "(nothing was uploaded)")
        return found
    return token


@contextlib.contextmanager
def _hub_errors(repo_id: str, action: str):
    """Network, offline and permission failures of huggingface_hub calls as one HubUnavailableError line."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        yield
    except OfflineModeIsEnabled:
        raise HubUnavailableError(f"cannot {action} {repo_id!r}: HF_HUB_OFFLINE=1 is set; unset it (nothing was "
                                  "uploaded)") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        hint = ("the token has no write access to it: log in with `hf auth login` using a write token"
                if status in (401, 403) else "check the repo id and your access")
        raise HubUnavailableError(f"cannot {action} {repo_id!r}: the hub answered {status or 'an error'}; {hint} "
                                  "(nothing was uploaded)") from None
    except (OSError, ValueError) as exc:
        raise HubUnavailableError(f"cannot {action} {repo_id!r}: {_transport_reason(exc)} (nothing was "
                                  "uploaded)") from None
    except Exception as exc:  # noqa: BLE001 - httpx / requests transport errors, whichever huggingface_hub uses
        if type(exc).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore", "requests", "urllib3"):
            raise
        raise HubUnavailableError(f"cannot {action} {repo_id!r}: {_transport_reason(exc)} (nothing was "
                                  "uploaded)") from None


def _transport_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:160]
    return (f"the Hugging Face Hub cannot be reached ({type(exc).__name__}{': ' + text if text else ''}); check the "
            "network connection")
