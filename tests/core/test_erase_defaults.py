"""A model's recommended erase settings (registry ``erase_defaults``) and how callers override them."""

from __future__ import annotations

import pytest

from guide_unlearn import IdentityEraser
from guide_unlearn.errors import ConfigError
from guide_unlearn.testing import tiny_generator


def _eraser(**defaults):
    return IdentityEraser(tiny_generator("stylegan2"), erase_defaults=defaults)


def test_defaults_apply_to_the_lora_preset_and_flags_win():
    e = _eraser(global_samples=8, iterations=7)
    assert e.default_config().global_samples == 8 and e.default_config().iterations == 7
    assert e.default_config(iterations=3).iterations == 3


def test_paper_preset_ignores_model_defaults():
    cfg = _eraser(global_samples=8).default_config("paper")
    assert cfg.method == "paper" and cfg.global_samples == 2


def test_bad_defaults_fail_at_construction():
    with pytest.raises((ConfigError, TypeError)):
        _eraser(global_samples=-1)


def test_registry_defaults_reach_the_eraser():
    from guide_unlearn.pipelines.registry import REGISTRY

    e = IdentityEraser.from_pretrained("demo-faces")
    assert e.erase_defaults == dict(REGISTRY["demo-faces"].erase_defaults)
