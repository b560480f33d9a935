"""Turn a checkpoint name or path into a local file: local path, cache, or download (with a progress bar).

The cache follows huggingface_hub's layout, so its tools (``huggingface-cli scan-cache``) understand it::

    <cache>/models--guide-unlearn--<name>/blobs/<sha256>
    <cache>/models--guide-unlearn--<name>/refs/main            (-> revision)
    <cache>/models--guide-unlearn--<name>/snapshots/<revision>/<file name>   (symlink to the blob)

``<cache>`` is ``$GUIDE_UNLEARN_CACHE`` if set, else the Hugging Face hub cache (``$HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``). A file dropped by
hand into ``snapshots/manual/`` is found too, as is one in any folder listed in ``$GUIDE_UNLEARN_CHECKPOINTS``.
A missing file is downloaded only when the caller asks (``allow_download=True``, ``--download``, or
``guide-unlearn download NAME``).

This module knows nothing about model families: a :class:`CheckpointSource` is just a file name, an optional URL,
an optional sha256 and an optional Hugging Face repo.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import CheckpointError
from ..io import no_links_below, temp_file_beside

__all__ = ["CheckpointSource", "DownloadError", "cache_root", "cached_path", "download", "manual_path", "offline", "resolve_file",
           "sha256_of"]

USER_AGENT = "guide-unlearn checkpoint downloader"
_CHUNK = 1 << 20


class DownloadError(CheckpointError):
    """A download could not reach its server (no network, DNS, proxy, timeout); the message says where to put a
    file fetched by hand."""


@dataclass(frozen=True)
class CheckpointSource:
    """Where one checkpoint file comes from.

    name:      registry name (used for the cache folder and in messages).
    filename:  the official file name.
    url:       a direct download URL, or None when the source needs a browser (e.g. Google Drive).
    sha256:    expected hex digest, or None when no published digest exists.
    homepage:  where a person can get the file (shown when it is missing).
    hf_repo:   optional Hugging Face repo id holding ``filename`` (looked up in the hub cache).
    """

    name: str
    filename: str
    url: Optional[str] = None
    sha256: Optional[str] = None
    homepage: Optional[str] = None
    hf_repo: Optional[str] = None


def cache_root() -> Path:
    """The cache folder (see module docstring), read from the environment at call time."""
    env = os.environ
    if env.get("GUIDE_UNLEARN_CACHE"):
        return Path(env["GUIDE_UNLEARN_CACHE"]).expanduser()
    return hf_hub_cache()


def hf_hub_cache() -> Path:
    """The huggingface_hub cache folder, read from the environment at call time (``HF_HUB_CACHE``, else
    ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``)."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def offline() -> bool:
    """True when downloads are disabled (``HF_HUB_OFFLINE`` or ``GUIDE_UNLEARN_OFFLINE`` set to 1/true/yes)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "GUIDE_UNLEARN_OFFLINE"))


def _repo_dir(name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    return cache_root() / f"models--guide-unlearn--{safe}"


def _revision(source: CheckpointSource) -> str:
    basis = source.url or source.filename
    return hashlib.sha1(basis.encode()).hexdigest()  # noqa: S324 - a folder name, not a security digest


_COMMIT = re.compile(r"[0-9a-f]{40}")


def read_ref(repo: Path, ref: str = "main", kind: str = "checkpoint-ref") -> Optional[str]:
    """The revision ``<repo>/refs/<ref>`` names, read through the reading gate: a regular file inside the repo
    folder (never a FIFO, a device or a link out of the cache) of at most 1 KiB holding a 40-hex commit. None when
    there is no such ref; the kind's error when it is anything else."""
    path = repo / "refs" / ref
    if not (path.exists() or path.is_symlink()):
        return None
    from ..gate import get_kind, inside, read_text

    inside(path, repo, kind, hub_blobs=False)
    revision = read_text(path, kind, root=repo).strip()
    if not _COMMIT.fullmatch(revision):
        raise get_kind(kind).error(f"{path} does not hold a commit hash (40 hex digits); the cache entry is corrupted "
                                   f"or hostile: delete {repo} and download again")
    return revision


