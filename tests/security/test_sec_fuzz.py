"""A bounded fuzz: mutated checkpoints, model folders, patches, model cards, hub caches, erase states, request lists
and lineage records (bit flips, truncation, header, JSON, YAML and CSV edits) each end in a typed error or a
working result, within a time and memory bound.

A fresh worker process imports torch once and forks one child per load (RLIMIT_AS would break the CUDA build's
import, so each child's memory is bounded with RLIMIT_DATA and checked with its peak RSS). A child that
crashes (segfault), hangs, raises an untyped exception or runs out of memory fails the test. The whole run stops
starting new cases after ``BUDGET_S`` seconds, so it stays under a minute on a loaded CI machine.
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import time
from pathlib import Path

import pytest
import torch

from ckpt_writers import write_nvidia_pickle
from guide_unlearn.adapters.stylegan2.convert import export_safetensors
from guide_unlearn.errors import GuideUnlearnError
from guide_unlearn.fingerprint import patch_state
from guide_unlearn.io import sha256_file
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.pipelines.loading import load_generator
from guide_unlearn.testing import tiny_eraser

BUDGET_S = 30.0  # stop starting new cases after this (worker start-up comes on top: ~10-15 s unloaded)
CASE_TIMEOUT_S = 15.0  # one load, including the fork
MEMORY_HEADROOM = 1536 << 20  # bytes a load may add to this process's data segment / RSS
CASES = 400


def _vm_data() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0


def _memory_failure(exc: BaseException) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "out of memory" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _run_forked(fn) -> tuple[str, str, int]:
    """Run ``fn()`` in a forked child. -> (status, detail, peak RSS in KiB)."""
    limit = _vm_data() + MEMORY_HEADROOM
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        faulthandler.disable()  # a crash is reported by the parent, not dumped into the test log
        status, detail = "untyped", ""
        try:
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
            signal.alarm(int(CASE_TIMEOUT_S) + 5)
            torch.set_num_threads(1)
            detail = str(fn() or "")
            status = "ok"
        except GuideUnlearnError as exc:
            status, detail = ("memory" if _memory_failure(exc) else "typed"), f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # noqa: BLE001 - what the test looks for
            status, detail = ("memory" if _memory_failure(exc) else "untyped"), f"{type(exc).__name__}: {exc}"
        try:
            os.write(w, f"{status}\n{str(detail)[:400]}".encode("utf-8", "replace"))
        finally:
            os._exit(0)  # never return into the parent's code (its temporary folders would be removed)
    os.close(w)
    deadline = time.monotonic() + CASE_TIMEOUT_S
    while True:
        done, wait_status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, wait_status, usage = os.wait4(pid, 0)
            os.close(r)
            return "timeout", f"still running after {CASE_TIMEOUT_S} s", usage.ru_maxrss
        time.sleep(0.005)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    if os.WIFSIGNALED(wait_status):
        return "crash", f"killed by signal {os.WTERMSIG(wait_status)}", usage.ru_maxrss
    status, _, detail = data.decode("utf-8", "replace").partition("\n")
    return status or "crash", detail, usage.ru_maxrss


# -- seeds and mutations ---------------------------------------------------------------------------------------


def _flip(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def _splice(data: bytes, rng: random.Random) -> bytes:
    """Overwrite a random span with random bytes or pickle opcodes."""
    b = bytearray(data)
    i = rng.randrange(len(b))
    junk = bytes(rng.choice(b"()]}tue\x85\x86\x87\x94\x8c\x8aRbhjqr0.JKM\x80\x81") if rng.random() < 0.5
                 else rng.randrange(256) for _ in range(rng.randint(1, 16)))
    b[i:i + len(junk)] = junk
    return bytes(b)


def _header(data: bytes, rng: random.Random) -> bytes:
    """Edit a length / size field: the safetensors header length, a zip directory field, a pickle length."""
    b = bytearray(data)
    value = rng.choice([0, 1, 0x7F, 0x80, 0xFFFF, 1 << 31, 1 << 40, (1 << 64) - 1, len(data), len(data) + 1])
    width = rng.choice([1, 2, 4, 8])
    if data[:4] == b"PK\x03\x04" and rng.random() < 0.7:
        pos = data.rfind(b"PK\x01\x02")  # a central-directory record: sizes and name length
        pos = pos + rng.choice([20, 24, 28]) if pos >= 0 else 0
    elif data[8:9] == b"{" and rng.random() < 0.5:
        pos = 0
    else:
        pos = rng.randrange(max(1, len(b) - 8))
    b[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(b[:len(data)])


_NUMBER = re.compile(rb"-?\d+(\.\d+)?(e-?\d+)?")


def _json_edit(data: bytes, rng: random.Random) -> bytes:
    """Replace a JSON number or string by something hostile (huge, negative, non-finite, nested, wrong type)."""
    hostile = rng.choice([b"1e400", b"-1", b"0", b"99999999999999999999", b"NaN", b"-Infinity", b"true", b"null",
                          b'"x"', b"[" * 5000 + b"]" * 5000, b"{}", b"[1, 2]", b"50000", b"1000000000"])
    spans = [m.span() for m in _NUMBER.finditer(data)] or [(0, 0)]
    if rng.random() < 0.4:
        spans = [m.span() for m in re.finditer(rb'"[^"\\]*"', data)] or spans
    start, end = rng.choice(spans)
    return data[:start] + hostile + data[end:]


MUTATORS = [_flip, _truncate, _splice, _header]

_YAML_HOSTILE = [b"&a [*a, *a]", b"*nowhere", b"!!python/object/apply:os.system ['true']", b"[" * 3000 + b"]" * 3000,
                 b"!!binary AAAA", b"9" * 5000, b"{a: &b [1, 2], c: *b}", b"'" + b"x" * 70_000 + b"'", b"\t- -",
                 b"!!set {a, b}", b"2026-01-01T00:00:00Z", b"null", b"[1, 2]", b"{}", b"\xff\xfe"]


def _yaml_edit(data: bytes, rng: random.Random) -> bytes:
    """Replace a value of a card's YAML header by hostile YAML (aliases, tags, deep nesting, huge scalars)."""
    spans = [m.span(1) for m in re.finditer(rb":[ ]+([^\n]+)", data)] or [(0, 0)]
    start, end = rng.choice(spans)
    return data[:start] + rng.choice(_YAML_HOSTILE) + data[end:]


