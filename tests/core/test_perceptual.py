"""Perceptual distances: LPIPS only with real weights, and an honestly labelled stand-in otherwise."""

import logging

import pytest
import torch

from guide_unlearn.adapters.perceptual import LPIPSDistance, MultiScaleGradL1, default_perceptual
from guide_unlearn.errors import BackendUnavailableError


def test_stand_in_is_zero_on_equal_images_and_grows_with_difference():
    d = MultiScaleGradL1()
    a = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(d(a, a), torch.zeros(2))
    assert float(d(a, a + 0.1)[0]) < float(d(a, a + 0.5)[0])
    assert "not LPIPS" in d.name and d.is_learned is False


def test_lpips_without_vgg_weights_says_how_to_get_them():
    with pytest.raises(BackendUnavailableError, match="vgg16"):
        LPIPSDistance("vgg")


def test_default_falls_back_to_the_labelled_stand_in_and_logs_it(caplog, monkeypatch):
    from guide_unlearn.adapters.perceptual import distances

    monkeypatch.setattr(distances, "_WARNED", set())  # the warning is said once per process: maybe already said
    with caplog.at_level(logging.WARNING):
        d = default_perceptual()
    assert isinstance(d, MultiScaleGradL1)
    assert "stand-in" in caplog.text


def test_lpips_on_random_weights_is_named_as_such():
    d = LPIPSDistance("vgg", random_backbone=True)
    assert "RANDOM" in d.name and d.is_learned is False
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(d(x, x)) == pytest.approx(0.0, abs=1e-6)
