"""Schemas of the data a file holds: what each kind's parsed content must look like before anything uses it.

A schema is a small tree of checkers (:class:`Str`, :class:`Int`, :class:`Num`, :class:`Bool`, :class:`List`,
:class:`Map`, :class:`Dict`, :class:`Opt`, :class:`OneOf`, :class:`AnyJSON`). ``schema.check(value, where, error)``
returns the value (lists as lists, tuples as lists) or raises ``error`` naming the path of the offending value
(``forget_patch.json: loss_history.step[3]: expected a number, got 'x'``). Every bound is explicit, so a value that
passed can be formatted, summed, plotted or iterated without a surprise.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import GuideUnlearnError

__all__ = ["AnyJSON", "Bool", "Dict", "Int", "List", "Map", "Num", "OneOf", "Opt", "Schema", "Str"]

ErrorClass = type


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Schema:
    """Base class: ``check(value, where, error)`` -> the validated value, or ``error(message)``."""

    what = "a value"

    def check(self, value: Any, where: str, error: ErrorClass) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fail(self, value: Any, where: str, error: ErrorClass, why: str = "") -> GuideUnlearnError:
        return error(f"{where}: expected {self.what}{why}, got {_show(value)}; the file is malformed or hostile")


class Str(Schema):
    """A string of at most ``max_len`` characters, optionally matching ``pattern`` (full match) or one of
    ``choices``."""

    def __init__(self, max_len: int = 256, pattern: Optional[str] = None, choices: Optional[Sequence[str]] = None):
        self.max_len, self.pattern = max_len, re.compile(pattern) if pattern else None
        self.choices = tuple(choices) if choices else None
        self.what = (f"one of {list(self.choices)}" if self.choices else
                     f"a string of at most {max_len} characters" + (f" matching {pattern}" if pattern else ""))

    def check(self, value: Any, where: str, error: ErrorClass) -> str:
        if not isinstance(value, str) or len(value) > self.max_len:
            raise self.fail(value, where, error)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise self.fail(value, where, error)
        if self.choices is not None and value not in self.choices:
            raise self.fail(value, where, error)
        return value


class Int(Schema):
    """An integer (never a bool) in [lo, hi]."""

    def __init__(self, lo: int = -(1 << 62), hi: int = 1 << 62):
        self.lo, self.hi = lo, hi
        self.what = f"an integer in [{lo}, {hi}]"

    def check(self, value: Any, where: str, error: ErrorClass) -> int:
        if type(value) is not int or not self.lo <= value <= self.hi:
            raise self.fail(value, where, error)
        return value


class Num(Schema):
    """A number (int or float, never a bool); ``finite`` refuses NaN / Inf; optional bounds."""

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, finite: bool = False):
        self.lo, self.hi, self.finite = lo, hi, finite
        self.what = "a finite number" if finite else "a number"
        if lo > -math.inf or hi < math.inf:
            self.what += f" in [{lo}, {hi}]"

    def check(self, value: Any, where: str, error: ErrorClass) -> float:
        if type(value) not in (int, float):
            raise self.fail(value, where, error)
        if isinstance(value, int) and abs(value) > (1 << 64):
            raise self.fail(value, where, error)
        if math.isnan(value):
            if self.finite:
                raise self.fail(value, where, error)
            return value
        if (self.finite and math.isinf(value)) or not self.lo <= value <= self.hi:
            raise self.fail(value, where, error)
        return value


class Bool(Schema):
    what = "true or false"

    def check(self, value: Any, where: str, error: ErrorClass) -> bool:
        if type(value) is not bool:
            raise self.fail(value, where, error)
        return value


class Opt(Schema):
    """``inner`` or None."""

    def __init__(self, inner: Schema):
        self.inner = inner
        self.what = f"{inner.what} or null"

    def check(self, value: Any, where: str, error: ErrorClass) -> Any:
        return None if value is None else self.inner.check(value, where, error)


class OneOf(Schema):
    """The first of ``options`` that accepts the value."""

    def __init__(self, *options: Schema):
        self.options = options
        self.what = " or ".join(o.what for o in options)

    def check(self, value: Any, where: str, error: ErrorClass) -> Any:
        for option in self.options:
            try:
                return option.check(value, where, error)
            except GuideUnlearnError:
                continue
        raise self.fail(value, where, error)


class List(Schema):
    """A list (or tuple) of at most ``max_len`` items, each checked by ``item``."""

    def __init__(self, item: Schema, max_len: int = 10_000, min_len: int = 0):
        self.item, self.max_len, self.min_len = item, max_len, min_len
        self.what = f"a list of {min_len}..{max_len} items"

    def check(self, value: Any, where: str, error: ErrorClass) -> list:
        if not isinstance(value, (list, tuple)) or not self.min_len <= len(value) <= self.max_len:
            raise self.fail(value, where, error)
        return [self.item.check(v, f"{where}[{i}]", error) for i, v in enumerate(value)]


class Map(Schema):
    """An object with at most ``max_len`` entries: string keys checked by ``key``, values by ``value``."""

    def __init__(self, value: Schema, key: Optional[Str] = None, max_len: int = 1000):
        self.value, self.key, self.max_len = value, key or Str(256), max_len
        self.what = f"an object of at most {max_len} entries"

    def check(self, value: Any, where: str, error: ErrorClass) -> dict:
        if not isinstance(value, Mapping) or len(value) > self.max_len:
            raise self.fail(value, where, error)
        out = {}
        for k, v in value.items():
            self.key.check(k, f"{where} (a key)", error)
            out[k] = self.value.check(v, f"{where}.{k}", error)
        return out


class Dict(Schema):
    """An object with known ``fields`` ({name: schema}); ``required`` names must be present; other keys are
    checked by ``extra`` (None: refused; :class:`AnyJSON` to accept any bounded value). ``rule`` (optional) is a
    cross-field check ``rule(obj) -> message or None`` run on the validated object."""

    def __init__(self, fields: Mapping[str, Schema], required: Sequence[str] = (), extra: Optional[Schema] = None,
                 max_len: int = 1000, rule: Optional[Callable[[dict], Optional[str]]] = None):
        self.fields, self.required, self.extra, self.max_len, self.rule = dict(fields), tuple(required), extra, \
            max_len, rule
        self.what = "an object" + (f" with {', '.join(self.required)}" if self.required else "")

    def check(self, value: Any, where: str, error: ErrorClass) -> dict:
        if not isinstance(value, Mapping) or len(value) > self.max_len:
            raise self.fail(value, where, error)
        missing = [k for k in self.required if k not in value]
        if missing:
            raise error(f"{where}: missing {', '.join(missing)}; the file is incomplete or not of this kind")
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise error(f"{where}: key {_show(k)} is not a string; the file is malformed")
            schema = self.fields.get(k, self.extra)
            if schema is None:
                raise error(f"{where}: unexpected key {k[:60]!r}; the file is not of this kind (or from a newer "
                            "version of guide_unlearn)")
            out[k] = schema.check(v, f"{where}.{k}", error)
        if self.rule is not None:
            why = self.rule(out)
            if why:
                raise error(f"{where}: {why}; the file is malformed or hostile")
        return out


class AnyJSON(Schema):
    """Any plain data (None, bool, number, string, list, object): the parse already bounded its size and depth;
    strings are at most ``max_str`` characters."""

    what = "plain data"

    def __init__(self, max_str: int = 1 << 20):
        self.max_str = max_str

    def check(self, value: Any, where: str, error: ErrorClass) -> Any:
        stack = [(value, where)]
        while stack:
            item, at = stack.pop()
            if item is None or type(item) in (bool, int, float):
                continue
            if isinstance(item, str):
                if len(item) > self.max_str:
                    raise self.fail(item, at, error, f" (strings of at most {self.max_str} characters)")
                continue
            if isinstance(item, (list, tuple)):
                stack.extend((v, at) for v in item)
            elif isinstance(item, Mapping):
                if not all(isinstance(k, str) for k in item):
                    raise error(f"{at}: an object key is not a string; the file is malformed")
                stack.extend((v, f"{at}.{k}") for k, v in item.items())
            else:
                raise self.fail(item, at, error)
        return value
