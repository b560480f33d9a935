"""Optimisation inverters (projectors) for generator adapters: W+ (any generator) and code space (z)."""

from .code_book import CODE_BOOK_FILE, CodeBook
from .codes import CodeInverter
from .projector import OptimizationInverter

__all__ = ["CODE_BOOK_FILE", "CodeBook", "CodeInverter", "OptimizationInverter"]
