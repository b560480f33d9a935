"""Builders for tests, examples and benchmarks: tiny random models and full-size architectures without weights.

Nothing here is a trained model. ``tiny_eraser()`` is small enough that a 50-step erase runs on a CPU in seconds.
The tiny models are the generator families' registry entries (``tiny-stylegan2``, ``tiny-eg3d``; see
:mod:`guide_unlearn.families`); building one never changes the caller's global RNG state.
This module may import the pipelines; the pipelines never import it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from guide_unlearn.adapters.stylegan2.configs import TINY_STYLEGAN2  # the config lives with its family

__all__ = ["TINY_STYLEGAN2", "build_generator", "build_inverter", "tiny_eraser", "tiny_generator"]


def _family(backend: str):
    from guide_unlearn.errors import ConfigError
    from guide_unlearn.families import get_family, list_families

    try:
        return get_family(backend)
    except ConfigError:
        names = ", ".join(repr(f.name) for f in list_families())
        raise ValueError(f"unknown tiny backend {backend!r}; use one of {names}") from None


def tiny_generator(backend: str = "stylegan2", seed: int = 0, **overrides: Any) -> nn.Module:
    """A random-initialised tiny generator of family ``backend``, eval mode, the same for the same ``seed``.

    stylegan2: 32×32, w_dim 32, 8 ws, ~60 k parameters; eg3d: 64² images, 8 ws of width 32, ~80 k parameters.
    Its ``w_avg`` is set to the mean of 1024 mapped samples, as a trained model's running average would be.
    ``overrides`` change config fields. The caller's global RNG state is left untouched.
    """
    return _family(backend).tiny(seed=seed, **overrides)


def tiny_eraser(backend: str = "stylegan2", seed: int = 0, inverter_steps: int = 60):
    """A documented tiny IdentityEraser: tiny random generator, optimisation inverter (``inverter_steps`` steps),
    a tiny random identity network and the offline perceptual stand-in. For tests, examples and benchmarks; it
    erases nothing real."""
    from guide_unlearn.pipelines import assembly
    from guide_unlearn.pipelines.eraser import IdentityEraser

    _family(backend)
    return assembly.tiny_eraser(IdentityEraser, backend, seed=seed, inverter_steps=inverter_steps)


def build_generator(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The full-size architecture of a registry name, without weights (``device='meta'`` allocates nothing)."""
    from guide_unlearn.pipelines.registry import build_architecture

    return build_architecture(name, device=device)


def build_inverter(name: str, device: str | torch.device = "meta") -> nn.Module:
    """The full-size inverter architecture of a registry name ("goae-ffhq", "e4e-ffhq"), without weights."""
    from guide_unlearn.pipelines.registry import build_architecture

    return build_architecture(name, device=device)




@contextlib.contextmanager
def interrupted_at(at_call: int) -> Iterator[None]:
    """Inside the block, the erase loop (``run_erase`` and what calls it, whatever the method) dies with
    KeyboardInterrupt at the ``at_call``-th evaluation of the loss (1-based), as a user's Ctrl-C would: what a run
    checkpointed before stays in its state folder. Use with ``pytest.raises(KeyboardInterrupt)`` around the erase."""
    from unittest import mock

    import guide_unlearn.engine as engine

    real, calls = engine.ltu_loss, {"n": 0}

    def stop(*args: Any, **kwargs: Any):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with mock.patch.object(engine, "ltu_loss", stop):
        yield
