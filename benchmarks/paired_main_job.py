"""Paired timing of the README main job: another commit against this checkout, alternating.

    python benchmarks/paired_main_job.py --base COMMIT --pairs 3 --loop 10 --threads 1   # loop ms/iter
    python benchmarks/paired_main_job.py --base COMMIT --pairs 1 --figures               # + dlib figures
    python benchmarks/paired_main_job.py --base COMMIT --pairs 3 --time-only --threads 2 # the whole erase

The other commit is exported with ``git archive`` into a temporary folder and put first on PYTHONPATH (with
links that give it the installed layout: guide_unlearn.adapters / .pipelines / .recipes), so the same
``bench_main_job.py`` of THIS checkout measures both; each measurement runs in its own subprocess, in the order
base, ours, base, ours, ... Prints one JSON line per run, then a summary JSON line (last line) with the median
and min..max over the pairs of the base / ours ratio of wall and process-CPU ms per iteration, and the load
average. With --figures each run is a full ``bench_main_job.py`` (the main job's erase + its dlib figures); with
--time-only it is the main job's erase alone, as ``guide-unlearn erase`` runs it: each commit with ITS OWN
recommended settings (so a recipe change of the model's defaults counts; ``final_losses`` show which ran).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def export(rev: str, dest: Path) -> Path:
    """Export commit ``rev`` of this repository into ``dest`` with the installed package layout -> dest."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for sub in ("adapters", "pipelines", "recipes"):
        if (dest / sub).is_dir() and not (dest / "guide_unlearn" / sub).exists():
            (dest / "guide_unlearn" / sub).symlink_to(Path("..") / sub)
    return dest


def run_one(pythonpath: str | None, args: list[str], threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, str(HERE / "bench_main_job.py"), *args], env=env, cwd=tempfile.gettempdir(),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench_main_job.py failed ({'base' if pythonpath else 'ours'}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the commit to compare against (any git revision)")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--loop", type=int, default=10, help="iterations per loop timing (ignored with --figures)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--figures", action="store_true", help="full main-job runs with the dlib figures")
    p.add_argument("--time-only", action="store_true", help="the main job's whole erase, each commit's own defaults")
    args = p.parse_args()
    if args.figures and args.time_only:
        p.error("--figures and --time-only exclude each other")
    mode = ["--time-only"] if args.time_only else [] if args.figures else ["--loop", str(args.loop)]
    bench_args = ["--threads", str(args.threads)] + mode
    with tempfile.TemporaryDirectory(prefix="guide_base_") as tmp:
        base = str(export(args.base, Path(tmp)))
        rows = []
        for i in range(args.pairs):
            b = run_one(base, bench_args, args.threads)
            o = run_one(None, bench_args, args.threads)
            for name, r in (("base", b), ("ours", o)):
                print(json.dumps({"pair": i, "code": name, **r}), flush=True)
            rows.append((b, o))
    if args.figures or args.time_only:
        wall = [b["erase_seconds"] / o["erase_seconds"] for b, o in rows]
        summary = {"benchmark": "paired_main_job", "base": args.base, "pairs": args.pairs,
                   "erase_seconds_ratio_median": round(statistics.median(wall), 3),
                   "erase_seconds_ratio_range": [round(min(wall), 3), round(max(wall), 3)],
                   "base_erase_seconds": [b["erase_seconds"] for b, _ in rows],
                   "ours_erase_seconds": [o["erase_seconds"] for _, o in rows]}
    else:
        wall = [b["wall_ms_per_iter"] / o["wall_ms_per_iter"] for b, o in rows]
        cpu = [b["cpu_ms_per_iter"] / o["cpu_ms_per_iter"] for b, o in rows]
        summary = {"benchmark": "paired_main_job_loop", "base": args.base, "pairs": args.pairs,
                   "iterations": args.loop, "threads": args.threads,
                   "base_cpu_ms_median": statistics.median(b["cpu_ms_per_iter"] for b, _ in rows),
                   "ours_cpu_ms_median": statistics.median(o["cpu_ms_per_iter"] for _, o in rows),
                   "cpu_ratio_median": round(statistics.median(cpu), 3),
                   "cpu_ratio_range": [round(min(cpu), 3), round(max(cpu), 3)],
                   "wall_ratio_median": round(statistics.median(wall), 3),
                   "wall_ratio_range": [round(min(wall), 3), round(max(wall), 3)]}
    summary["load_average_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
