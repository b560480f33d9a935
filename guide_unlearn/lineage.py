"""Saving a generator so that it loads again AND keeps its lineage, whichever entry point is used.

A generator folder (diffusers layout) written here holds::

    config.json                            the constructor arguments (diffusers' ConfigMixin)
    diffusion_pytorch_model.safetensors    the weights, with every applied patch folded in (plain names, no LoRA keys)
    guide_unlearn.json                     the lineage record: the ORIGINAL base fingerprint, the patches merged
                                           into these weights, and the sha256 of every file written
    model_index.json                       what an eraser built from the folder uses besides the weights (its
                                           inverter, code book, recommended erase settings, licence, card; the
                                           schema is guide_unlearn.pipelines.registry.ModelIndex)
    LICENSE, README.md, code_book.safetensors    carried over from the folder the generator was loaded from (its
                                           licence, its model card with a note on what was merged, its code book)

Patches made for the original base still apply to a reloaded folder (the record declares the base), and a
folder whose weights no longer match their record is refused. Generator adapters mix in
:class:`LineageSaveMixin` so that ``generator.save_pretrained(dir)`` (the diffusers way) goes through here too.
The core knows no concrete backend: this works on any ``nn.Module`` with a diffusers ``save_config``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from .errors import CheckpointError, ConfigError
from .fingerprint import patch_state, set_base_record
from . import gate
from .io import PathLike, atomic_directory

RECORD_FILE = "guide_unlearn.json"
INDEX_FILE = "model_index.json"
RECORD_FORMAT = "guide_unlearn.generator"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
CONFIG_FILE = "config.json"
CARRIED_FILES = ("LICENSE", "README.md", "code_book.safetensors")
_SOURCE_ATTR = "_guide_source_dir"
_INDEX_ATTR = "_guide_model_index"


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors as a plain state dict with every applied LoRA patch folded into its base weight:
    peft's ``.base_layer`` wrappers seen through, LoRA factors dropped. Delta patches already live in the
    weights. The model is not changed. -> {name: tensor} (CPU, contiguous)."""
    from . import lora as L

    applied = {p.adapter_name for p in patch_state(model)["applied"].values() if p.kind == "lora"}
    deltas: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, layer in L.lora_layers(model):
            delta = None
            for adapter in layer.lora_A.keys():
                if adapter not in applied or adapter in layer.merged_adapters:
                    continue  # an erase in progress, or already in the weights
                d = layer.get_delta_weight(adapter)
                delta = d if delta is None else delta + d
            if delta is not None:
                deltas[f"{name}.weight"] = delta
    out: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer", "")
        t = tensor.detach()
        if key in deltas:
            t = t + deltas[key].to(t.dtype)
        out[key] = t.to("cpu").contiguous()
    return out


def generator_files(directory: PathLike) -> Optional[list[str]]:
    """The files of a complete generator folder written by this library (its record lists them; the carried
    LICENSE / README.md / code book count as its own), or None when the folder is not one. Used to decide
    whether a folder may be replaced."""
    directory = Path(directory)
    try:
        record = read_record(directory)
    except CheckpointError:
        return None
    if record is None:
        return None
    files = record.get("files")
    if not isinstance(files, dict):
        names = [CONFIG_FILE, WEIGHTS_FILE]  # a record written before files were listed
    else:
        names = [str(n) for n in files]
    if any("/" in n or "\\" in n or not (directory / n).is_file() for n in names):
        return None
    return [RECORD_FILE, *names, *(n for n in CARRIED_FILES if n not in names)]


def read_record(directory: PathLike) -> Optional[dict[str, Any]]:
    """The lineage record of a generator folder, or None when it has none. Read through the reading gate (a
    regular file inside the folder, at most 1 MiB, bounded JSON) and checked by the ``lineage-record`` schema
    (a fingerprint string, a bounded list of merged-patch records, file digests); CheckpointError when malformed."""
    path = Path(directory) / RECORD_FILE
    if not (path.exists() or path.is_symlink()):
        return None
    record = gate.read_json(path, "lineage-record", root=directory)
    return record


