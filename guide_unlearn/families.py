"""Backend families: how a generator backend declares itself to the loaders, the way peft registers a tuner.

Each ``adapters/<family>/__init__.py`` calls :func:`register_family` once with a :class:`GeneratorFamily`
(its name, model class, the checkpoint layouts and model-folder classes it recognises, its converters, its
named and tiny configurations). Packages that read checkpoints for another family (e4e's ``.pt`` holds a
StyleGAN2 decoder) add a :class:`CheckpointFormat` with :func:`register_format`. Loading and assembly
(``guide_unlearn.pipelines``) look families up here instead of branching on class names, so a new generator
family is one sub-package under ``adapters/`` and nothing else.

This module is core: it names no backend. Registrations happen when ``guide_unlearn.adapters`` is imported
(the pipelines import it explicitly). References to backend code are ``"module:attribute"`` strings (or plain
callables), imported only when used, so registering a family costs nothing and a missing optional dependency
surfaces as :class:`~guide_unlearn.errors.BackendUnavailableError` when that family is actually needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import torch

from .errors import BackendUnavailableError, ConfigError

__all__ = [
    "CheckpointFormat",
    "GeneratorFamily",
    "Ref",
    "checkpoint_formats",
    "discover_backends",
    "family_for_folder_class",
    "family_for_pickle_class",
    "get_family",
    "get_format",
    "list_families",
    "register_family",
    "register_format",
    "resolve_ref",
]

#: A reference to backend code: ``"package.module:attribute"`` (imported when first used) or the object itself.
Ref = Union[str, Callable[..., Any], Mapping[str, Any]]


def resolve_ref(ref: Ref, what: str = "") -> Any:
    """The object a :data:`Ref` names, importing its module now.

    Raises BackendUnavailableError when the module (or a library it needs) is not installed, or lacks the
    attribute; the message names ``what`` needed it.
    """
    if not isinstance(ref, str):
        return ref
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"a backend reference is 'package.module:attribute', got {ref!r}")
    try:
        mod = import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or module
        if not missing.startswith("guide_unlearn"):
            raise BackendUnavailableError(f"{what or ref} needs the Python package '{missing}'; install it (see the "
                                          "extras in README, e.g. `pip install guide-unlearn[eg3d]`)") from None
        if missing == module or module.startswith(missing + "."):
            raise BackendUnavailableError(f"{what or ref} needs {module}, which is not installed; reinstall or "
                                          "update guide_unlearn (the backend ships with the library)") from None
        raise
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise BackendUnavailableError(f"{what or ref} needs {module}.{attr}, which this version of the backend "
                                      "lacks") from None


@dataclass(frozen=True)
class CheckpointFormat:
    """One checkpoint layout a backend reads (beyond its own model folders and pickles).

    name:      short id (``"stylegan2-rosinality"``); also the safetensors ``format`` metadata it answers to.
    family:    the generator family of the model it yields (``"stylegan2"``).
    container: ``"state-dict"`` — a flat mapping name -> tensor (safetensors or torch.save);
               ``"checkpoint"`` — a torch.save mapping with other keys (``{'g_ema', 'latent_avg'}``, e4e's ``.pt``).
    recognise: ``f(obj) -> bool``: whether ``obj`` is in this layout (must not raise on foreign input).
    read:      ``f(obj, config=None, what="") -> generator`` (None for inverter-only layouts).
    kind:      ``"generator"``, ``"inverter"`` or ``"generator+inverter"`` (a file holding both).
    read_inverter: ``f(obj, path=None, generator=None, device="cpu") -> inverter`` for layouts holding one.
    """

    name: str
    family: str
    container: str
    recognise: Ref
    read: Optional[Ref] = None
    kind: str = "generator"
    description: str = ""
    read_inverter: Optional[Ref] = None

    def matches(self, obj: Any) -> bool:
        """Whether ``obj`` is in this layout (False when the backend that recognises it is not installed)."""
        try:
            return bool(resolve_ref(self.recognise, f"the {self.name} checkpoint reader")(obj))
        except BackendUnavailableError:
            return False

    def reader(self) -> Callable[..., Any]:
        """The generator read function (imports the backend now)."""
        if self.read is None:
            raise ConfigError(f"a {self.name} checkpoint holds no generator")
        return resolve_ref(self.read, f"a {self.name} checkpoint")

    def inverter_reader(self) -> Callable[..., Any]:
        """The inverter read function (imports the backend now)."""
        if self.read_inverter is None:
            raise ConfigError(f"a {self.name} checkpoint holds no inverter")
        return resolve_ref(self.read_inverter, f"a {self.name} checkpoint")

    @property
    def yields_generator(self) -> bool:
        """Whether this layout holds a generator."""
        return self.kind in ("generator", "generator+inverter")


@dataclass(frozen=True)
class GeneratorFamily:
    """Everything the library needs to know about one generator backend.

    name:            family id, also the model class's ``family`` attribute (``"stylegan2"``, ``"eg3d"``).
    model_class:     the :class:`~guide_unlearn.protocols.GeneratorAdapter` class (a diffusers-style
                     ``ModelMixin`` with ``from_pretrained`` / ``save_pretrained``).
    folder_classes:  ``_class_name`` values of a model folder's ``config.json`` that this family loads.
    pickle_classes:  class names of an NVIDIA network pickle's ``G_ema`` this family converts.
    from_pickle:     ``f(state_dict, init_kwargs, attributes) -> model`` for those pickles.
    formats:         other checkpoint layouts it reads (:class:`CheckpointFormat`).
    configs:         named full-size configurations: name -> constructor kwargs (or a Ref to them).
    tiny_config:     constructor kwargs of the family's tiny CPU model (or a Ref to them).
    build_tiny:      ``f(seed=0, device="cpu", **overrides) -> model``: the tiny model, deterministic per seed,
                     eval mode, without touching the caller's global RNG. Default: :meth:`tiny` builds
                     ``model_class(**tiny_config)`` under ``torch.random.fork_rng``.
    input_alignment: the face crop its inverters expect (``"ffhq"``, ``"eg3d"``).
    description:     one line for listings.
    exporter:        ``f(model, path, layout=...) -> Path``: writes the model as a ``.safetensors`` state dict in
                     an official key layout (``guide-unlearn convert --to``); None when the family has none.
    export_layouts:  the layouts ``exporter`` writes (``"nvidia"``, ``"rosinality"``).
    """

    name: str
    model_class: Ref
    folder_classes: tuple[str, ...] = ()
    pickle_classes: tuple[str, ...] = ()
    from_pickle: Optional[Ref] = None
    formats: tuple[CheckpointFormat, ...] = ()
    configs: Mapping[str, Ref] = field(default_factory=dict)
    tiny_config: Optional[Ref] = None
    build_tiny: Optional[Ref] = None
    input_alignment: str = "ffhq"
    description: str = ""
    exporter: Optional[Ref] = None
    export_layouts: tuple[str, ...] = ()

    def cls(self) -> type:
        """The model class (imports the backend now; BackendUnavailableError when it is not installed)."""
        return resolve_ref(self.model_class, f"the {self.name} generator")

    def config(self, name: str) -> dict[str, Any]:
        """The named full-size configuration ``name`` as constructor kwargs; ConfigError for an unknown name."""
        if name not in self.configs:
            raise ConfigError(f"the {self.name} family has no configuration {name!r}; known: "
                              f"{', '.join(sorted(self.configs)) or 'none'}")
        return dict(resolve_ref(self.configs[name], f"the {self.name} configuration {name!r}"))

    def build(self, config: Union[str, Mapping[str, Any]], device: Any = "meta") -> torch.nn.Module:
        """The architecture for ``config`` (a name from ``configs`` or constructor kwargs), without trained weights,
        on ``device`` (default "meta": allocates nothing)."""
        kwargs = self.config(config) if isinstance(config, str) else dict(config)
        cls = self.cls()
        with torch.device(device):
            return cls(**kwargs)

    def tiny(self, seed: int = 0, device: Any = "cpu", **overrides: Any) -> torch.nn.Module:
        """The family's tiny random model (NOT a trained network), deterministic per ``seed``, eval mode.

        The caller's global RNG state is left as it was (initialisation runs under ``torch.random.fork_rng``).
        """
        if self.build_tiny is not None:
            return resolve_ref(self.build_tiny, f"the tiny {self.name} model")(seed=seed, device=device, **overrides)
        if self.tiny_config is None:
            raise ConfigError(f"the {self.name} family declares no tiny configuration")
        config = {**resolve_ref(self.tiny_config, f"the tiny {self.name} configuration"), **overrides}
        cls = self.cls()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with torch.device(device):
                model = cls(**config)
        return model.eval()


_FAMILIES: dict[str, GeneratorFamily] = {}
_FORMATS: dict[str, CheckpointFormat] = {}


def register_family(family: GeneratorFamily, replace: bool = False) -> GeneratorFamily:
    """Declare a generator family (and its ``formats``). Call once, from ``adapters/<family>/__init__.py``.

    Re-registering the same declaration is a no-op; a different one under a taken name raises ConfigError unless
    ``replace``. Returns ``family``.
    """
    old = _FAMILIES.get(family.name)
    if old is not None and old != family and not replace:
        raise ConfigError(f"a generator family called {family.name!r} is already registered; pick another name "
                          "or pass replace=True")
    for cls_name in family.folder_classes + family.pickle_classes:
        for other in _FAMILIES.values():
            if other.name != family.name and cls_name in other.folder_classes + other.pickle_classes:
                raise ConfigError(f"class name {cls_name!r} is already claimed by the {other.name} family")
    _FAMILIES[family.name] = family
    for fmt in family.formats:
        register_format(fmt, replace=True)
    return family


def register_format(fmt: CheckpointFormat, replace: bool = False) -> CheckpointFormat:
    """Declare a checkpoint layout (e.g. from a package that is not itself a generator family). Returns ``fmt``."""
    old = _FORMATS.get(fmt.name)
    if old is not None and old != fmt and not replace:
        raise ConfigError(f"a checkpoint format called {fmt.name!r} is already registered")
    _FORMATS[fmt.name] = fmt
    return fmt


def get_family(name: str) -> GeneratorFamily:
    """The registered family ``name``; ConfigError listing the known ones otherwise.

    Families register when ``guide_unlearn.adapters`` is imported (``import guide_unlearn.pipelines`` modules do).
    """
    try:
        return _FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(_FAMILIES)) or "none (import guide_unlearn.adapters to register the backends)"
        raise ConfigError(f"unknown generator family {name!r}; registered: {known}") from None


def list_families() -> list[GeneratorFamily]:
    """Every registered family, sorted by name."""
    return [_FAMILIES[k] for k in sorted(_FAMILIES)]


def family_for_folder_class(class_name: Any) -> Optional[GeneratorFamily]:
    """The family whose model folders name ``class_name`` in config.json, or None."""
    return next((f for f in _FAMILIES.values() if class_name in f.folder_classes), None)


def family_for_pickle_class(class_name: Any) -> Optional[GeneratorFamily]:
    """The family that converts an NVIDIA pickle whose ``G_ema`` is a ``class_name``, or None."""
    return next((f for f in _FAMILIES.values() if class_name in f.pickle_classes), None)


def get_format(name: str) -> Optional[CheckpointFormat]:
    """The registered checkpoint layout called ``name``, or None."""
    return _FORMATS.get(name)


def checkpoint_formats(container: Optional[str] = None, kind: Optional[str] = None) -> Iterator[CheckpointFormat]:
    """Registered checkpoint layouts in registration order, optionally only one ``container`` and those holding
    a ``kind`` ("generator" or "inverter")."""
    for fmt in list(_FORMATS.values()):
        if container is not None and fmt.container != container:
            continue
        if kind is not None and kind not in fmt.kind.split("+"):
            continue
        yield fmt


def discover_backends() -> None:
    """Import ``guide_unlearn.adapters`` so every installed backend registers itself (idempotent).

    Core code calls this only where a user-facing lookup may come before any pipeline was imported (face
    detectors); it names the backend package, never a concrete backend.
    """
    import_module("guide_unlearn.adapters")
