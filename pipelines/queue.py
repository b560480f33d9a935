"""A queue of deletion requests, sharded over accelerate processes: one patch folder per request (or per group).

Layout of the output folder ``DIR`` (see docs/queue.md)::

    DIR/manifest.jsonl          first line: the queue's header (tag, model, joint, config overrides);
                                then one row per request: status done / failed / skipped-no-face, the
                                patch folder and id, seconds, final losses (written by the main process)
    DIR/<request_id>/           the request's forget patch (``--joint 1``), written atomically
    DIR/joint-<n>-<hash>/       a group's patch (``--joint N``), its metadata lists the group's request ids
    DIR/.results/<unit>.json    each unit's outcome, written atomically by whichever process ran it

Determinism: a request's seed is derived from its id (and the config's seed), never from the process that runs it,
and groups are formed from the sorted ids before sharding, so the patches do not depend on the number of
processes (bit-identical at the same ``threads`` per process on the same hardware).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from guide_unlearn.errors import GuideUnlearnError, InputError, NoFaceError, SaveError
from guide_unlearn.io import atomic_write_bytes

logger = logging.getLogger(__name__)

TAG = "guide_unlearn.erase_batch"
MANIFEST = "manifest.jsonl"
RESULTS = ".results"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Request:
    """One deletion request: an id (a safe folder name) and the paths of that person's photos."""

    request_id: str
    photos: tuple[Path, ...]


@dataclass(frozen=True)
class Unit:
    """What one process erases in one run: a request (``joint`` 1) or a group of requests (``joint`` N)."""

    name: str
    requests: tuple[Request, ...]


# -- reading the requests --------------------------------------------------------------------------------------
def read_requests(source: os.PathLike | str) -> list[Request]:
    """REQUESTS -> requests sorted by id.

    A folder: one sub-folder of photos per request, named by the request id (the layout 🤗 datasets'
    ``imagefolder`` loads, the sub-folder being the label). A ``.csv``: columns ``request_id`` and ``photo``
    (or ``path``); several rows per id add photos. A ``.jsonl``: one object per request,
    ``{"request_id": ..., "photos": [...]}`` (or ``"photo": "..."``); a repeated id is an error. Relative paths are
    relative to the file's folder. Photos are not opened here (a corrupt one fails its request alone, later).
    """
    src = Path(source)
    if src.is_dir():
        pairs = _from_folder(src)
    elif src.is_file() and src.suffix.lower() == ".csv":
        pairs = _from_csv(src)
    elif src.is_file() and src.suffix.lower() in (".jsonl", ".ndjson"):
        pairs = _from_jsonl(src)
    elif not src.exists():
        raise InputError(f"{src} does not exist; give a folder of per-request sub-folders, a .csv or a .jsonl")
    else:
        raise InputError(f"{src}: requests must be a folder, a .csv or a .jsonl file")
    if not pairs:
        raise InputError(f"{src} holds no requests; add one sub-folder (or row) per person")
    for rid, photos in pairs.items():
        if not _ID.match(rid) or rid == MANIFEST:
            raise InputError(f"request id {rid!r} is not a safe folder name; use letters, digits, '.', '_' or '-' "
                             "(at most 128 characters, not starting with '.' or '-')")
        if not photos:
            raise InputError(f"request {rid!r} has no photos; add at least one photo of the person")
    return [Request(rid, tuple(pairs[rid])) for rid in sorted(pairs)]


def _from_folder(root: Path) -> dict[str, list[Path]]:
    pairs: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        pairs[sub.name] = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return pairs


