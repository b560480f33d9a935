"""Check a loaded state dict against a module before loading it, with a message that names what is wrong."""

from __future__ import annotations

import os
from typing import Mapping, Union

import torch
from torch import nn

from ..errors import CheckpointError

#: Buffers that older PyTorch versions did not save (BatchNorm's counter); absent or present, both are fine.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)


def match_state_dict(net: nn.Module, state: Mapping[str, torch.Tensor], what: str,
                     file: Union[str, os.PathLike, None] = None, check_only: bool = False) -> None:
    """Load ``state`` ({name: tensor}) into ``net`` (strict, in place) or raise CheckpointError naming the missing
    keys, the unexpected keys and the tensors whose shapes differ (up to 5 of each), before anything is copied.
    BatchNorm ``num_batches_tracked`` counters may be missing. ``what`` names the expected network. check_only:
    only check (e.g. against a model built on the meta device), load nothing."""
    own = net.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith(OPTIONAL_SUFFIXES))
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k}: file {tuple(state[k].shape)}, expected {tuple(v.shape)}" for k, v in own.items()
                    if k in state and tuple(state[k].shape) != tuple(v.shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:5]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:5]})")
        if shapes:
            parts.append(f"{len(shapes)} tensors of the wrong shape (e.g. {shapes[:5]})")
        where = f"{file} " if file is not None else "the state dict "
        raise CheckpointError(f"{where}does not match {what}: " + "; ".join(parts)
                              + f". Check that the file is the {what} checkpoint in its official layout")
    if check_only:
        return
    full = dict(state)
    for k, v in own.items():
        if k not in full:  # an optional counter the file did not save
            full[k] = v
    net.load_state_dict({k: full[k] for k in own}, strict=True)
