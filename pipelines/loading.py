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

import guide_unlearn.adapters  # noqa: F401  (registers the backend families and checkpoint formats)
from guide_unlearn.checkpoints import NvidiaModule, detect_format, load_nvidia_module, load_torch_file
from guide_unlearn.errors import CheckpointError, GuideUnlearnError
from guide_unlearn.families import (checkpoint_formats, family_for_folder_class, family_for_pickle_class, get_family,
                                    get_format, list_families, resolve_ref)
from guide_unlearn.lineage import restore_record, set_model_index

from .registry import REGISTRY, CheckpointEntry, PathOrName, entry_index, resolve_checkpoint

__all__ = ["load_generator", "load_inverter"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Generators: every branch below is a lookup in the family registry (guide_unlearn.families), filled by the
# backends' own ``adapters/<family>/__init__.py``.


def _load_folder(path: Path) -> nn.Module:
    from guide_unlearn.checkpoints.folders import load_model_folder, read_folder_config

    config = read_folder_config(path)  # a bounded regular file; absurd sizes are refused before building
    cls_name = config.get("_class_name")
    family = family_for_folder_class(cls_name)
    if family is None:
        raise CheckpointError(f"{path}: config.json names class {cls_name!r}, which is not a generator of this "
                              "library")
    model = load_model_folder(path, family.cls(), config)
    restore_record(model, path, verify=True)  # the base fingerprint and merged patches an export recorded
    return model


def _generator_from_nvidia(mod: NvidiaModule, path: Path) -> nn.Module:
    family = family_for_pickle_class(mod.class_name)
    if family is None or family.from_pickle is None:
        known = ", ".join(f"{f.name} {'/'.join(f.pickle_classes)}" for f in list_families() if f.pickle_classes)
        raise CheckpointError(f"{path}: G_ema is a '{mod.class_name}', which this library cannot build (supported: "
                              f"{known})")
    from_nvidia = resolve_ref(family.from_pickle, f"{family.name} pickle {path}")
    return from_nvidia(mod.state_dict, mod.init_kwargs, mod.attributes)


def _generator_from_tensors(sd: Mapping[str, torch.Tensor], path: Path, config: Optional[dict] = None
                            ) -> nn.Module:
    for fmt in checkpoint_formats("state-dict", "generator"):
        if fmt.matches(sd):
            return fmt.reader()(sd, config=config, what=str(path))
    keys = sorted(sd)[:5]
    names = ", ".join(f.name for f in checkpoint_formats("state-dict", "generator"))
    raise CheckpointError(f"{path}: tensors are in none of the known generator layouts ({names}); first keys {keys}")


def _restore_lineage(model: nn.Module, lineage: Optional[str], path: Path) -> None:
    """Declare the base fingerprint and merged patches an exported file records (its header 'lineage')."""
    if not lineage:
        return
    from guide_unlearn.fingerprint import set_base_record

    from guide_unlearn import gate

    where = f"{path}: the 'lineage' metadata"  # the lineage record's bounds and schema (the reading gate)
    record = gate.check(gate.parse_json(lineage, where, "lineage-record"), "lineage-record", where)
    set_base_record(model, record["base_fingerprint"], list(record.get("merged_patches", [])))


def _generator_from_file(path: Path) -> nn.Module:
    fmt = detect_format(path)
    if fmt.kind == "folder":
        return _load_folder(path)
    if fmt.kind == "pickle":
        return _generator_from_nvidia(load_nvidia_module(path, "G_ema"), path)
    if fmt.kind == "safetensors":
        from guide_unlearn.gate import load_safetensors

        sd, meta = load_safetensors(path, "checkpoint")  # through the reading gate: header bounded, then loaded
        config = None
        known = {f.name for f in checkpoint_formats("state-dict")}
        if meta.get("format") in known and meta.get("config"):
            from guide_unlearn.checkpoints.limits import loads_json

            config = loads_json(meta["config"], f"{path}: config in the safetensors metadata")
            if not isinstance(config, dict):
                raise CheckpointError(f"{path}: the config in the safetensors metadata is not a JSON object")
        model = _generator_from_tensors(sd, path, config=config)
        _restore_lineage(model, meta.get("lineage"), path)
        return model
    obj = load_torch_file(path)
    if isinstance(obj, Mapping):
        for layout in checkpoint_formats("checkpoint", "generator"):
            if layout.matches(obj):
                return layout.reader()(obj, what=str(path))
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return _generator_from_tensors(obj, path)
        names = ", ".join(f.name for f in checkpoint_formats(kind="generator"))
        raise CheckpointError(f"{path}: a torch checkpoint with keys {sorted(map(str, obj))[:8]}, which is not a "
                              f"known generator format ({names})")
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
    from guide_unlearn.devices import resolve_device

    device = resolve_device(device)  # a missing CUDA device is refused before the file is read
    entry = REGISTRY.get(str(path_or_name)) if not Path(str(path_or_name)).expanduser().exists() else None
    if entry is not None and entry.format == "tiny":  # no file: the family's tiny random model (seed 0)
        model = get_family(entry.family).tiny(seed=0)
    else:
        path, entry = resolve_checkpoint(path_or_name, allow_download)
        if entry is not None and entry.kind == "inverter":
            raise CheckpointError(f"'{entry.name}' is an inverter; load it with load_inverter (its generator is "
                                  f"'{entry.generator}')")
        model = _typed(_generator_from_file, path)  # a folder's model_index.json comes with it (lineage)
        from guide_unlearn.gate import check_first_use

        check_first_use(model, str(path), CheckpointError, device)  # its declared rendering sizes must fit here
    if entry is not None:  # a registry name: its entry's settings travel into the folders the model is saved to
        set_model_index(model, entry_index(entry, family=getattr(model, "family", None)).to_json())
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------------------
# Inverters


def _projector(entry: CheckpointEntry, generator: Optional[nn.Module], device: Any, code_book: Any) -> Any:
    if generator is None:
        raise CheckpointError(f"'{entry.name}' inverts through a generator; pass generator=")
    from guide_unlearn.adapters.projector import CodeBook, CodeInverter
    from guide_unlearn.errors import BackendUnavailableError

    if code_book is not None and not isinstance(code_book, CodeBook):
        try:
            code_book = CodeBook.load(code_book)
        except BackendUnavailableError as exc:  # dlib missing: invert every photo from random starts
            logger.info("code book %s: %s", code_book, exc)  # the full search path, with -v
            logger.warning("the model's code book needs dlib and its weights, which were not found: photos of "
                           "known people start from random codes (docs/faces.md)")
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
    from guide_unlearn.devices import resolve_device

    device = resolve_device(device)
    entry = REGISTRY.get(str(path_or_name)) if not Path(str(path_or_name)).expanduser().exists() else None
    if entry is not None and entry.format == "projector":
        return _projector(entry, generator, device, code_book)
    path, entry = resolve_checkpoint(path_or_name, allow_download)
    if entry is not None and entry.kind == "generator":
        if entry.default_inverter:
            raise CheckpointError(f"'{entry.name}' is a generator; its inverter is '{entry.default_inverter}'")
        raise CheckpointError(f"'{entry.name}' is a generator, not an inverter")
    layout = get_format(entry.format) if entry is not None else None
    if layout is not None and layout.kind == "inverter" and layout.read_inverter is not None:
        reader = layout.inverter_reader()
        return _typed(lambda p: reader(None, path=p, generator=generator, device=device), path)
    return _typed(_inverter_from_file, path, generator, device)


def _inverter_from_file(path: Path, generator: Optional[nn.Module], device: Any) -> nn.Module:
    fmt = detect_format(path)
    if fmt.kind not in ("torch-zip", "torch-legacy"):
        raise CheckpointError(f"{path}: an inverter checkpoint is a torch.save file, this is {fmt.description}")
    obj = load_torch_file(path)
    for layout in checkpoint_formats("checkpoint", "inverter"):
        if layout.matches(obj):
            return layout.inverter_reader()(obj, path=path, generator=generator, device=device)
    names = ", ".join(f.name for f in checkpoint_formats(kind="inverter"))
    keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path}: not a known inverter checkpoint (found {keys}); supported: {names}")
