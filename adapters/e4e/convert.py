"""Official ``e4e_ffhq_encode.pt`` -> (:class:`E4EInverter`, :class:`StyleGAN2Generator`).

The file is a ``torch.save`` of ``{'state_dict', 'opts', 'latent_avg'}``: ``state_dict`` holds ``encoder.*``
(the Encoder4Editing encoder) and ``decoder.*`` (a rosinality StyleGAN2 generator); ``opts`` is the training
options (a dict — e4e saves ``vars(opts)`` — or an argparse Namespace); ``latent_avg`` is [18, 512]. It is read with
``torch.load(weights_only=True)`` after an allow-list scan (:func:`guide_unlearn.checkpoints.load_torch_file`).
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Mapping, Optional, Union

import torch

from guide_unlearn.errors import CheckpointError

from .model import E4EConfig, E4EInverter

__all__ = ["config_from_state_dict", "inverter_from_state_dict", "is_e4e_checkpoint", "load_e4e", "split_e4e"]


def is_e4e_checkpoint(obj: Any) -> bool:
    """True for the dict of an e4e / pSp checkpoint (a ``state_dict`` with ``encoder.*`` keys)."""
    return (isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping)
            and any(str(k).startswith("encoder.") for k in obj["state_dict"]))


def split_e4e(ckpt: Mapping[str, Any]) -> tuple[dict, dict, Optional[torch.Tensor], dict]:
    """(encoder state dict, decoder state dict, latent_avg or None, opts dict) of an e4e checkpoint dict."""
    from guide_unlearn.checkpoints import namespace_to_dict

    if not is_e4e_checkpoint(ckpt):
        raise CheckpointError("not an e4e checkpoint: expected {'state_dict': {'encoder.*', 'decoder.*'}, ...}")
    sd = ckpt["state_dict"]
    enc = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    dec = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
    la = ckpt.get("latent_avg")
    if la is not None and not isinstance(la, torch.Tensor):
        raise CheckpointError(f"e4e latent_avg is a {type(la).__name__}, not a tensor")
    return enc, dec, la, namespace_to_dict(ckpt.get("opts"))


def config_from_state_dict(enc: Mapping[str, torch.Tensor]) -> E4EConfig:
    """:class:`E4EConfig` read from encoder tensor shapes (works for the official and for tiny test encoders).

    Stage boundaries are where the channel count changes (IR-SE50: 64 | 128 | 256 | 512), so every stage after the
    first must widen the features, as in the official encoder.
    """
    try:
        num_ws = len({int(m.group(1)) for k in enc if (m := re.match(r"styles\.(\d+)\.", k))})
        w_dim = int(enc["styles.0.linear.weight"].shape[0])
        n_units = 1 + max(int(m.group(1)) for k in enc if (m := re.match(r"body\.(\d+)\.", k)))
        depths = [int(enc[f"body.{i}.res_layer.1.weight"].shape[0]) for i in range(n_units)]
        strides_first = [i for i in range(n_units) if i == 0 or depths[i] != depths[i - 1]]
        stage_channels = tuple(depths[i] for i in strides_first)
        bounds = strides_first + [n_units]
        stage_units = tuple(bounds[j + 1] - bounds[j] for j in range(len(strides_first)))
        se_reduction = depths[0] // int(enc["body.0.res_layer.5.fc1.weight"].shape[0])
        n_convs0 = len([k for k in enc if re.fullmatch(r"styles\.0\.convs\.\d+\.weight", k)])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"not an Encoder4Editing state dict (missing {exc})") from None
    if len(stage_channels) != 4:
        raise CheckpointError(f"expected 4 IR-SE stages, found channels {stage_channels}")
    if not (1 <= num_ws <= 64 and 1 <= w_dim <= 8192 and 0 <= n_convs0 <= 8 and n_units <= 256
            and se_reduction >= 1 and max(stage_channels) <= 8192):
        raise CheckpointError(f"e4e encoder tensors declare an absurd architecture (num_ws={num_ws}, w_dim={w_dim}, "
                              f"{n_convs0} style convs, {n_units} units); refusing to build it")
    return E4EConfig(num_ws=num_ws, w_dim=w_dim, input_size=16 * 2 ** n_convs0, stage_channels=stage_channels,
                     stage_units=stage_units, se_reduction=se_reduction)


def inverter_from_state_dict(enc: Mapping[str, torch.Tensor], latent_avg: Optional[torch.Tensor],
                             config: Optional[E4EConfig] = None) -> E4EInverter:
    """:class:`E4EInverter` from ``encoder.*`` tensors (prefix removed) and ``latent_avg`` [num_ws, w_dim] or
    [w_dim] (broadcast). Keys must match exactly (strict)."""
    config = config or config_from_state_dict(enc)
    try:  # compared with the tensors present on the meta device before anything is allocated
        with torch.device("meta"):
            own = E4EInverter(config).encoder.state_dict()
    except (ValueError, TypeError, RuntimeError, OverflowError, ZeroDivisionError) as exc:
        raise CheckpointError(f"e4e encoder tensors describe no buildable encoder ({str(exc)[:200]})") from None
    missing, unexpected = sorted(set(own) - set(enc)), sorted(set(enc) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"e4e encoder keys differ from the architecture (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]})")
    for k, v in own.items():
        if tuple(enc[k].shape) != tuple(v.shape):
            raise CheckpointError(f"e4e encoder tensor {k} is {tuple(enc[k].shape)}, expected {tuple(v.shape)}")
    inv = E4EInverter(config)
    inv.encoder.load_state_dict(dict(enc), strict=True)
    if latent_avg is None:
        raise CheckpointError("e4e checkpoint has no latent_avg; the encoder's codes are offsets from it, so the "
                              "inverter cannot be used without it")
    la = latent_avg.detach().to(torch.float32)
    if la.ndim == 1:
        la = la.unsqueeze(0).expand(config.num_ws, -1)
    if tuple(la.shape) != (config.num_ws, config.w_dim):
        raise CheckpointError(f"e4e latent_avg is {tuple(latent_avg.shape)}, expected [{config.num_ws}, "
                              f"{config.w_dim}]")
    inv.latent_avg.copy_(la)
    return inv.eval()


def load_e4e(path_or_ckpt: Union[str, os.PathLike, Mapping[str, Any]], want: str = "both"):
    """Read an e4e checkpoint (path or the loaded dict).

    want: 'inverter' -> :class:`E4EInverter`; 'generator' -> :class:`StyleGAN2Generator` (the decoder, with
    ``w_avg`` = latent_avg[0]); 'both' -> (inverter, generator).
    """
    from guide_unlearn.adapters.stylegan2.convert import from_rosinality

    if isinstance(path_or_ckpt, Mapping):
        ckpt = path_or_ckpt
    else:
        from guide_unlearn.checkpoints import load_torch_file

        ckpt = load_torch_file(path_or_ckpt)
    enc, dec, la, _opts = split_e4e(ckpt)
    inverter = generator = None
    if want in ("inverter", "both"):
        inverter = inverter_from_state_dict(enc, la)
    if want in ("generator", "both"):
        if not dec:
            raise CheckpointError("this e4e checkpoint has no decoder.* weights; load the generator from its "
                                  "StyleGAN2 checkpoint instead")
        generator = from_rosinality(dec, la)
        expected = 2 * int(math.log2(generator.img_resolution)) - 2
        if inverter is not None and inverter.num_ws != expected:
            raise CheckpointError(f"e4e encoder makes {inverter.num_ws} codes but its decoder takes {expected}")
    if want == "inverter":
        return inverter
    if want == "generator":
        return generator
    return inverter, generator
