"""Sweep the LoRA preset's learning rate and step count on the tiny model (how the defaults were chosen).

    python benchmarks/sweep_lora_lr.py

For each (lr, iterations): erasure ratio = MSE(G_u(w_u), G_s(w_t)) / MSE(G_s(w_u), G_s(w_t)) (lower = more
erased) and preservation ratio = MSE(G_u(w_r), G_s(w_r)) / mean MSE between random G_s samples (lower = better
kept), averaged over 3 identities. Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import time

import torch


def main() -> None:
    torch.set_num_threads(2)
    from guide_unlearn import EraseConfig
    from guide_unlearn.testing import tiny_eraser

    rows = []
    for lr in (5e-4, 1e-3, 2e-3, 5e-3, 1e-2):
        for iters in (50, 100, 200):
            er, pr, secs = [], [], []
            for ident in range(3):
                eraser = tiny_eraser()
                g = torch.Generator().manual_seed(100 + ident)
                w = eraser.generator.mapping(torch.randn(1, eraser.generator.z_dim, generator=g)).detach()
                t0 = time.perf_counter()
                m = eraser.erase(w, EraseConfig(lr=lr, iterations=iters), progress=False).metrics
                secs.append(time.perf_counter() - t0)
                er.append(m["erased_mse"] / m["before_mse"])
                pr.append(m["preserved_mse"] / m["random_pair_mse"])
            row = {"lr": lr, "iterations": iters, "erasure_ratio": round(sum(er) / 3, 4),
                   "preservation_ratio": round(sum(pr) / 3, 4), "seconds": round(sum(secs) / 3, 2)}
            rows.append(row)
            print(f"lr {lr:7.0e}  iters {iters:4d}  erasure {row['erasure_ratio']:.3f}  "
                  f"preservation {row['preservation_ratio']:.4f}  {row['seconds']:.1f} s")
    print(json.dumps({"benchmark": "sweep_lora_lr", "rows": rows}))


if __name__ == "__main__":
    main()
