"""GOAE encoder backend (Swin V2 from timm + GOAE's mappers and cross-attention heads): inverts aligned faces
into EG3D ws. Needs ``timm``."""

from .encoder import CrossAttention, GOAEConfig, GOAEncoder
from .inverter import GOAEInverter, build_goae_ffhq, load_goae_ffhq

__all__ = ["CrossAttention", "GOAEConfig", "GOAEInverter", "GOAEncoder", "build_goae_ffhq", "load_goae_ffhq"]
