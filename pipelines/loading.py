"""The two loaders the rest of the library uses: ``load_generator`` / ``load_inverter``, from a path or a registry
name (:mod:`guide_unlearn.pipelines.registry`). Files are read without executing anything
(:mod:`guide_unlearn.checkpoints`).

Supported inputs of ``load_generator`` (any of them by path, or a registry name):

- our folder format (``config.json`` + safetensors, written by ``save_pretrained`` / ``guide-unlearn convert``);
- NVIDIA network pickles: StyleGAN2 ``Generator`` (stylegan2-ada-pytorch, stylegan3's ``stylegan2-*.pkl``),
  EG3D ``TriPlaneGenerator`` (``ffhq*.pkl``, GUIDE's ``last.pkl``);
- rosinality ``.pt`` (``{'g_ema', 'latent_avg', ...}``), e4e ``.pt`` (its decoder);
- ``.safetensors`` / torch state dicts in NVIDIA's or rosinality's StyleGAN2 key layout.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from guide_unlearn.checkpoints import NvidiaModule, detect_format, load_nvidia_module, load_torch_file
from guide_unlearn.errors import CheckpointError, GuideUnlearnError

from .registry import REGISTRY, CheckpointEntry, PathOrName, _backend, resolve_checkpoint

__all__ = ["load_generator", "load_inverter"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Generators


_FOLDER_CLASSES = {
    "StyleGAN2Generator": ("guide_unlearn.adapters.stylegan2", "StyleGAN2Generator"),
}


def _load_folder(path: Path) -> nn.Module:
    from guide_unlearn.checkpoints.folders import load_model_folder, read_folder_config

    config = read_folder_config(path)  # a bounded regular file; absurd sizes are refused before building
    cls_name = config.get("_class_name")
    if cls_name in _FOLDER_CLASSES:
        module, attr = _FOLDER_CLASSES[cls_name]
    elif isinstance(cls_name, str) and "EG3D" in cls_name:
        module, attr = "guide_unlearn.adapters.eg3d", cls_name
    else:
        raise CheckpointError(f"{path}: config.json names class {cls_name!r}, which is not a generator of this "
                              "library")
    cls = _backend(module, attr, f"the model folder {path}")
    return load_model_folder(path, cls, config)


def _generator_from_nvidia(mod: NvidiaModule, path: Path) -> nn.Module:
    if mod.class_name == "Generator":
        from guide_unlearn.adapters.stylegan2.convert import from_nvidia

        return from_nvidia(mod.state_dict, mod.init_kwargs, mod.attributes)
    if mod.class_name == "TriPlaneGenerator":
        from_nvidia = _backend("guide_unlearn.adapters.eg3d.convert", "from_nvidia", f"EG3D pickle {path}")
        return from_nvidia(mod.state_dict, mod.init_kwargs, mod.attributes)
    raise CheckpointError(f"{path}: G_ema is a '{mod.class_name}', which this library cannot build (supported: "
                          "StyleGAN2 Generator, EG3D TriPlaneGenerator)")


def _generator_from_tensors(sd: Mapping[str, torch.Tensor], path: Path, latent_avg=None,
                            config: Optional[dict] = None) -> nn.Module:
    from guide_unlearn.adapters.stylegan2 import convert as sg2

    if sg2.is_nvidia_state_dict(sd):
        return sg2.from_nvidia_state_dict(sd, config, what=str(path))
    if sg2.is_rosinality_state_dict(sd):
        sd = dict(sd)
        la = sd.pop("latent_avg", latent_avg)
        return sg2.from_rosinality(sd, la)
    keys = sorted(sd)[:5]
    raise CheckpointError(f"{path}: tensors are neither NVIDIA nor rosinality StyleGAN2 names (first keys {keys})")


def _generator_from_file(path: Path) -> nn.Module:
    fmt = detect_format(path)
    if fmt.kind == "folder":
        return _load_folder(path)
    if fmt.kind == "pickle":
        return _generator_from_nvidia(load_nvidia_module(path, "G_ema"), path)
    if fmt.kind == "safetensors":
        from safetensors import safe_open

        from guide_unlearn.checkpoints import load_state_file

        sd = load_state_file(path)
        config = None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"{path}: unreadable safetensors file ({str(exc)[:200]})") from None
        if meta.get("format") == "stylegan2-nvidia" and meta.get("config"):
            from guide_unlearn.checkpoints.limits import loads_json

            config = loads_json(meta["config"], f"{path}: config in the safetensors metadata")
            if not isinstance(config, dict):
                raise CheckpointError(f"{path}: the config in the safetensors metadata is not a JSON object")
        return _generator_from_tensors(sd, path, config=config)
    obj = load_torch_file(path)
    if isinstance(obj, Mapping):
        from guide_unlearn.adapters.e4e.convert import is_e4e_checkpoint, load_e4e

        if "g_ema" in obj:
            from guide_unlearn.adapters.stylegan2.convert import from_rosinality

            return from_rosinality(obj["g_ema"], obj.get("latent_avg"))
        if is_e4e_checkpoint(obj):
            return load_e4e(obj, want="generator")
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return _generator_from_tensors(obj, path)
        raise CheckpointError(f"{path}: a torch checkpoint with keys {sorted(map(str, obj))[:8]}, which is not a "
                              "known generator format (rosinality {'g_ema', ...}, e4e, or a StyleGAN2 state dict)")
    raise CheckpointError(f"{path}: a torch checkpoint holding a {type(obj).__name__}, not a generator")


def _typed(load: Any, path: Path, *args: Any) -> Any:
    """``load(path, *args)`` with every failure a GuideUnlearnError: a malformed file that slips past the checks
    into a backend's own code (a KeyError, TypeError, ... there) is reported as a CheckpointError naming it."""
    try:
        return load(path, *args)
    except GuideUnlearnError:
        raise
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - see docstring
        raise CheckpointError(f"{path}: malformed checkpoint ({type(exc).__name__}: {str(exc)[:200]}); the file is "
                              "corrupted or not what its format claims. Download or export it again") from None


