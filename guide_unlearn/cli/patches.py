"""``guide-unlearn apply | merge | info``: use patches with a generator, export merged weights, describe files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from guide_unlearn.errors import InputError


def add_parser(sub) -> None:
    a = sub.add_parser("apply", help="apply patch(es) to a generator and render a before/after preview",
                       description="Apply one or more forget patches and write a preview of random samples "
                                   "(rows labelled: before = base, after = patched). Arguments, patches and the "
                                   "output path are checked before the model loads.")
    a.add_argument("patches", nargs="+", help="patch folder(s)")
    a.add_argument("--model", required=True, help="registry name or local checkpoint/folder")
    a.add_argument("--out", required=True, help="picture to write: .png, .jpg / .jpeg or .webp")
    a.add_argument("--samples", type=int, default=6, help="random samples in the preview (default 6)")
    a.add_argument("--seed", type=int, default=0, help="seed of the random samples (default 0)")
    a.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps (default cpu)")
    a.add_argument("--overwrite", action="store_true", help="replace --out if the file exists")
    a.add_argument("--download", action="store_true",
                   help="download the model's official files if they are missing (off by default)")
    a.set_defaults(func=run_apply)

    m = sub.add_parser("merge", help="merge patch(es) into a generator and export the weights",
                       description="Merge forget patches into the base weights and save the generator folder "
                                   "(config.json + safetensors + guide_unlearn.json). Arguments, patches and the "
                                   "output path are checked before the model loads.")
    m.add_argument("patches", nargs="+", help="patch folder(s)")
    m.add_argument("--model", required=True, help="registry name or local checkpoint/folder")
    m.add_argument("--out", required=True, help="output folder")
    m.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps (default cpu)")
    m.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a generator folder written by guide_unlearn (a folder holding "
                        "anything else is never replaced)")
    m.add_argument("--download", action="store_true",
                   help="download the model's official files if they are missing (off by default)")
    m.set_defaults(func=run_merge)

    i = sub.add_parser("info", help="describe a patch folder, a hub patch repo or a generator checkpoint",
                       description="Print a JSON description of a forget patch (folder or hub repo id), or of a "
                                   "generator (model folder, checkpoint file or any name `erase --model` accepts).")
    i.add_argument("path", help="patch folder, hub repo id ('user/repo'), generator folder, checkpoint file or "
                                "model name (e.g. demo-faces)")
    i.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of a repo id")
    i.add_argument("--subfolder", default=None, help="folder of the patch inside the repo or folder")
    i.set_defaults(func=run_info)


def read_patches(paths) -> list:
    """Every patch folder read and verified (ForgetPatch objects), before any model is loaded."""
    from guide_unlearn.patch import ForgetPatch

    return [ForgetPatch.from_pretrained(p) for p in paths]


def run_apply(args: argparse.Namespace) -> int:
    from guide_unlearn import IdentityEraser
    from guide_unlearn.cli.erase import check_model_name, save_picture
    from guide_unlearn.cli import paths
    from guide_unlearn.devices import resolve_device
    from guide_unlearn.images import image_strip, picture_format
    from guide_unlearn.io import check_output_file

    if args.samples < 1:
        raise InputError("--samples must be >= 1")
    picture_format(args.out)  # an extension we cannot write is refused before anything runs
    out = paths.check_output_file(args.out)
    check_output_file(out, args.overwrite)  # an existing file is replaced only with --overwrite
    device = resolve_device(args.device)
    check_model_name(args.model)
    patches = read_patches(args.patches)
    eraser = IdentityEraser.from_pretrained(args.model, device=device, allow_download=args.download)
    before = eraser.sample(args.samples, seed=args.seed)
    for p in patches:
        eraser.apply_patch(p)
    after = eraser.sample(args.samples, seed=args.seed)
    save_picture(image_strip([before, after], ["before", "after"]), out, overwrite=args.overwrite)
    print(json.dumps({"preview": str(out), "applied": [p.patch_id for p in eraser.applied_patches],
                      "mean_abs_change": float((after - before).abs().mean())}))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from guide_unlearn import IdentityEraser
    from guide_unlearn.cli.erase import check_model_name
    from guide_unlearn.cli.paths import check_output_folder
    from guide_unlearn.devices import resolve_device
    from guide_unlearn.io import check_output_dir
    from guide_unlearn.lineage import generator_files

    check_output_folder(args.out)
    check_output_dir(args.out, args.overwrite, generator_files, "generator folder")  # before any model loads
    device = resolve_device(args.device)
    check_model_name(args.model)
    patches = read_patches(args.patches)
    eraser = IdentityEraser.from_pretrained(args.model, device=device, allow_download=args.download)
    for p in patches:
        eraser.apply_patch(p)
    merged = eraser.merge_patches()
    eraser.save_pretrained(args.out, overwrite=args.overwrite)
    print(json.dumps({"out": args.out, "merged": [m["patch_id"] for m in merged]}))
    return 0


def patch_info(name_or_path, revision: Optional[str] = None, subfolder: Optional[str] = None) -> dict[str, Any]:
    """``guide-unlearn info``'s summary of a patch folder or hub repo: ForgetPatch.describe() plus where it was
    found and its card's ``guide_unlearn`` block (None for a folder without a card)."""
    from guide_unlearn.card import CARD_FILE, read_card_block
    from guide_unlearn.hub import resolve_patch_folder
    from guide_unlearn.patch import ForgetPatch

    folder = resolve_patch_folder(name_or_path, revision=revision, subfolder=subfolder)
    patch = ForgetPatch.from_pretrained(folder)
    return {"type": "forget_patch", "source": str(name_or_path), "folder": str(folder), **patch.describe(),
            "card": read_card_block(folder / CARD_FILE)}


