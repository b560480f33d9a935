"""Resumable erase state: what a checkpointed run writes to its state folder and how a later run picks it up
(``RunOptions.state_dir``; docs/erasing.md). The file holds the people's codes, so the loop deletes it after
success."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from . import gate
from .checkpoints.torch_zip import load_torch_file
from .config import PRESENTATION_FIELDS, EraseConfig
from .errors import ConfigError, GuideUnlearnError
from .gate.schema import Bool, List, Map, Num, OneOf, Opt, Str
from .io import atomic_write_bytes

STATE_FILE = "erase_state.pt"


def check_state_file(state_dir: Union[None, str, os.PathLike]) -> Optional[Path]:
    """The saved state of ``state_dir`` checked as a file before a run starts (nothing is read): None when there is
    none; its path when it is a regular file inside the folder within the reading gate's size cap. A link (the
    writing rule never follows one inside a run's folder), a FIFO, a device or an oversized or empty file is a
    ConfigError saying to delete it, before any training (a FIFO is never opened for reading)."""
    if state_dir is None:
        return None
    path = Path(state_dir) / STATE_FILE
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        raise ConfigError(f"the saved erase state {path} is a symbolic link; a run never reads or replaces a link in "
                          "its state folder (it may lead outside it): delete the link to start over, or choose "
                          "another state folder")
    try:
        st = os.lstat(path)  # never opened here: an open of a FIFO could release a writer waiting on it
    except OSError as exc:
        raise ConfigError(f"cannot look at the saved erase state {path} ({exc.strerror or exc}); check the state "
                          "folder's permissions, or delete the file to start over") from None
    cap = gate.get_kind("resume-state").max_bytes
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"the saved erase state {path} is not a regular file (a folder, pipe, device or socket); "
                          "delete it to start over, or choose another state folder")
    if not 0 < st.st_size <= cap:
        raise ConfigError(f"the saved erase state {path} holds {st.st_size} bytes (a state is 1 to {cap} bytes); "
                          "delete it to start over, or choose another state folder")
    return path


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
    safe torch loader through the reading gate (a regular file inside its state folder), then validated as data
    before anything is restored (:func:`check_state`): a state of another method, another recipe, other people
    (w_u [K, num_ws, w_dim]) or a malformed file is a ConfigError saying to delete it."""
    try:  # the same scan and bounds as any torch.save file (a state folder may be shared or tampered with)
        state = load_torch_file(path, kind="resume-state", root=Path(path).parent)
    except GuideUnlearnError as e:  # corrupt, foreign or unsafe file
        raise ConfigError(f"cannot read the saved erase state {path} ({e}); delete it to start over") from None
    if not isinstance(state, dict):
        raise ConfigError(f"the saved erase state {path} is not an erase state; delete it to start over")
    _check_recipe(path, state.get("config"), cfg)
    if not isinstance(state.get("w_u"), torch.Tensor) or not torch.equal(state["w_u"], w_u.detach().cpu()):
        raise ConfigError(f"the saved erase state {path} belongs to another identity; delete it to start over")
    total = sum(method.phases()) if method is not None else cfg.iterations  # every phase's steps (robust rounds)
    step, history = check_state(path, state, trainable, optimizer, rng, cfg, total)
    trainable.load_state(state["trainable"])
    optimizer.load_state_dict(state["optimizer"])
    rng.set_state(state["rng"])
    if method is not None:
        try:
            method.load_state_dict(state.get("method_state") or {})
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed method state: missing keys, wrong types or shapes
            raise ConfigError(f"the saved erase state {path} is malformed ({type(e).__name__}: {str(e)[:200]}); "
                              "delete it to start over") from None
    return step, history


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


def _bad(path: Path, why: str) -> ConfigError:
    return ConfigError(f"the saved erase state {path} is malformed ({why}); delete it to start over")


