"""The parts an :class:`~guide_unlearn.pipelines.eraser.IdentityEraser` holds besides its generator (perceptual
distance, inverter, identity model), built at their first use; the settings it recommends, and how an erase call's
keywords become an :class:`~guide_unlearn.config.EraseConfig` and :class:`~guide_unlearn.config.RunOptions`."""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Optional, Protocol

import torch

from guide_unlearn.config import (RUN_FIELDS, SHARED_FIELDS, EraseConfig, RunOptions, route_settings,
                                  unknown_settings_message)
from guide_unlearn.errors import ConfigError
from guide_unlearn.methods import get_method, list_methods
from guide_unlearn.protocols import GeneratorAdapter, IdentityModel, Inverter, PerceptualDistance

logger = logging.getLogger("guide_unlearn.pipelines.eraser")


class EraserParts(Protocol):
    """What the pipeline helpers (photos, measure, requests) read from an eraser; an
    :class:`~guide_unlearn.pipelines.eraser.IdentityEraser` has all of it (they depend on this, not on the eraser)."""

    generator: GeneratorAdapter
    inverter: Inverter
    identity_model: Optional[IdentityModel]
    perceptual: PerceptualDistance
    name: Optional[str]
    erase_defaults: dict[str, Any]

    @property
    def device(self) -> torch.device: ...


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


def default_config(erase_defaults: Mapping[str, Any], method: str, settings: Mapping[str, Any]) -> EraseConfig:
    """``method``'s preset with a model's recommended settings (``erase_defaults``: the shared recipe's settings,
    or the method's own) under ``settings`` — for methods that take a model's recommendation
    (``EraseMethod.model_defaults``: not the paper's recipe). An unknown setting is a ConfigError naming the valid
    ones."""
    spec = get_method(method)
    route_settings(method, settings)  # a misspelt setting is named before anything else
    base: dict[str, Any] = {}
    if spec.method_class.model_defaults:
        own = spec.config_class.field_names()
        base = {k: v for k, v in erase_defaults.items() if k in SHARED_FIELDS or k in own}
    return EraseConfig.preset(method, **{**base, **settings})


def check_erase_defaults(erase_defaults: Mapping[str, Any]) -> None:
    """A model's recommended settings must be settings of the recipe or of a method that takes them, with valid
    values (checked when the eraser is built, not at its first erase)."""
    lora_like = [m for m in list_methods() if get_method(m).method_class.model_defaults]
    known = set(SHARED_FIELDS).union(*(get_method(m).config_class.field_names() for m in lora_like))
    unknown = sorted(set(erase_defaults) - known)
    if unknown:
        raise ConfigError(f"erase_defaults {unknown} are not erase settings; use settings of EraseConfig or of the "
                          f"methods {lora_like}")
    for m in lora_like:
        default_config(erase_defaults, m, {})


def split_keywords(method: str, keywords: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An erase call's keyword settings -> (erase settings for ``method``, RunOptions settings). An unknown name is
    a ConfigError naming the nearest valid one and listing them all."""
    run = {k: v for k, v in keywords.items() if k in RUN_FIELDS}
    rest = {k: v for k, v in keywords.items() if k not in RUN_FIELDS}
    own = get_method(method).config_class.field_names()
    unknown = sorted(k for k in rest if k not in SHARED_FIELDS and k not in own)
    if unknown:
        raise ConfigError(unknown_settings_message(unknown, method, RUN_FIELDS))
    return rest, run


def resolve(erase_defaults: Mapping[str, Any], name: Optional[str], config: Optional[EraseConfig],
            method: Optional[str], keywords: Mapping[str, Any], run: Optional[RunOptions],
            default_method: str = "lora") -> tuple[EraseConfig, RunOptions]:
    """What an erase call asked for -> (EraseConfig, RunOptions). Without ``config``: ``method``'s (else
    ``default_method``'s) preset with the model's recommended settings and the keyword settings on top; with it:
    the keyword settings on top of ``config`` (a ``method`` that disagrees with it is a ConfigError). Keywords
    naming :class:`RunOptions` fields go to the run options (on top of ``run``)."""
    if config is not None and not isinstance(config, EraseConfig):
        raise ConfigError(f"config must be an EraseConfig, got {type(config).__name__}")
    if config is not None and method is not None and method != config.method:
        raise ConfigError(f"config is a {config.method!r} recipe but method={method!r}; give one of them (or "
                          f"config.replace(method={method!r}))")
    chosen = method or (config.method if config is not None else default_method)
    settings, run_settings = split_keywords(chosen, keywords)
    if config is None:
        config = default_config(erase_defaults, chosen, settings)
    else:
        warn_dropped_defaults(config, erase_defaults, name)
        config = config.replace(**settings) if settings else config
    options = run if run is not None else RunOptions()
    if not isinstance(options, RunOptions):
        raise ConfigError(f"run must be a RunOptions, got {type(options).__name__}")
    return config, options.replace(**run_settings) if run_settings else options


def warn_dropped_defaults(config: EraseConfig, erase_defaults: Mapping[str, Any], name: Optional[str]) -> None:
    """An explicit config built from EraseConfig() silently loses a model's recommended settings: say so."""
    if not get_method(config.method).method_class.model_defaults:
        return
    plain = EraseConfig(method=config.method).settings()
    now = config.settings()
    dropped = {k: v for k, v in erase_defaults.items() if k in now and now[k] == plain[k] and plain[k] != v}
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
