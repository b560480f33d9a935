"""``guide-unlearn convert SRC DST``: official checkpoint -> our folder format, or a generator -> official layout.

Examples::

    guide-unlearn convert stylegan2-ffhq-1024x1024.pkl models/sg2-ffhq          # folder: config.json + safetensors
    guide-unlearn convert e4e_ffhq_encode.pt models/e4e-decoder                  # the e4e decoder as a generator
    guide-unlearn convert models/erased erased-nvidia.safetensors --to nvidia    # NVIDIA G_ema key layout
    guide-unlearn convert models/erased erased-rosinality.safetensors --to rosinality
"""

from __future__ import annotations

import argparse
from pathlib import Path

from guide_unlearn.errors import BackendUnavailableError, ConfigError

__all__ = ["add_parser", "run_convert", "export_generator"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``convert`` sub-command on an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "convert", help="convert a checkpoint to this library's folder format, or export to an official layout",
        description="Load SRC (any supported checkpoint file, model folder or registry name) without executing "
                    "anything it contains, and write it as DST: a model folder (config.json + safetensors) by "
                    "default, or with --to a single .safetensors state dict in NVIDIA's / rosinality's key layout.")
    p.add_argument("src", metavar="SRC", help="checkpoint file (.pkl, .pt, .safetensors), model folder or registry "
                                              "name (e.g. stylegan2-ffhq)")
    p.add_argument("dst", metavar="DST", help="output folder (default) or .safetensors file (with --to)")
    p.add_argument("--to", choices=("nvidia", "rosinality"), default=None,
                   help="export a generator as a safetensors state dict in this official key layout")
    p.add_argument("--overwrite", action="store_true",
                   help="replace DST if it is a file, or a model folder written by guide_unlearn (a folder holding "
                        "anything else is never replaced)")
    p.add_argument("--download", action="store_true",
                   help="download a registry checkpoint that is not on this machine (off by default)")
    p.set_defaults(func=run_convert)
    return p


def export_generator(generator, dst: Path, layout: str, overwrite: bool = False) -> Path:
    """Write ``generator`` to ``dst`` (.safetensors) in ``layout`` 'nvidia' | 'rosinality' (atomic; an existing
    file is replaced only with ``overwrite``)."""
    from guide_unlearn.families import list_families, resolve_ref

    name = getattr(generator, "family", None)
    family = next((f for f in list_families() if f.name == name), None)
    layouts = family.export_layouts if family is not None and family.exporter is not None else ()
    if layout not in layouts:
        if layout == "rosinality":
            raise ConfigError(f"the rosinality layout exists only for 2D StyleGAN2 generators, not {name!r}; use "
                              "--to nvidia")
        raise BackendUnavailableError(f"exporting a {name!r} generator to NVIDIA's layout is not available in "
                                      "this installation")
    export = resolve_ref(family.exporter, f"exporting a {name!r} generator")
    return export(generator, dst, layout=layout, overwrite=overwrite)


def run_convert(args: argparse.Namespace) -> int:
    """Handler of ``guide-unlearn convert``; raises package errors (the CLI prints them as one line). DST is
    checked before SRC is loaded."""
    from guide_unlearn.cli import paths
    from guide_unlearn.io import check_output_dir, check_output_file
    from guide_unlearn.lineage import generator_files, save_generator
    from guide_unlearn.pipelines.loading import load_generator

    dst = Path(args.dst)
    if args.to:
        if dst.is_dir():
            dst = dst / f"generator-{args.to}.safetensors"
        elif dst.suffix != ".safetensors":
            dst = dst.with_name(dst.name + ".safetensors")
        paths.check_output_file(dst, "DST")  # writable: before the (slow) load
        check_output_file(dst, args.overwrite)  # and not replacing anything without --overwrite
    else:
        paths.check_output_folder(dst, "DST")
        check_output_dir(dst, args.overwrite, generator_files, "generator folder")
    generator = load_generator(args.src, device="cpu", allow_download=args.download)
    if args.to:
        out = export_generator(generator, dst, args.to, overwrite=args.overwrite)
    else:
        out = save_generator(generator, dst, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0
