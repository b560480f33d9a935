"""Wall time of one joint ``erase_many`` of 8 demo-faces people against single erases (cached codes, after a
warm-up erase), the model's default config, torch's default threads. Run it with nothing else on the machine:

    python benchmarks/bench_joint_time.py
    python benchmarks/bench_joint_time.py --joint-config '{"lora_rank": 16, "lora_alpha": 16.0}'  # joint settings

Prints one JSON line: the two single erases' seconds, the joint run's and their ratio.
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

from guide_unlearn import IdentityEraser
from guide_unlearn.recipes.demo_faces import evaluate as E


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--joint-config", default="{}", help="JSON of EraseConfig fields for the joint run only")
    args = p.parse_args()
    e = IdentityEraser.from_pretrained("demo-faces")
    codes = E.load_codes(Path(__file__).resolve().parent.parent / "tests" / "data" / "demo_faces_codes.safetensors", e)
    names = sorted(k for k in codes if "guide_celebahq512" not in k)[::15][:8]  # 8 people spread over the names
    ws = {f"r{i}": codes[n].unsqueeze(0) for i, n in enumerate(names)}
    cfg = e.default_config()

    def timed(run) -> float:
        t = time.perf_counter()
        run()
        return time.perf_counter() - t

    e.erase(ws["r0"], cfg, measure=False, progress=False)  # warm-up
    single = timed(lambda: e.erase(ws["r1"], cfg, measure=False, progress=False))
    joint_cfg = cfg.replace(method="joint", **json.loads(args.joint_config))
    joint = timed(lambda: e.erase_many(ws, joint_cfg, measure=False, progress=False))
    single2 = timed(lambda: e.erase(ws["r2"], cfg, measure=False, progress=False))
    print(json.dumps({"benchmark": "joint_vs_single", "threads": torch.get_num_threads(),
                      "single_s": [round(single, 2), round(single2, 2)], "joint8_s": round(joint, 2),
                      "ratio": round(joint / ((single + single2) / 2), 2),
                      "joint_config": json.loads(args.joint_config), "load_average_1min": round(os.getloadavg()[0], 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
