"""Constants derived from frozen weights, computed once per erase instead of once per forward.

While a LoRA erase trains, every base weight of the generator is frozen: the numbers a layer derives from one
(the squared-weight sums of demodulation, a transposed copy for a transposed convolution, a gain-scaled copy)
are the same at every iteration, for G_s and for G_u alike. Inside :func:`cached_constants` a backend may ask
:func:`derived` for such a number and gets it computed once; outside the scope :func:`derived` just computes it.

Why a scope and not a cache keyed on the tensor: an in-place write through ``param.data`` (what a LoRA merge does)
changes the weight without touching its version counter, so no key could tell a stale entry. The scope is opened
only where nothing writes a weight: around the LoRA training loops (only the adapter trains) and around the
projector's code optimisation (every weight frozen); and only tensors that cannot be trained (``requires_grad``
False nn.Parameters) are ever cached.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Callable, Iterator, Optional

import torch
from torch import nn

_CACHE: ContextVar[Optional[dict]] = ContextVar("guide_unlearn_frozen_cache", default=None)


@contextlib.contextmanager
def cached_constants() -> Iterator[None]:
    """Within this scope the caller promises that no frozen (``requires_grad`` False) parameter changes: what
    :func:`derived` computes from one is kept until the scope closes. Nested scopes share the outer cache."""
    if _CACHE.get() is not None:
        yield
        return
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def derived(weight: torch.Tensor, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn(weight)``, computed once per :func:`cached_constants` scope when ``weight`` is a frozen nn.Parameter
    and grad mode cannot reach it; otherwise computed now. ``name`` tells apart several numbers derived from
    the same weight. Any shape in, whatever ``fn`` returns out."""
    cache = _CACHE.get()
    if cache is None or not isinstance(weight, nn.Parameter) or weight.requires_grad:
        return fn(weight)
    key = (id(weight), name, weight.dtype, weight.device)
    hit = cache.get(key)
    if hit is not None and hit[0] is weight:  # the entry holds the weight, so its id cannot be reused meanwhile
        return hit[1]
    with torch.no_grad():
        value = fn(weight)
    cache[key] = (weight, value)
    return value