def _from_csv(path: Path) -> dict[str, list[Path]]:
    pairs: dict[str, list[Path]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        col = next((c for c in ("photo", "path", "photos", "file_name") if c in fields), None)
        if "request_id" not in fields or col is None:
            raise InputError(f"{path}: the CSV needs a header with 'request_id' and 'photo' (or 'path') columns, "
                             f"got {fields}")
        for row in reader:
            rid = (row.get("request_id") or "").strip()
            if not rid:
                raise InputError(f"{path}: a row has an empty request_id; every row needs one")
            photo = (row.get(col) or "").strip()
            pairs.setdefault(rid, [])
            if photo:
                pairs[rid].append(_resolve(path.parent, photo))
    return pairs


def _from_jsonl(path: Path) -> dict[str, list[Path]]:
    pairs: dict[str, list[Path]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not JSON ({e.msg}); one object per line") from e
            if not isinstance(row, dict) or not isinstance(row.get("request_id"), str):
                raise InputError(f"{path}:{n}: each line needs a string 'request_id' and 'photos'")
            rid = row["request_id"].strip()
            if rid in pairs:
                raise InputError(f"{path}:{n}: request id {rid!r} appears twice; list all of a person's photos in "
                                 "one line")
            photos = row.get("photos", row.get("photo", []))
            photos = [photos] if isinstance(photos, str) else photos
            if not isinstance(photos, list) or not all(isinstance(p, str) for p in photos):
                raise InputError(f"{path}:{n}: 'photos' must be a list of paths")
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


# -- the output folder -----------------------------------------------------------------------------------------
def header(model: str, joint: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """The manifest's first line: what identifies this queue's output folder."""
    return {"queue": TAG, "version": 1, "model": model, "joint": joint, "config": overrides}


def prepare_output(out: Path, head: dict[str, Any], overwrite: bool) -> bool:
    """Claim ``out`` for this queue (main process only). -> True when resuming an earlier run of the same queue.

    An empty or missing folder is claimed. A folder whose manifest header matches ``head`` is resumed (stale
    temporary folders from a killed run are removed). An erase-batch output of ANOTHER queue (other model,
    --joint or config) is replaced only with ``overwrite``, and only when it holds nothing but this queue's own
    files (manifest, results, complete patch folders); any other non-empty folder is never replaced.
    """
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SaveError(f"{out} exists and is not a folder; choose another --out")
    resume = False
    if out.is_dir() and any(out.iterdir()):
        found = read_header(out)
        if found == head:
            resume = True
        elif found is None:
            raise SaveError(f"{out} is not empty and is not an erase-batch output folder (no {MANIFEST} of this "
                            "queue); it is never replaced, even with --overwrite: choose an empty or new --out")
        elif not overwrite:
            raise SaveError(f"{out} is an erase-batch output made with another model, --joint or config; choose "
                            "an empty --out, or pass --overwrite to replace it")
        else:
            foreign = [c.name for c in out.iterdir() if not _queue_owned(c)]
            if foreign:
                listed = ", ".join(sorted(foreign)[:5])
                raise SaveError(f"{out} holds files erase-batch did not write ({listed}); it is never replaced, "
                                "even with --overwrite: move them out or choose another --out")
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for child in out.iterdir():  # left by a kill inside atomic_directory / atomic_write_bytes
        if child.name.startswith(".") and ".tmp-" in child.name:
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
    (out / RESULTS).mkdir(exist_ok=True)
    if not resume:
        atomic_write_bytes(out / MANIFEST, (json.dumps(head) + "\n").encode(), overwrite=True)
    return resume


def _queue_owned(entry: Path) -> bool:
    """Whether ``entry`` (a child of an output folder) is something this queue writes: its manifest, its results
    folder, a temporary left by a kill, or a complete forget patch folder."""
    from guide_unlearn.patch import patch_files

    if entry.is_symlink():
        return False
    if entry.name == MANIFEST and entry.is_file():
        return True
    if entry.name == RESULTS and entry.is_dir():
        return all(p.is_file() and not p.is_symlink() and p.suffix == ".json" for p in entry.iterdir())
    if entry.name.startswith(".") and ".tmp-" in entry.name:
        return True
    return entry.is_dir() and patch_files(entry) is not None and \
        {p.name for p in entry.iterdir()} <= set(patch_files(entry))


def read_header(out: Path) -> Optional[dict[str, Any]]:
    """The manifest header of ``out``, or None when it has none (or it is not this queue's)."""
    try:
        with open(out / MANIFEST, encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    return first if isinstance(first, dict) and first.get("queue") == TAG else None


def read_manifest(out: os.PathLike | str) -> list[dict[str, Any]]:
    """The manifest's request rows (without the header)."""
    with open(Path(out) / MANIFEST, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return [row for row in lines[1:]]


def _complete(out: Path, unit: Unit) -> Optional[list[dict[str, Any]]]:
    """The recorded rows of a unit whose patch is complete (a loadable patch folder plus its result file), else
    None. Units that failed or found no face are not complete: they are redone."""
    from guide_unlearn.patch import ForgetPatch

    result = out / RESULTS / f"{unit.name}.json"
    if not result.is_file() or not (out / unit.name).is_dir():
        return None
    try:
        rows = json.loads(result.read_text(encoding="utf-8"))
        patch = ForgetPatch.from_pretrained(out / unit.name)
    except (OSError, ValueError, GuideUnlearnError):
        return None
    if not any(r.get("status") == "done" and r.get("patch_id") == patch.patch_id for r in rows):
        return None
    return rows


# -- running ---------------------------------------------------------------------------------------------------
def run_queue(requests: Sequence[Request], model: str, out: os.PathLike | str, joint: int = 1,
              overwrite: bool = False, overrides: Optional[dict[str, Any]] = None, device: Optional[str] = None,
              threads: int = 1, progress: bool = True) -> dict[str, Any]:
    """Erase every request, sharded over the accelerate processes (works unchanged without ``accelerate launch``).

    Each process loads ``model`` and erases its share of units (``PartialState().split_between_processes``),
    writing each patch folder atomically; the main process writes ``DIR/manifest.jsonl`` after a barrier.
    ``overrides``: erase settings on top of the model's defaults (``seed`` is the base seed the request seeds
    derive from; ``method`` the erase method, default 'lora', or 'joint' when ``joint`` > 1 — a method that cannot
    erase several people is refused with ``joint`` > 1 before any work). ``threads``: torch threads per process
    (bit-identical patches need the same value).
    -> summary {'requests', 'done', 'failed', 'skipped-no-face', 'resumed', 'seconds', 'processes'}.
    """
    import torch
    from accelerate import PartialState

    torch.set_num_threads(threads)
    overrides = dict(overrides or {})
    unit_config(overrides, joint)  # an unknown method or setting, or a method that cannot do --joint N: refused now
    out = Path(out)
    # On a machine without an accelerator the processes talk over gloo (accelerate's MULTI_CPU): PartialState
    # only picks it when told cpu=True.
    cpu = (device or "").startswith("cpu") or not torch.cuda.is_available() or \
        os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    state = PartialState(cpu=cpu)
    units = make_units(requests, joint)
    head = header(model, joint, overrides)
    t0 = time.perf_counter()
    error: Optional[BaseException] = None
    resume = False
    if state.is_main_process:
        try:
            resume = prepare_output(out, head, overwrite)
        except BaseException as e:  # every process must still reach the barrier
            error = e
    state.wait_for_everyone()
    if error is not None:
        raise error
    if read_header(out) != head:
        raise SaveError(f"{out} could not be prepared by the main process; see its error")

    if state.is_main_process:  # outcomes of units about to be redone are stale (failed, or killed mid-way)
        for unit in units:
            if _complete(out, unit) is None:
                (out / RESULTS / f"{unit.name}.json").unlink(missing_ok=True)
    state.wait_for_everyone()
    todo = [u for u in units if _complete(out, u) is None]
    state.wait_for_everyone()  # every process has the same list before any of them writes a new result
    bar = _bar(len(requests), progress and state.is_main_process)
    if bar is not None:
        bar.update(len(requests) - sum(len(u.requests) for u in todo))
    if todo:
        from guide_unlearn import IdentityEraser

        eraser = IdentityEraser.from_pretrained(model, device=device or str(state.device))
        with state.split_between_processes(todo) as mine:
            for unit in mine:
                rows = _run_unit(eraser, unit, out, overrides, joint)
                rows = [{**r, "process": state.process_index} for r in rows]
                atomic_write_bytes(out / RESULTS / f"{unit.name}.json", json.dumps(rows).encode(), overwrite=True)
                if bar is not None:
                    bar.n = _finished(out, units)
                    bar.refresh()
    state.wait_for_everyone()
    summary: dict[str, Any] = {}
    if state.is_main_process:
        if bar is not None:
            bar.n = len(requests)
            bar.close()
        rows = _collect(out, units)
        lines = [json.dumps(head)] + [json.dumps(r) for r in rows]
        atomic_write_bytes(out / MANIFEST, ("\n".join(lines) + "\n").encode(), overwrite=True)
        summary = {"requests": len(requests), "units": len(units), "redone_units": len(todo),
                   "processes": state.num_processes, "resumed": resume,
                   "seconds": round(time.perf_counter() - t0, 2), "manifest": str(out / MANIFEST)}
        for status in ("done", "failed", "skipped-no-face"):
            summary[status] = sum(r["status"] == status for r in rows)
    state.wait_for_everyone()
    return summary


def unit_config(overrides: dict[str, Any], joint: int) -> tuple[str, dict[str, Any]]:
    """The queue's erase method and settings from its ``overrides`` (``method``, or the former ``preset``; default
    'lora', or 'joint' for groups), checked: an unknown method or setting, or a method that cannot erase ``joint``
    people in one patch, is a ConfigError. -> (method, settings)."""
    from guide_unlearn.config import EraseConfig
    from guide_unlearn.methods import check_supported

    method = overrides.get("method") or overrides.get("preset") or ("joint" if joint > 1 else "lora")
    fields = {k: v for k, v in overrides.items() if k not in ("preset", "method")}
    check_supported(method, people=joint)
    EraseConfig.preset(method, **fields)
    return method, fields


def _run_unit(eraser, unit: Unit, out: Path, overrides: dict[str, Any], joint: int = 1) -> list[dict[str, Any]]:
    """Erase one unit and save its patch (atomically). -> one manifest row per request; never raises for a bad
    request (its error is recorded)."""
    base_seed = int(overrides.get("seed", 0))
    method, fields = unit_config(overrides, joint)
    config = eraser.default_config(method, **fields)
    rows: dict[str, dict[str, Any]] = {}
    codes: dict[str, Any] = {}
    t0 = time.perf_counter()
    for req in unit.requests:
        try:
            if len(unit.requests) == 1:
                codes[req.request_id] = [str(p) for p in req.photos]  # erase() inverts (and checks) the photos
            else:
                codes[req.request_id] = eraser.invert([str(p) for p in req.photos])
        except Exception as e:  # one bad request fails alone
            rows[req.request_id] = _failure(req.request_id, unit.name, e, time.perf_counter() - t0)
    if codes:
        try:
            if len(unit.requests) == 1:
                rid = unit.requests[0].request_id
                cfg = config.replace(seed=request_seed(rid, base_seed))
                result = eraser.erase(codes[rid], config=cfg, measure=False, progress=False)
                patch = result.patch
                patch.metadata["requests"] = [{"request_id": rid, "final_losses": patch.metadata["final_losses"]}]
            else:
                cfg = config.replace(seed=request_seed(unit.name, base_seed))
                patch = eraser.erase_many(codes, config=cfg, measure=False, progress=False).patch
            patch.save_pretrained(out / unit.name, overwrite=True)  # a redone unit replaces its own patch
            seconds = round(time.perf_counter() - t0, 2)
            for entry in patch.metadata["requests"]:
                rows[entry["request_id"]] = {"request_id": entry["request_id"], "status": "done", "patch": unit.name,
                                             "patch_id": patch.patch_id, "seconds": seconds,
                                             "final_losses": entry["final_losses"]}
                logger.debug("request %s: final losses %s", entry["request_id"], entry["final_losses"])
        except Exception as e:
            for rid in codes:
                rows[rid] = _failure(rid, unit.name, e, time.perf_counter() - t0)
    return [rows[r.request_id] for r in unit.requests]


def _failure(rid: str, unit: str, e: BaseException, seconds: float) -> dict[str, Any]:
    status = "skipped-no-face" if isinstance(e, NoFaceError) else "failed"
    message = " ".join(str(e).split()) or type(e).__name__
    if not isinstance(e, GuideUnlearnError):
        message = f"{type(e).__name__}: {message}"
    logger.debug("request %s: %s (%s)", rid, status, message)
    return {"request_id": rid, "status": status, "error": message[:500], "patch": None, "patch_id": None,
            "seconds": round(seconds, 2), "final_losses": None}


def _finished(out: Path, units: Sequence[Unit]) -> int:
    names = {p.stem for p in (out / RESULTS).glob("*.json")}
    return sum(len(u.requests) for u in units if u.name in names)


def _collect(out: Path, units: Sequence[Unit]) -> list[dict[str, Any]]:
    rows = []
    for unit in units:
        try:
            got = {r["request_id"]: r for r in json.loads((out / RESULTS / f"{unit.name}.json").read_text("utf-8"))}
        except (OSError, ValueError):
            got = {}
        for req in unit.requests:
            rows.append(got.get(req.request_id) or {
                "request_id": req.request_id, "status": "failed", "error": "no result was recorded (a process died?); "
                "run the same command again to redo it", "patch": None, "patch_id": None, "seconds": None,
                "final_losses": None})
    return rows


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="requests", unit="request")
