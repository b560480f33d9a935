"""Resumable erase state: what a checkpointed run writes to its state folder and how a later run picks it up
(``RunOptions.state_dir``; docs/erasing.md). The file holds the person's codes, so the loop deletes it after
success."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import torch

from .checkpoints.torch_zip import load_torch_file
from .config import PRESENTATION_FIELDS, EraseConfig
from .errors import CheckpointError, ConfigError
from .io import atomic_write_bytes
from .joint import PersonProgress

STATE_FILE = "erase_state.pt"


def save_state(path: Path, step: int, history: list, trainable, optimizer, rng: torch.Generator,
               cfg: EraseConfig, w_u: torch.Tensor, progress: Optional[PersonProgress] = None) -> None:
    """Write the run's state after ``step`` steps to ``path`` atomically: the trainable parameters
    (``trainable.state()``), Adam's state, the seeded generator, the recipe, the person's codes w_u [K, num_ws,
    w_dim] and, in joint runs with early stop, who is done."""
    blob = io.BytesIO()
    state = {
        "step": step, "history": history, "trainable": trainable.state(),
        "optimizer": optimizer.state_dict(), "rng": rng.get_state(), "config": cfg.recipe_dict(), "w_u": w_u.cpu(),
    }
    if progress is not None:  # plain floats / bools / ints: the per-person early-stop state
        state["progress"] = {"start": progress.start, "done": progress.done, "done_step": progress.done_step}
    torch.save(state, blob)
    atomic_write_bytes(path, blob.getvalue(), overwrite=True)  # the run's own state file, replaced as it advances


def load_state(path: Path, trainable, optimizer, rng: torch.Generator, cfg: EraseConfig,
               w_u: torch.Tensor, progress: Optional[PersonProgress] = None) -> tuple[int, list]:
    """Restore a state written by :func:`save_state` into ``trainable``, ``optimizer``, ``rng`` (and
    ``progress``) -> (the step to continue from, the loss history so far). The file is read with the safe torch
    loader; a state of another recipe, another person (w_u [K, num_ws, w_dim]) or a malformed file is a
    ConfigError saying to delete it."""

    try:  # the same scan and bounds as any torch.save file (a state folder may be shared or tampered with)
        state = load_torch_file(path)
    except CheckpointError as e:  # corrupt or foreign file
        raise ConfigError(f"cannot read the saved erase state {path} ({e}); delete it to start over") from None
    if not isinstance(state, dict):
        raise ConfigError(f"the saved erase state {path} is not an erase state; delete it to start over")
    saved = state.get("config")
    if isinstance(saved, dict):
        # a field the saving version did not have ran at its default then: fill it in, so that a state written
        # before a field was added resumes when this run leaves that field at its default (and is refused if not)
        defaults = EraseConfig().recipe_dict()
        saved = {**{k: v for k, v in defaults.items() if k not in saved},
                 **{k: v for k, v in saved.items() if k not in PRESENTATION_FIELDS}}
    if saved != cfg.recipe_dict():
        now = cfg.recipe_dict()
        changed = sorted(k for k in now if not isinstance(saved, dict) or saved.get(k) != now[k])
        raise ConfigError(f"the saved erase state {path} was made with other settings ({', '.join(changed[:6])}); "
                          "delete it or resume with the same settings (progress / logging settings may differ)")
    try:
        if not torch.equal(state["w_u"], w_u.cpu()):
            raise ConfigError(f"the saved erase state {path} belongs to another identity; delete it to start over")
        trainable.load_state(state["trainable"])
        optimizer.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        if progress is not None:
            saved_progress, people = state["progress"], len(progress.start)
            if not len(saved_progress["start"]) == len(saved_progress["done"]) == len(saved_progress["done_step"]) \
                    == people:
                raise ValueError("per-person state of another number of people")
            progress.start = [None if v is None else float(v) for v in saved_progress["start"]]
            progress.done = [bool(v) for v in saved_progress["done"]]
            progress.done_step = [None if v is None else int(v) for v in saved_progress["done_step"]]
        return int(state["step"]), list(state["history"])
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed state file: missing keys, wrong types or shapes
        raise ConfigError(f"the saved erase state {path} is malformed ({type(e).__name__}: {str(e)[:200]}); "
                          "delete it to start over") from None
