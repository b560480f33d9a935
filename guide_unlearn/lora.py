"""Weight-space LoRA for modulated convolutions, as a peft LoRA layer.

Demodulation depends on the whole effective weight, so the low-rank delta is added to the weight BEFORE
modulation (docs/patch_format.md): ``W_eff = W + (alpha / r) * (B @ A).view(O, I, k, k)``, A: [r, I·k·k], B: [O, r],
B = 0 at init. This is exact, mergeable in place, and the delta is computed once per forward, not per sample.

The layer is registered with peft for whatever layer classes a generator adapter declares
(``lora_layer_types()``), so peft's machinery — named adapters, enable/disable, several active adapters,
merge/unmerge, state-dict save/load — works unchanged. The core never names a concrete layer class.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterable, Iterator, Optional, Sequence

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora.layer import LoraLayer
from peft.tuners.tuners_utils import check_adapters_to_merge
from torch import nn

from .errors import ConfigError, PatchStateError

try:  # peft's public functions for integrations; older peft: each layer's public delete_adapter (see below)
    from peft.functional import delete_adapter as _peft_delete_adapter
except ImportError:  # pragma: no cover - peft without peft.functional
    _peft_delete_adapter = None


class WeightDeltaLoraLayer(nn.Module, LoraLayer):
    """peft LoRA wrapper for any layer with a ``weight`` [O, I, *k] whose forward accepts ``weight_delta``."""

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: LoraConfig, r: int = 0,
                 lora_alpha: float = 1, **kwargs) -> None:
        super().__init__()
        LoraLayer.__init__(self, base_layer, **kwargs)
        weight = self.get_base_layer().weight
        # peft's LoRA factors are Linear layers: A maps I·k·k -> r, B maps r -> O.
        self.in_features = weight[0].numel()
        self.out_features = weight.shape[0]
        self._suppressed: frozenset[str] = frozenset()
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """The adapter's weight delta, shaped like the base weight [O, I, *k] (alpha / r included)."""
        a = self.lora_A[adapter].weight  # [r, I*k*k]
        b = self.lora_B[adapter].weight  # [O, r]
        base = self.get_base_layer().weight
        return ((b @ a) * self.scaling[adapter]).view_as(base).to(base.dtype)

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """Add the adapters' deltas to the base weight in place."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        base = self.get_base_layer().weight
        for name in adapter_names:
            if name not in self.lora_A:
                continue
            delta = self.get_delta_weight(name)
            if safe_merge and not torch.isfinite(base.data + delta).all():
                raise PatchStateError(f"merging adapter {name!r} would make weights non-finite")
            base.data += delta
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract merged deltas again (exact up to float rounding)."""
        base = self.get_base_layer().weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.lora_A:
                base.data -= self.get_delta_weight(name)

    def _live(self) -> list[str]:
        return [name for name in self.active_adapters
                if name in self.lora_A and name not in self._suppressed and name not in self.merged_adapters]

    def active_delta(self) -> Optional[torch.Tensor]:
        """Sum of the deltas of the active, unmerged, unsuppressed adapters, or None."""
        delta = None
        for name in self._live():
            d = self.get_delta_weight(name)
            delta = d if delta is None else delta + d
        return delta

    def active_low_rank_delta(self) -> Optional["LowRankDelta"]:
        """The same sum as :meth:`active_delta`, kept as factors (None when no adapter is live)."""
        live = self._live()
        if not live:
            return None
        return LowRankDelta(self.get_base_layer().weight,
                            [self.lora_A[n].weight for n in live],
                            [self.lora_B[n].weight * self.scaling[n] for n in live])

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Base forward with ``weight_delta`` = the active adapters' delta (added before modulation).

        Base layers that declare ``accepts_low_rank_delta`` get it factored (:class:`LowRankDelta`), so they can
        convolve with the thin factors instead of building the weight gradient of the whole kernel."""
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        extra = kwargs.pop("weight_delta", None)
        if extra is None and getattr(self.get_base_layer(), "accepts_low_rank_delta", False):
            delta = self.active_low_rank_delta()
        else:
            delta = self.active_delta()
            if delta is not None and extra is not None:
                delta = delta + (extra.dense() if isinstance(extra, LowRankDelta) else extra)
        if delta is None:
            delta = extra
        if delta is not None:
            kwargs["weight_delta"] = delta
        return self.base_layer(x, *args, **kwargs)

    def __repr__(self) -> str:
        return "lora." + super().__repr__()


class LowRankDelta:
    """A sum of LoRA deltas kept as factors: sum_j B_j @ A_j (scaling folded into B_j), shaped like ``base``.

    base: the layer's weight [O, I, *k]; downs: A_j [r_j, I·prod(k)]; ups: B_j·scale_j [O, r_j].
    """

    def __init__(self, base: torch.Tensor, downs: Sequence[torch.Tensor], ups: Sequence[torch.Tensor]):
        self.base = base
        self.downs, self.ups = list(downs), list(ups)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (down [R, I·prod(k)], up [O, R]) with R = sum of the ranks; up @ down == dense().view(O, -1)."""
        if len(self.downs) == 1:
            return self.downs[0].to(self.base.dtype), self.ups[0].to(self.base.dtype)
        return torch.cat(self.downs).to(self.base.dtype), torch.cat(self.ups, dim=1).to(self.base.dtype)

    def dense(self) -> torch.Tensor:
        """The delta as one tensor shaped like the base weight [O, I, *k]."""
        down, up = self.factors()
        return (up @ down).view_as(self.base)


