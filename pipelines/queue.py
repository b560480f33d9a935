"""A queue of deletion requests, sharded over accelerate processes: one patch folder per request (or per group).

Layout of the output folder ``DIR`` (see docs/queue.md)::

    DIR/manifest.jsonl          first line: the queue's header (tag, model, joint, config overrides);
                                then one row per request: status done / failed / skipped-no-face / pending,
                                the patch folder and id, seconds, final losses (written by the main process at
                                the end, and when the run is interrupted)
    DIR/<request_id>/           the request's forget patch (``--joint 1``), written atomically
    DIR/joint-<n>-<hash>/       a group's patch (``--joint N``), its metadata lists the group's request ids
    DIR/.results/<unit>.json    each unit's outcome while the queue runs, written atomically by whichever process
                                ran it; removed once every outcome is in the manifest

The folder follows the library's writing rule: nothing in it is followed if it is a link (manifest, ``.results``,
patch folders), and only what the queue wrote is ever replaced or deleted.

Determinism: a request's seed is derived from its id (and the config's seed), never from the process that runs it,
and groups are formed from the sorted ids before sharding, so the patches do not depend on the number of
processes (bit-identical at the same ``threads`` per process on the same hardware).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from guide_unlearn import gate
from guide_unlearn.errors import GuideUnlearnError, InputError, NoFaceError, SaveError
from guide_unlearn.io import atomic_write_bytes, no_links_below, remove_owned

from .request_lists import MANIFEST, RESULTS, Request, Unit, make_units, request_seed

logger = logging.getLogger(__name__)

TAG = "guide_unlearn.erase_batch"


# -- the output folder -----------------------------------------------------------------------------------------
def header(model: str, joint: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """The manifest's first line: what identifies this queue's output folder."""
    return {"queue": TAG, "version": 1, "model": model, "joint": joint, "config": overrides}


_TEMP = re.compile(r"^\.(?P<name>.+)\.(tmp-[0-9a-f]{8}|[0-9a-f]{8}\.tmp)$")  # io's temporary names


def prepare_output(out: Path, head: dict[str, Any], overwrite: bool) -> bool:
    """Claim ``out`` for this queue (main process only). -> True when resuming an earlier run of the same queue.

    An empty or missing folder is claimed. A folder whose manifest header matches ``head`` is resumed (temporary
    files and folders a killed run left are removed). An erase-batch output of ANOTHER queue (other model,
    --joint or config) is replaced only with ``overwrite``, and only when it holds nothing but what that queue
    wrote (its manifest, its results, the patch folders its manifest lists, its temporaries); any other non-empty
    folder is never replaced. Nothing is followed: the folder, its manifest and its bookkeeping entries must not be
    links (SaveError), so nothing outside ``out`` can be read, rewritten or deleted.
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
            _replace_previous(out)
    out.mkdir(parents=True, exist_ok=True)
    for child in list(out.iterdir()):  # left by a kill inside atomic_directory / atomic_write_bytes
        if _TEMP.match(child.name) and not child.is_symlink():
            remove_owned(child, out, "--out folder")
    results = no_links_below(out, out / RESULTS, "--out folder")
    results.mkdir(exist_ok=True)
    for child in list(results.iterdir()):
        if _TEMP.match(child.name) and not child.is_symlink():
            remove_owned(child, out, "--out folder")
    if not resume:
        atomic_write_bytes(out / MANIFEST, (json.dumps(head) + "\n").encode(), overwrite=True)
    return resume


def _owned_entries(out: Path) -> Optional[set[str]]:
    """The names in ``out`` that its erase-batch queue wrote: the manifest, ``.results`` (holding only its result
    files), the complete patch folders its manifest or results list as done, and temporaries; None when something
    it holds is a link (never touched)."""
    from guide_unlearn.patch import patch_files

    owned = {MANIFEST}
    rows = [r for rows in _recorded_rows(out).values() for r in rows]
    for name in {r.get("patch") for r in rows if r.get("status") == "done" and r.get("patch")}:
        folder = out / str(name)
        files = patch_files(folder) if folder.is_dir() and not folder.is_symlink() else None
        if files is not None and {p.name for p in folder.iterdir()} <= set(files):
            owned.add(str(name))
    results = out / RESULTS
    if results.is_dir() and not results.is_symlink() and all(
            p.suffix == ".json" and p.is_file() and not p.is_symlink() for p in results.iterdir()):
        owned.add(RESULTS)
    owned |= {c.name for c in out.iterdir() if _TEMP.match(c.name) and not c.is_symlink()}
    return owned


def _replace_previous(out: Path) -> None:
    """Empty another queue's output folder (--overwrite): only what that queue wrote, nothing if anything else is
    there."""
    owned = _owned_entries(out)
    foreign = sorted(c.name for c in out.iterdir() if c.name not in owned or c.is_symlink())
    if foreign:
        listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise SaveError(f"{out} holds files erase-batch did not write ({listed}); it is never replaced, even with "
                        "--overwrite: move them out or choose another --out")
    for name in sorted(owned - {MANIFEST}):
        if (out / name).exists():
            remove_owned(out / name, out, "--out folder")
    remove_owned(out / MANIFEST, out, "--out folder")


