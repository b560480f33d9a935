"""``guide-unlearn erase``: photo(s) or a saved latent in, a patch folder and a before/after picture out."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from guide_unlearn.errors import InputError, LatentError

# torch and the models are imported inside the command (never at start-up): `--version`, `--help` and argument
# errors answer at once.
MAX_LATENT_CODES = 4096  # codes one --latent file may hold (each is rendered at every step of the erase)

EXIT_NOT_ERASED = 3  # --strict: the run finished but its measured figures say the erase failed


def add_parser(sub) -> None:
    p = sub.add_parser("erase", help="erase one person from a generator; writes a forget patch",
                       description="Erase ONE person (all given photos show that person) and write a forget patch "
                                   "folder OUT plus OUT_before_after.png (rows: photo, before, after, target). "
                                   "Arguments and output paths are checked before any model loads.")
    p.add_argument("photos", nargs="*", help="photo(s) of the person (JPEG/PNG)")
    p.add_argument("--latent", help="a saved code instead of photos: .safetensors with key 'ws' [K, num_ws, w_dim]")
    p.add_argument("--model", default="eg3d-ffhq", help="registry name or local checkpoint/folder (default eg3d-ffhq)")
    p.add_argument("--out", required=True, help="patch folder to write")
    p.add_argument("--method", default=None, metavar="NAME",
                   help="erase method (guide_unlearn.list_methods()): lora (the default), paper (the official full "
                        "fine-tune), joint, robust (hardened against re-inversion, ~3-4x slower), or a plug-in")
    p.add_argument("--preset", default=None, metavar="NAME", help="former spelling of --method")
    p.add_argument("--iterations", type=int, help="override the method's iterations")
    p.add_argument("--lr", type=float, help="override the learning rate")
    p.add_argument("--rank", type=int, help="LoRA rank")
    p.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--camera", help="yaw,pitch in radians (camera models only)")
    p.add_argument("--no-align", action="store_true", help="photos are already aligned crops")
    p.add_argument("--state-dir", help="folder for resumable state (deleted on success)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="save resumable state every N steps (0, the default: never; needs --state-dir)")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no",
                   help="accelerate's mixed precision for the erase loop (default no)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (inversion and erasing)")
    p.add_argument("--face", type=int, default=None, metavar="INDEX",
                   help="which face to erase in photos with several (the error lists them, largest first: 0, 1, ...)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out if it is a forget patch written by guide_unlearn, and its pictures (a folder "
                        "holding anything else is never replaced)")
    p.add_argument("--download", action="store_true",
                   help="download the model's official files if they are missing (off by default)")
    p.add_argument("--strict", action="store_true",
                   help=f"exit {EXIT_NOT_ERASED} when the measured figures say the person was not erased (the identity "
                        "judge still recognises them, or the pixels did not move) or others were not kept; the patch "
                        "is still written")
    p.add_argument("--judge", default="offline-v1", choices=("offline-v1", "paper-v1", "toy-v1", "none"),
                   help="the audit protocol whose identity judge checks that the target and the erased person are "
                        "no longer the person (default offline-v1: dlib; 'none': identity not checked, and the "
                        "verdict says so)")
    p.set_defaults(func=run)


def load_latent(path: str):
    """Read a saved code through the reading gate: safetensors (key 'ws') or a torch.save file (allow-list scan,
    ``weights_only``, bounded views). -> ws [K, num_ws, w_dim] (or [num_ws, w_dim]) float, finite, K at most
    :data:`MAX_LATENT_CODES`. Raises LatentError (or UnsafeCheckpointError for a file that would run code)."""
    import torch

    from guide_unlearn.checkpoints.torch_zip import load_torch_file
    from guide_unlearn.errors import CheckpointError, UnsafeCheckpointError
    from guide_unlearn.gate import load_safetensors

    p = Path(path)
    if not p.is_file():
        raise LatentError(f"{p} does not exist; pass a .safetensors file with key 'ws'")
    try:
        data = load_safetensors(p, "latent")[0] if p.suffix == ".safetensors" else load_torch_file(p, kind="latent")
    except UnsafeCheckpointError:
        raise
    except CheckpointError as e:
        raise LatentError(f"{p} could not be read safely ({e}); save codes as safetensors with key 'ws'") from None
    if isinstance(data, dict) and "ws" not in data:
        keys = ", ".join(repr(str(k))[:40] for k in list(data)[:10]) + (", ..." if len(data) > 10 else "")
        raise LatentError(f"{p} has no key 'ws' (it holds {keys or 'nothing'}); save the codes under 'ws' "
                          "[K, num_ws, w_dim]")
    ws = data["ws"] if isinstance(data, dict) else data
    if not torch.is_tensor(ws):
        raise LatentError(f"{p} holds a {type(ws).__name__} under 'ws', not a tensor [K, num_ws, w_dim]")
    if not ws.is_floating_point() or ws.ndim not in (2, 3) or (ws.ndim == 3 and ws.shape[0] > MAX_LATENT_CODES):
        raise LatentError(f"{p}: 'ws' must be a float tensor [K, num_ws, w_dim] with K <= {MAX_LATENT_CODES}, got "
                          f"{ws.dtype} {list(ws.shape)}")
    if not torch.isfinite(ws).all():
        raise LatentError(f"{p}: 'ws' holds NaN or Inf; the file is corrupted")
    return ws.float().contiguous()


def _check_latent_fits(eraser, latent, config, path: str) -> None:
    """Every code of a latent file is rendered at each step, with the step's samples: refuse (LatentError) a file
    whose codes the machine could not render at once, before the erase starts."""
    from guide_unlearn.gate import check_first_use

    codes = latent.shape[0] if latent.ndim == 3 else 1
    check_first_use(eraser.generator, f"--latent {path} ({codes} codes)", LatentError, eraser.device,
                    batch=codes + config.adjacency_samples + config.global_samples)


@contextlib.contextmanager
def _one_verdict_line():
    """The CLI prints the not-erased verdict itself (once, with what to do): the library's own log line of it,
    whichever module logs it, is held back by the log handlers while the command runs."""
    def drop(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("the erase did not succeed")

    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(drop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(drop)


def run(args: argparse.Namespace) -> int:
    from guide_unlearn import EraseConfig, IdentityEraser, RunOptions
    from guide_unlearn.cli.paths import check_output_file, check_output_folder
    from guide_unlearn.devices import resolve_device
    from guide_unlearn.images import load_image
    from guide_unlearn.resume import check_state_file

    # Every argument and output path is checked before the model loads and long before the erase runs.
    if bool(args.photos) == bool(args.latent):
        raise InputError("give either photo paths or --latent (exactly one of them)")
    method = method_option(args)
    overrides = {"seed": args.seed, "mixed_precision": args.mixed_precision}
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.lr is not None:
        overrides["lr"] = args.lr
    if args.rank is not None:
        overrides["lora_rank"] = args.rank
        overrides["lora_alpha"] = float(args.rank)
    EraseConfig.preset(method, **overrides)  # unknown methods and out-of-range flags fail here, before the model
    run_options = RunOptions(progress=not args.quiet, checkpoint_every=args.checkpoint_every, state_dir=args.state_dir)
    camera = None
    if args.camera:
        try:
            camera = [float(v) for v in args.camera.split(",")]
        except ValueError as e:
            raise InputError(f"--camera must be 'yaw,pitch' in radians, got {args.camera!r}") from e
        if len(camera) != 2:
            raise InputError(f"--camera must be two numbers 'yaw,pitch' in radians, got {args.camera!r}")
    out = check_output_folder(args.out)
    picture, views = _pictures(out)
    check_output_file(picture, "--out (its picture)")
    if args.state_dir:
        check_output_folder(args.state_dir, "--state-dir")
        check_state_file(args.state_dir)  # a saved state that is a link, FIFO or device: refused before loading
    _check_outputs(out, args.overwrite)  # nothing the user owns is replaced (without --overwrite, or ever)
    device = resolve_device(args.device)
    check_model_name(args.model)
    latent = load_latent(args.latent) if args.latent else None
    for photo in args.photos:
        load_image(photo)  # missing, unreadable or tiny photos are refused now

    eraser = IdentityEraser.from_pretrained(args.model, device=device, allow_download=args.download)
    config = eraser.default_config(method, **overrides)  # the model's recommended settings, then the flags
    if latent is not None:
        _check_latent_fits(eraser, latent, config, args.latent)
        inputs = latent.to(eraser.device)
    else:
        inputs = list(args.photos)
    if args.no_align and latent is None:
        inputs = eraser.invert(inputs, camera=camera, align=False, progress=not args.quiet)
    if args.judge != "offline-v1":
        eraser.identity_judge = None if args.judge == "none" else args.judge
    with _one_verdict_line():
        result = eraser.erase(inputs, config=config, camera=camera, face=args.face, run=run_options)
    result.patch.save_pretrained(out, overwrite=args.overwrite)
    _save_pictures(result, picture, views, args.overwrite)
    verdict = result.verdict
    tensor_file = out / ("adapter_model.safetensors" if result.patch.kind == "lora" else "delta_model.safetensors")
    print(json.dumps({"patch": str(out), "picture": str(picture), "patch_id": result.patch.patch_id,
                      "method": config.method,
                      "patch_bytes": tensor_file.stat().st_size,  # the tensor file as written
                      "patch_folder_bytes": sum(f.stat().st_size for f in out.iterdir() if f.is_file()),
                      "seconds": round(result.seconds, 2), "erased": verdict.succeeded, "verdict": verdict.to_dict(),
                      "metrics": result.metrics, "final_losses": result.patch.metadata.get("final_losses")}))
    if verdict.notes:
        print(f"guide-unlearn erase: note: {'; '.join(verdict.notes)}", file=sys.stderr)
    if verdict.succeeded is False:
        problems = "; ".join(verdict.problems)
        if args.strict:
            print(f"guide-unlearn erase: error: the person was not erased: {problems} (the patch was still "
                  f"written; exit {EXIT_NOT_ERASED})", file=sys.stderr)
            return EXIT_NOT_ERASED
        print(f"guide-unlearn erase: warning: {problems} (pass --strict to make this an error exit)",
              file=sys.stderr)
    return 0


def _save_pictures(result, picture, views, overwrite: bool) -> None:
    """The before/after strip (rows: the aligned photo when there is one, G_s, G_u, the target; enlarged for small
    models) and, for camera models, the multi-view strip."""
    import torch.nn.functional as F

    from guide_unlearn.images import image_strip

    rows = [result.images_before, result.images_after, result.target_images]
    labels = ["before", "after", "target"]
    if result.photos is not None:  # first row: the aligned photo itself, at the rendering's size
        rows.insert(0, F.interpolate(result.photos, size=rows[0].shape[-2:], mode="bilinear", antialias=True))
        labels.insert(0, "photo")
    if rows[0].shape[-1] < 128:  # small models (demo-faces is 64²): enlarge so the picture is legible
        scale = 128 // rows[0].shape[-1]
        rows = [F.interpolate(r.float().cpu(), scale_factor=scale, mode="nearest") for r in rows]
    save_picture(image_strip(rows, labels), picture, overwrite=overwrite)
    if result.views_before is not None:
        save_picture(image_strip([result.views_before, result.views_after], ["before", "after"]), views,
                     overwrite=overwrite)


def method_option(args: argparse.Namespace) -> str:
    """The erase method of ``--method`` (or its former spelling ``--preset``; default lora), checked against the
    registered methods before anything loads."""
    from guide_unlearn.errors import ConfigError
    from guide_unlearn.methods import get_method

    if args.method is not None and args.preset is not None and args.method != args.preset:
        raise ConfigError(f"--method {args.method} and --preset {args.preset} disagree; give only --method")
    name = args.method or args.preset or "lora"
    get_method(name)  # an unknown name is refused with the list of methods
    return name


def _pictures(out: Path) -> tuple[Path, Path]:
    """The before/after picture and the multi-view picture written beside the patch folder ``out``."""
    return out.parent / f"{out.name}_before_after.png", out.parent / f"{out.name}_views.png"


def _check_outputs(out: Path, overwrite: bool) -> None:
    """Refuse (SaveError) before any work when --out or its pictures may not be written (see guide_unlearn.io)."""
    from guide_unlearn.io import check_output_dir, check_output_file
    from guide_unlearn.patch import patch_files

    check_output_dir(out, overwrite, patch_files, "forget patch")
    for picture in _pictures(out):
        check_output_file(picture, overwrite)


def check_model_name(model: str) -> None:
    """Refuse a ``--model`` that is neither an existing path nor an accepted name, before anything loads (the
    message suggests the nearest name and lists them all)."""
    from guide_unlearn.errors import CheckpointError
    from guide_unlearn.pipelines.registry import accepted_names, unknown_name_message

    if Path(model).expanduser().exists() or model in accepted_names():
        return
    if "/" in model or "\\" in model or Path(model).suffix:
        raise CheckpointError(f"--model {model}: no such file or folder")
    raise CheckpointError(unknown_name_message(model))


def save_picture(img, path: Path, overwrite: bool = False) -> None:
    """Write a PIL picture atomically, in the format its extension names (.png, .jpg / .jpeg, .webp)."""
    from guide_unlearn.images import encode_picture
    from guide_unlearn.io import atomic_write_bytes

    atomic_write_bytes(Path(path), encode_picture(img, path), overwrite=overwrite)
