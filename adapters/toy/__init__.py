"""Tiny random-initialised networks for tests, examples and benchmarks (NOT real face models)."""

from .identity import ToyIdentityNet

__all__ = ["ToyIdentityNet"]