def _snapshot_file(repo: Path, revision: str, filename: str) -> Optional[Path]:
    """``<repo>/snapshots/<revision>/<filename>`` when present: its folders must be real folders of the cache and
    the file a regular file inside the repo or a link into the repo's ``blobs/``; else CheckpointError."""
    from ..gate import check_file

    snap = repo / "snapshots" / revision
    path = snap / filename
    if not (path.exists() or path.is_symlink()):
        return None
    for folder in (repo, repo / "snapshots", snap):
        if folder.is_symlink():
            raise CheckpointError(f"{folder} is a link in the checkpoint cache; the cache never links folders — "
                                  f"delete {repo} and download again")
    check_file(path, "checkpoint", root=repo)
    return path


def _hub_cached(hf_repo: str, filename: str) -> Optional[Path]:
    """The file of a Hugging Face repo in huggingface_hub's cache layout under :func:`cache_root`, found by reading
    its ``refs/main`` through the gate (never by huggingface_hub's own unbounded readers)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", hf_repo) \
            or ".." in hf_repo:
        return None
    repo = cache_root() / ("models--" + hf_repo.replace("/", "--"))
    revision = read_ref(repo)
    return _snapshot_file(repo, revision, filename) if revision else None


def cached_path(source: CheckpointSource) -> Optional[Path]:
    """The cached copy of ``source`` if there is one (checked: refs/main's snapshot, then any snapshot, then
    ``$GUIDE_UNLEARN_CHECKPOINTS`` folders, then the Hugging Face cache of ``hf_repo``), else None. A candidate
    that exists but is not a regular file inside its cache folder (a FIFO, a device, a link out of the cache) is a
    CheckpointError, never silently skipped."""
    from ..gate import check_file

    repo = _repo_dir(source.name)
    revision = read_ref(repo)
    if revision is not None:
        hit = _snapshot_file(repo, revision, source.filename)
        if hit is not None:
            return hit
    snapshots = repo / "snapshots"
    if snapshots.is_dir() and not snapshots.is_symlink():
        for snap in sorted(p for p in snapshots.iterdir() if p.is_dir() and not p.is_symlink()):
            hit = _snapshot_file(repo, snap.name, source.filename)
            if hit is not None:
                return hit
    for folder in filter(None, os.environ.get("GUIDE_UNLEARN_CHECKPOINTS", "").split(os.pathsep)):
        candidate = Path(folder).expanduser() / source.filename
        if candidate.exists() or candidate.is_symlink():
            check_file(candidate, "checkpoint", root=Path(folder).expanduser())
            return candidate
    if source.hf_repo:
        return _hub_cached(source.hf_repo, source.filename)
    return None


def sha256_of(path: Union[str, os.PathLike]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks through the reading gate."""
    from ..gate import sha256

    return sha256(path, "checkpoint", chunk=_CHUNK)


