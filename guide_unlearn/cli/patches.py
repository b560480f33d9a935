"""``guide-unlearn apply | merge | info``: use patches with a generator, export merged weights, describe files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from guide_unlearn.errors import InputError


def add_parser(sub) -> None:
    a = sub.add_parser("apply", help="apply patch(es) to a generator and render a before/after preview",
                       description="Apply one or more forget patches and write a preview of random samples "
                                   "(top: base, bottom: patched).")
    a.add_argument("patches", nargs="+", help="patch folder(s)")
    a.add_argument("--model", required=True, help="registry name or local checkpoint/folder")
    a.add_argument("--out", required=True, help="PNG file to write")
    a.add_argument("--samples", type=int, default=6, help="random samples in the preview")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="cpu")
    a.add_argument("--overwrite", action="store_true", help="replace --out if the file exists")
    a.add_argument("--download", action="store_true",
                   help="download the model's official files if they are missing (off by default)")
    a.set_defaults(func=run_apply)

    m = sub.add_parser("merge", help="merge patch(es) into a generator and export the weights",
                       description="Merge forget patches into the base weights and save the generator folder "
                                   "(config.json + safetensors + guide_unlearn.json).")
    m.add_argument("patches", nargs="+", help="patch folder(s)")
    m.add_argument("--model", required=True, help="registry name or local checkpoint/folder")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--device", default="cpu")
    m.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a generator folder written by guide_unlearn (a folder holding "
                        "anything else is never replaced)")
    m.add_argument("--download", action="store_true",
                   help="download the model's official files if they are missing (off by default)")
    m.set_defaults(func=run_merge)

    i = sub.add_parser("info", help="describe a patch folder, a hub patch repo or a generator checkpoint")
    i.add_argument("path", help="patch folder, hub repo id ('user/repo'), generator folder, checkpoint file or "
                                "registry name")
    i.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of a repo id")
    i.add_argument("--subfolder", default=None, help="folder of the patch inside the repo or folder")
    i.set_defaults(func=run_info)


def run_apply(args: argparse.Namespace) -> int:
    from guide_unlearn import IdentityEraser
    from guide_unlearn.cli.erase import _save_png
    from guide_unlearn.images import image_strip

    from guide_unlearn.io import check_output_file

    if args.samples < 1:
        raise InputError("--samples must be >= 1")
    check_output_file(args.out, args.overwrite)  # before any model loads
    eraser = IdentityEraser.from_pretrained(args.model, device=args.device, allow_download=args.download)
    g = torch.Generator().manual_seed(args.seed)
    z = torch.randn(args.samples, eraser.generator.z_dim, generator=g).to(eraser.device)
    with torch.no_grad():
        ws = eraser.generator.mapping(z, None)
    before = eraser.synthesize(ws, seed=args.seed)
    for p in args.patches:
        eraser.apply_patch(p)
    after = eraser.synthesize(ws, seed=args.seed)
    _save_png(image_strip([before, after]), Path(args.out), overwrite=args.overwrite)
    print(json.dumps({"preview": args.out, "applied": [p.patch_id for p in eraser.applied_patches],
                      "mean_abs_change": float((after - before).abs().mean())}))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from guide_unlearn import IdentityEraser
    from guide_unlearn.io import check_output_dir
    from guide_unlearn.lineage import generator_files

    check_output_dir(args.out, args.overwrite, generator_files, "generator folder")  # before any model loads
    eraser = IdentityEraser.from_pretrained(args.model, device=args.device, allow_download=args.download)
    for p in args.patches:
        eraser.apply_patch(p)
    merged = eraser.merge_patches()
    eraser.save_pretrained(args.out, overwrite=args.overwrite)
    print(json.dumps({"out": args.out, "merged": [m["patch_id"] for m in merged]}))
    return 0


def run_info(args: argparse.Namespace) -> int:
    from guide_unlearn.hub import looks_like_repo_id, patch_info
    from guide_unlearn.patch import META_FILE

    path = Path(args.path)
    revision, subfolder = getattr(args, "revision", None), getattr(args, "subfolder", None)
    patch_dir = path / subfolder if subfolder else path
    if (patch_dir.is_dir() and (patch_dir / META_FILE).is_file()) or (not path.exists()
                                                                        and looks_like_repo_id(args.path)):
        print(json.dumps(patch_info(args.path, revision=revision, subfolder=subfolder), indent=2))
        return 0
    from guide_unlearn.fingerprint import patch_state
    from guide_unlearn.pipelines.loading import load_generator

    gen = load_generator(str(path))
    if path.is_dir():
        from guide_unlearn.pipelines.export import restore_record

        restore_record(gen, path)
    state = patch_state(gen)
    print(json.dumps({"type": "generator", "family": gen.family, "class": type(gen).__name__,
                      "parameters": sum(p.numel() for p in gen.parameters()),
                      "config": {k: v for k, v in dict(gen.config).items() if not k.startswith("_")},
                      "base_fingerprint": state["base_fingerprint"], "merged_patches": state["merged"]},
                     indent=2, default=str))
    return 0