def _csv_edit(data: bytes, rng: random.Random) -> bytes:
    """A request list with a hostile field: quotes, NULs, huge fields, traversal, absolute paths, extra columns."""
    hostile = rng.choice([b'"', b"\x00", b"x" * 9000, b"../../../etc/passwd", b"/dev/zero", b"a,b,c,d", b"\r\n\r\n",
                          b'{"request_id": 1}', b"[" * 200, b"\xff"])
    spans = [m.span() for m in re.finditer(rb"[^,\n]+", data)] or [(0, 0)]
    start, end = rng.choice(spans)
    return data[:start] + hostile + data[end:]


def _seed_newer_kinds(root: Path, eraser, patch_folder: Path) -> None:
    """Seeds of the kinds the reading gate added: a patch with its card in a hub cache, an erase state, request
    lists, a generator folder's lineage record."""
    import hashlib
    import os

    from guide_unlearn.config import EraseConfig
    from guide_unlearn.testing import interrupted_at

    repo = root / "hub" / "models--user--repo"
    snap = repo / "snapshots" / ("c" * 40)
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in patch_folder.iterdir():
        blob = repo / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        blob.write_bytes(f.read_bytes())
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("c" * 40)
    w = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=torch.Generator().manual_seed(2)))
    (root / "state").mkdir()
    with interrupted_at(4):
        try:
            eraser.erase(w.detach(), EraseConfig(iterations=4), state_dir=root / "state", measure=False,
                         checkpoint_every=2, progress=False)
        except KeyboardInterrupt:
            pass
    torch.save(w.detach(), root / "state_w.pt")
    (root / "requests").mkdir()
    (root / "requests" / "a.jpg").write_bytes(b"x")
    (root / "requests" / "r.csv").write_text("request_id,photo\na,a.jpg\nb,a.jpg\n")
    (root / "requests" / "r.jsonl").write_text('{"request_id": "a", "photos": ["a.jpg"]}\n'
                                               '{"request_id": "b", "photo": "a.jpg"}\n')


