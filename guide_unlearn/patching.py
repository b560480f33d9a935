"""Applying, removing, merging and checking forget patches against a base generator: core behaviour, usable by the
engine, the CLI, the queue and :class:`~guide_unlearn.pipelines.eraser.IdentityEraser` alike.

Every function takes the generator adapter (an ``nn.Module`` with ``family`` and ``lora_layer_types()``); the
record of what is applied and merged lives on the module itself (:func:`guide_unlearn.fingerprint.patch_state`).

>>> check(generator, patch)      # PatchMismatchError / PatchStateError, nothing changed
>>> apply(generator, patch)      # -> the patch, now applied on top of the others
>>> remove(generator, patch)     # or its patch_id
>>> merge(generator)             # fold every applied patch into the base weights -> the merged records
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Optional, Union

import torch
from torch import nn

from . import lora as L
from .errors import GuideUnlearnError, PatchError, PatchMismatchError, PatchStateError
from .fingerprint import patch_state
from .patch import ForgetPatch
from .protocols import GeneratorAdapter, module_of


def applied(generator: GeneratorAdapter) -> list[ForgetPatch]:
    """Patches currently applied to ``generator``, in application order (merged ones: :func:`merged`)."""
    return list(patch_state(module_of(generator))["applied"].values())


def merged(generator: GeneratorAdapter) -> list[dict[str, Any]]:
    """Records ({'patch_id', 'kind', 'final_losses'}) of the patches merged into ``generator``'s base weights."""
    return list(patch_state(module_of(generator))["merged"])


def check(generator: GeneratorAdapter, patch: ForgetPatch, name: Optional[str] = None) -> None:
    """Refuse a patch that was made for another base or is already applied/merged, changing nothing.
    ``name``: the generator's registry name or path, quoted in the message. Raises PatchMismatchError (another
    family or other base weights: the message says which base to load) or PatchStateError (applied twice)."""
    state = patch_state(module_of(generator))
    fam = patch.metadata.get("generator_family")
    base = patch.metadata.get("base_name")
    made_for = repr(base) if base else "a base model whose name it does not record"
    here = f" ({name!r})" if name else ""
    todo = (f"load {base!r} (IdentityEraser.from_pretrained({base!r})) and apply it there" if base else
            "apply it to the base model it was made for")
    cli = f"pass --model {base}" if base else "pass the --model it was made for"
    if fam != generator.family:
        msg = (f"this patch was made for {made_for}, a {fam!r} generator; this generator{here} is a "
               f"{generator.family!r} one")
        raise PatchMismatchError(f"{msg}; {todo}", cli_message=f"{msg}; {cli}")
    if patch.base_fingerprint != state["base_fingerprint"]:
        msg = (f"this patch was made for {made_for} (base weights {patch.base_fingerprint[:19]}…), but this "
               f"generator{here} has base weights {state['base_fingerprint'][:19]}…")
        raise PatchMismatchError(f"{msg}; {todo}", cli_message=f"{msg}; {cli}")
    present = set(state["applied"]) | {str(m.get("patch_id")) for m in state["merged"]}
    missing = [pid for pid in patch.base_merged if pid not in present]
    if missing:  # trained on weights with these patches folded in: without them its delta is meaningless
        msg = (f"this patch was made on {made_for} with patch(es) {', '.join(missing)} merged into its weights, "
               f"which this generator{here} does not have (merged here: "
               f"{', '.join(sorted(present)) or 'none'}); load the merged export it was made on, or apply those "
               "patches first")
        raise PatchMismatchError(msg, cli_message=msg.replace("load the merged export", "pass --model the merged "
                                                                                        "export"))
    if patch.patch_id in state["applied"] or any(m.get("patch_id") == patch.patch_id for m in state["merged"]):
        raise PatchStateError(f"patch {patch.patch_id} is already applied (or merged); applying it twice would "
                              "double its effect")


def apply(generator: GeneratorAdapter, patch: Union[ForgetPatch, str, os.PathLike],
          name: Optional[str] = None) -> ForgetPatch:
    """Apply a patch (object or folder) on top of the applied ones, after :func:`check` and a validation of its
    targets, shapes and values (a refused patch leaves the generator unchanged). -> the patch."""
    if not isinstance(patch, ForgetPatch):
        patch = ForgetPatch.from_pretrained(patch)
    check(generator, patch, name)
    model = module_of(generator)
    if patch.kind == "lora":
        _apply_lora(model, generator, patch)
    else:
        _add_delta(model, patch, sign=1.0, generator=generator)
    patch_state(model)["applied"][patch.patch_id] = patch
    return patch


def remove(generator: GeneratorAdapter, patch: Union[ForgetPatch, str]) -> None:
    """Remove an applied patch (object or its patch_id); PatchStateError if it is not applied."""
    pid = patch.patch_id if isinstance(patch, ForgetPatch) else str(patch)
    model = module_of(generator)
    state = patch_state(model)["applied"]
    if pid not in state:
        raise PatchStateError(f"patch {pid} is not applied; applied: {list(state) or 'none'}")
    p = state[pid]
    if p.kind == "lora":
        L.delete_adapter(model, p.adapter_name)
    else:
        _add_delta(model, p, sign=-1.0)
    del state[pid]


def merge(generator: GeneratorAdapter) -> list[dict[str, Any]]:
    """Merge every applied patch into the base weights (exact up to float rounding). The base fingerprint is
    kept, so later patches made for the same base still apply. -> the merged records."""
    model = module_of(generator)
    state = patch_state(model)
    L.unload_merged(model)
    records = [{"patch_id": pid, "kind": p.kind, "final_losses": p.metadata.get("final_losses")}
               for pid, p in state["applied"].items()]
    state["merged"].extend(records)
    state["applied"].clear()
    return records