def run_info(args: argparse.Namespace) -> int:
    from guide_unlearn.hub_paths import looks_like_repo_id
    from guide_unlearn.patch_format import META_FILE

    path = Path(args.path)
    revision, subfolder = getattr(args, "revision", None), getattr(args, "subfolder", None)
    patch_dir = path / subfolder if subfolder else path
    if (patch_dir.is_dir() and (patch_dir / META_FILE).is_file()) or (not path.exists()
                                                                        and looks_like_repo_id(args.path)):
        print(json.dumps(patch_info(args.path, revision=revision, subfolder=subfolder), indent=2))
        return 0
    if patch_dir.is_dir() and not (patch_dir / "config.json").is_file():
        from guide_unlearn.patch import require_patch_folder

        require_patch_folder(patch_dir)  # a folder that is neither a patch nor a model: say it is not a patch
    from guide_unlearn.fingerprint import patch_state

    if not path.exists():
        _check_info_name(args.path)
    from guide_unlearn.pipelines.loading import load_generator

    gen = load_generator(str(path))  # every name `erase --model` accepts; a folder comes with its lineage record
    state = patch_state(gen)
    merged = state["merged"]
    print(json.dumps({"type": "generator", "family": gen.family, "class": type(gen).__name__,
                      "parameters": sum(p.numel() for p in gen.parameters()),
                      "config": {k: v for k, v in dict(gen.config).items() if not k.startswith("_")},
                      "base_fingerprint": state["base_fingerprint"], "merged": bool(merged),
                      "merged_patches": merged,
                      "note": (f"a merged generator: {len(merged)} forget patch(es) folded into the base weights "
                               f"{state['base_fingerprint'][:19]}…; patches made on it apply only where those are "
                               "merged or applied too") if merged else "plain base weights (no patch merged)"},
                     indent=2, default=str))
    return 0


def _check_info_name(name: str) -> None:
    """`info` of something that is not on disk: a model name it accepts, else one line saying what it looked for."""
    from guide_unlearn.errors import CheckpointError
    from guide_unlearn.pipelines.registry import accepted_names, unknown_name_message

    if name in accepted_names():
        return
    if "/" in name or "\\" in name or Path(name).suffix:
        raise CheckpointError(f"{name}: no such file or folder (and not a hub repo id 'user/repo'); pass a patch "
                              "folder, a hub repo id, a generator folder, a checkpoint file or a model name")
    raise CheckpointError(f"{name}: no such file or folder, and not a model name: {unknown_name_message(name)}")
