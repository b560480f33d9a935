"""Deletion request lists for ``guide-unlearn erase-batch``: a folder of per-request sub-folders, a ``.csv`` or a
``.jsonl``, read through the reading gate into :class:`Request` objects, and grouped into :class:`Unit` s of work
(docs/queue.md)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

from guide_unlearn import gate
from guide_unlearn.errors import GuideUnlearnError, InputError
from guide_unlearn.gate.kinds import REQUEST_LINE

MANIFEST = "manifest.jsonl"  # the queue output folder's own names, which no request id may take
RESULTS = ".results"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_REQUEST_FOLDERS = 100_000  # entries of a request folder looked at before it is refused (bounded listing)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Request:
    """One deletion request: an id (a safe folder name), the paths of that person's photos and, when the request
    cannot run as given (no photos, a photo outside the request list's folder), why: it is then recorded as failed
    alone and the rest of the queue goes on."""

    request_id: str
    photos: tuple[Path, ...]
    problem: Optional[str] = None


@dataclass(frozen=True)
class Unit:
    """What one process erases in one run: a request (``joint`` 1) or a group of requests (``joint`` N)."""

    name: str
    requests: tuple[Request, ...]


def read_requests(source: os.PathLike | str) -> list[Request]:
    """REQUESTS -> requests sorted by id, read through the reading gate (kind ``request-list``).

    A folder: one sub-folder of photos per request, named by the request id (the layout 🤗 datasets'
    ``imagefolder`` loads, the sub-folder being the label). A ``.csv``: columns ``request_id`` and ``photo``
    (or ``path``); several rows per id add photos. A ``.jsonl``: one object per request,
    ``{"request_id": ..., "photos": [...]}`` (or ``"photo": "..."``); a repeated id is an error. Photo paths are
    relative to the list's folder and must stay inside it (a photo reached through a link out of it, or an
    absolute path elsewhere, fails its request). Photos are not opened here: a corrupt one, or a request without
    photos, fails its request alone, later.
    """
    src = Path(source)
    if src.is_dir():
        root, pairs = src, _from_folder(src)
    elif src.is_file() and src.suffix.lower() == ".csv":
        root, pairs = src.parent, _from_csv(src)
    elif src.is_file() and src.suffix.lower() in (".jsonl", ".ndjson"):
        root, pairs = src.parent, _from_jsonl(src)
    elif not src.exists():
        raise InputError(f"{src} does not exist; give a folder of per-request sub-folders, a .csv or a .jsonl")
    else:
        raise InputError(f"{src}: requests must be a folder, a .csv or a .jsonl file")
    if not pairs:
        raise InputError(f"{src} holds no requests; add one sub-folder (or row) per person")
    out = []
    for rid in sorted(pairs):
        if not _ID.match(rid) or rid in (MANIFEST, RESULTS):
            raise InputError(f"request id {rid!r} is not a safe folder name; use letters, digits, '.', '_' or '-' "
                             "(at most 128 characters, not starting with '.' or '-')")
        out.append(_checked_request(rid, pairs[rid], root))
    return out


def _checked_request(rid: str, photos: Union[list[Path], str], root: Path) -> Request:
    """The request with its photos' real paths, or with the reason it cannot run (``photos`` may already be one)."""
    if isinstance(photos, str):
        return Request(rid, (), photos)
    if not photos:
        return Request(rid, (), "the request has no photos; add at least one photo of the person")
    real = []
    for photo in photos:
        try:
            real.append(gate.inside(photo, root, "request-list", hub_blobs=False))
        except GuideUnlearnError:
            return Request(rid, tuple(photos), f"photo {photo} lies outside the request list's folder {root} (or "
                                               "is reached through a link out of it); put the photos beside the list")
    return Request(rid, tuple(real))