def make_seeds(root: Path):
    """Valid inputs to mutate: NVIDIA pickle, .pt, .safetensors, model folder, patch folder, and the newer kinds
    (card, hub cache, erase state, request lists, lineage record). -> (root, eraser)."""
    root.mkdir(parents=True, exist_ok=True)
    eraser = tiny_eraser()
    gen = eraser.generator
    write_nvidia_pickle(root / "g.pkl", gen, only_g_ema=True)
    torch.save({k: v.clone() for k, v in gen.state_dict().items()}, root / "g.pt")
    export_safetensors(gen, root / "g.safetensors")
    gen.save_pretrained(str(root / "folder"))
    targets = gen.lora_target_modules()[:2]
    modules = dict(gen.named_modules())
    tensors = {}
    for t in targets:
        w = modules[t].weight
        tensors[f"{t}.lora_A.weight"] = torch.full((2, w[0].numel()), 0.01)
        tensors[f"{t}.lora_B.weight"] = torch.full((w.shape[0], 2), 0.01)
    meta = {"generator_family": gen.family, "base_fingerprint": patch_state(gen)["base_fingerprint"]}
    ForgetPatch("lora", tensors, meta, {"r": 2, "lora_alpha": 2.0, "target_modules": targets}
                ).save_pretrained(root / "patch")
    _seed_newer_kinds(root, eraser, root / "patch")
    return root, eraser


KINDS = ["pkl", "pt", "safetensors", "folder", "patch", "card", "hub", "state", "requests", "lineage"]


def _newer_case(root: Path, work: Path, index: int, kind: str, rng: random.Random):
    """A mutated input of the kinds the reading gate added. -> (label, loader)."""
    from guide_unlearn.card import read_card_block
    from guide_unlearn.pipelines.request_lists import read_requests

    if kind == "card":
        folder = work / f"card{index}"
        shutil.copytree(root / "patch", folder)
        mutate = _yaml_edit if rng.random() < 0.7 else rng.choice(MUTATORS)
        (folder / "README.md").write_bytes(mutate((folder / "README.md").read_bytes(), rng))
        return f"card/{mutate.__name__}", lambda: read_card_block(folder / "README.md")
    if kind == "hub":
        cache = work / f"hub{index}"
        shutil.copytree(root / "hub", cache, symlinks=True)
        repo = cache / "models--user--repo"
        target = rng.choice(["refs/main", "blob"])
        path = repo / "refs" / "main" if target == "refs/main" else rng.choice(sorted((repo / "blobs").iterdir()))
        mutate = _json_edit if target == "blob" and rng.random() < 0.5 else rng.choice(MUTATORS)
        path.write_bytes(mutate(path.read_bytes(), rng))

        def load_hub():
            import os

            os.environ.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
            return ForgetPatch.from_pretrained("user/repo").kind
        return f"hub/{target}/{mutate.__name__}", load_hub
    if kind == "state":
        folder = work / f"state{index}"
        shutil.copytree(root / "state", folder)
        mutate = rng.choice(MUTATORS)
        state = folder / "erase_state.pt"
        state.write_bytes(mutate(state.read_bytes(), rng))

        def load_state():
            from guide_unlearn.config import EraseConfig
            from guide_unlearn.testing import tiny_eraser

            w = torch.load(root / "state_w.pt", weights_only=True)
            tiny_eraser().erase(w, EraseConfig(iterations=4), state_dir=folder, measure=False, checkpoint_every=2,
                                progress=False)
            return "resumed"
        return f"state/{mutate.__name__}", load_state
    if kind == "requests":
        folder = work / f"requests{index}"
        shutil.copytree(root / "requests", folder)
        name = rng.choice(["r.csv", "r.jsonl"])
        mutate = (_csv_edit if name == "r.csv" else _json_edit) if rng.random() < 0.7 else rng.choice(MUTATORS)
        (folder / name).write_bytes(mutate((folder / name).read_bytes(), rng))
        return f"requests/{name}/{mutate.__name__}", lambda: len(read_requests(folder / name))
    folder = work / f"lineage{index}"
    shutil.copytree(root / "folder", folder)
    record = folder / "guide_unlearn.json"
    mutate = _json_edit if rng.random() < 0.7 else rng.choice(MUTATORS)
    record.write_bytes(mutate(record.read_bytes(), rng))
    return f"lineage/{mutate.__name__}", lambda: type(load_generator(folder)).__name__


