"""``guide-unlearn download NAME...``: fetch registry checkpoints into the cache, explicitly (nothing else downloads
unless asked with ``--download`` / ``allow_download=True``)."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    """Register the ``download`` sub-command."""
    p = sub.add_parser("download", help="download registry checkpoints into the cache",
                       description="Download the official files of registry names (e.g. eg3d-ffhq) into the cache "
                                   "($GUIDE_UNLEARN_CACHE, else the Hugging Face hub cache), with a progress bar and "
                                   "a size check. Sources without a direct link (Google Drive) are not fetched: the "
                                   "message says where to get the file and where to put it; --where prints that "
                                   "place for every name without downloading.")
    p.add_argument("names", nargs="+", metavar="NAME", help="registry name(s), e.g. eg3d-ffhq stylegan2-ffhq")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--where", action="store_true",
                   help="download nothing: print where each file goes when fetched by hand (the one location the "
                        "library looks in first: <cache>/models--guide-unlearn--NAME/snapshots/manual/FILE, <cache> "
                        "being $GUIDE_UNLEARN_CACHE, else the Hugging Face hub cache) and where to get it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``guide-unlearn download``; prints one JSON line per name ({'name', 'path' or 'bundled'})."""
    from guide_unlearn.pipelines.registry import get_entry, resolve_checkpoint

    entries = [get_entry(n) for n in args.names]  # every name checked before anything is fetched
    for entry in entries:
        if entry.format in ("projector", "tiny"):
            print(json.dumps({"name": entry.name, "path": None, "note": "built in code: no file to download"}))
            continue
        if getattr(args, "where", False):
            from guide_unlearn.checkpoints.resolve import cached_path, manual_path

            src = entry.source
            print(json.dumps({"name": entry.name, "file": src.filename, "put_it_at": str(manual_path(src)),
                              "found": str(cached_path(src) or "") or None, "url": src.url,
                              "homepage": src.homepage}))
            continue
        path, _ = resolve_checkpoint(entry, allow_download=True, progress=not args.quiet)
        print(json.dumps({"name": entry.name, "path": str(path), "bundled": bool(entry.bundled)}))
    return 0
