"""e4e (encoder4editing) backend: the Encoder4Editing encoder as a StyleGAN2 inverter, and its checkpoint reader.

Registers the ``e4e-pt`` checkpoint format: an e4e ``.pt`` holds the encoder (an inverter) and its StyleGAN2
decoder (a ``stylegan2`` family generator).
"""

from typing import Any, Optional

from guide_unlearn.families import CheckpointFormat, register_format

from .model import E4EConfig, E4EInverter, Encoder4Editing


def _read_generator(obj: Any, config: Optional[dict] = None, what: str = ""):
    from .convert import load_e4e  # noqa: PLC0415

    return load_e4e(obj, want="generator")


def _read_inverter(obj: Any, path: Any = None, generator: Any = None, device: Any = "cpu"):
    from guide_unlearn.errors import CheckpointError  # noqa: PLC0415

    from .convert import load_e4e  # noqa: PLC0415

    inv = load_e4e(obj, want="inverter")
    if generator is not None and getattr(generator, "num_ws", inv.num_ws) != inv.num_ws:
        raise CheckpointError(f"the e4e encoder makes {inv.num_ws} codes, the generator takes "
                              f"{generator.num_ws}; use it with its StyleGAN2-1024 decoder")
    return inv.to(device).eval()


FORMAT = register_format(CheckpointFormat(
    "e4e-pt", "stylegan2", "checkpoint", "guide_unlearn.adapters.e4e.convert:is_e4e_checkpoint", _read_generator,
    kind="generator+inverter", read_inverter=_read_inverter,
    description="encoder4editing .pt (IR-SE50 encoder + StyleGAN2 decoder)"))

__all__ = ["E4EConfig", "E4EInverter", "Encoder4Editing"]
