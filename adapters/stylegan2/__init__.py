"""StyleGAN2 (2D) generator backend in pure PyTorch, NVIDIA parameter names."""

from .model import StyleGAN2Generator

__all__ = ["StyleGAN2Generator"]