@contextlib.contextmanager
def applied_temporarily(generator: GeneratorAdapter, patch: ForgetPatch) -> Iterator[ForgetPatch]:
    """Apply ``patch`` for the ``with`` block and remove it afterwards, even on error."""
    apply(generator, patch)
    try:
        yield patch
    finally:
        remove(generator, patch)


@contextlib.contextmanager
def disabled(generator: GeneratorAdapter) -> Iterator[None]:
    """Render the base generator inside this context (applied LoRA patches are switched off, not removed; delta
    patches stay, as they live in the weights)."""
    model = module_of(generator)
    with L.suppressed(model, L.adapter_names(model)):
        yield


def patchable_modules(model: nn.Module, generator: GeneratorAdapter) -> set[str]:
    """Names of the modules a forget patch may touch: instances of ``generator.lora_layer_types()`` outside any
    mapping network (peft's ``.base_layer`` wrappers seen through)."""
    types = tuple(generator.lora_layer_types())
    return {n.replace(".base_layer", "") for n, m in model.named_modules()
            if isinstance(m, types) and "mapping" not in n.split(".")}


def _apply_lora(model: nn.Module, generator: GeneratorAdapter, patch: ForgetPatch) -> None:
    from peft.utils import set_peft_model_state_dict

    targets = patch.lora_config["target_modules"]
    known = {n.replace(".base_layer", "") for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in known]
    if missing:
        raise PatchMismatchError(f"the patch targets modules {missing[:3]} that this generator does not have; "
                                 "it was made for another architecture")
    allowed = patchable_modules(model, generator)
    outside = [t for t in targets if t not in allowed]
    if outside:
        raise PatchError(f"the patch targets {outside[:3]}, which are not synthesis layers a forget patch may "
                         f"change ({', '.join(t.__name__ for t in generator.lora_layer_types())} outside the "
                         "mapping network); refusing it")
    modules = dict(model.named_modules())
    for t in targets:  # shapes first: peft would allocate the factors before comparing anything
        layer = modules.get(t)
        base = getattr(layer, "base_layer", layer)
        weight = getattr(base, "weight", None)
        a, b = patch.tensors.get(f"{t}.lora_A.weight"), patch.tensors.get(f"{t}.lora_B.weight")
        if weight is None or a is None or b is None or tuple(a.shape) != (patch.lora_config["r"], weight[0].numel()) \
                or tuple(b.shape) != (weight.shape[0], patch.lora_config["r"]):
            raise PatchMismatchError(f"the patch's tensors for {t} do not match that layer on this generator; it was "
                                     "made for another architecture")
    cfg = L.make_lora_config(patch.lora_config["r"], patch.lora_config["lora_alpha"], targets,
                             generator.lora_layer_types())
    name = patch.adapter_name
    try:
        L.add_adapter(model, name, cfg)
    except GuideUnlearnError:
        raise
    except Exception as exc:  # noqa: BLE001 - peft's own errors for a patch it cannot inject
        raise PatchError(f"patch {patch.patch_id} cannot be applied to this generator ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None
    try:
        expected = {}
        for lname, layer in L.lora_layers(model):
            if name in layer.lora_A:
                expected[f"{lname}.lora_A.weight"] = layer.lora_A[name].weight.shape
                expected[f"{lname}.lora_B.weight"] = layer.lora_B[name].weight.shape
        got = {k: tuple(v.shape) for k, v in patch.tensors.items()}
        if set(got) != set(expected) or any(tuple(expected[k]) != got[k] for k in got):
            raise PatchMismatchError("the patch's tensors do not match its target layers on this generator "
                                     "(different names or shapes); it was made for another architecture")
        result = set_peft_model_state_dict(model, patch.tensors, adapter_name=name)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise PatchMismatchError(f"patch tensors {unexpected[:3]} were not used by this generator")
        for lname, layer in L.lora_layers(model):
            if name in layer.lora_A:
                base = layer.get_base_layer().weight
                if not torch.isfinite(base + layer.get_delta_weight(name)).all():
                    raise PatchError(f"patch {patch.patch_id}: its delta makes {lname} non-finite; the patch is "
                                     "corrupted or hostile")
    except GuideUnlearnError:
        L.delete_adapter(model, name)
        raise
    except Exception as exc:  # noqa: BLE001 - peft's own errors
        L.delete_adapter(model, name)
        raise PatchError(f"patch {patch.patch_id} cannot be applied to this generator ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None


def _add_delta(model: nn.Module, patch: ForgetPatch, sign: float, generator: Optional[GeneratorAdapter] = None
               ) -> None:
    params = {n.replace(".base_layer", ""): p for n, p in model.named_parameters() if ".lora_" not in n}
    for n, t in patch.tensors.items():
        if n not in params or tuple(params[n].shape) != tuple(t.shape):
            raise PatchMismatchError(f"delta patch tensor {n} {tuple(t.shape)} has no matching parameter in this "
                                     "generator; it was made for another architecture")
    if generator is not None:
        allowed = {n.replace(".base_layer", "") for n in generator.full_finetune_parameters()}
        outside = sorted(n for n in patch.tensors if n not in allowed)
        if outside:
            raise PatchError(f"the delta patch changes {outside[:3]}, which are not synthesis parameters a forget "
                             "patch may change (never the mapping network); refusing it")
        for n, t in patch.tensors.items():
            if not torch.isfinite(params[n].detach() + t.to(params[n])).all():
                raise PatchError(f"the delta patch makes {n} non-finite; the patch is corrupted or hostile")
    with torch.no_grad():
        for n, t in patch.tensors.items():
            params[n].add_(t.to(params[n]), alpha=sign)
