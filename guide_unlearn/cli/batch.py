"""``guide-unlearn erase-batch``: a queue of deletion requests -> one forget patch per request, and a manifest.

Runs as it is in one process, or sharded under ``accelerate launch`` (see docs/queue.md)."""

from __future__ import annotations

import argparse
import json


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
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out that is "
                   "not an earlier run of this queue")
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
    from guide_unlearn.pipelines.queue import read_requests, run_queue

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
