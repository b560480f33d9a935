"""``guide-unlearn erase``: photo(s) or a saved latent in, a patch folder and a before/after picture out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from guide_unlearn.errors import InputError, LatentError


def add_parser(sub) -> None:
    p = sub.add_parser("erase", help="erase one person from a generator; writes a forget patch",
                       description="Erase ONE person (all given photos show that person) and write a forget patch "
                                   "folder plus before_after.png.")
    p.add_argument("photos", nargs="*", help="photo(s) of the person (JPEG/PNG)")
    p.add_argument("--latent", help="a saved code instead of photos: .safetensors with key 'ws' [K, num_ws, w_dim]")
    p.add_argument("--model", default="eg3d-ffhq", help="registry name or local checkpoint/folder (default eg3d-ffhq)")
    p.add_argument("--out", required=True, help="patch folder to write")
    p.add_argument("--preset", choices=["lora", "paper"], default="lora", help="erase recipe (default lora)")
    p.add_argument("--iterations", type=int, help="override the preset's iterations")
    p.add_argument("--lr", type=float, help="override the learning rate")
    p.add_argument("--rank", type=int, help="LoRA rank")
    p.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--camera", help="yaw,pitch in radians (camera models only)")
    p.add_argument("--no-align", action="store_true", help="photos are already aligned crops")
    p.add_argument("--state-dir", help="folder for resumable state (deleted on success)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="save resumable state every N steps")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def load_latent(path: str) -> torch.Tensor:
    """Read a saved code: safetensors (key 'ws') or a torch file loaded with weights_only=True."""
    p = Path(path)
    if not p.is_file():
        raise LatentError(f"{p} does not exist; pass a .safetensors file with key 'ws'")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            data = load_file(str(p))
        except Exception as e:
            raise LatentError(f"{p} is not a readable safetensors file ({e})") from e
    else:
        try:
            data = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            raise LatentError(f"{p} could not be read safely ({type(e).__name__}); save codes as safetensors "
                              "with key 'ws'") from e
    ws = data.get("ws") if isinstance(data, dict) else data
    if not torch.is_tensor(ws):
        raise LatentError(f"{p} holds no tensor under 'ws'")
    return ws


def run(args: argparse.Namespace) -> int:
    from guide_unlearn import IdentityEraser
    from guide_unlearn.images import image_strip

    if bool(args.photos) == bool(args.latent):
        raise InputError("give either photo paths or --latent (exactly one of them)")
    overrides = {"seed": args.seed, "progress": not args.quiet, "mixed_precision": args.mixed_precision,
                 "checkpoint_every": args.checkpoint_every}
    if args.iterations is not None:
        overrides["iterations"] = args.iterations
    if args.lr is not None:
        overrides["lr"] = args.lr
    if args.rank is not None:
        overrides["lora_rank"] = args.rank
        overrides["lora_alpha"] = float(args.rank)
    eraser = IdentityEraser.from_pretrained(args.model, device=args.device)
    config = eraser.default_config(args.preset, **overrides)  # the model's recommended settings, then the flags
    camera = None
    if args.camera:
        try:
            camera = [float(v) for v in args.camera.split(",")]
        except ValueError as e:
            raise InputError(f"--camera must be 'yaw,pitch' in radians, got {args.camera!r}") from e
    if args.latent:
        inputs = load_latent(args.latent).to(eraser.device)
    else:
        inputs = list(args.photos)
    if args.no_align and not args.latent:
        inputs = eraser.invert(inputs, camera=camera, align=False)
    result = eraser.erase(inputs, config=config, camera=camera, state_dir=args.state_dir)
    out = Path(args.out)
    result.patch.save_pretrained(out)
    rows = [result.images_before, result.images_after, result.target_images]
    if result.photos is not None:  # first row: the aligned photo itself, at the rendering's size
        rows.insert(0, F.interpolate(result.photos, size=rows[0].shape[-2:], mode="bilinear", antialias=True))
    if rows[0].shape[-1] < 128:  # small models (demo-faces is 64²): enlarge so the picture is legible
        scale = 128 // rows[0].shape[-1]
        rows = [F.interpolate(r.float().cpu(), scale_factor=scale, mode="nearest") for r in rows]
    picture = out.parent / f"{out.name}_before_after.png"
    _save_png(image_strip(rows), picture)
    if result.views_before is not None:
        _save_png(image_strip([result.views_before, result.views_after]), out.parent / f"{out.name}_views.png")
    print(json.dumps({"patch": str(out), "picture": str(picture), "patch_id": result.patch.patch_id,
                      "patch_bytes": result.patch.num_bytes, "seconds": round(result.seconds, 2),
                      "metrics": result.metrics, "final_losses": result.patch.metadata.get("final_losses")}))
    return 0


def _save_png(img, path: Path) -> None:
    import io

    from guide_unlearn.io import atomic_write_bytes

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
