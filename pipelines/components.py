"""The parts an :class:`~guide_unlearn.pipelines.eraser.IdentityEraser` holds besides its generator (perceptual
distance, inverter, identity model), built at their first use, and the settings it recommends."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Optional

from guide_unlearn.config import EraseConfig
from guide_unlearn.errors import ConfigError

logger = logging.getLogger("guide_unlearn.pipelines.eraser")


class Deferred:
    """A component built at its first use: ``Deferred(factory)``; ``build()`` -> the component."""

    def __init__(self, factory):
        self.build = factory

    def __repr__(self) -> str:
        return "<built at first use>"


class LazyComponent:
    """An eraser attribute holding a component, a :class:`Deferred` one (built at first read) or None (then
    ``default(eraser)`` at first read, when a default is given; else None stays None)."""

    def __init__(self, default: Optional[Callable[[Any], Any]] = None, doc: str = ""):
        self.default, self.__doc__ = default, doc

    def __set_name__(self, owner, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = getattr(obj, self.slot)
        if isinstance(value, Deferred):
            value = value.build()  # the model's default component (None: the default below)
        if value is None and self.default is not None:
            value = self.default(obj)
        setattr(obj, self.slot, value)
        return value

    def __set__(self, obj, value) -> None:
        setattr(obj, self.slot, value)


def default_perceptual(eraser) -> Any:
    """LPIPS-VGG if its weights are found, else the labelled stand-in (one warning)."""
    from guide_unlearn.adapters.perceptual import default_perceptual as build

    return build(eraser.generator.w_avg.device)


def default_inverter(eraser) -> Any:
    """The optimisation projector over the eraser's generator and perceptual distance."""
    from guide_unlearn.adapters.projector import OptimizationInverter

    return OptimizationInverter(eraser.generator, eraser.perceptual)


def check_fields(overrides: dict[str, Any]) -> None:
    """Keyword settings must name EraseConfig fields (a typo would otherwise be a bare TypeError)."""
    known = {f.name for f in dataclasses.fields(EraseConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        import difflib

        hints = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise ConfigError(f"unknown erase settings {unknown}{hint}; the EraseConfig fields are {sorted(known)}")


def warn_dropped_defaults(config: EraseConfig, erase_defaults: dict[str, Any], name: Optional[str]) -> None:
    """An explicit config built from EraseConfig() silently loses a model's recommended settings: say so."""
    plain = EraseConfig()
    dropped = {k: v for k, v in erase_defaults.items()
               if getattr(config, k) == getattr(plain, k) and getattr(plain, k) != v and not config.full_finetune}
    if dropped:
        logger.warning("this config does not use %s's recommended settings %s; to change a few settings and keep "
                       "the rest use eraser.erase(photo, iterations=...) or eraser.default_config(iterations=...)",
                       name or "this model", ", ".join(f"{k}={v!r}" for k, v in sorted(dropped.items())))


def provenance(name: Optional[str]) -> dict[str, Any]:
    """Patch metadata naming the base: ``base_name`` and, when the registry knows it, ``base_license``."""
    from guide_unlearn.pipelines.registry import base_license

    lic = base_license(name)
    return {"base_name": name, **({"base_license": lic} if lic else {})}


def eraser_repr(eraser) -> str:
    """``IdentityEraser``'s one-line repr: model, family, device, applied / merged patch ids and its components
    (a component not built yet is shown as such: nothing is built or loaded to describe it)."""
    parts = []
    for name in ("inverter", "identity_model", "perceptual"):
        value = eraser.__dict__.get("_" + name)
        parts.append(f"{name}={value if value is None or isinstance(value, Deferred) else type(value).__name__}")
    return (f"IdentityEraser(model={eraser.name!r}, family={eraser.generator.family!r}, device={eraser.device}, "
            f"applied={[p.patch_id for p in eraser.applied_patches]}, "
            f"merged={[m.get('patch_id') for m in eraser.merged_patches]}, {', '.join(parts)})")