def read_model_index(directory: PathLike) -> Optional[dict[str, Any]]:
    """The ``model_index.json`` of a generator folder as a JSON object (read as the lineage record is: a bounded
    regular file inside the folder, through the reading gate), or None when it has none. Its fields are checked by :mod:`guide_unlearn.pipelines.registry`.
    CheckpointError when it is not a JSON object."""
    path = Path(directory) / INDEX_FILE
    if not (path.exists() or path.is_symlink()):
        return None
    index = gate.read_json(path, "model-index", root=directory)
    if not isinstance(index, dict):
        raise CheckpointError(f"{path} is not a JSON object; fix it, or delete it to use the generic erase settings")
    return index


def model_index(model: nn.Module) -> Optional[dict[str, Any]]:
    """The model index ``model`` was loaded with (its folder's ``model_index.json``, or what its loader set with
    :func:`set_model_index`), or None. :func:`save_generator` writes it into the folder."""
    return model.__dict__.get(_INDEX_ATTR)


def set_model_index(model: nn.Module, index: Optional[Mapping[str, Any]]) -> None:
    """Make ``index`` (a JSON object) the model index that travels with ``model`` into the folders it is saved to."""
    model.__dict__[_INDEX_ATTR] = None if index is None else dict(index)


def restore_record(model: nn.Module, directory: PathLike, verify: bool = True) -> None:
    """Declare the base fingerprint and merged patches recorded in ``directory``/guide_unlearn.json (if any) on
    ``model``, and remember the folder as the model's source (its licence, card, code book and model index travel
    with later exports). With ``verify`` the weights file must still match the sha256 in the record: a folder
    whose weights were changed after export would otherwise accept patches made for another model
    (CheckpointError)."""
    directory = Path(directory)
    model.__dict__[_SOURCE_ATTR] = directory.resolve()
    set_model_index(model, read_model_index(directory))
    record = read_record(directory)
    if record is None:
        return
    files = record.get("files")
    if verify and isinstance(files, dict) and WEIGHTS_FILE in files:
        path = directory / WEIGHTS_FILE
        if not path.is_file() or gate.sha256(path, "model-weights", root=directory) != files[WEIGHTS_FILE]:
            raise CheckpointError(f"{path} does not match the sha256 in {directory / RECORD_FILE}: the weights were "
                                  "changed after guide_unlearn wrote them, so their lineage is unknown. Re-export "
                                  f"the folder, or delete {RECORD_FILE} to treat these weights as a new base")
    set_base_record(model, record["base_fingerprint"], list(record.get("merged_patches", [])))


def source_dir(model: nn.Module) -> Optional[Path]:
    """The folder ``model`` was loaded from (set by :func:`restore_record`), or None."""
    return model.__dict__.get(_SOURCE_ATTR)


