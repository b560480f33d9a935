"""Fingerprints of base generators, so a patch is only ever applied to the weights it was made for."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

_STATE_ATTR = "_guide_patch_state"


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over the model's base tensors (names, shapes, dtypes, bytes), LoRA factors excluded and peft's
    ``.base_layer`` wrappers seen through, so wrapping a model in adapters does not change its fingerprint.
    -> 'sha256:<64 hex>'."""
    h = hashlib.sha256()
    state = model.state_dict()
    items = []
    for name, tensor in state.items():
        if ".lora_" in name:
            continue
        items.append((name.replace(".base_layer", ""), tensor))
    for name, tensor in sorted(items, key=lambda kv: kv[0]):
        t = tensor.detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return "sha256:" + h.hexdigest()


def patch_state(model: nn.Module) -> dict[str, Any]:
    """The model's patch bookkeeping: {'base_fingerprint', 'merged': [...], 'applied': {adapter: patch}}.

    The base fingerprint is computed once, before any patch touches the weights, and survives merges, so a
    patch made for the original base still applies to a model with other patches merged in.
    """
    state = model.__dict__.get(_STATE_ATTR)
    if state is None:
        state = {"base_fingerprint": weights_fingerprint(model), "merged": [], "applied": {}}
        model.__dict__[_STATE_ATTR] = state
    return state


def set_base_record(model: nn.Module, base_fingerprint: str, merged: list[dict[str, Any]]) -> None:
    """Declare a loaded model's original base fingerprint and the patches already merged into it."""
    model.__dict__[_STATE_ATTR] = {"base_fingerprint": base_fingerprint, "merged": list(merged), "applied": {}}


def trained_on(model: nn.Module) -> list[str]:
    """Ids of the patches merged into or applied to ``model``: with the base fingerprint they name the exact
    weights a patch made now is trained on (recorded in the patch as ``base_merged``)."""
    state = patch_state(model)
    return [str(m.get("patch_id")) for m in state["merged"]] + [str(pid) for pid in state["applied"]]