def read_header(out: Path) -> Optional[dict[str, Any]]:
    """The manifest header of ``out``, or None when it has none (or it is not this queue's). The manifest is read
    through the reading gate: a regular file inside ``out``, never through a link."""
    rows = _manifest_lines(out)
    first = rows[0] if rows else None
    return first if isinstance(first, dict) and first.get("queue") == TAG else None


def _manifest_lines(out: Path) -> list[Any]:
    """Every line of ``out``'s manifest, parsed (bounded); [] when there is none or it is not readable JSON lines
    (a link or special file is a SaveError: it is never followed)."""
    path = out / MANIFEST
    if not (path.exists() or path.is_symlink()):
        return []
    no_links_below(out, path, "--out folder")  # a linked manifest is never followed (SaveError)
    try:
        return [value for _, value in gate.read_jsonl(path, "queue-manifest", root=out)]
    except SaveError:  # not a readable JSON-lines file: not this queue's manifest
        return []


def read_manifest(out: os.PathLike | str) -> list[dict[str, Any]]:
    """The manifest's request rows (without the header), checked as result rows."""
    out = Path(out)
    lines = _manifest_lines(out)
    return gate.check(lines[1:], "queue-result", str(out / MANIFEST))


def _recorded_rows(out: Path) -> dict[str, list[dict[str, Any]]]:
    """{unit name: its recorded rows}: each unit's result file, else the rows the manifest records for it (a
    finished run's results are folded into the manifest and its ``.results`` folder removed)."""
    recorded: dict[str, list[dict[str, Any]]] = {}
    try:
        for row in read_manifest(out):
            if row.get("unit") or row.get("patch"):
                recorded.setdefault(str(row.get("unit") or row.get("patch")), []).append(row)
    except SaveError:
        pass
    results = out / RESULTS
    if results.is_dir() and not results.is_symlink():
        for f in results.glob("*.json"):
            rows = _read_result(out, f.stem)
            if rows is not None:
                recorded[f.stem] = rows
    return recorded


def _read_result(out: Path, name: str) -> Optional[list[dict[str, Any]]]:
    """One unit's recorded rows from ``.results/<name>.json`` (through the gate, checked), or None."""
    path = out / RESULTS / f"{name}.json"
    try:
        no_links_below(out, path, "--out folder")
        return gate.read_json(path, "queue-result", root=out)
    except SaveError:
        return None


def _complete(out: Path, unit: Unit, recorded: Optional[dict[str, list]] = None) -> Optional[list[dict[str, Any]]]:
    """The recorded rows of a unit whose patch is complete (a loadable patch folder, not a link, plus a recorded
    outcome naming that patch id), else None. Units that failed or found no face are not complete: redone."""
    from guide_unlearn.patch import ForgetPatch

    rows = (recorded if recorded is not None else _recorded_rows(out)).get(unit.name)
    folder = out / unit.name
    if not rows or folder.is_symlink() or not folder.is_dir():
        return None
    try:
        patch = ForgetPatch.from_pretrained(folder)
    except GuideUnlearnError:
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
    writing each patch folder atomically and its outcome to ``DIR/.results/<unit>.json``; the main process writes
    ``DIR/manifest.jsonl`` after a barrier — also when the run is interrupted (Ctrl-C: the requests not run yet are
    listed as ``pending``) — and, once every outcome is in the manifest, removes ``.results/``. ``overrides``:
    erase settings on top of the model's defaults (``seed`` is the base seed the request seeds derive from;
    ``method`` the erase method, default 'lora', or 'joint' when ``joint`` > 1 — a method that cannot erase several
    people is refused with ``joint`` > 1 before any work). ``threads``: torch threads per process (bit-identical
    patches need the same value).
    -> summary {'requests', 'done', 'failed', 'skipped-no-face', 'pending', 'resumed', 'seconds', 'processes'}.
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
    resume = _main_first(state, lambda: prepare_output(out, head, overwrite))
    if read_header(out) != head:
        raise SaveError(f"{out} could not be prepared by the main process; see its error")
    if state.is_main_process:  # outcomes of units about to be redone are stale (failed, or killed mid-way)
        recorded = _recorded_rows(out)
        for unit in units:
            stale = out / RESULTS / f"{unit.name}.json"
            if _complete(out, unit, recorded) is None and (stale.exists() or stale.is_symlink()):
                remove_owned(stale, out, "--out folder")
    state.wait_for_everyone()
    recorded = _recorded_rows(out)
    todo = [u for u in units if _complete(out, u, recorded) is None]
    state.wait_for_everyone()  # every process has the same list before any of them writes a new result
    bar = _bar(len(requests), progress and state.is_main_process)
    try:
        if bar is not None:
            bar.update(len(requests) - sum(len(u.requests) for u in todo))
        _run_units(state, todo, units, model, out, overrides, device, bar, joint)
        state.wait_for_everyone()
    except BaseException:
        if state.is_main_process:  # Ctrl-C or a crash: the manifest still records what is done
            _write_manifest(out, head, units)
        raise
    finally:
        if bar is not None:
            bar.close()
    summary: dict[str, Any] = {}
    if state.is_main_process:
        rows = _write_manifest(out, head, units)
        if all(r["status"] != "pending" for r in rows):
            remove_owned(out / RESULTS, out, "--out folder")  # every outcome is in the manifest now
        summary = {"requests": len(requests), "units": len(units), "redone_units": len(todo),
                   "processes": state.num_processes, "resumed": resume,
                   "seconds": round(time.perf_counter() - t0, 2), "manifest": str(out / MANIFEST)}
        for status in STATUSES:
            summary[status] = sum(r["status"] == status for r in rows)
    state.wait_for_everyone()
    return summary