def save_generator(model: nn.Module, directory: PathLike, overwrite: bool = False,
                   carry_from: Optional[PathLike] = None,
                   extra_files: Optional[Mapping[str, Union[str, bytes]]] = None,
                   index: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model`` as a loadable generator folder that keeps its lineage (module docstring), atomically.

    Applied patches are folded into the written weights and recorded as merged (the model itself is not
    changed); the record keeps the ORIGINAL base fingerprint. ``carry_from`` (default: the folder the model was
    loaded from) supplies LICENSE, README.md (with a note on what this export contains appended) and
    code_book.safetensors; ``extra_files`` {name: text or bytes} adds or replaces files. ``index`` is written
    as model_index.json (default: :func:`model_index` of ``model``; none when it has none). An existing folder is
    replaced only with ``overwrite`` and only when it is a generator folder of this library holding nothing else
    (:func:`guide_unlearn.io.check_output_dir`). -> the folder.
    """
    from safetensors.torch import save

    from . import __version__

    if not hasattr(model, "save_config"):
        raise ConfigError(f"{type(model).__name__} has no diffusers config (save_config); only the library's "
                          "generator classes can be saved as a model folder")
    state = patch_state(model)
    merged = list(state["merged"]) + [
        {"patch_id": pid, "kind": p.kind, "final_losses": p.metadata.get("final_losses")}
        for pid, p in state["applied"].items()]
    blob = save(effective_state_dict(model), metadata={"format": "pt"})
    carry = Path(carry_from) if carry_from is not None else source_dir(model)
    directory = Path(directory)
    with atomic_directory(directory, overwrite=overwrite, recognise=generator_files, what="generator folder") as tmp:
        model.save_config(str(tmp))
        (tmp / WEIGHTS_FILE).write_bytes(blob)
        if carry is not None and carry.is_dir() and carry.resolve() != directory.resolve():
            for name in CARRIED_FILES:
                if (carry / name).is_file():  # read through the gate: regular files of the source folder only
                    kind = "code-book" if name.endswith(".safetensors") else "text"
                    (tmp / name).write_bytes(gate.read_bytes(carry / name, kind, root=carry))
            if (tmp / "README.md").is_file():
                with open(tmp / "README.md", "a", encoding="utf-8") as f:
                    f.write(_export_note(state["base_fingerprint"], merged, carry))
        for name, content in (extra_files or {}).items():
            if os.sep in name or "/" in name or name in (RECORD_FILE, WEIGHTS_FILE, CONFIG_FILE, INDEX_FILE):
                raise ConfigError(f"extra file name {name!r} is not allowed (a plain file name other than the "
                                  "model's own files)")
            target = tmp / name
            target.write_bytes(content.encode() if isinstance(content, str) else bytes(content))
        index = index if index is not None else model_index(model)
        if index is not None:
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        files = {p.name: gate.sha256(p, "model-weights") for p in sorted(tmp.iterdir()) if p.is_file()}
        record = {"format": RECORD_FORMAT, "format_version": 1, "base_fingerprint": state["base_fingerprint"],
                  "merged_patches": merged, "library_version": __version__, "files": files}
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, default=str))
    return directory


def _export_note(base: str, merged: list[dict[str, Any]], carry: Path) -> str:
    ids = ", ".join(str(m.get("patch_id")) for m in merged) or "none"
    return ("\n\n## This export (written by guide_unlearn)\n\n"
            f"Derived from the model in `{carry.name}` (card above; its LICENSE applies unchanged). Base weights "
            f"fingerprint `{base}`; forget patches merged into these weights: {ids}. The full record is in "
            f"`{RECORD_FILE}`.\n")


class LineageSaveMixin:
    """Mixed into the generator adapters (before diffusers' ``ModelMixin``): ``save_pretrained`` writes through
    :func:`save_generator` (applied patches folded in, lineage kept, nothing foreign replaced) and
    ``from_pretrained`` restores the lineage record of the folder it reads."""

    def save_pretrained(self, save_directory: PathLike, overwrite: bool = False,
                        safe_serialization: bool = True, is_main_process: bool = True, **kwargs: Any) -> Path:
        """Write this generator as a folder (see :func:`save_generator`). Only safetensors are written; diffusers'
        other options (variants, sharding, push_to_hub) are not supported. -> the folder."""
        if not safe_serialization:
            raise ConfigError("generators are saved as safetensors only (safe_serialization=True)")
        unsupported = sorted(k for k, v in kwargs.items() if v not in (None, False))
        if unsupported:
            raise ConfigError(f"save_pretrained does not support {unsupported}; save the folder, then use "
                              "huggingface_hub for uploads")
        if not is_main_process:
            return Path(save_directory)
        return save_generator(self, save_directory, overwrite=overwrite)  # type: ignore[arg-type]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: PathLike, **kwargs: Any):
        """A local folder loads through the library's bounded, safetensors-only folder loader
        (:func:`guide_unlearn.checkpoints.folders.load_model_folder`: the declared architecture is checked against
        the tensors before anything is built, pickled ``.bin`` weights are refused), then its lineage record
        (:func:`restore_record`). Anything else goes to diffusers' loader."""
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)  # type: ignore[misc]
        from guide_unlearn.checkpoints.folders import load_model_folder, read_folder_config

        unsupported = sorted(k for k, v in kwargs.items() if v not in (None, False))
        if unsupported:
            raise ConfigError(f"from_pretrained of a local folder does not support {unsupported}")
        model = load_model_folder(folder, cls, read_folder_config(folder))
        restore_record(model, folder, verify=True)
        return model
