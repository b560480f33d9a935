"""CMMD (Jayasumana et al., "Rethinking FID: Towards a Better Evaluation Metric for Image Generation", CVPR 2024):
the maximum mean discrepancy between CLIP image embeddings, a modern alternative to FID.

    clip = load_clip_embedder("/models/clip-vit-large-patch14-336")   # a LOCAL folder; nothing is downloaded
    e_s, e_u = clip.from_generator(images_s), clip.from_generator(images_u)   # [N, D] unit vectors
    cmmd = guide_unlearn.metrics.mmd_rbf(e_s, e_u)                             # sigma 10, scale 1000

The paper uses CLIP ViT-L/14 at 336 px. The embedder reads a transformers folder (``config.json`` of a CLIP or
CLIP-vision model + ``model.safetensors``, or safetensors shards with their index) through safetensors only —
never a pickle — and builds ``CLIPVisionModelWithProjection`` from it; a folder whose weights do not match its
config is a CheckpointError naming the keys. Preprocessing as the paper's reference code: centre crop to a square,
bicubic (antialiased, PIL) resize to the model's image size, [0, 1], CLIP's mean / std (``preprocessor_config.json``
when present); embeddings are L2-normalised.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

from guide_unlearn.checkpoints.matching import match_state_dict
from guide_unlearn.errors import BackendUnavailableError, CheckpointError, InputError

#: CLIP's image normalisation (the values of OpenAI's release; used when the folder has no preprocessor config).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_KEEP = ("vision_model.", "visual_projection.")


def _read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    from guide_unlearn import gate

    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            shards = sorted(set(gate.read_json(index, "weights-manifest", root=folder)["weight_map"].values()))
        except (KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{index}: not a safetensors index ({exc})") from None
        files = []
        for name in shards:
            shard = (folder / str(name)).resolve()
            if shard.parent != folder.resolve() or not shard.name.endswith(".safetensors") or not shard.is_file():
                raise CheckpointError(f"{index} names a shard {name!r} that is not a .safetensors file in {folder}")
            files.append(shard)
    else:
        pickles = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt*"))
        raise CheckpointError(f"{folder} has no model.safetensors (or safetensors shards); CLIP weights load from "
                              "safetensors only" + (f" — found {pickles}: convert them with transformers' "
                                                    "save_pretrained(safe_serialization=True)" if pickles else ""))
    state: dict[str, torch.Tensor] = {}
    for file in files:
        part, _ = gate.load_safetensors(file, "model-weights", root=folder)  # the reading gate
        state.update({k: v for k, v in part.items() if k.startswith(_KEEP)})  # a full CLIP also holds the text tower
    return state


class CLIPEmbedder:
    """CLIP image embeddings for CMMD: images -> unit vectors [N, projection_dim] (float64 numpy).

    model: a ``CLIPVisionModelWithProjection`` in eval mode; size: its input side; mean / std: its normalisation;
    folder, digest: where the weights came from (recorded in reports).
    """

    def __init__(self, model, size: int, mean, std, folder: Path, digest: str) -> None:
        self.model, self.size, self.folder, self.digest = model, int(size), folder, digest
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.name = f"CLIP vision {model.config.hidden_size}-wide, {model.config.num_hidden_layers} layers, " \
                    f"patch {model.config.patch_size}, {self.size} px"

    def _pixels(self, pils: list[Image.Image]) -> torch.Tensor:
        out = []
        for im in pils:
            w, h = im.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            im = im.convert("RGB").crop((left, top, left + side, top + side)).resize((self.size, self.size),
                                                                                      Image.BICUBIC)
            out.append(torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0)
        return (torch.stack(out) - self.mean) / self.std

    @torch.no_grad()
    def embed(self, pils: list[Image.Image], batch: int = 32) -> np.ndarray:
        """RGB PIL images -> L2-normalised CLIP image embeddings [N, D] (float64)."""
        if not pils:
            raise InputError("no images given to the CLIP embedder")
        device = next(self.model.parameters()).device
        rows = []
        for i in range(0, len(pils), batch):
            emb = self.model(pixel_values=self._pixels(pils[i:i + batch]).to(device)).image_embeds.float().cpu()
            rows.append(torch.nn.functional.normalize(emb, dim=1).double().numpy())
        return np.concatenate(rows)

    def from_generator(self, images: torch.Tensor, batch: int = 32) -> np.ndarray:
        """Generator outputs [N, 3, H, W] in [-1, 1] -> [N, D], quantised to uint8 first
        (``(x * 127.5 + 128).clamp(0, 255)``, as saved images are)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"images must be [N, 3, H, W] in [-1, 1], got {tuple(images.shape)}")
        q = (images.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return self.embed([Image.fromarray(x) for x in q], batch)


def load_clip_embedder(path: Union[str, os.PathLike], device: torch.device | str = "cpu") -> CLIPEmbedder:
    """A CLIP image embedder from a LOCAL transformers folder (CLIP or CLIP-vision ``config.json`` +
    safetensors weights; the text tower of a full CLIP is ignored). BackendUnavailableError when the folder or
    transformers is missing; CheckpointError for pickle-only weights or weights that do not match the config."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise BackendUnavailableError(f"no CLIP model folder at {folder} (expected config.json and "
                                      "model.safetensors, e.g. a local copy of openai/clip-vit-large-patch14-336)")
    try:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    except ImportError as exc:  # pragma: no cover - transformers is in the track extra
        raise BackendUnavailableError("CMMD needs transformers: pip install 'guide-unlearn[track]'") from exc
    from guide_unlearn import gate

    raw = gate.read_json(folder / "config.json", "model-config", root=folder)  # bounded, inside the folder
    try:
        if isinstance(raw, dict) and raw.get("model_type") == "clip" and isinstance(raw.get("vision_config"), dict):
            raw = raw["vision_config"]  # a full CLIP's config: its vision tower
        config = CLIPVisionConfig.from_dict(raw)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{folder / 'config.json'} is not a CLIP (vision) config: {str(exc)[:300]}") from None
    state = _read_safetensors(folder)
    what = "a CLIPVisionModelWithProjection of this config.json"
    with torch.device("meta"):  # the config's architecture is checked against the file before any allocation
        declared = CLIPVisionModelWithProjection(config)
    match_state_dict(declared, state, what, folder, check_only=True)
    model = CLIPVisionModelWithProjection(config).eval()
    match_state_dict(model, state, what, folder)
    mean, std, size = CLIP_MEAN, CLIP_STD, config.image_size
    pre = folder / "preprocessor_config.json"
    if pre.is_file():
        try:
            cfg = gate.read_json(pre, "model-config", root=folder)
            mean, std = tuple(map(float, cfg.get("image_mean", mean))), tuple(map(float, cfg.get("image_std", std)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{pre}: unreadable preprocessor config ({exc})") from None
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise CheckpointError(f"{pre}: image_mean / image_std must be 3 numbers (std > 0)")
    weights = sorted(folder.glob("*.safetensors"))
    digest = "sha256:" + ",".join(gate.sha256(w, "model-weights", root=folder) for w in weights)
    return CLIPEmbedder(model.requires_grad_(False).to(device), size, mean, std, folder, digest)