def download(url: str, dest: Union[str, os.PathLike], sha256: Optional[str] = None, progress: bool = True,
             timeout: float = 60.0, desc: Optional[str] = None) -> Path:
    """Download ``url`` to ``dest`` atomically (temp file + ``os.replace``), with a tqdm progress bar.

    The size is checked against Content-Length and, when given, the content against ``sha256``; on any failure
    nothing is left at ``dest``. Only http(s) URLs are accepted. ``desc`` labels the progress bar (default: the
    destination's file name).

    Raises:
        CheckpointError: network / HTTP error, short read, or digest mismatch (the message says which).
    """
    dest = Path(dest)
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise CheckpointError(f"refusing to download from a {scheme or 'scheme-less'} URL: {url}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_beside(dest, ".incomplete")  # the normal file mode, not mkstemp's 0o600
    h = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            from tqdm.auto import tqdm

            done = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or dest.name,
                      disable=not progress) as bar:
                for chunk in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
        if total is not None and done != total:
            raise CheckpointError(f"download of {url} stopped after {done} of {total} bytes; try again")
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            raise CheckpointError(f"download of {url} has sha256 {digest}, expected {sha256}; the file was "
                                  "discarded (a changed or corrupted file); report it if this persists")
        os.replace(tmp, dest)
    except urllib.error.HTTPError as exc:
        raise CheckpointError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        host = urllib.parse.urlparse(url).hostname or url
        raise DownloadError(f"cannot reach {host} to download {url} ({reason}); check the network connection") \
            from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _store_in_cache(source: CheckpointSource, progress: bool) -> Path:
    repo = _repo_dir(source.name)
    revision = _revision(source)
    for folder in (repo, repo / "blobs", repo / "snapshots", repo / "snapshots" / revision, repo / "refs"):
        no_links_below(cache_root(), folder, "checkpoint cache")  # never write through a link found in the cache
    blobs = repo / "blobs"
    try:
        tmp_blob = download(source.url, blobs / f"download-{os.getpid()}.part", sha256=source.sha256,
                            progress=progress, desc=source.filename)
    except DownloadError as exc:  # no network: say where a file fetched by hand goes
        raise DownloadError(f"{exc}, or download it by hand (e.g. in a browser) and put the file at "
                            f"{manual_path(source)}.") from None
    digest = sha256_of(tmp_blob)
    blob = blobs / digest
    os.replace(tmp_blob, blob)
    snap_dir = repo / "snapshots" / revision
    snap_dir.mkdir(parents=True, exist_ok=True)
    link = snap_dir / source.filename
    tmp_link = snap_dir / f".{source.filename}.{os.getpid()}.tmp"
    try:
        if tmp_link.exists() or tmp_link.is_symlink():
            tmp_link.unlink()
        os.symlink(os.path.relpath(blob, snap_dir), tmp_link)
    except OSError:  # no symlinks (some Windows setups): keep a copy, as huggingface_hub does
        shutil.copyfile(blob, tmp_link)
    os.replace(tmp_link, link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    ref_tmp = repo / "refs" / f".main.{os.getpid()}.tmp"
    ref_tmp.write_text(revision)
    os.replace(ref_tmp, repo / "refs" / "main")
    return link


def missing_file_message(source: CheckpointSource, why: str) -> str:
    """The 'which file is missing, the exact path to put it at, and how to download it' sentence."""
    where = manual_path(source)
    if source.url:
        get = (f"download it with `guide-unlearn download {source.name}` (or pass --download / "
               "allow_download=True), or put the file at")
    else:
        get = f"download it by hand from {source.homepage or 'its official source'} and put it at"
    return (f"checkpoint '{source.name}' needs the file '{source.filename}', which is not on this machine ({why}); "
            f"{get} {where} (or in a folder listed in GUIDE_UNLEARN_CHECKPOINTS, or pass the file's path).")


def manual_path(source: CheckpointSource) -> Path:
    """Where a file fetched by hand goes so that :func:`cached_path` finds it (``snapshots/manual/<filename>``)."""
    return _repo_dir(source.name) / "snapshots" / "manual" / source.filename


def resolve_file(source: CheckpointSource, allow_download: Optional[bool] = None, progress: bool = True) -> Path:
    """Local path of ``source``: the cache (see :func:`cached_path`), else a download into the cache, but only
    when asked.

    allow_download: True downloads a missing file (unless the source has no direct link); None / False never
                    download: nothing is fetched behind the caller's back.

    Raises:
        CheckpointError: not cached and not downloaded; the message names the file, the exact path to put it at
        and the command that downloads it.
    """
    hit = cached_path(source)
    if hit is not None:
        return hit
    if not source.url:
        raise CheckpointError(missing_file_message(source, "its source has no direct download link"))
    if not allow_download:
        why = "downloads are disabled: offline mode" if offline() else "nothing is downloaded unless asked"
        raise CheckpointError(missing_file_message(source, why))
    return _store_in_cache(source, progress)