def _from_folder(root: Path) -> dict[str, Union[list[Path], str]]:
    """{request id: its photos, or why its folder cannot be read}. The sub-folders are listed with a bound on their
    number; each one's photos through the reading gate (``gate.list_folder``: regular files inside it, no link out,
    size and count caps), so a hostile entry fails its request alone, in bounded time."""
    subs: list[Path] = []
    try:
        with os.scandir(root) as entries:
            for n, entry in enumerate(entries):
                if n >= MAX_REQUEST_FOLDERS:
                    raise InputError(f"{root} holds more than {MAX_REQUEST_FOLDERS} entries; split the queue")
                if not entry.name.startswith(".") and entry.is_dir():  # folders and links to folders; files ignored
                    subs.append(Path(entry.path))
    except OSError as exc:
        raise InputError(f"cannot list the request folder {root} ({exc.strerror or exc}); check the path and its "
                         "permissions") from None
    pairs: dict[str, Union[list[Path], str]] = {}
    for sub in sorted(subs):
        if sub.is_symlink():
            pairs[sub.name] = (f"{sub} is a link; a request folder must be a real folder inside {root} (copy the "
                               "photos into it)")
            continue
        try:
            listed = gate.list_folder(sub, "photo", recursive=False)  # one request = the photos at its top level
        except GuideUnlearnError as exc:
            pairs[sub.name] = str(exc)
            continue
        pairs[sub.name] = [p for p in listed if p.suffix.lower() in IMAGE_SUFFIXES]
    return pairs


def _from_csv(path: Path) -> dict[str, list[Path]]:
    fields, rows = gate.read_csv(path, "request-list")
    col = next((c for c in ("photo", "path", "photos", "file_name") if c in fields), None)
    if "request_id" not in fields or col is None:
        raise InputError(f"{path}: the CSV needs a header with 'request_id' and 'photo' (or 'path') columns, "
                         f"got {fields[:10]}")
    pairs: dict[str, list[Path]] = {}
    for n, row in enumerate(rows, 2):
        rid = row.get("request_id", "").strip()
        if not rid:
            raise InputError(f"{path}:{n}: a row has an empty request_id; every row needs one")
        photo = row.get(col, "").strip()
        pairs.setdefault(rid, [])
        if photo:
            pairs[rid].append(_resolve(path.parent, photo))
    return pairs


def _from_jsonl(path: Path) -> dict[str, list[Path]]:
    pairs: dict[str, list[Path]] = {}
    for n, row in gate.read_jsonl(path, "request-list"):
        if not isinstance(row, dict) or not isinstance(row.get("request_id"), str):
            raise InputError(f"{path}:{n}: each line needs a string 'request_id' and 'photos'")
        row = gate.check(row, "request-list", f"{path}:{n}", REQUEST_LINE)
        rid = row["request_id"].strip()
        if rid in pairs:
            raise InputError(f"{path}:{n}: request id {rid!r} appears twice; list all of a person's photos in "
                             "one line")
        photos = row.get("photos", row.get("photo", []))
        photos = [photos] if isinstance(photos, str) else photos
        pairs[rid] = [_resolve(path.parent, p) for p in photos]
    return pairs


def _resolve(base: Path, photo: str) -> Path:
    p = Path(photo)
    return p if p.is_absolute() else base / p


def request_seed(request_id: str, base_seed: int = 0) -> int:
    """The seed of a request's erase: sha256 of (base seed, id), 31 bits. Same id -> same seed, anywhere."""
    digest = hashlib.sha256(f"{base_seed}:{request_id}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def make_units(requests: Sequence[Request], joint: int = 1) -> list[Unit]:
    """Requests (sorted by id) -> units: one per request, or consecutive groups of ``joint`` requests. Groups are
    named ``joint-<index>-<hash of their ids>``, so a group's name changes if its members do."""
    if joint < 1:
        raise InputError(f"--joint must be >= 1, got {joint}")
    if joint == 1:
        return [Unit(r.request_id, (r,)) for r in requests]
    units = []
    for i in range(0, len(requests), joint):
        group = tuple(requests[i:i + joint])
        digest = hashlib.sha256("\n".join(r.request_id for r in group).encode()).hexdigest()[:8]
        units.append(Unit(f"joint-{i // joint:04d}-{digest}", group))
    return units