STATUSES = ("done", "failed", "skipped-no-face", "pending")


def _main_first(state, prepare) -> bool:
    """``prepare()`` on the main process while the others wait; its error is raised on every process."""
    error: Optional[BaseException] = None
    result = False
    if state.is_main_process:
        try:
            result = prepare()
        except BaseException as e:  # every process must still reach the barrier
            error = e
    state.wait_for_everyone()
    if error is not None:
        raise error
    return result


def _run_units(state, todo: Sequence[Unit], units: Sequence[Unit], model: str, out: Path,
               overrides: dict[str, Any], device: Optional[str], bar, joint: int = 1) -> None:
    """This process's share of ``todo``: each unit erased, its outcome written to ``.results/<unit>.json``."""
    if not todo:
        return
    from guide_unlearn import IdentityEraser

    eraser = IdentityEraser.from_pretrained(model, device=device or str(state.device))
    with state.split_between_processes(list(todo)) as mine:
        for unit in mine:
            try:
                _check_unit_folder(out, unit)
            except SaveError as e:  # something the queue did not write is in the way: this unit fails alone
                rows = [_failure(r.request_id, unit.name, e, 0.0) for r in unit.requests]
            else:
                rows = _run_unit(eraser, unit, out, overrides, joint)
            rows = [{**r, "unit": unit.name, "process": state.process_index} for r in rows]
            result = no_links_below(out, out / RESULTS / f"{unit.name}.json", "--out folder")
            atomic_write_bytes(result, json.dumps(rows).encode(), overwrite=True)
            if bar is not None:
                bar.n = _finished(out, units)
                bar.refresh()


def _check_unit_folder(out: Path, unit: Unit) -> None:
    """A unit about to be (re)done may replace ``out/<unit>`` only if the queue wrote it: missing, or a patch whose
    metadata lists exactly this unit's request ids (a run killed after saving it, before recording it). Anything
    else — a link, a user's folder, another patch — is never replaced: SaveError."""
    from guide_unlearn.patch import read_metadata

    folder = no_links_below(out, out / unit.name, "--out folder")
    if not (folder.exists() or folder.is_symlink()):
        return
    try:
        ids = [r.get("request_id") for r in read_metadata(folder).get("requests") or []]
    except GuideUnlearnError:
        ids = None
    if ids != [r.request_id for r in unit.requests]:
        raise SaveError(f"{folder} is in the way and was not written by this queue for {unit.name}; it is never "
                        "replaced: move it out of --out and run the same command again")


def _write_manifest(out: Path, head: dict[str, Any], units: Sequence[Unit]) -> list[dict[str, Any]]:
    """Write the manifest (header + one row per request, ``pending`` for those not run yet). -> the rows."""
    rows = _collect(out, units)
    lines = [json.dumps(head)] + [json.dumps(r) for r in rows]
    atomic_write_bytes(no_links_below(out, out / MANIFEST, "--out folder"), ("\n".join(lines) + "\n").encode(),
                       overwrite=True)
    return rows


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
        if req.problem:  # no photos, or photos outside the request list's folder: fails alone
            rows[req.request_id] = _failure(req.request_id, unit.name, InputError(req.problem), 0.0)
            continue
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
    results = out / RESULTS
    names = {p.stem for p in results.glob("*.json")} if results.is_dir() and not results.is_symlink() else set()
    return sum(len(u.requests) for u in units if u.name in names)


def _collect(out: Path, units: Sequence[Unit]) -> list[dict[str, Any]]:
    """One row per request: its unit's recorded outcome, else ``pending`` (not run yet, or its process died)."""
    recorded = _recorded_rows(out)
    rows = []
    for unit in units:
        got = {r.get("request_id"): r for r in recorded.get(unit.name, [])}
        for req in unit.requests:
            rows.append(got.get(req.request_id) or {
                "request_id": req.request_id, "status": "pending", "unit": unit.name,
                "error": "not run yet (the run was interrupted, or its process died); run the same command again to "
                         "finish the queue", "patch": None, "patch_id": None, "seconds": None, "final_losses": None})
    return rows


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="requests", unit="request")
