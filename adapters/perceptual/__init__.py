"""Perceptual distances: LPIPS-VGG (real weights only) and a labelled offline stand-in."""

from .distances import LPIPSDistance, MultiScaleGradL1, default_perceptual, lpips_weights_available

__all__ = ["LPIPSDistance", "MultiScaleGradL1", "default_perceptual", "lpips_weights_available"]
