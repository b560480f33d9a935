"""``guide-unlearn erase-batch``: a queue of deletion requests -> one forget patch per request, and a manifest.

Runs as it is in one process, or sharded under ``accelerate launch`` (see docs/queue.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional


def add_parser(sub) -> None:
    p = sub.add_parser("erase-batch", help="erase a queue of people: one patch per request, plus a manifest",
                       description="Erase every request of REQUESTS (a folder with one sub-folder of photos per "
                                   "request, or a .csv / .jsonl of request_id and photo paths). Writes "
                                   "DIR/<request_id>/ patch folders and DIR/manifest.jsonl. Run it again on the "
                                   "same --out to finish an interrupted queue; run it under `accelerate launch` "
                                   "to shard the requests over processes, GPUs or machines.")
    p.add_argument("requests", metavar="REQUESTS", help="folder of per-request sub-folders, or a .csv / .jsonl")
    p.add_argument("--model", required=True, help="registry name or local checkpoint/folder")
    p.add_argument("--out", required=True, help="output folder (new, empty, or an earlier run of this queue)")
    p.add_argument("--joint", type=int, default=1, metavar="N",
                   help="erase groups of N people per run (one patch per group) with erase_many (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an erase-batch output of ANOTHER queue (other model, --joint or config) in --out; "
                        "only what that queue wrote is removed, and a folder holding anything else is never "
                        "replaced. Not needed to resume: the same command on the same --out finishes the queue")
    p.add_argument("--method", default=None, metavar="NAME",
                   help="erase method (guide_unlearn.list_methods()); default lora, or joint with --joint N > 1 "
                        "(a method that cannot erase several people is refused with --joint N > 1)")
    p.add_argument("--preset", default=None, metavar="NAME", help="former spelling of --method")
    p.add_argument("--iterations", type=int, help="override the method's iterations")
    p.add_argument("--seed", type=int, default=0, help="base seed; each request's seed derives from it and its id")
    p.add_argument("--device", help="torch device (default: the accelerate process's device)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per process (default 1; identical patches need the same value)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from guide_unlearn.errors import InputError
    from guide_unlearn.pipelines.queue import run_queue
    from guide_unlearn.pipelines.request_lists import read_requests

    _say_if_fewer_processes()

    if args.joint < 1:
        raise InputError(f"--joint must be >= 1, got {args.joint}")
    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    from guide_unlearn.cli.erase import method_option

    overrides: dict = {"seed": args.seed}
    if args.method is not None or args.preset is not None:
        overrides["method"] = method_option(args)
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    requests = read_requests(args.requests)
    summary = run_queue(requests, args.model, args.out, joint=args.joint, overwrite=args.overwrite,
                        overrides=overrides, device=args.device, threads=args.threads, progress=not args.quiet)
    if summary:  # the main process
        print(json.dumps(summary))
    return 0


CPU_RECIPE = "accelerate launch --multi_gpu --num_processes N -m guide_unlearn.cli erase-batch ..."


def asked_processes() -> Optional[int]:
    """The ``--num_processes`` (``--num-processes``) the ``accelerate launch`` that started this process was given,
    read from the launcher's command line (Linux: /proc/<parent>/cmdline); None when not launched by accelerate or
    not readable."""
    if not any(k.startswith("ACCELERATE_") for k in os.environ):
        return None
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:  # gate: the launcher's own command line
            argv = f.read(1 << 16).decode("utf-8", "replace").split("\0")
    except OSError:
        return None
    if not any(a.endswith("accelerate") or "accelerate.commands" in a for a in argv[:4]):
        return None
    for i, a in enumerate(argv):
        for flag in ("--num_processes", "--num-processes"):
            value = a[len(flag) + 1:] if a.startswith(flag + "=") else (argv[i + 1] if a == flag and i + 1 < len(argv)
                                                                         else None)
            if value is not None and value.isdigit():
                return int(value)
    return None


def _say_if_fewer_processes() -> None:
    """One line when accelerate started fewer processes than it was asked for (``accelerate launch --cpu
    --num_processes 2`` starts one unless given an MPI hostfile), naming the CPU recipe."""
    asked = asked_processes()
    started = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if asked is not None and asked > started and int(os.environ.get("RANK", "0") or 0) == 0:
        print(f"guide-unlearn erase-batch: note: accelerate was asked for {asked} processes but started {started} "
              "(with --cpu it starts one unless given an MPI hostfile); to shard over CPU processes use `"
              + CPU_RECIPE.replace("N", str(asked)) + "` (docs/queue.md, 'Sharding')", file=sys.stderr)