def load_generator(path_or_name: PathOrName, device: Any = "cpu", allow_download: Optional[bool] = None
                   ) -> nn.Module:
    """The library's generator for any supported file, folder or registry name, in eval mode on ``device``.

    Nothing embedded in the file is executed; see the module docstring for the formats.

    Raises:
        UnsafeCheckpointError: the file names a global outside the allow-list (named in the message).
        CheckpointError: missing / truncated / unknown format (the message says what the file seems to be).
        BackendUnavailableError: the file needs a backend that is not installed.
    """
    path, entry = resolve_checkpoint(path_or_name, allow_download)
    if entry is not None and entry.kind == "inverter":
        raise CheckpointError(f"'{entry.name}' is an inverter; load it with load_inverter (its generator is "
                              f"'{entry.generator}')")
    model = _typed(_generator_from_file, path)
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------------------
# Inverters


def _load_goae(path: Path, generator: Optional[nn.Module], device: Any) -> nn.Module:
    from guide_unlearn.checkpoints.torch_zip import scan_torch_file

    if generator is None:
        raise CheckpointError(f"{path}: GOAE codes are offsets from the EG3D generator's w_avg; pass generator= "
                              "(e.g. load_generator('eg3d-ffhq'))")
    load = _backend("guide_unlearn.adapters.goae.inverter", "load_goae_ffhq", f"GOAE encoder {path}")
    scan_torch_file(path)  # refuse unsafe globals before the backend reads the file with weights_only=True
    return load(path, generator.w_avg.detach(), device=device).eval()


def _projector(entry: CheckpointEntry, generator: Optional[nn.Module], device: Any, code_book: Any) -> Any:
    if generator is None:
        raise CheckpointError(f"'{entry.name}' inverts through a generator; pass generator=")
    from guide_unlearn.adapters.projector import CodeBook, CodeInverter
    from guide_unlearn.errors import BackendUnavailableError

    if code_book is not None and not isinstance(code_book, CodeBook):
        try:
            code_book = CodeBook.load(code_book)
        except BackendUnavailableError as exc:  # dlib missing: invert every photo from random starts
            logger.warning("the code book %s needs dlib (%s); photos of known people are inverted from random "
                           "starts instead of their training codes", code_book, exc)
            code_book = None
    return CodeInverter(generator.to(device), code_book=code_book)


def load_inverter(path_or_name: PathOrName, device: Any = "cpu", generator: Optional[nn.Module] = None,
                  allow_download: Optional[bool] = None, code_book: Any = None) -> nn.Module:
    """An inverter (core ``Inverter`` protocol: ``invert(images) -> ws``) from a file or registry name.

    Supported: e4e ``.pt`` (Encoder4Editing, W+ codes of its StyleGAN2-1024 decoder); GOAE ``encoder_FFHQ.pt``
    through the GOAE backend (which may use ``generator`` for its w_avg); ``"code-projector"`` (no file: the
    code-space optimisation inverter through ``generator``; ``code_book``, a ``CodeBook`` or the path of a
    ``code_book.safetensors``, lets it start photos of the model's training people from their own codes).

    Raises CheckpointError / UnsafeCheckpointError / BackendUnavailableError like :func:`load_generator`.
    """
    entry = REGISTRY.get(str(path_or_name)) if not Path(str(path_or_name)).expanduser().exists() else None
    if entry is not None and entry.format == "projector":
        return _projector(entry, generator, device, code_book)
    path, entry = resolve_checkpoint(path_or_name, allow_download)
    if entry is not None and entry.kind == "generator":
        if entry.default_inverter:
            raise CheckpointError(f"'{entry.name}' is a generator; its inverter is '{entry.default_inverter}'")
        raise CheckpointError(f"'{entry.name}' is a generator, not an inverter")
    if entry is not None and entry.family == "goae":
        return _typed(_load_goae, path, generator, device)
    return _typed(_inverter_from_file, path, generator, device)


def _inverter_from_file(path: Path, generator: Optional[nn.Module], device: Any) -> nn.Module:
    fmt = detect_format(path)
    if fmt.kind not in ("torch-zip", "torch-legacy"):
        raise CheckpointError(f"{path}: an inverter checkpoint is a torch.save file, this is {fmt.description}")
    obj = load_torch_file(path)
    from guide_unlearn.adapters.e4e.convert import is_e4e_checkpoint, load_e4e

    if is_e4e_checkpoint(obj):
        inv = load_e4e(obj, want="inverter")
        if generator is not None and getattr(generator, "num_ws", inv.num_ws) != inv.num_ws:
            raise CheckpointError(f"the e4e encoder makes {inv.num_ws} codes, the generator takes "
                                  f"{generator.num_ws}; use it with its StyleGAN2-1024 decoder")
        return inv.to(device).eval()
    if isinstance(obj, Mapping) and any(str(k).startswith("swin_model.") for k in obj):
        return _load_goae(path, generator, device)
    keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path}: not a known inverter checkpoint (found {keys}); supported: e4e .pt, GOAE .pt")
