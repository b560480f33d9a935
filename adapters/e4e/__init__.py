"""e4e (encoder4editing) backend: the Encoder4Editing encoder as a StyleGAN2 inverter, and its checkpoint reader."""

from .model import E4EConfig, E4EInverter, Encoder4Editing

__all__ = ["E4EConfig", "E4EInverter", "Encoder4Editing"]
