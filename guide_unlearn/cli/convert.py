"""``guide-unlearn convert SRC DST``: official checkpoint -> our folder format, or a generator -> official layout.

Examples::

    guide-unlearn convert stylegan2-ffhq-1024x1024.pkl models/sg2-ffhq          # folder: config.json + safetensors
    guide-unlearn convert e4e_ffhq_encode.pt models/e4e-decoder                  # the e4e decoder as a generator
    guide-unlearn convert models/erased erased-nvidia.safetensors --to nvidia    # NVIDIA G_ema key layout
    guide-unlearn convert models/erased erased-rosinality.safetensors --to rosinality
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from guide_unlearn.errors import BackendUnavailableError, ConfigError, SaveError

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
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("--no-download", action="store_true", help="never download a registry checkpoint")
    p.set_defaults(func=run_convert)
    return p


def export_generator(generator, dst: Path, layout: str) -> Path:
    """Write ``generator`` to ``dst`` (.safetensors) in ``layout`` 'nvidia' | 'rosinality' (atomic)."""
    family = getattr(generator, "family", None)
    if family == "stylegan2":
        from guide_unlearn.adapters.stylegan2.convert import export_safetensors

        return export_safetensors(generator, dst, layout=layout)
    if layout == "rosinality":
        raise ConfigError(f"the rosinality layout exists only for 2D StyleGAN2 generators, not {family!r}; use "
                          "--to nvidia")
    try:
        from importlib import import_module

        backend = import_module(f"guide_unlearn.adapters.{family}.convert")
        export = getattr(backend, "export_safetensors")
    except (ImportError, AttributeError):
        raise BackendUnavailableError(f"exporting a {family!r} generator to NVIDIA's layout is not available in "
                                      "this installation") from None
    return export(generator, dst, layout=layout)


def _save_folder(generator, dst: Path, overwrite: bool) -> Path:
    if dst.exists() and not overwrite and (not dst.is_dir() or any(dst.iterdir())):
        raise ConfigError(f"{dst} exists; choose another DST or pass --overwrite")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        generator.save_pretrained(str(tmp))
        if dst.exists():
            old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, dst)
    except OSError as exc:
        raise SaveError(f"could not write {dst}: {exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dst


def run_convert(args: argparse.Namespace) -> int:
    """Handler of ``guide-unlearn convert``; raises package errors (the CLI prints them as one line). DST is
    checked before SRC is loaded."""
    from guide_unlearn.cli.paths import check_output_file, check_output_folder
    from guide_unlearn.pipelines.loading import load_generator

    dst = Path(args.dst)
    if args.to:
        if dst.is_dir():
            dst = dst / f"generator-{args.to}.safetensors"
        elif dst.suffix != ".safetensors":
            dst = dst.with_name(dst.name + ".safetensors")
        if dst.exists() and not args.overwrite:
            raise ConfigError(f"{dst} exists; choose another DST or pass --overwrite")
        check_output_file(dst, "DST")
    else:
        if dst.exists() and not args.overwrite and (not dst.is_dir() or any(dst.iterdir())):
            raise ConfigError(f"{dst} exists; choose another DST or pass --overwrite")
        if not dst.is_file():  # a file DST is replaced as a whole with --overwrite
            check_output_folder(dst, "DST")
    allow = False if args.no_download else None
    generator = load_generator(args.src, device="cpu", allow_download=allow)
    if args.to:
        out = export_generator(generator, dst, args.to)
    else:
        out = _save_folder(generator, dst, args.overwrite)
    print(f"wrote {out}")
    return 0
