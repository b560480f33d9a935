"""Every full-size speed figure in one command, on the first CUDA GPU (< 5 min on one H200).

    python benchmarks/gpu_suite.py             # EG3D-512 and StyleGAN2-1024, random weights, on cuda:0
    python benchmarks/gpu_suite.py --dry-run   # the same code path on the CPU with tiny models (CI runs this)

For each architecture it measures ours (the default LoRA preset, bf16 autocast) and the reference loop
(``benchmarks/reference_loop.py``: the paper preset's structure, fp32 as the official code): milliseconds per
iteration over a fixed number of timed iterations after one warm-up, seconds for ONE identity extrapolated to the
preset's default iteration count (ours: ``EraseConfig().iterations``, reference: ``EraseConfig.paper()``'s), and
peak GPU memory (torch.cuda.max_memory_allocated over the loop). Each path runs in its own subprocess, so peak
memory is measured separately. When the engine has multi-person erasing (``IdentityEraser.erase_many``) it also
times one joint run for 100 people (a fixed number of iterations, extrapolated to the iteration count that
``erase_many`` picks by default); without it that figure is reported as skipped.

Timing needs no trained weights: the networks are randomly initialised with a fixed seed. Writes one JSON line per
figure to stdout (``{"figure": ...}``) and a short table to stderr; ``--out FILE`` also writes the JSON lines there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_erase_step as B  # noqa: E402

GOALS = {"eg3d_seconds_per_identity": 20.0, "speedup": 3.0, "peak_mem_ratio": 0.5}


def _default_iterations() -> tuple[int, int]:
    from guide_unlearn.config import EraseConfig

    return EraseConfig().iterations, EraseConfig.paper().iterations


def measure_pair(backend: str, size: str, device: str, steps: tuple[int, int], threads: int,
                 in_process: bool) -> dict:
    """ours vs reference on one architecture -> one figure dict."""
    ours_iters, paper_iters = _default_iterations()
    res = {}
    for path, n, mp in (("ours", steps[0], "bf16" if device.startswith("cuda") else "no"),
                        ("reference", steps[1], "no")):
        args = SimpleNamespace(path=path, backend=backend, size=size, device=device, steps=n, threads=threads,
                               mixed_precision=mp)
        res[path] = B.child(args) if in_process else B.run_child(path, args)
        res[path]["mixed_precision"] = mp
    o, r = res["ours"], res["reference"]
    return {
        "figure": f"{backend}-{size}", "device": device,
        "ours_ms_per_iter": round(o["ms_per_iter"], 2), "reference_ms_per_iter": round(r["ms_per_iter"], 2),
        "ours_mixed_precision": o["mixed_precision"], "reference_mixed_precision": "no",
        "speedup": round(r["ms_per_iter"] / o["ms_per_iter"], 3),
        "ours_iterations": ours_iters, "reference_iterations": paper_iters,
        "ours_seconds_per_identity": round(o["ms_per_iter"] * ours_iters / 1000, 2),
        "reference_seconds_per_identity": round(r["ms_per_iter"] * paper_iters / 1000, 2),
        "ours_peak_bytes": o["peak_bytes"], "reference_peak_bytes": r["peak_bytes"],
        # in one process (dry run) the second path's peak RSS includes the first's: no ratio then
        "peak_mem_ratio": None if in_process else round(o["peak_bytes"] / max(1, r["peak_bytes"]), 3),
        "timed_iterations": {"ours": steps[0], "reference": steps[1]},
        "patch_bytes": o["patch_bytes"],
    }


def measure_many(backend: str, size: str, device: str, people: int, steps: int) -> dict:
    """One joint erase of ``people`` random identities (erase_many), timed over ``steps`` iterations."""
    import torch

    from guide_unlearn import IdentityEraser

    if not hasattr(IdentityEraser, "erase_many"):
        return {"figure": f"{backend}-{size}-many", "skipped": "this engine has no IdentityEraser.erase_many"}
    gen, perceptual, identity = B.build(backend, size, device)
    eraser = IdentityEraser(gen, perceptual=perceptual, identity_model=identity)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        ws = gen.mapping(torch.randn(people, gen.z_dim, generator=g, device=device), None)
    requests = {f"person-{i:03d}": ws[i:i + 1] for i in range(people)}
    base = eraser.default_config("joint", mixed_precision="bf16" if device.startswith("cuda") else "no")
    per_step = getattr(base.method_config, "persons_per_step", people)
    default_iters = max(base.iterations, math.ceil(base.iterations * people / (2 * min(per_step, people))))
    eraser.erase_many(requests, config=base.replace(iterations=1), measure=False, progress=False)  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    eraser.erase_many(requests, config=base.replace(iterations=steps), measure=False, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {
        "figure": f"{backend}-{size}-many", "device": device, "people": people, "persons_per_step": per_step,
        "timed_iterations": steps, "ms_per_iter": round(1000 * seconds / steps, 2),
        "default_iterations": default_iters, "seconds_for_all": round(seconds / steps * default_iters, 2),
        "seconds_per_person": round(seconds / steps * default_iters / people, 3),
        "peak_bytes": torch.cuda.max_memory_allocated() if device.startswith("cuda") else None,
        "note": "timed over a fixed number of iterations (set-up included), extrapolated",
    }


def table(figures: list[dict]) -> str:
    """A short plain-text table of the figures."""
    lines = [f"{'figure':<22}{'ours ms/it':>12}{'ref ms/it':>12}{'speedup':>9}{'ours s/id':>12}{'ref s/id':>12}"
             f"{'mem ratio':>11}"]
    for f in figures:
        if "skipped" in f:
            lines.append(f"{f['figure']:<22}skipped: {f['skipped']}")
        elif "people" in f:
            lines.append(f"{f['figure']:<22}{f['ms_per_iter']:>12.1f}{'':>12}{'':>9}{f['seconds_per_person']:>12.2f}"
                         f"{'':>12}{'':>11}  ({f['people']} people, {f['seconds_for_all']:.1f} s in all)")
        else:
            mem = "-" if f["peak_mem_ratio"] is None else f"{f['peak_mem_ratio']:.3f}"
            lines.append(f"{f['figure']:<22}{f['ours_ms_per_iter']:>12.1f}{f['reference_ms_per_iter']:>12.1f}"
                         f"{f['speedup']:>9.2f}{f['ours_seconds_per_identity']:>12.2f}"
                         f"{f['reference_seconds_per_identity']:>12.2f}{mem:>11}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, in this process (for CI)")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    p.add_argument("--people", type=int, default=None, help="identities in the joint run (default 100; 3 dry)")
    p.add_argument("--skip-many", action="store_true", help="leave out the joint multi-person run")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON lines to this file")
    args = p.parse_args(argv)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("no CUDA GPU here; use --dry-run to exercise the suite on the CPU", file=sys.stderr)
            return 2
    size = "tiny" if args.dry_run else "full"
    # Timed iterations: ours is fast and batched, the reference slow; a few each keeps the suite < 5 min.
    steps = (1, 1) if args.dry_run else (10, 3)
    figures = []
    for backend in ("eg3d", "stylegan2"):
        f = measure_pair(backend, size, device, steps, threads=1 if args.dry_run else 8, in_process=args.dry_run)
        figures.append(f)
        print(json.dumps(f), flush=True)
    if not args.skip_many:
        f = measure_many("eg3d", size, device, args.people or (3 if args.dry_run else 100),
                         steps=1 if args.dry_run else 5)
        figures.append(f)
        print(json.dumps(f), flush=True)
    if args.out is not None:
        args.out.write_text("".join(json.dumps(f) + "\n" for f in figures))
    print(table(figures), file=sys.stderr)
    eg = figures[0]
    if not args.dry_run:
        print(f"goals: EG3D {eg['ours_seconds_per_identity']} s per identity (<= {GOALS['eg3d_seconds_per_identity']}),"
              f" speedup {eg['speedup']}x (>= {GOALS['speedup']}), memory {eg['peak_mem_ratio']} "
              f"(<= {GOALS['peak_mem_ratio']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
