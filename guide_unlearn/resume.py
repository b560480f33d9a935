"""Resumable erase state: what a checkpointed run writes to its state folder and how a later run picks it up
(``RunOptions.state_dir``; docs/erasing.md). The file holds the people's codes, so the loop deletes it after
success."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from .checkpoints.torch_zip import load_torch_file
from .config import PRESENTATION_FIELDS, EraseConfig
from .errors import CheckpointError, ConfigError, GuideUnlearnError
from .io import atomic_write_bytes

STATE_FILE = "erase_state.pt"


def save_state(path: Path, step: int, history: list, trainable, optimizer, rng: torch.Generator,
               cfg: EraseConfig, w_u: torch.Tensor, method_state: Optional[Mapping[str, Any]] = None) -> None:
    """Write the run's state after ``step`` steps to ``path`` atomically: the trainable parameters
    (``trainable.state()``), Adam's state, the seeded generator, the recipe (the method's name and settings
    included), the people's codes w_u [K, num_ws, w_dim] and the method's own state (``EraseMethod.state_dict``)."""
    blob = io.BytesIO()
    state = {
        "step": step, "history": history, "trainable": trainable.state(),
        "optimizer": optimizer.state_dict(), "rng": rng.get_state(), "config": cfg.recipe_dict(), "w_u": w_u.cpu(),
        "method_state": dict(method_state or {}),
    }
    torch.save(state, blob)
    atomic_write_bytes(path, blob.getvalue(), overwrite=True)  # the run's own state file, replaced as it advances


def load_state(path: Path, trainable, optimizer, rng: torch.Generator, cfg: EraseConfig,
               w_u: torch.Tensor, method=None) -> tuple[int, list]:
    """Restore a state written by :func:`save_state` into ``trainable``, ``optimizer``, ``rng`` and ``method``
    (its ``load_state_dict``) -> (the step to continue from, the loss history so far). The file is read with the
    safe torch loader; a state of another method, another recipe, other people (w_u [K, num_ws, w_dim]) or a
    malformed file is a ConfigError saying to delete it."""
    try:  # the same scan and bounds as any torch.save file (a state folder may be shared or tampered with)
        state = load_torch_file(path)
    except CheckpointError as e:  # corrupt or foreign file
        raise ConfigError(f"cannot read the saved erase state {path} ({e}); delete it to start over") from None
    if not isinstance(state, dict):
        raise ConfigError(f"the saved erase state {path} is not an erase state; delete it to start over")
    _check_recipe(path, state.get("config"), cfg)
    try:
        if not torch.equal(state["w_u"], w_u.cpu()):
            raise ConfigError(f"the saved erase state {path} belongs to another identity; delete it to start over")
        trainable.load_state(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        if method is not None:
            method.load_state_dict(state["method_state"])
        return int(state["step"]), list(state["history"])
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed state file: missing keys, wrong types or shapes
        raise ConfigError(f"the saved erase state {path} is malformed ({type(e).__name__}: {str(e)[:200]}); "
                          "delete it to start over") from None


def _check_recipe(path: Path, saved: Any, cfg: EraseConfig) -> None:
    """ConfigError unless the saved recipe is this run's: another method is named as such; a setting the saving
    version did not have counts at its default (so a state written before a setting was added resumes when this
    run leaves it at its default, and is refused, naming it, when not)."""
    now = cfg.recipe_dict()
    if isinstance(saved, dict) and saved.get("method", now["method"]) != now["method"]:
        raise ConfigError(f"the saved erase state {path} was made by method {saved.get('method')!r}, this run is "
                          f"{now['method']!r}; delete it or resume with method={saved.get('method')!r}")
    if isinstance(saved, dict):
        try:
            defaults = EraseConfig(method=now["method"]).recipe_dict()
        except GuideUnlearnError:
            defaults = now
        own = saved.get("method_config")
        saved = {**{k: v for k, v in defaults.items() if k not in saved},
                 **{k: v for k, v in saved.items() if k not in PRESENTATION_FIELDS}}
        if isinstance(own, dict):
            saved["method_config"] = {**defaults["method_config"], **own}
    if saved != now:
        changed = sorted(k for k in now if not isinstance(saved, dict) or saved.get(k) != now[k])
        if "method_config" in changed and isinstance(saved, dict) and isinstance(saved.get("method_config"), dict):
            changed.remove("method_config")
            changed += sorted(k for k, v in now["method_config"].items() if saved["method_config"].get(k) != v)
        raise ConfigError(f"the saved erase state {path} was made with other settings ({', '.join(changed[:6])}); "
                          "delete it or resume with the same settings (progress / logging settings may differ)")