def _case(root: Path, work: Path, index: int):
    """Build mutated input number ``index`` under ``work``. -> (label, loader)."""
    rng = random.Random(index)
    kind = KINDS[index % len(KINDS)]
    if kind in ("card", "hub", "state", "requests", "lineage"):
        return _newer_case(root, work, index, kind, rng)
    if kind in ("pkl", "pt", "safetensors"):
        src = (root / f"g.{kind}").read_bytes()
        mutate = rng.choice(MUTATORS)
        path = work / f"m{index}.{kind}"
        path.write_bytes(mutate(src, rng))
        return f"{kind}/{mutate.__name__}", lambda: type(load_generator(path)).__name__
    if kind == "folder":
        folder = work / f"folder{index}"
        shutil.copytree(root / "folder", folder)
        target = rng.choice(["config.json", "diffusion_pytorch_model.safetensors"])
        mutate = _json_edit if target == "config.json" and rng.random() < 0.7 else rng.choice(MUTATORS)
        (folder / target).write_bytes(mutate((folder / target).read_bytes(), rng))
        return f"folder/{target}/{mutate.__name__}", lambda: type(load_generator(folder)).__name__
    folder = work / f"patch{index}"
    shutil.copytree(root / "patch", folder)
    target = rng.choice(["forget_patch.json", "adapter_config.json", "adapter_model.safetensors"])
    mutate = _json_edit if target.endswith(".json") and rng.random() < 0.7 else rng.choice(MUTATORS)
    (folder / target).write_bytes(mutate((folder / target).read_bytes(), rng))
    if target == "adapter_model.safetensors" and rng.random() < 0.7:  # re-sign, to reach the deeper checks
        meta = json.loads((folder / "forget_patch.json").read_text())
        meta["files"] = {target: sha256_file(folder / target)}
        meta.pop("patch_id", None)
        (folder / "forget_patch.json").write_text(json.dumps(meta))
    return f"patch/{target}/{mutate.__name__}", lambda: folder


def run_fuzz(work: Path) -> dict:
    """The fuzz loop (run by :func:`main` in a fresh worker process). -> summary dict."""
    root, eraser = make_seeds(work / "seeds")
    ws = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=torch.Generator().manual_seed(0)))
    start = time.monotonic()
    results: dict[str, int] = {}
    failures = []
    peak_kib = 0
    for index in range(CASES):
        if time.monotonic() - start > BUDGET_S:
            break
        label, make = _case(root, work, index)

        def load(make=make, label=label):
            out = make()
            if label.startswith("patch/"):
                patch = eraser.apply_patch(ForgetPatch.from_pretrained(out))
                image = eraser.synthesize(ws)
                eraser.remove_patch(patch)
                assert torch.isfinite(image).all(), "an applied patch made the output non-finite"
                return "patched"
            return out

        status, detail, rss = _run_forked(load)
        peak_kib = max(peak_kib, rss)
        results[status] = results.get(status, 0) + 1
        if status not in ("ok", "typed"):
            failures.append(f"case {index} ({label}): {status}: {detail}")
    return {"results": results, "failures": failures, "seconds": time.monotonic() - start, "peak_kib": peak_kib,
            "limit_bytes": _vm_data() + MEMORY_HEADROOM}


def main() -> None:  # pragma: no cover - runs in the worker
    import sys
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_fuzz(Path(tmp))
    sys.stdout.write("FUZZ-SUMMARY " + json.dumps(summary) + "\n")


@pytest.mark.slow
def test_mutated_files_end_in_a_typed_error_or_a_working_model(tmp_path):
    # A fresh worker imports torch once, then forks one child per load: no state of this test process leaks in.
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(here.parent / "checkpoints"),
                                                       os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TMPDIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", "import test_sec_fuzz as f; f.main()"], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=BUDGET_S + 150)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("FUZZ-SUMMARY ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    summary = json.loads(lines[-1][len("FUZZ-SUMMARY "):])
    results, ran = summary["results"], sum(summary["results"].values())
    print(f"fuzz: {ran} cases in {summary['seconds']:.1f} s: {results}; peak child RSS "
          f"{summary['peak_kib'] >> 10} MiB")
    assert ran >= 25, f"only {ran} cases ran in {BUDGET_S} s"
    assert not summary["failures"], "\n".join(summary["failures"][:10])
    assert results.get("typed", 0) > 0  # the mutations do reach the checks
    assert summary["peak_kib"] * 1024 < summary["limit_bytes"]


def test_the_fork_harness_reports_untyped_errors_crashes_and_hangs():
    assert _run_forked(lambda: {}["missing"])[0] == "untyped"
    assert _run_forked(lambda: os.kill(os.getpid(), signal.SIGSEGV))[0] == "crash"
    raise_typed = lambda: (_ for _ in ()).throw(GuideUnlearnError("x"))  # noqa: E731
    assert _run_forked(raise_typed)[0] == "typed"


def test_the_fork_harness_bounds_memory():
    status, _, _ = _run_forked(lambda: bytearray(MEMORY_HEADROOM + (256 << 20)))
    assert status == "memory"


def test_header_mutation_keeps_the_length():
    data = struct.pack("<Q", 40) + b"{" + b" " * 39 + b"\0" * 16
    for seed in range(20):
        out = _header(data, random.Random(seed))
        assert len(out) == len(data)
