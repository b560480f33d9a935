"""Time one erase iteration: the project's default path (batched LoRA) against the official loop structure.

    python benchmarks/bench_erase_step.py --quick                  # StyleGAN2, FFHQ widths at 32x32
    python benchmarks/bench_erase_step.py --backend eg3d --quick   # EG3D, FFHQ widths, small rendering (below)
    python benchmarks/bench_erase_step.py --size full --device cuda --mixed-precision bf16   # full size (GPU)

Sizes: ``tiny`` (the test models, for smoke runs), ``quick`` (FFHQ channel widths at a small resolution: every
3x3 conv has its real 512x512x3x3 weight, so the reference's frozen copy, full gradients and Adam state are real
memory, while one CPU iteration takes seconds), ``full`` (StyleGAN2-1024 / EG3D-512 with random weights).
The EG3D ``quick`` size keeps the FFHQ backbone widths (channel_max 512, w_dim 512, 32-channel planes,
decoder 64) with 32x32 tri-planes, 16x16 rays with 12 + 12 samples and a 64x64 super-resolved image: the
backbone's 16 M synthesis parameters make the paper preset's extra state (~250 MB) measurable, and the
renderer / super-resolution still run at batch > 1.

The workload is fixed: the same networks, 2 adjacency + 2 global samples, every loss term on, fp32 unless
``--mixed-precision`` says otherwise (ours only; the reference runs fp32 as the official code). The script runs
``--pairs`` pairs of subprocesses, alternating ours / reference, so the two paths see the same machine load;
each subprocess measures peak memory on its own (CPU: growth of peak RSS over the loop; CUDA:
torch.cuda.max_memory_allocated) and times ``--steps`` iterations after one warm-up iteration (wall clock and
process CPU time). Prints medians and spreads, then one final JSON line with ``speedup`` (median over the pairs
of reference ms / ours ms per iteration) and ``peak_mem_ratio`` (median of ours / reference peak).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SG2_SIZES = {
    "tiny": dict(z_dim=32, w_dim=32, img_resolution=16, channel_base=256, channel_max=32, mapping_layers=2),
    "quick": dict(z_dim=512, w_dim=512, img_resolution=32, channel_base=32768, channel_max=512, mapping_layers=8),
    "full": dict(z_dim=512, w_dim=512, img_resolution=1024, channel_base=32768, channel_max=512, mapping_layers=8),
}
#: EG3D "quick": FFHQ widths with small rendering (see the module docstring).
EG3D_QUICK = dict(plane_resolution=32, neural_rendering_resolution=16, depth_resolution=12,
                  depth_resolution_importance=12, sr_input_resolution=16, img_resolution=64)


def build(backend: str, size: str, device: str):
    """-> (generator, perceptual, identity) for a benchmark size, random weights, seeded."""
    import torch

    from guide_unlearn.adapters.perceptual import MultiScaleGradL1
    from guide_unlearn.adapters.toy import ToyIdentityNet

    torch.manual_seed(0)
    if backend == "stylegan2":
        from guide_unlearn.adapters.stylegan2 import StyleGAN2Generator

        gen = StyleGAN2Generator(**SG2_SIZES[size])
    elif backend == "eg3d":
        if size == "tiny":
            from guide_unlearn.adapters.eg3d.testing import tiny_generator

            gen = tiny_generator(seed=0)
        else:
            from guide_unlearn.adapters.eg3d.configs import EG3D_FFHQ512
            from guide_unlearn.adapters.eg3d.model import EG3DGenerator

            gen = EG3DGenerator(**dict(EG3D_FFHQ512, **(EG3D_QUICK if size == "quick" else {})))
    else:
        raise SystemExit(f"unknown backend {backend}")
    gen = gen.to(device).eval()
    return gen, MultiScaleGradL1(), ToyIdentityNet().to(device)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def child(args) -> dict:
    """One path's measurement in this process -> dict (also printed as the last stdout line)."""
    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn.config import EraseConfig

    gen, perceptual, identity = build(args.backend, args.size, args.device)
    g = torch.Generator(device=args.device).manual_seed(0)
    w_u = gen.mapping(torch.randn(1, gen.z_dim, generator=g, device=args.device), None).detach()
    _sync(args.device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    steps, warmup = args.steps, 1
    patch_bytes = None
    if args.path == "ours":
        from guide_unlearn.config import RunOptions
        from guide_unlearn.engine import run_erase

        quiet = RunOptions(progress=False)
        cfg = EraseConfig(iterations=warmup, noise_mode="random", mixed_precision=args.mixed_precision)
        run_erase(gen, w_u, cfg, perceptual, identity, run=quiet)  # warm-up (allocator, kernels)
        cfg = cfg.replace(iterations=steps)
        _sync(args.device)
        cpu0 = time.process_time()
        run = run_erase(gen, w_u, cfg, perceptual, identity, run=quiet)
        patch, elapsed = run.patch, run.seconds  # loop time, set-up excluded
        _sync(args.device)
        cpu = time.process_time() - cpu0
        patch_bytes = patch.num_bytes
    else:
        sys.path.insert(0, str(HERE))
        from reference_loop import ReferenceLoop

        from guide_unlearn.targets import ufo_target

        cfg = EraseConfig.paper()
        ref = ReferenceLoop(gen, perceptual, identity, cfg)
        w_t = ufo_target(w_u, gen.w_avg, "extrapolate", 30.0)
        ref.step(w_u, w_t, g)
        _sync(args.device)
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            ref.step(w_u, w_t, g)
        _sync(args.device)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
    names = set(gen.full_finetune_parameters())
    synth = sum(p.numel() * p.element_size() for n, p in gen.named_parameters() if n in names)
    out = {"ms_per_iter": 1000 * elapsed / steps, "cpu_ms_per_iter": 1000 * cpu / steps, "peak_bytes": peak,
           "patch_bytes": patch_bytes, "full_synthesis_bytes": synth}
    print(json.dumps(out))
    return out


def run_child(path: str, args) -> dict:
    """Run one path in a fresh subprocess -> its measurement dict."""
    cmd = [sys.executable, __file__, "--child", path, "--backend", args.backend, "--size", args.size,
           "--steps", str(args.steps), "--threads", str(args.threads), "--device", args.device,
           "--mixed-precision", args.mixed_precision]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise SystemExit(f"{path} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spread(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}


def summarise(pairs: list[tuple[dict, dict]], args) -> dict:
    """Medians and spreads over the (ours, reference) pairs -> the final JSON object."""
    ours = [o for o, _ in pairs]
    ref = [r for _, r in pairs]
    ratios = [r["ms_per_iter"] / o["ms_per_iter"] for o, r in pairs]
    cpu_ratios = [r["cpu_ms_per_iter"] / o["cpu_ms_per_iter"] for o, r in pairs]
    mem = [o["peak_bytes"] / max(1, r["peak_bytes"]) for o, r in pairs]
    o0 = ours[0]
    return {
        "benchmark": "erase_step", "backend": args.backend, "size": args.size, "quick": args.size == "quick",
        "device": args.device, "threads": args.threads, "steps": args.steps, "pairs": len(pairs),
        "mixed_precision": args.mixed_precision,
        "ours_ms_per_iter": _spread([o["ms_per_iter"] for o in ours]),
        "reference_ms_per_iter": _spread([r["ms_per_iter"] for r in ref]),
        "speedup": round(statistics.median(ratios), 3), "speedup_spread": _spread(ratios),
        "cpu_time_speedup": round(statistics.median(cpu_ratios), 3), "cpu_time_speedup_spread": _spread(cpu_ratios),
        "ours_peak_bytes": int(statistics.median([o["peak_bytes"] for o in ours])),
        "reference_peak_bytes": int(statistics.median([r["peak_bytes"] for r in ref])),
        "peak_mem_ratio": round(statistics.median(mem), 3), "peak_mem_ratio_spread": _spread(mem),
        "patch_bytes": o0["patch_bytes"], "full_synthesis_bytes": o0["full_synthesis_bytes"],
        "patch_share": round(o0["patch_bytes"] / o0["full_synthesis_bytes"], 4),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="stylegan2", choices=["stylegan2", "eg3d"])
    p.add_argument("--quick", action="store_true", help="same as --size quick")
    p.add_argument("--size", default=None, choices=["tiny", "quick", "full"],
                   help="model size (default: quick with --quick, else full)")
    p.add_argument("--steps", type=int, default=3, help="timed iterations per run")
    p.add_argument("--pairs", type=int, default=3, help="alternating (ours, reference) runs; the medians are over these")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"], help="ours only")
    p.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.size is None:
        args.size = "quick" if args.quick else "full"
    if args.child:
        args.path = args.child
        child(args)
        return
    pairs = []
    for i in range(args.pairs):
        o = run_child("ours", args)
        r = run_child("reference", args)
        pairs.append((o, r))
        print(f"pair {i + 1}: ours {o['ms_per_iter']:9.1f} ms/iter (cpu {o['cpu_ms_per_iter']:9.1f}), reference "
              f"{r['ms_per_iter']:9.1f} ms/iter (cpu {r['cpu_ms_per_iter']:9.1f}); ratio "
              f"{r['ms_per_iter'] / o['ms_per_iter']:.2f}x; peak +{o['peak_bytes'] / 2**20:.1f} / "
              f"+{r['peak_bytes'] / 2**20:.1f} MiB", flush=True)
    result = summarise(pairs, args)
    s, m = result["speedup_spread"], result["peak_mem_ratio_spread"]
    print(f"median over {len(pairs)} pairs: ours {result['ours_ms_per_iter']['median']:.1f} ms/iter, reference "
          f"{result['reference_ms_per_iter']['median']:.1f} ms/iter")
    print(f"speedup {result['speedup']}x (pairs {s['min']}..{s['max']}; process-CPU-time speedup "
          f"{result['cpu_time_speedup']}x), peak memory ratio {result['peak_mem_ratio']} ({m['min']}..{m['max']})")
    print(f"patch {result['patch_bytes']} B = {100 * result['patch_share']:.2f} % of the synthesis "
          f"({result['full_synthesis_bytes']} B); 1-min load average {result['load_average_1min']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
