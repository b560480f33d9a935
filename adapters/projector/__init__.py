"""Generic optimisation inverter (projector) for any generator adapter."""

from .projector import OptimizationInverter

__all__ = ["OptimizationInverter"]