def make_lora_config(rank: int, alpha: float, target_modules: Sequence[str],
                     layer_types: Iterable[type]) -> LoraConfig:
    """A peft ``LoraConfig`` whose custom-module mapping sends ``layer_types`` to :class:`WeightDeltaLoraLayer`.

    peft does not store the mapping in adapter_config.json; call this again before loading a saved adapter.
    """
    if rank < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
    if not target_modules:
        raise ConfigError("a LoRA needs at least one target module")
    # Names of layers that are already wrapped by another adapter end in ".base_layer": target the wrapper.
    targets = sorted({t.replace(".base_layer", "") for t in target_modules})
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0,
                     init_lora_weights=True, bias="none")
    cfg._register_custom_module({t: WeightDeltaLoraLayer for t in layer_types})
    return cfg


def lora_layers(model: nn.Module) -> Iterator[tuple[str, WeightDeltaLoraLayer]]:
    """(name, layer) for every weight-delta LoRA layer in ``model``."""
    for name, module in model.named_modules():
        if isinstance(module, WeightDeltaLoraLayer):
            yield name, module


def adapter_names(model: nn.Module) -> list[str]:
    """Names of the adapters present in ``model`` (in insertion order)."""
    names: list[str] = []
    for _, layer in lora_layers(model):
        for n in layer.lora_A.keys():
            if n not in names:
                names.append(n)
    return names


def add_adapter(model: nn.Module, name: str, config: LoraConfig) -> None:
    """Inject a new named adapter (B = 0, so the model's output is unchanged) and keep the others active."""
    if name in adapter_names(model):
        raise PatchStateError(f"an adapter named {name!r} is already present")
    previous = active_adapters(model)
    with warnings.catch_warnings():
        # peft warns about every custom layer type and about models holding several adapters: both intended.
        warnings.filterwarnings("ignore", message=".*(Unsupported layer type|Already found a `peft_config`).*")
        inject_adapter_in_model(config, model, adapter_name=name)
    set_active_adapters(model, previous + [name])


def active_adapters(model: nn.Module) -> list[str]:
    """Adapters currently active (the union over layers, in insertion order)."""
    names: list[str] = []
    for _, layer in lora_layers(model):
        for n in layer.active_adapters:
            if n not in names and n in layer.lora_A:
                names.append(n)
    return names


def set_active_adapters(model: nn.Module, names: Sequence[str], trainable: Sequence[str] = ()) -> None:
    """Activate exactly ``names`` (stacked: their deltas add). Only adapters in ``trainable`` keep
    requires_grad=True; every other adapter is frozen."""
    for _, layer in lora_layers(model):
        layer.set_adapter([n for n in names if n in layer.lora_A], inference_mode=True)
        for n in trainable:
            if n in layer.lora_A:
                layer.lora_A[n].weight.requires_grad_(True)
                layer.lora_B[n].weight.requires_grad_(True)


def delete_adapter(model: nn.Module, name: str) -> None:
    """Remove a named adapter from every layer (its parameters are dropped)."""
    if name not in adapter_names(model):
        raise PatchStateError(f"no adapter named {name!r} is present")
    keep = [n for n in active_adapters(model) if n != name]
    for _, layer in lora_layers(model):
        if name in layer.merged_adapters:
            raise PatchStateError(f"adapter {name!r} is merged; unmerge it before removing it")
    if _peft_delete_adapter is not None:  # peft's public function (peft.functional)
        _peft_delete_adapter(model, name, prefix="lora_", layer_cls=WeightDeltaLoraLayer)
    else:  # older peft: each layer's public BaseTunerLayer.delete_adapter
        for _, layer in lora_layers(model):
            if name in layer.lora_A:
                layer.delete_adapter(name)
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict):
        peft_config.pop(name, None)
        if not peft_config:
            del model.peft_config
    _unwrap_empty(model)
    set_active_adapters(model, keep)


def _unwrap_empty(model: nn.Module) -> None:
    """Put the plain base layer back wherever a LoRA wrapper holds no adapter any more."""
    for name, layer in list(lora_layers(model)):
        if len(layer.lora_A) == 0:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, layer.get_base_layer())


def unload_merged(model: nn.Module) -> None:
    """Merge every adapter into its base weight and put the plain base layers back (no LoRA wrappers left)."""
    for name, layer in list(lora_layers(model)):
        layer.merge(adapter_names=list(layer.lora_A.keys()))
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


def reinit_lora_a(model: nn.Module, name: str, generator: torch.Generator) -> None:
    """Re-draw the adapter's A factors from ``generator`` (Kaiming-uniform bound 1/sqrt(fan_in), as peft) so the
    initialisation is part of the seeded run instead of torch's global RNG; B stays 0."""
    with torch.no_grad():
        for _, layer in lora_layers(model):
            if name in layer.lora_A:
                w = layer.lora_A[name].weight
                bound = 1.0 / w.shape[1] ** 0.5
                fresh = torch.rand(w.shape, generator=generator, device=generator.device, dtype=torch.float32)
                w.copy_((fresh * 2 - 1).mul_(bound).to(w))


def adapter_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    """The A and B parameters of one adapter, in module order."""
    out: list[nn.Parameter] = []
    for _, layer in lora_layers(model):
        if name in layer.lora_A:
            out += [layer.lora_A[name].weight, layer.lora_B[name].weight]
    return out


@contextlib.contextmanager
def suppressed(model: nn.Module, names: Sequence[str]) -> Iterator[None]:
    """Temporarily render without the named adapters (the others stay active). This is how the erase loop
    gets the source generator G_s from the same module: no second copy of the generator in memory."""
    layers = [layer for _, layer in lora_layers(model)]
    saved = [layer._suppressed for layer in layers]
    try:
        for layer in layers:
            layer._suppressed = frozenset(names)
        yield
    finally:
        for layer, s in zip(layers, saved):
            layer._suppressed = s
