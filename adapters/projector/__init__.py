"""Optimisation inverters (projectors) for generator adapters: W+ (any generator) and code space (z)."""

from .codes import CodeInverter
from .projector import OptimizationInverter

__all__ = ["CodeInverter", "OptimizationInverter"]
