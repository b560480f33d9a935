"""Model folders (``config.json`` + ``diffusion_pytorch_model.safetensors``) and declared architectures, checked
before anything is allocated (docs/threat_model.md, "Declared sizes").

A config is a promise about sizes: ``z_dim = 50 000`` or ``channel_max = 1e9`` would make the constructor allocate
gigabytes before a single weight is compared. Here a declared architecture is

1. bounded: every size-like value lies in :data:`SIZE_BOUNDS` (any other integer within ±2^20, floats finite);
2. built on the ``meta`` device (no memory) and compared, name by name and shape by shape, with the tensors the
   file actually holds (read from the safetensors header alone);
3. only then built for real, so its memory is that of the weights present in the file.

Folders holding pickle weights (``*.bin``, ``*.pt``, ...) or sharded indexes are refused: diffusers would load
those itself, outside the scan. The model class is passed in; nothing here imports a concrete backend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from ..errors import CheckpointError
from ..gate import check_first_use, load_safetensors, read_json, safetensors_header
from .limits import check_nesting

__all__ = ["SIZE_BOUNDS", "WEIGHTS_FILE", "build_checked", "check_config", "load_model_folder",
           "read_folder_config", "safetensors_shapes"]

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
CONFIG_FILE = "config.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".msgpack", ".h5")

#: Inclusive bounds of the sizes a generator config may declare (by key name, whatever the family).
SIZE_BOUNDS: dict[str, tuple[int, int]] = {
    "z_dim": (1, 8192), "w_dim": (1, 8192), "c_dim": (0, 1024), "img_channels": (1, 16),
    "img_resolution": (4, 8192), "plane_resolution": (4, 8192), "neural_rendering_resolution": (1, 8192),
    "sr_input_resolution": (1, 8192), "plane_channels": (1, 4096), "mapping_layers": (1, 64),
    "channel_base": (1, 1 << 22), "channel_max": (1, 8192), "decoder_hidden_dim": (1, 8192),
    "decoder_output_dim": (1, 8192), "depth_resolution": (1, 1024), "depth_resolution_importance": (0, 1024),
    "sr_channels": (1, 8192), "num_ws": (1, 64),
}
_OTHER_INT = 1 << 20
_FLOAT_LIMIT = 1e9

PathLike = Union[str, os.PathLike]


def check_config(config: Mapping[str, Any], what: str, allowed: Optional[set] = None) -> dict:
    """Refuse a declared architecture with out-of-range sizes, non-finite numbers or unknown keys.

    config: constructor kwargs (keys starting with ``_`` are bookkeeping and skipped); allowed: the constructor's
    parameter names (None: any). -> a plain copy. Raises CheckpointError naming the offending key.
    """
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{what}: the config is a {type(config).__name__}, not a JSON object")
    check_nesting(dict(config), what, max_depth=8, max_nodes=10_000)
    out = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{what}: config key {key!r} is not a string")
        if key.startswith("_"):
            out[key] = value
            continue
        if allowed is not None and key not in allowed:
            raise CheckpointError(f"{what}: unknown config key {key!r}; the folder was not written by this library "
                                  "or by a newer version of it")
        lo, hi = SIZE_BOUNDS.get(key, (-_OTHER_INT, _OTHER_INT))
        items = value if isinstance(value, (list, tuple)) else [value]
        if len(items) > 16:
            raise CheckpointError(f"{what}: config value {key!r} is a list of {len(items)} items; at most 16")
        for v in items:
            if isinstance(v, bool) or v is None or (isinstance(v, str) and len(v) <= 256):
                continue
            if isinstance(v, int):
                if not lo <= v <= hi:
                    raise CheckpointError(f"{what}: config value {key}={v} is outside [{lo}, {hi}]; the declared "
                                          "architecture is absurd, refusing to build it")
                continue
            if isinstance(v, float):
                if not math.isfinite(v) or abs(v) > _FLOAT_LIMIT or (key in SIZE_BOUNDS and not lo <= v <= hi):
                    raise CheckpointError(f"{what}: config value {key}={v} is not a finite number in range")
                continue
            raise CheckpointError(f"{what}: config value {key!r} holds a {type(v).__name__}, not a number, string "
                                  "or bool")
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _init_params(cls: type) -> Optional[set]:
    import inspect

    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n in params if n != "self"}


def build_checked(cls: type, config: Mapping[str, Any], shapes: Mapping[str, tuple], what: str,
                  from_config: bool = False) -> nn.Module:
    """``cls(**config)`` once the declared architecture is bounded (:func:`check_config`) and, built on the meta
    device, has exactly the tensor names and shapes in ``shapes`` ({name: shape} of what the file holds).

    -> the model built for real on the CPU (weights not loaded yet). Raises CheckpointError.
    """
    kwargs = {k: v for k, v in check_config(config, what, _init_params(cls)).items() if not k.startswith("_")}
    make = (lambda: cls.from_config(dict(config))) if from_config else (lambda: cls(**kwargs))
    try:
        with torch.device("meta"):
            meta = make()
    except CheckpointError:
        raise
    except (Exception, RecursionError) as exc:  # noqa: BLE001 - a constructor refusing a config
        raise CheckpointError(f"{what}: the declared architecture cannot be built ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
    expected = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    check_first_use(meta, what, CheckpointError)  # the sizes it declares must fit this machine at the first render
    del meta
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if tuple(shapes[k]) != expected[k])
    if missing or unexpected or wrong:
        head = lambda keys: ", ".join(keys[:4]) + (" ..." if len(keys) > 4 else "")  # noqa: E731
        raise CheckpointError(f"{what}: the tensors present do not match the declared architecture: "
                              f"{len(missing)} missing ({head(missing)}), {len(unexpected)} unexpected "
                              f"({head(unexpected)}), {len(wrong)} with another shape ({head(wrong)})")
    try:
        return make()
    except (Exception, RecursionError) as exc:  # noqa: BLE001
        raise CheckpointError(f"{what}: the declared architecture cannot be built ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None


def safetensors_shapes(path: PathLike, what: str = "weights", root: Optional[PathLike] = None) -> dict[str, tuple]:
    """{name: shape} of a safetensors file, read from its header only (nothing is allocated for the data)."""
    _, tensors, _ = safetensors_header(path, "model-weights", root)
    return {k: shape for k, (_, shape) in tensors.items()}


def read_folder_config(path: PathLike) -> dict:
    """The ``config.json`` of a model folder, through the reading gate: a regular file inside the folder, of at
    most 1 MiB, JSON nested at most :data:`~.limits.MAX_DEPTH` deep, holding an object."""
    file = Path(path) / CONFIG_FILE
    config = read_json(file, "model-config", root=path)
    if not isinstance(config, dict):
        raise CheckpointError(f"{file}: must hold a JSON object")
    return config


def load_model_folder(path: PathLike, cls: type, config: Optional[dict] = None) -> nn.Module:
    """Load a model folder written by ``save_pretrained``: safetensors weights only, the config bounded and
    checked against the weights before anything is allocated, weights loaded with ``strict=True``.

    -> the model in eval mode on the CPU. Raises CheckpointError (with what to do) for anything else.
    """
    path = Path(path)
    refused = sorted(p.name for p in path.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES
                     or p.name.lower().endswith(".index.json"))
    if refused:
        raise CheckpointError(f"{path}: the folder holds {refused[:3]}; model folders are loaded from "
                              f"{WEIGHTS_FILE} only (pickle weights and sharded indexes are never read). Remove "
                              "them or re-save the model with save_pretrained")
    config = read_folder_config(path) if config is None else config
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise CheckpointError(f"{path}: {WEIGHTS_FILE} is missing; the folder is incomplete")
    shapes = safetensors_shapes(weights, root=path)
    model = build_checked(cls, config, shapes, str(path), from_config=hasattr(cls, "from_config"))
    sd, _ = load_safetensors(weights, "model-weights", root=path)
    own = model.state_dict()
    bad = [k for k, v in sd.items() if v.is_floating_point() != own[k].is_floating_point()]
    if bad:
        raise CheckpointError(f"{weights}: tensor {bad[0]} has dtype {sd[bad[0]].dtype}, the model expects "
                              f"{own[bad[0]].dtype}")
    try:
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the weights do not load ({str(exc)[:200]})") from None
    return model.eval()
