"""Time one erase iteration: the project's default path (batched LoRA) against the official loop structure.

    python benchmarks/bench_erase_step.py --quick            # FFHQ widths (channel_max 512) at 32x32, < 2 min
    python benchmarks/bench_erase_step.py --backend eg3d     # a small EG3D (tri-planes + renderer)

Each path runs in its own subprocess so peak memory is measured separately (CPU: growth of peak RSS over the
loop; CUDA: torch.cuda.max_memory_allocated). Prints a table and one final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build(backend: str, quick: bool, device: str):
    import torch

    from guide_unlearn.adapters.perceptual import MultiScaleGradL1
    from guide_unlearn.adapters.toy import ToyIdentityNet

    torch.manual_seed(0)
    if backend == "stylegan2":
        from guide_unlearn.adapters.stylegan2 import StyleGAN2Generator

        res = 32 if quick else 256
        gen = StyleGAN2Generator(z_dim=512, w_dim=512, img_resolution=res, channel_base=32768 if quick else 16384,
                                 channel_max=512, mapping_layers=8)
    elif backend == "eg3d":
        if quick:  # the tiny test config: tri-planes, renderer and super-resolution at CPU size
            from guide_unlearn.adapters.eg3d.testing import tiny_generator

            gen = tiny_generator(seed=0)
        else:  # full-size EG3D-512 with random weights (timing only; meant for a GPU)
            from guide_unlearn.adapters.eg3d.configs import build_eg3d_ffhq

            gen = build_eg3d_ffhq(device="cpu")
    else:
        raise SystemExit(f"unknown backend {backend}")
    gen = gen.to(device).eval()
    return gen, MultiScaleGradL1(), ToyIdentityNet().to(device)


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from guide_unlearn.config import EraseConfig

    gen, perceptual, identity = build(args.backend, args.quick, args.device)
    g = torch.Generator(device=args.device).manual_seed(0)
    w_u = gen.mapping(torch.randn(1, gen.z_dim, generator=g, device=args.device), None).detach()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    steps, warmup = args.steps, 1
    if args.path == "ours":
        from guide_unlearn.engine import run_erase

        cfg = EraseConfig(iterations=warmup, progress=False, noise_mode="random")
        run_erase(gen, w_u, cfg, perceptual, identity)  # warm-up (allocator, kernels)
        cfg = cfg.replace(iterations=steps)
        patch, _, _, elapsed = run_erase(gen, w_u, cfg, perceptual, identity)  # loop time, set-up excluded
        patch_bytes = patch.num_bytes
    else:
        sys.path.insert(0, str(HERE))
        from reference_loop import ReferenceLoop

        from guide_unlearn.targets import ufo_target

        cfg = EraseConfig.paper(progress=False)
        ref = ReferenceLoop(gen, perceptual, identity, cfg)
        w_t = ufo_target(w_u, gen.w_avg, "extrapolate", 30.0)
        ref.step(w_u, w_t, g)
        t0 = time.perf_counter()
        for _ in range(steps):
            ref.step(w_u, w_t, g)
        elapsed = time.perf_counter() - t0
        patch_bytes = None
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024
    synth = sum(p.numel() * p.element_size() for n, p in gen.named_parameters()
                if n in set(gen.full_finetune_parameters()))
    print(json.dumps({"ms_per_iter": 1000 * elapsed / steps, "peak_bytes": peak, "patch_bytes": patch_bytes,
                      "full_synthesis_bytes": synth}))


def run_child(path: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", path, "--backend", args.backend, "--steps", str(args.steps),
           "--threads", str(args.threads), "--device", args.device] + (["--quick"] if args.quick else [])
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise SystemExit(f"{path} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="stylegan2", choices=["stylegan2", "eg3d"])
    p.add_argument("--quick", action="store_true", help="small resolution, FFHQ channel widths")
    p.add_argument("--steps", type=int, default=None, help="timed iterations per path")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps is None:
        args.steps = 3
    if args.child:
        args.path = args.child
        child(args)
        return
    ours = run_child("ours", args)
    ref = run_child("reference", args)
    result = {
        "benchmark": "erase_step", "backend": args.backend, "quick": args.quick, "device": args.device,
        "threads": args.threads, "steps": args.steps,
        "ours_ms_per_iter": round(ours["ms_per_iter"], 2), "reference_ms_per_iter": round(ref["ms_per_iter"], 2),
        "speedup": round(ref["ms_per_iter"] / ours["ms_per_iter"], 3),
        "ours_peak_bytes": ours["peak_bytes"], "reference_peak_bytes": ref["peak_bytes"],
        "peak_mem_ratio": round(ours["peak_bytes"] / max(1, ref["peak_bytes"]), 3),
        "patch_bytes": ours["patch_bytes"], "full_synthesis_bytes": ours["full_synthesis_bytes"],
        "patch_share": round(ours["patch_bytes"] / ours["full_synthesis_bytes"], 4),
    }
    print(f"ours      {result['ours_ms_per_iter']:9.1f} ms/iter   peak +{ours['peak_bytes'] / 2**20:8.1f} MiB")
    print(f"reference {result['reference_ms_per_iter']:9.1f} ms/iter   peak +{ref['peak_bytes'] / 2**20:8.1f} MiB")
    print(f"speedup {result['speedup']}x, patch {result['patch_bytes']} B = {100 * result['patch_share']:.2f} % of "
          f"the synthesis ({result['full_synthesis_bytes']} B)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