def check_state(path: Path, state: dict, trainable, optimizer, rng: torch.Generator, cfg: EraseConfig,
                total: Optional[int] = None) -> tuple[int, list]:
    """Validate a loaded erase state as data (``total``: the run's steps over all its phases, default
    ``cfg.iterations``), before anything is restored -> (step, history).

    ``step`` an integer in [0, iterations]; ``history`` at most iterations + 1 entries of at most 64 named numbers;
    ``trainable`` exactly the run's trainable tensors with their shapes and dtypes, finite; ``optimizer`` Adam's
    state for exactly the run's parameters (groups, indices, moment shapes, finite, step within the run);
    ``rng`` a state of the run's generator's size (the method validates its own state when it loads it). Raises
    ConfigError."""
    total = cfg.iterations if total is None else total
    step = state.get("step")
    if type(step) is not int or not 0 <= step <= total:
        raise _bad(path, f"step {str(step)[:40]} is not an integer in [0, {total}]")
    history = state.get("history")
    entry = Map(Num(), key=Str(128), max_len=64)
    history = gate.check(history, "resume-state", f"{path}: history", List(entry, max_len=total + 1))
    _check_tensors(path, state.get("trainable"), dict(zip(trainable.names, trainable.params)))
    _check_optimizer(path, state.get("optimizer"), optimizer, total)
    rng_state = state.get("rng")
    current = rng.get_state()
    if not isinstance(rng_state, torch.Tensor) or rng_state.dtype != current.dtype or \
            rng_state.shape != current.shape:
        raise _bad(path, "the random generator state is not a state of this run's generator")
    return step, history


def _check_tensors(path: Path, saved, params: dict) -> None:
    """``saved`` holds exactly the run's trainable tensors, with their shapes and dtypes, all finite."""
    if not isinstance(saved, dict) or set(saved) != set(params):
        names = sorted(map(str, saved))[:3] if isinstance(saved, dict) else type(saved).__name__
        raise ConfigError(f"the saved erase state {path} does not match this run (trainable tensors {names}); delete "
                          "it or run with the same config")
    for name, p in params.items():
        t = saved[name]
        if not isinstance(t, torch.Tensor) or t.shape != p.shape or t.dtype != p.dtype:
            raise ConfigError(f"the saved erase state {path} does not match this run (tensor {name}); delete it or "
                              "run with the same config")
        if not torch.isfinite(t).all():
            raise _bad(path, f"tensor {name} holds NaN or Inf")


_ADAM_STATE = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _check_optimizer(path: Path, saved, optimizer, total: int) -> None:
    """Adam's saved state: the same parameter groups (same indices, the run's own hyper-parameters),
    per-parameter moments shaped and typed like the parameters and finite, and a step count within the run."""
    current = optimizer.state_dict()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise _bad(path, "the optimiser state is not Adam's")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(current["param_groups"]):
        raise _bad(path, "the optimiser's parameter groups differ from this run's")
    for mine, theirs in zip(current["param_groups"], groups):
        if not isinstance(theirs, dict) or set(theirs) != set(mine) or theirs.get("params") != mine["params"]:
            raise _bad(path, "the optimiser's parameter groups differ from this run's")
        gate.check({k: v for k, v in theirs.items() if k != "params"}, "resume-state", f"{path}: optimiser group",
                   Map(_GROUP_VALUE, key=Str(64), max_len=64))
        changed = sorted(k for k in mine if k != "params" and theirs[k] != mine[k])
        if changed:  # the same recipe gives the same hyper-parameters; a state may not change them
            raise _bad(path, f"the optimiser's {', '.join(changed[:4])} differ from this run's")
    state = saved["state"]
    if not isinstance(state, dict) or not set(state) <= set(range(len(params))):
        raise _bad(path, "the optimiser state names parameters this run does not have")
    for index, entry in state.items():
        p = params[index]
        if not isinstance(entry, dict) or not set(entry) <= set(_ADAM_STATE):
            raise _bad(path, f"the optimiser state of parameter {index} is not Adam's")
        for key, value in entry.items():
            if key == "step":
                number = float(value) if isinstance(value, (int, float)) or (
                    isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()) else None
                if number is None or not 0 <= number <= total:
                    raise _bad(path, f"Adam's step count of parameter {index} is outside [0, {total}]")
            elif not isinstance(value, torch.Tensor) or value.shape != p.shape or value.dtype != p.dtype \
                    or not torch.isfinite(value).all():
                raise _bad(path, f"Adam's {key} of parameter {index} does not match it (shape, dtype or values)")


_GROUP_VALUE = Opt(OneOf(Num(), Bool(), List(Num(), max_len=8)))
