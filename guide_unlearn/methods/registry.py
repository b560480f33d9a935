"""The registry of erase methods (a leaf of the methods package: the plug-ins import it to register themselves)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..errors import ConfigError
from .base import EraseMethod, LoraSettings, MethodConfig

__all__ = ["RegisteredMethod", "check_supported", "get_method", "list_methods", "register_method"]


@dataclass(frozen=True)
class RegisteredMethod:
    """A registry entry: the method's name, its :class:`EraseMethod` subclass and its :class:`MethodConfig`."""

    name: str
    method_class: type
    config_class: type


_METHODS: dict[str, RegisteredMethod] = {}


def register_method(name: str, method_class: type, config_class: type) -> RegisteredMethod:
    """Register an erase method under ``name`` (lower case letters, digits, '-' or '_'). A name already taken by
    another class is a ConfigError (registering the same classes again is a no-op). -> the entry."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_" for c in name) or name != name.lower():
        raise ConfigError(f"a method name must be lower-case letters, digits, '-' or '_', got {name!r}")
    if not (isinstance(method_class, type) and issubclass(method_class, EraseMethod)):
        raise ConfigError(f"method {name!r}: {method_class!r} is not an EraseMethod subclass")
    if not (isinstance(config_class, type) and issubclass(config_class, MethodConfig)):
        raise ConfigError(f"method {name!r}: {config_class!r} is not a MethodConfig subclass")
    if method_class.trains not in ("lora", "full"):
        raise ConfigError(f"method {name!r}: trains must be 'lora' or 'full', got {method_class.trains!r}")
    if method_class.trains == "lora" and not issubclass(config_class, LoraSettings):
        raise ConfigError(f"method {name!r} trains a LoRA patch: its config must subclass LoraSettings")
    entry = RegisteredMethod(name, method_class, config_class)
    known = _METHODS.get(name)
    if known is not None and known != entry:
        raise ConfigError(f"an erase method named {name!r} is already registered ({known.method_class.__name__}); "
                          "choose another name")
    _METHODS[name] = entry
    return entry


def get_method(name: str) -> RegisteredMethod:
    """The registered method ``name``; an unknown name is a ConfigError naming the registered ones."""
    entry = _METHODS.get(name) if isinstance(name, str) else None
    if entry is None:
        near = difflib.get_close_matches(str(name), list(_METHODS), n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown erase method {name!r}{hint}; the methods are {', '.join(list_methods())}")
    return entry


def list_methods() -> list[str]:
    """The names of the registered erase methods, in registration order (the shipped ones first)."""
    return list(_METHODS)


def check_supported(name: str, people: int = 1, keep: bool = False) -> None:
    """Refuse (ConfigError) before any work a request that method ``name`` cannot do: several people in one patch
    (``people`` > 1) or keeping earlier people erased (``keep``); the message names the methods that can."""
    cls = get_method(name).method_class
    if people > 1 and not cls.several_people:
        able = [m for m in _METHODS if _METHODS[m].method_class.several_people]
        raise ConfigError(f"method {name!r} erases one person per patch, not {people}; for several people in one "
                          f"patch use method={' or '.join(repr(m) for m in able)}, or erase them one at a time",
                          cli_message=f"--method {name} erases one person per patch; with --joint N use "
                                      f"--method {' or '.join(able)}, or --joint 1")
    if keep and not cls.keeps_erased:
        able = [m for m in _METHODS if _METHODS[m].method_class.keeps_erased]
        raise ConfigError(f"method {name!r} cannot keep earlier people erased (keep_erased); use "
                          f"method={' or '.join(repr(m) for m in able)}, or erase without keep_erased")
