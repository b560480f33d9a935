"""``guide-unlearn audit``: measure a forget patch (identity, attacks, Fréchet distance) and write a report folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from guide_unlearn.errors import ConfigError, InputError, SaveError


def add_parser(sub) -> None:
    p = sub.add_parser("audit", help="measure an erasure: identity metrics, attacks and an HTML report",
                       description="Audit a forget patch against the person's photos (request + held out) and other "
                                   "people's photos. Prints the metrics as one JSON line and writes report.json, "
                                   "report.html and the figures. See docs/audit.md.")
    p.add_argument("patch", help="the patch folder")
    p.add_argument("--model", required=True, help="registry name or local checkpoint/folder of the patch's base")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--photo", nargs="+", action="extend", help="photo(s) of the deletion request")
    src.add_argument("--photos", help="folder with the deletion request's photos")
    p.add_argument("--held-out", nargs="+", action="extend",
                   help="other photos of the SAME person, never shown to the erase (files and/or folders)")
    p.add_argument("--others", nargs="+", action="extend",
                   help="other people's photos (files and/or folders; in a folder one person per file, or per "
                        "sub-folder)")
    p.add_argument("--real", help="folder of real images for the fd_real_delta figure")
    p.add_argument("--protocol", default="offline-v1", choices=["offline-v1", "paper-v1", "toy-v1"],
                   help="networks and settings (default offline-v1; paper-v1 needs its weight files)")
    p.add_argument("--out", help="report folder to create (default: <patch>_audit); must be new or empty")
    p.add_argument("--clip", metavar="PATH", help="local CLIP model folder (transformers, safetensors) for the extra "
                   "CMMD figure (details.cmmd.cmmd_pre; docs/audit.md)")
    p.add_argument("--samples", type=int, help="G_s/G_u samples for the Fréchet distance (default: the protocol's)")
    p.add_argument("--projector-steps", type=int, default=400, help="steps of the from-scratch projector attack")
    p.add_argument("--leakage-starts", type=int, default=16, help="random starts of the patch-leakage probe")
    p.add_argument("--leakage-steps", type=int, default=100, help="gradient-ascent steps of the leakage probe")
    p.add_argument("--max-others", type=int, default=48,
                   help="audit at most this many of the --others people (a sample seeded by --seed, recorded in the "
                        "report; 0 = all). Each costs two inversions: the main cost of the audit with --projector-steps "
                        "and --samples (default 48)")
    p.add_argument("--reference", metavar="MODEL",
                   help="a comparison model of the same family and resolution (registry name or folder; e.g. a model "
                        "retrained without the person, demo-faces-oracle-8): every figure is also measured through "
                        "it, side by side, with the difference patched - reference")
    p.add_argument("--strangers", nargs="+", action="extend", metavar="PHOTOS",
                   help="photos of people the base model never saw (files and/or folders): the baseline of the "
                        "per-identity membership score")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    attacks = p.add_mutually_exclusive_group()
    attacks.add_argument("--no-attacks", action="store_true", help="skip the re-inversion attacks and the leakage "
                                                                   "probe")
    attacks.add_argument("--attacks", nargs="+", metavar="NAME",
                         help="the attacks to run (default: reinvert leakage); also relearn (pivotal tuning on one "
                              "photo) and code_book (the default inverter without the person's code-book entries)")
    p.add_argument("--relearn-steps", type=int, help="k, the pivotal-tuning steps of the relearn attack (default 50, "
                                                     "at most 1000)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a keyword of a registered metric family (VALUE read as JSON when it parses, else as text), "
                        "e.g. --option 'code_book_drop=[3, 7]'; repeatable")
    p.add_argument("--seed", type=int, default=0, help="seed of every random part of the audit: samples, attacks, probe (default 0)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--write-to-patch", action="store_true",
                   help="record the audit summary in the patch metadata (key 'audit'); the patch stays valid")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from guide_unlearn import IdentityEraser
    from guide_unlearn.cli.erase import check_model_name
    from guide_unlearn.cli.paths import check_output_folder
    from guide_unlearn.devices import resolve_device
    from guide_unlearn.patch import ForgetPatch
    from guide_unlearn.pipelines.audit import ATTACKS, audit, get_protocol, photo_items

    patch_dir = Path(args.patch)
    out = Path(args.out) if args.out else patch_dir.parent / f"{patch_dir.name}_audit"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SaveError(f"{out} exists and is not an empty folder; pass --out with a new folder")
    check_output_folder(out)  # writable, before anything loads
    device = resolve_device(args.device)
    check_model_name(args.model)
    if args.photos and not Path(args.photos).is_dir():
        raise InputError(f"--photos {args.photos} is not a folder; use --photo for single files")
    if args.max_others < 0:
        raise ConfigError(f"--max-others must be >= 0 (0 = every person), got {args.max_others}")
    get_protocol(args.protocol)  # refuse early (missing weights) before loading anything
    for role, spec in (("request", args.photos or args.photo), ("held_out", args.held_out), ("others", args.others),
                       ("real", args.real), ("strangers", args.strangers)):
        photo_items(spec, role)  # every photo folder listed through the reading gate before anything loads
    options = _options(args)
    patch = ForgetPatch.from_pretrained(patch_dir)
    eraser = IdentityEraser.from_pretrained(args.model, device=device)
    report = audit(eraser, patch, args.photos or list(args.photo), held_out=args.held_out, others=args.others,
                   real=args.real, protocol=args.protocol,
                   attacks=() if args.no_attacks else tuple(args.attacks or ATTACKS),
                   seed=args.seed, samples=args.samples, projector_steps=args.projector_steps,
                   leakage_starts=args.leakage_starts, leakage_steps=args.leakage_steps,
                   max_others=args.max_others, progress=not args.quiet, clip_path=args.clip, **options)
    report.save(out)
    if args.write_to_patch:
        report.write_to_patch(patch_dir)
    print(json.dumps({"report": str(out), "protocol": report.protocol["name"],
                      "seconds": round(report.seconds["total"], 1), "metrics": report.to_dict()["metrics"]},
                     allow_nan=False))
    return 0


def _options(args: argparse.Namespace) -> dict:
    """The metric-family keywords of ``--reference``, ``--strangers``, ``--relearn-steps`` and ``--option KEY=VALUE``
    (ConfigError for a malformed one; audit() refuses a keyword no registered family declared)."""
    options: dict = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"--option takes KEY=VALUE with KEY a keyword name, got {item!r}")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    for key in ("reference", "strangers", "relearn_steps"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options
